"""The field's benchmarks in their published layouts, read as they are distributed.

Each layout has its own label codes, mapped here to ferbench's class names once (a wrong code
map gives a plausible-looking, wrong benchmark):

- **RAF-DB (basic)**: ``EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``; 1-7 =
  surprise, fear, disgust, happy, sad, angry, neutral), faces in
  ``Image/aligned/<stem>_aligned.jpg``; the split from the ``train_``/``test_`` prefix,
  validation carved from train.
- **AffectNet** (manually annotated part): ``Manually_Annotated_file_lists/training.csv`` and
  ``validation.csv`` (expression 0-7 = neutral, happy, sad, surprise, fear, disgust, angry,
  contempt; 8-10 = none, uncertain, no face: left out and counted), each face cropped by its
  box from ``Manually_Annotated_Images/``; ``validation.csv`` is the test split (the official
  test set is not public), validation carved from training; valence and arousal are kept.
- **ExpW**: ``label/label.lst`` (``image face_id top left right bottom confidence label``, labels
  0-6 in FER2013's order), several boxed faces per scene under ``image/origin/``; no official
  split, so test and validation are carved as for class folders.

Bad input loses nothing else: a label line naming a missing image, an unknown code or a
truncated row is skipped and counted in the arrays' problems.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ferbench.data.arrays import FaceArrays
from ferbench.data.classes import FER2013_CLASSES
from ferbench.data.fer2013 import SHOW_LINES, carve_validation
from ferbench.data.folder import carve_test
from ferbench.data.images import read_gray_batch, read_gray_crops
from ferbench.errors import FerbenchError

RAFDB_LABELS = "EmoLabel/list_patition_label.txt"  # sic: the file is named so in RAF-DB
RAFDB_CODES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry",
               7: "neutral"}  # fmt: skip
AFFECTNET_LISTS = "Manually_Annotated_file_lists"
AFFECTNET_CODES = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt"]
AFFECTNET_CLASSES = [*FER2013_CLASSES, "contempt"]
EXPW_LABELS = "label/label.lst"
DEFAULT_SIZE = 100  # RAF-DB's aligned faces are 100x100; box crops are resized to it too


def detect_published(path: Path) -> str | None:
    """The layout of a dataset folder, or None."""
    if (path / RAFDB_LABELS).is_file():
        return "rafdb"
    if (path / AFFECTNET_LISTS).is_dir():
        return "affectnet"
    if (path / EXPW_LABELS).is_file():
        return "expw"
    return None


class _Skipped:
    """Counts of what a reader left out, by reason, with the first few lines of each."""

    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {}

    def add(self, reason: str, line: str) -> None:
        self.lines.setdefault(reason, []).append(line)

    def problems(self) -> dict:
        return {
            reason: {"count": len(lines), "first": lines[:SHOW_LINES]}
            for reason, lines in self.lines.items()
        }


def _finish(
    images, labels, splits, classes, source, skipped, extra: dict | None = None
) -> FaceArrays:
    data = FaceArrays(images, labels, splits, list(classes), source, problems=skipped.problems())
    if not len(data):
        raise FerbenchError(f"{source}: no readable faces ({skipped.problems() or 'empty'})")
    data.problems.update(extra or {})
    return data


def _crops(items: list, size: int, skipped: _Skipped) -> tuple[np.ndarray, np.ndarray]:
    """Boxed faces, with unreadable files and boxes outside their image counted."""
    crops, ok, corrupt = read_gray_crops(items, size)
    unreadable = set(corrupt)
    for path in corrupt:
        skipped.add("files skipped: unreadable or corrupt", str(path))
    for (path, box), kept in zip(items, ok):
        if not kept and path not in unreadable:
            skipped.add("boxes outside their image", f"{path.name} {box}")
    return crops, ok


def read_rafdb(root: Path, size: int | None, val_fraction: float, seed: int) -> FaceArrays:
    """RAF-DB basic: aligned 100x100 faces, 7 classes, train/test from the file names."""
    size = size or DEFAULT_SIZE
    skipped, files, labels, splits = _Skipped(), [], [], []
    aligned = root / "Image" / "aligned"
    if not aligned.is_dir():
        raise FerbenchError(
            f"{root}: RAF-DB's Image/aligned/ is missing (the aligned faces are read; the "
            "original photos need face detection, not supported yet)"
        )
    for number, line in enumerate((root / RAFDB_LABELS).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"line {number}: {line.strip()[:60]}"
        if len(parts) != 2 or not parts[1].isdigit():
            skipped.add("label lines not 'name code'", where)
            continue
        name, code = parts[0], int(parts[1])
        if code not in RAFDB_CODES:
            skipped.add("unknown label codes (RAF-DB uses 1-7)", where)
            continue
        split = 0 if name.startswith("train_") else 2 if name.startswith("test_") else None
        if split is None:
            skipped.add("names without a train_/test_ prefix", where)
            continue
        image = aligned / f"{Path(name).stem}_aligned.jpg"
        if not image.is_file():
            skipped.add("label lines naming a missing image", where)
            continue
        files.append(image)
        labels.append(FER2013_CLASSES.index(RAFDB_CODES[code]))
        splits.append(split)
    images, ok, corrupt = read_gray_batch(files, size)
    for path in corrupt:
        skipped.add("files skipped: unreadable or corrupt", str(path))
    data = _finish(
        images,
        np.asarray(labels, np.int64)[ok],
        np.asarray(splits, np.int8)[ok],
        FER2013_CLASSES,
        f"rafdb {root}",
        skipped,
    )
    carve_validation(data, val_fraction, seed)
    return data


def read_affectnet(root: Path, size: int | None, val_fraction: float, seed: int) -> FaceArrays:
    """AffectNet's manually annotated part: faces cropped by their boxes, 8 classes; valence
    and arousal kept per face (``data.extras``)."""
    size = size or DEFAULT_SIZE
    skipped = _Skipped()
    items, labels, splits, valence, arousal = [], [], [], [], []
    images_root = root / "Manually_Annotated_Images"
    for list_name, split in (("training.csv", 0), ("validation.csv", 2)):
        path = root / AFFECTNET_LISTS / list_name
        if not path.is_file():
            raise FerbenchError(f"{root}: AffectNet's {AFFECTNET_LISTS}/{list_name} is missing")
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            try:
                col = {name: header.index(name) for name in (
                    "subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
                    "expression", "valence", "arousal")}  # fmt: skip
            except ValueError:
                raise FerbenchError(
                    f"{path}: not AffectNet's header (subDirectory_filePath,face_x,...)"
                ) from None
            for number, row in enumerate(reader, 2):
                where = f"{list_name} line {number}"
                try:
                    box = tuple(int(float(row[col[k]])) for k in (
                        "face_x", "face_y", "face_width", "face_height"))  # fmt: skip
                    code = int(row[col["expression"]])
                    v, a = float(row[col["valence"]]), float(row[col["arousal"]])
                    image = images_root / row[col["subDirectory_filePath"]]
                except (IndexError, ValueError):
                    skipped.add("truncated or malformed rows", where)
                    continue
                if code in (8, 9, 10):
                    skipped.add("not an expression (8 none, 9 uncertain, 10 no face)", where)
                    continue
                if not 0 <= code < len(AFFECTNET_CODES):
                    skipped.add("unknown expression codes (AffectNet uses 0-10)", where)
                    continue
                if not image.is_file():
                    skipped.add("rows naming a missing image", where)
                    continue
                items.append((image, box))
                labels.append(AFFECTNET_CLASSES.index(AFFECTNET_CODES[code]))
                splits.append(split)
                valence.append(v)
                arousal.append(a)
    crops, ok = _crops(items, size, skipped)
    v, a = np.asarray(valence)[ok], np.asarray(arousal)[ok]
    data = _finish(
        crops,
        np.asarray(labels, np.int64)[ok],
        np.asarray(splits, np.int8)[ok],
        AFFECTNET_CLASSES,
        f"affectnet {root}",
        skipped,
    )
    data.notes.append(
        f"valence mean {v.mean():+.2f} (sd {v.std():.2f}), arousal mean {a.mean():+.2f} "
        f"(sd {a.std():.2f}) over {len(v):,} faces; validation.csv is the test split"
    )
    carve_validation(data, val_fraction, seed)
    return data


def read_expw(root: Path, size: int | None, val_fraction: float, seed: int) -> FaceArrays:
    """ExpW: every boxed face of every scene, labels in FER2013's order; splits carved."""
    size = size or DEFAULT_SIZE
    skipped, items, labels = _Skipped(), [], []
    origin = root / "image" / "origin"
    for number, line in enumerate((root / EXPW_LABELS).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"line {number}: {line.strip()[:60]}"
        try:
            name = parts[0]
            top, left, right, bottom = (int(float(v)) for v in parts[2:6])
            code = int(parts[7])
        except (IndexError, ValueError):
            skipped.add("truncated or malformed label lines", where)
            continue
        if not 0 <= code < len(FER2013_CLASSES):
            skipped.add("unknown label codes (ExpW uses 0-6)", where)
            continue
        image = origin / name
        if not image.is_file():
            skipped.add("label lines naming a missing image", where)
            continue
        items.append((image, (left, top, right - left, bottom - top)))
        labels.append(code)
    crops, ok = _crops(items, size, skipped)
    labels = np.asarray(labels, np.int64)[ok]
    data = _finish(
        crops, labels, np.zeros(len(labels), np.int8), FER2013_CLASSES, f"expw {root}", skipped
    )
    carve_test(data, 0.1, seed, "ExpW has no official split")
    carve_validation(data, val_fraction, seed)
    return data


READERS = {"rafdb": read_rafdb, "affectnet": read_affectnet, "expw": read_expw}
