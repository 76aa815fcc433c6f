"""The field's benchmarks in their published layouts, read as they are distributed.

Each layout has its own label codes, mapped here to ferbench's class names once (a wrong code
map gives a plausible-looking, wrong benchmark):

- **RAF-DB (basic)**: ``EmoLabel/list_patition_label.txt`` (``train_00001.jpg 5``; 1-7 =
  surprise, fear, disgust, happy, sad, angry, neutral), faces in
  ``Image/aligned/<stem>_aligned.jpg`` (or, where only ``Image/original/<name>`` is there, found
  in the photos by the detector); the split from the ``train_``/``test_`` prefix, validation
  carved from train.
- **AffectNet** (manually annotated part): ``Manually_Annotated_file_lists/training.csv`` and
  ``validation.csv`` (expression 0-7 = neutral, happy, sad, surprise, fear, disgust, angry,
  contempt; 8-10 = none, uncertain, no face: left out and counted), each face cropped by its
  box from ``Manually_Annotated_Images/``; ``validation.csv`` is the test split (the official
  test set is not public), validation carved from training; valence and arousal are kept.
- **ExpW**: ``label/label.lst`` (``image face_id top left right bottom confidence label``, labels
  0-6 in FER2013's order), several boxed faces per scene under ``image/origin/``; no official
  split, so test and validation are carved as for class folders.
- **CK+**: ``cohn-kanade-images/S###/###/*.png`` with ``Emotion/S###/###/<frame>_emotion.txt``
  (one number 0-7 = neutral, anger, contempt, disgust, fear, happy, sadness, surprise) for the
  last frame of a labelled sequence; its last three frames take the label (``neutral: first``
  adds each sequence's first frame as neutral); faces found by the detector.
- **JAFFE**: a flat folder of ``KA.AN1.39.tiff`` names, the class from the two letters after
  the first dot, the subject from the two before it; faces found by the detector.

CK+ and JAFFE have no official split: without ``folds`` every face is a test face (for
``eval``); ``folds: 10, fold: k`` makes subject-independent folds (`assign_folds`), so no person
is in both training and test.  Detection runs once, when the arrays are built and cached.

Bad input loses nothing else: a label line naming a missing image, an unknown code or a
truncated row is skipped and counted in the arrays' problems.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from ferbench.config import DataSpec
from ferbench.data.arrays import FaceArrays
from ferbench.data.classes import FER2013_CLASSES
from ferbench.data.fer2013 import SHOW_LINES, carve_validation
from ferbench.data.folder import carve_test
from ferbench.data.images import read_gray_batch, read_gray_crops, resize_square, to_gray
from ferbench.errors import FerbenchError
from ferbench.faces.defaults import FER_MARGIN
from ferbench.utils.opencv import cv2

RAFDB_LABELS = "EmoLabel/list_patition_label.txt"  # sic: the file is named so in RAF-DB
RAFDB_CODES = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry",
               7: "neutral"}  # fmt: skip
AFFECTNET_LISTS = "Manually_Annotated_file_lists"
AFFECTNET_CODES = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt"]
AFFECTNET_CLASSES = [*FER2013_CLASSES, "contempt"]
EXPW_LABELS = "label/label.lst"
CKPLUS_IMAGES, CKPLUS_LABELS = "cohn-kanade-images", "Emotion"
CKPLUS_CODES = ["neutral", "angry", "contempt", "disgust", "fear", "happy", "sad", "surprise"]
CKPLUS_FRAMES = 3  # the last frames of a labelled sequence that take its label
JAFFE_NAME = re.compile(r"^([A-Z]{2})\.([A-Z]{2})\d*\.\d+\.tiff?$", re.IGNORECASE)
JAFFE_CODES = {"AN": "angry", "DI": "disgust", "FE": "fear", "HA": "happy", "NE": "neutral",
               "SA": "sad", "SU": "surprise"}  # fmt: skip
DEFAULT_SIZE = 100  # RAF-DB's aligned faces are 100x100; box crops are resized to it too


def detect_published(path: Path) -> str | None:
    """The layout of a dataset folder, or None."""
    if (path / RAFDB_LABELS).is_file():
        return "rafdb"
    if (path / AFFECTNET_LISTS).is_dir():
        return "affectnet"
    if (path / EXPW_LABELS).is_file():
        return "expw"
    if (path / CKPLUS_IMAGES).is_dir() and (path / CKPLUS_LABELS).is_dir():
        return "ckplus"
    if path.is_dir() and any(JAFFE_NAME.match(f.name) for f in path.iterdir()):
        return "jaffe"
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


def read_rafdb(root: Path, spec: DataSpec) -> FaceArrays:
    """RAF-DB basic: aligned 100x100 faces, 7 classes, train/test from the file names."""
    size = spec.size or DEFAULT_SIZE
    skipped, files, labels, splits = _Skipped(), [], [], []
    aligned, original = root / "Image" / "aligned", root / "Image" / "original"
    if not aligned.is_dir() and not original.is_dir():
        raise FerbenchError(f"{root}: RAF-DB's Image/aligned/ (or Image/original/) is missing")
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
        image = aligned / f"{Path(name).stem}_aligned.jpg" if aligned.is_dir() else original / name
        if not image.is_file():
            skipped.add("label lines naming a missing image", where)
            continue
        files.append(image)
        labels.append(FER2013_CLASSES.index(RAFDB_CODES[code]))
        splits.append(split)
    if aligned.is_dir():
        images, ok, corrupt = read_gray_batch(files, size)
        for path in corrupt:
            skipped.add("files skipped: unreadable or corrupt", str(path))
    else:  # the original photos: the face found by the detector
        from ferbench.faces.detect import still_detector

        images, ok = _detected_faces(files, size, skipped, still_detector())
    data = _finish(
        images,
        np.asarray(labels, np.int64)[ok],
        np.asarray(splits, np.int8)[ok],
        FER2013_CLASSES,
        f"rafdb {root}",
        skipped,
    )
    carve_validation(data, spec.val_fraction, spec.seed)
    return data


def read_affectnet(root: Path, spec: DataSpec) -> FaceArrays:
    """AffectNet's manually annotated part: faces cropped by their boxes, 8 classes; valence
    and arousal kept per face (``data.extras``)."""
    size = spec.size or DEFAULT_SIZE
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
    v, a = np.asarray(valence, np.float32)[ok], np.asarray(arousal, np.float32)[ok]
    data = _finish(
        crops,
        np.asarray(labels, np.int64)[ok],
        np.asarray(splits, np.int8)[ok],
        AFFECTNET_CLASSES,
        f"affectnet {root}",
        skipped,
    )
    data.extras = {"valence": v, "arousal": a}
    data.notes.append(
        f"valence mean {v.mean():+.2f} (sd {v.std():.2f}), arousal mean {a.mean():+.2f} "
        f"(sd {a.std():.2f}) over {len(v):,} faces; validation.csv is the test split"
    )
    carve_validation(data, spec.val_fraction, spec.seed)
    return data


def read_expw(root: Path, spec: DataSpec) -> FaceArrays:
    """ExpW: every boxed face of every scene, labels in FER2013's order; splits carved."""
    size = spec.size or DEFAULT_SIZE
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
    carve_test(data, 0.1, spec.seed, "ExpW has no official split")
    carve_validation(data, spec.val_fraction, spec.seed)
    return data


