"""Evaluate a trained checkpoint on any dataset split, matching classes by name.

Cross-dataset numbers (a FER2013 model on FER+ or on your own faces) need the class sets lined
up: images whose class the model does not know are left out and counted, never silently mapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferbench.config import DataSpec
from ferbench.data import SPLITS, FaceArrays, load_dataset
from ferbench.data.classes import canonical
from ferbench.errors import FerbenchError
from ferbench.infer.predictor import Predictor
from ferbench.metrics import classification_metrics


@dataclass
class MatchedSplit:
    """One split's faces whose class the model knows, with labels in the model's class order."""

    images: np.ndarray
    labels: np.ndarray
    left_out_classes: list[str]
    left_out_images: int
    mapping: dict[str, str]  # dataset class -> model class, as matched through the synonyms


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
    return MatchedSplit(images[known], mapped[known], left_out, int((~known).sum()), mapping)


def unsplit_folder(spec: DataSpec) -> bool:
    """A folder of class folders with no train/val/test level: its splits would be carved, so
    evaluating a trained model on it means evaluating every image."""
    from ferbench.data.folder import has_split_folders
    from ferbench.data.loader import detect_kind, resolve_source

    if spec.kind not in ("auto", "folder") or not spec.path:
        return False
    path = resolve_source(spec.path)
    return path.is_dir() and detect_kind(path) == "folder" and not has_split_folders(path)


def evaluate_checkpoint(
    predictor: Predictor, data_spec: DataSpec, split: str = "auto", tta: bool = True
) -> dict:
    """Metrics of `predictor` on one split, evaluated as the run evaluated its own test split
    (same resize, preprocessing, TTA and precision), on the classes both sides know.  `auto`:
    the test split where the data has splits, every image of a folder without them."""
    if split == "auto":
        split = "all" if unsplit_folder(data_spec) else "test"
    data = load_dataset(data_spec.replace(size=predictor.input_size), base_dir=Path("."))
    faces = matched_split(data, split, predictor.class_names)
    probs = predictor.predict_arrays(faces.images, tta=tta)
    metrics = classification_metrics(faces.labels, probs.argmax(1), predictor.class_names, probs)
    metrics.update(
        {
            "split": split,
            "images": len(faces.labels),
            "left_out": {"classes": faces.left_out_classes, "images": faces.left_out_images},
            "class_map": faces.mapping,
            "data_source": data.source,
            "data_notes": list(data.notes),
            "data_fingerprint": data.fingerprint(),
            "checkpoint": str(predictor.path),
            "tta_shift": predictor.tta_shift if tta else 0,
            "amp": predictor.runtime.amp,
        }
    )
    return metrics
