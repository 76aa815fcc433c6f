"""Expressions of the faces in still images (files or folders), for `ferbench predict`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ferbench.data.images import IMAGE_SUFFIXES
from ferbench.errors import FerbenchError
from ferbench.faces.align import FaceFramer
from ferbench.faces.defaults import FER_MARGIN
from ferbench.faces.detect import still_detector
from ferbench.infer.overlay import draw_face
from ferbench.infer.predictor import Predictor
from ferbench.utils.opencv import cv2


def expand_paths(paths: list[Path]) -> list[Path]:
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            files.append(path)
        else:
            raise FerbenchError(f"no such image or folder: {path}")
    return files


def annotation_targets(paths: list[Path], out: Path) -> dict[Path, Path]:
    """Where `--annotate OUT` writes each image: its path below the inputs' common folder,
    mirrored under OUT, so same-named files of two folders stay apart.  Refused when OUT is an
    input folder or inside one, or would replace an input: the originals are never written."""
    out = Path(out)
    folders = [Path(os.path.abspath(p)) for p in paths if p.is_dir()]
    for folder in folders:
        for there, inside in ((out, folder), (out.resolve(), folder.resolve())):
            there = Path(os.path.abspath(there))
            if there == inside or inside in there.parents:
                raise FerbenchError(
                    f"--annotate {out} is inside the input folder {folder}: the annotated "
                    "copies would mix with the originals; write them to another folder"
                )
    files = expand_paths(paths)
    roots = folders + [Path(os.path.abspath(p)).parent for p in paths if not p.is_dir()]
    common = Path(os.path.commonpath(roots)) if roots else Path.cwd()
    sources = {f.resolve() for f in files}
    targets = {}
    for file in files:
        target = out / Path(os.path.abspath(file)).relative_to(common)
        if target.resolve() in sources:
            raise FerbenchError(
                f"--annotate {out} would write over the input {file}; write to another folder"
            )
        targets[file] = target
    return targets


def predict_images(
    predictor: Predictor,
    paths: list[Path],
    detect: bool = True,
    margin: float = FER_MARGIN,
    annotate: Path | None = None,
    batch: int = 256,
    detector_kind: str = "mtcnn",
    align: bool = True,
):
    """One row per face: file, box (None for a whole-image crop), label, probability, all probs.
    With `align`, each detected face is cropped aligned to the model's template by its
    landmarks (faces/align.py), as live mode crops it."""
    targets = annotation_targets(paths, annotate) if annotate is not None else {}
    detector = still_detector(detector_kind) if detect else None
    rows, skipped = [], []
    pending: list[tuple[Path, tuple | None, np.ndarray]] = []

    def flush():
        probs = predictor.predict([crop for _, _, crop in pending])
        for (file, box, _), p in zip(pending, probs):
            top = int(np.argmax(p))
            rows.append(
                {
                    "file": str(file),
                    "box": list(box) if box else None,
                    "label": predictor.class_names[top],
                    "probability": float(p[top]),
                    "probabilities": {c: float(v) for c, v in zip(predictor.class_names, p)},
                }
            )
        pending.clear()

    for file in expand_paths(paths):
        image = cv2.imdecode(np.fromfile(file, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            skipped.append((file, "unreadable or corrupt image"))
            continue
        boxes = detector(image) if detector else [None]
        if detector and not boxes:
            skipped.append((file, "no face found (use --no-detect for face crops)"))
            continue
        crops = [image]
        if detector:
            framer = FaceFramer(
                predictor.face_template if align else None, predictor.input_size, margin
            )
            marks = getattr(detector, "last_landmarks", None)
            ids = list(range(len(boxes)))
            crops = framer(image, ids, boxes, dict(zip(ids, marks)) if marks is not None else None)
        start = len(rows) + len(pending)
        pending += [(file, box, crop) for box, crop in zip(boxes, crops)]
        if len(pending) >= batch:
            flush()
        if annotate is not None and detector:
            flush()
            annotated = image.copy()
            for row in rows[start:]:
                probs = np.array([row["probabilities"][c] for c in predictor.class_names])
                draw_face(annotated, tuple(row["box"]), probs, predictor.class_names)
            targets[file].parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(targets[file]), annotated)
    if pending:
        flush()
    return rows, skipped