def _detected_faces(files: list[Path], size: int, skipped: _Skipped, detector):
    """The largest face `detector` finds in each photo, framed like FER2013's crops; photos
    without a face, or unreadable, are counted.  Returns the faces and which files gave one."""
    from ferbench.faces.detect import crop_faces

    faces, ok = [], np.zeros(len(files), bool)
    for i, path in enumerate(files):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            skipped.add("files skipped: unreadable or corrupt", str(path))
            continue
        boxes = detector(image)
        if not boxes:
            skipped.add("images without a face found", str(path))
            continue
        largest = max(boxes, key=lambda b: b[2] * b[3])
        faces.append(resize_square(to_gray(crop_faces(image, [largest], FER_MARGIN)[0]), size))
        ok[i] = True
    return np.stack(faces) if faces else np.zeros((0, size, size), np.uint8), ok


def _detected_set(files, labels, subjects, classes, source, size, skipped) -> FaceArrays:
    """Faces of whole photos (one each: `PortraitDetector`), every one a test face until
    `assign_folds` splits them."""
    from ferbench.faces.detect import PortraitDetector

    detector = PortraitDetector()
    faces, ok = _detected_faces(files, size, skipped, detector)
    labels = np.asarray(labels, np.int64)[ok]
    data = _finish(faces, labels, np.full(len(labels), 2, np.int8), classes, source, skipped)
    subject = np.unique(np.asarray(subjects), return_inverse=True)[1].astype(np.int32)
    data.extras = {"subject": subject[ok]}
    data.notes.append(
        f"{len(set(data.extras['subject'].tolist()))} subjects; no official split: every face "
        "is a test face unless data.folds and data.fold make subject-independent folds"
    )
    if detector.second_looks:
        data.notes.append(
            f"{detector.second_looks} faces found on a second look (blurred or dim photos: lower "
            "detector thresholds, then an equalised histogram)"
        )
    return data


