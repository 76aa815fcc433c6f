"""Evaluate a trained checkpoint on any dataset split, matching classes by name.

Cross-dataset numbers (a FER2013 model on FER+ or on your own faces) need the class sets lined
up: images whose class the model does not know are left out and counted, never silently mapped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferbench.config import DataSpec
from ferbench.data import SPLITS, FaceArrays, load_dataset
from ferbench.data.classes import canonical
from ferbench.data.folder import class_folders, has_split_folders, synonym_note
from ferbench.data.identity import leak_figures, trained_on
from ferbench.data.images import list_images, resize_square, to_gray
from ferbench.errors import FerbenchError
from ferbench.faces.align import FaceFramer
from ferbench.faces.defaults import FER_MARGIN
from ferbench.infer.predictor import Predictor
from ferbench.report.metrics import classification_metrics
from ferbench.utils.opencv import cv2


@dataclass
class MatchedSplit:
    """One split's faces whose class the model knows, with labels in the model's class order."""

    images: np.ndarray
    labels: np.ndarray
    left_out_classes: list[str]
    left_out_images: int
    mapping: dict[str, str]  # dataset class -> model class, as matched through the synonyms
    known: np.ndarray  # which of the split's faces were kept (the model knows their class)


def matched_split(data: FaceArrays, split: str, model_classes: list[str]) -> MatchedSplit:
    """`split` is train, val, test or all (every image)."""
    if split not in (*SPLITS, "all"):
        raise FerbenchError(f"unknown split '{split}'; use one of {', '.join(SPLITS)} or all")
    images, labels = (data.images, data.labels) if split == "all" else data.split(split)
    if not len(labels):
        raise FerbenchError(f"the {split} split of {data.source} is empty")
    known_names = [canonical(c) for c in model_classes]
    to_model = np.array(
        [known_names.index(c) if c in known_names else -1 for c in data.class_names]
    )
    mapped = to_model[labels]
    known = mapped >= 0
    if not known.any():
        raise FerbenchError(
            f"none of the dataset's classes ({', '.join(data.class_names)}) is one the model "
            f"knows ({', '.join(model_classes)})"
        )
    left_out = sorted({data.class_names[i] for i in np.unique(labels[~known])})
    mapping = {d: model_classes[m] for d, m in zip(data.class_names, to_model) if m >= 0}
    return MatchedSplit(images[known], mapped[known], left_out, int((~known).sum()), mapping, known)


def unsplit_folder(spec: DataSpec) -> bool:
    """A folder of class folders with no train/val/test level: its splits would be carved, so
    evaluating a trained model on it means evaluating every image."""
    from ferbench.data.loader import detect_kind, resolve_source

    if spec.kind not in ("auto", "folder") or not spec.path:
        return False
    path = resolve_source(spec.path)
    return path.is_dir() and detect_kind(path) == "folder" and not has_split_folders(path)


def detected_faces(
    root: Path, size: int, detector, margin: float = FER_MARGIN, template=None
) -> FaceArrays:
    """A folder of portraits (``<class>/*``) as face crops: the largest face the detector finds
    in each image, framed like FER2013 (aligned to `template` by its landmarks where given, as
    live mode crops) and resized; images with no face are counted, not used."""
    framer = FaceFramer(template, size, margin)
    class_dirs, class_names = class_folders(root)
    images, labels, no_face, corrupt = [], [], [], []
    for label, class_dir in enumerate(class_dirs):
        for file in list_images(class_dir):
            image = cv2.imdecode(np.fromfile(file, dtype=np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                corrupt.append(str(file))
                continue
            boxes = detector(image)
            if not boxes:
                no_face.append(str(file))
                continue
            largest = int(np.argmax([b[2] * b[3] for b in boxes]))
            marks = getattr(detector, "last_landmarks", None)
            points = {0: marks[largest]} if marks is not None and len(marks) > largest else None
            crop = framer(image, [0], [boxes[largest]], points)[0]
            images.append(resize_square(to_gray(crop), size))
            labels.append(label)
    if not images:
        raise FerbenchError(f"{root}: no face found in any image")
    data = FaceArrays(
        np.stack(images),
        np.asarray(labels),
        np.zeros(len(labels), np.int8),
        class_names,
        source=f"portraits {root} (faces detected)",
    )
    data.problems = {
        "images with no face found": {"count": len(no_face), "files": no_face[:10]},
        "files skipped: unreadable or corrupt": {"count": len(corrupt), "files": corrupt[:10]},
    }
    data.notes.append(
        f"faces detected: {len(labels)} of {len(labels) + len(no_face)} images had a face"
    )
    note = synonym_note(class_dirs, class_names)
    if note:
        data.notes.append(note)
    return data


def evaluate_checkpoint(
    predictor: Predictor,
    data_spec: DataSpec,
    split: str = "auto",
    tta: bool = True,
    detector=None,
    scales: tuple[float, ...] | None = None,
    align: bool = True,
) -> dict:
    """Metrics of `predictor` on one split, evaluated as the run evaluated its own test split
    (same resize, preprocessing, TTA, zooms and precision; `scales` other zooms), on the
    classes both sides know.  `auto`: the test split where the data has splits, every image of
    a folder without them.  With a `detector`, the data is a folder of portraits whose faces
    are found and cropped first."""
    if detector is not None:
        from ferbench.data.loader import resolve_source

        root = resolve_source(data_spec.path)
        if has_split_folders(root):
            split = "test" if split == "auto" else split
            root = root / split
        template = predictor.face_template if align else None
        data = detected_faces(root, predictor.input_size, detector, template=template)
        split = "all"
    else:
        if split == "auto":
            split = "all" if unsplit_folder(data_spec) else "test"
        data = load_dataset(data_spec.replace(size=predictor.input_size), base_dir=Path("."))
    faces = matched_split(data, split, predictor.class_names)
    probs = predictor.predict_arrays(faces.images, tta=tta, scales=scales)
    metrics = classification_metrics(faces.labels, probs.argmax(1), predictor.class_names, probs)
    correct = probs.argmax(1) == faces.labels
    if detector is None:  # leak figures only where the model's own faces can be told apart
        model = trained_on(str(predictor.path), predictor.payload, predictor.path)
        metrics.update(leak_figures(model, data_spec, data, split, correct, faces.known))
    metrics.update(
        {
            "split": split,
            "images": len(faces.labels),
            "left_out": {"classes": faces.left_out_classes, "images": faces.left_out_images},
            "class_map": faces.mapping,
            "data_source": data.source,
            "dataset": data.dataset,
            "data_notes": list(data.notes),
            "no_face": data.problems.get("images with no face found", {}).get("count", 0),
            "data_fingerprint": data.fingerprint(),
            "checkpoint": str(predictor.path),
            "tta_shift": predictor.tta_shift if tta else 0,
            "tta": predictor.tta if tta else "none",
            "scales": list(predictor.zooms(tta, scales)),
            "amp": predictor.runtime.amp,
        }
    )
    return metrics


def robustness_of(
    predictor: Predictor,
    data_spec: DataSpec,
    split: str,
    families: list[str],
    severities: tuple[int, ...],
    seed: int = 0,
    progress: Callable[[str], None] = lambda text: None,
    base_dir: Path = Path("."),
) -> dict:
    """The robustness suite (infer/robustness.py) on one split's faces, corrupted at 48 px (the
    size the corruption parameters are set for) and then resized to the model's input."""
    from ferbench.data.corrupt import REFERENCE_SIDE
    from ferbench.infer.robustness import robustness_suite

    data = load_dataset(data_spec.replace(size=REFERENCE_SIDE), base_dir=base_dir)
    faces = matched_split(data, split, predictor.class_names)
    return robustness_suite(
        lambda images: predictor.predict_arrays(images, tta=False),
        faces.images,
        faces.labels,
        predictor.class_names,
        predictor.input_size,
        families,
        severities,
        seed,
        progress,
    )


def framing_of(
    predictor: Predictor,
    data_spec: DataSpec,
    split: str,
    detector_kind: str = "mtcnn",
    progress: Callable[[str], None] = lambda text: None,
) -> dict:
    """The framing gap (infer/robustness.py) on one split: its faces found by live mode's
    detector in a larger frame, box-cropped and aligned, against the dataset's own crops."""
    from ferbench.faces.detect import make_detector
    from ferbench.infer.robustness import framing_gap

    data = load_dataset(data_spec.replace(size=predictor.input_size), base_dir=Path("."))
    faces = matched_split(data, split, predictor.class_names)

    def in_batches(crops):
        parts = [predictor.predict(crops[i : i + 512]) for i in range(0, len(crops), 512)]
        return np.concatenate(parts) if parts else np.zeros((0, len(predictor.class_names)))

    return framing_gap(
        in_batches,
        lambda images: predictor.predict_arrays(images, tta=False),
        faces.images,
        faces.labels,
        make_detector(detector_kind),
        predictor.face_template,
        predictor.input_size,
        progress,
    )


def cross_dataset_matrix(
    sources: list[str],
    datasets: dict[str, DataSpec],
    results: Path,
    detector=None,
    portraits: Collection[str] = (),
    progress: Callable[[str], None] = lambda text: None,
) -> list:
    """Each model (a shipped tag, a model name's best run, or a checkpoint path) on each named
    dataset's test split (all images of a folder without splits): one row per pair.  The
    datasets named in `portraits` are photos whose faces `detector` finds first."""
    from ferbench.infer.predictor import resolve_source

    rows = []
    for source in sources:
        is_path = Path(source).suffix in (".pt", ".onnx") or Path(source).is_dir()
        path = resolve_source(None if is_path else source, source if is_path else None, results)
        predictor = Predictor(path, amp="checkpoint")
        for name, spec in datasets.items():
            progress(f"{source} on {name}")
            m = evaluate_checkpoint(
                predictor, spec, detector=detector if name in portraits else None
            )
            rows.append(
                {
                    "model": source,
                    "trained_classes": len(predictor.class_names),
                    "dataset": name,
                    "split": m["split"],
                    "images": m["images"],
                    "no_face": m["no_face"],
                    "left_out_images": m["left_out"]["images"],
                    "left_out_classes": " ".join(m["left_out"]["classes"]),
                    "accuracy": round(m["accuracy"], 4),
                    "balanced_accuracy": round(m["balanced_accuracy"], 4),
                    "macro_f1": round(m["macro_f1"], 4),
                    "ece": round(m["ece"], 4),
                    "tta": m["tta"],
                    "class_map": " ".join(f"{d}→{t}" for d, t in m["class_map"].items() if d != t),
                    "notes": "; ".join(m["data_notes"]),
                    "data_fingerprint": m["data_fingerprint"],
                }
            )
    return rows