def read_ckplus(root: Path, spec: DataSpec) -> FaceArrays:
    """CK+: the last three frames of each labelled sequence (and its first as neutral with
    `neutral: first`), faces found by the detector, 8 classes, subjects kept for folds."""
    skipped, files, labels, subjects = _Skipped(), [], [], []
    images_root, labels_root = root / CKPLUS_IMAGES, root / CKPLUS_LABELS
    for sequence in sorted(p for p in images_root.glob("*/*") if p.is_dir()):
        frames = sorted(sequence.glob("*.png"))
        if not frames:
            continue
        where = f"{sequence.parent.name}/{sequence.name}"
        label_files = sorted((labels_root / sequence.parent.name / sequence.name).glob("*.txt"))
        if not label_files:
            skipped.add("sequences without an Emotion file (left out)", where)
            continue
        try:
            code = int(float(label_files[-1].read_text().split()[0]))
        except (IndexError, ValueError):
            skipped.add("Emotion files without a number", str(label_files[-1]))
            continue
        if not 0 <= code < len(CKPLUS_CODES):
            skipped.add("unknown emotion codes (CK+ uses 0-7)", f"{where}: {code}")
            continue
        chosen = [(f, CKPLUS_CODES[code]) for f in frames[-CKPLUS_FRAMES:]]
        if spec.neutral == "first" and len(frames) > CKPLUS_FRAMES:
            chosen.append((frames[0], "neutral"))
        for frame, name in chosen:
            files.append(frame)
            labels.append(AFFECTNET_CLASSES.index(name))
            subjects.append(sequence.parent.name)
    return _detected_set(
        files, labels, subjects, AFFECTNET_CLASSES, f"ckplus {root}",
        spec.size or DEFAULT_SIZE, skipped,
    )  # fmt: skip


def read_jaffe(root: Path, spec: DataSpec) -> FaceArrays:
    """JAFFE as distributed: ``KA.AN1.39.tiff`` = subject KA, angry; faces found by the
    detector; 7 classes in FER2013's order, subjects kept for folds."""
    skipped, files, labels, subjects = _Skipped(), [], [], []
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        match = JAFFE_NAME.match(path.name)
        if match is None:
            if path.suffix.lower() in (".tif", ".tiff"):
                skipped.add("names not SUBJECT.CLASS.N.tiff", path.name)
            continue
        subject, code = match.group(1).upper(), match.group(2).upper()
        if code not in JAFFE_CODES:
            skipped.add("unknown class letters (JAFFE: AN DI FE HA NE SA SU)", path.name)
            continue
        files.append(path)
        labels.append(FER2013_CLASSES.index(JAFFE_CODES[code]))
        subjects.append(subject)
    return _detected_set(
        files, labels, subjects, FER2013_CLASSES, f"jaffe {root}",
        spec.size or DEFAULT_SIZE, skipped,
    )  # fmt: skip


def assign_folds(data: FaceArrays, folds: int, fold: int, seed: int) -> None:
    """Subject-independent folds, in place: subjects shuffled (seeded) and dealt round-robin
    into `folds` groups; fold `fold` is the test split, the next one validation, the rest
    training, so no person is in two splits."""
    if "subject" not in data.extras:
        raise FerbenchError(
            f"data.folds: {data.dataset} has no subjects to fold by (CK+ and JAFFE have)"
        )
    subjects = np.unique(data.extras["subject"])
    if not 2 <= folds <= len(subjects):
        raise FerbenchError(
            f"data.folds must be between 2 and the {len(subjects)} subjects, not {folds}"
        )
    if not 0 <= fold < folds:
        raise FerbenchError(f"data.fold must be between 0 and {folds - 1}, not {fold}")
    order = np.random.default_rng(seed).permutation(subjects)
    group = dict(zip(order.tolist(), np.arange(len(order)) % folds))
    member = np.array([group[s] for s in data.extras["subject"].tolist()])
    data.splits[:] = 0
    data.splits[member == (fold + 1) % folds] = 1
    data.splits[member == fold] = 2
    data.notes.append(
        f"subject-independent fold {fold} of {folds} (seed {seed}): "
        f"{len(np.unique(data.extras['subject'][data.splits == 2]))} test subjects"
    )


READERS = {
    "rafdb": read_rafdb,
    "affectnet": read_affectnet,
    "expw": read_expw,
    "ckplus": read_ckplus,
    "jaffe": read_jaffe,
}
# the settings each reader's arrays depend on (the cache key); folds are applied afterwards
READER_OPTIONS = {
    "rafdb": ("size", "val_fraction", "seed"),
    "affectnet": ("size", "val_fraction", "seed"),
    "expw": ("size", "val_fraction", "seed"),
    "ckplus": ("size", "neutral"),
    "jaffe": ("size",),
}
