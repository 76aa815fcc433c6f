"""FER2013 in its two wild forms: the CSV (emotion,pixels,Usage) and the Kaggle image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ferbench.data.arrays import FaceArrays, stratified_fraction
from ferbench.data.classes import FER2013_CLASSES, canonical
from ferbench.data.images import list_images, read_gray_batch
from ferbench.errors import FerbenchError

USAGE_TO_SPLIT = {"training": 0, "publictest": 1, "privatetest": 2}
PREFIX_TO_SPLIT = {"training_": 0, "publictest_": 1, "privatetest_": 2}
WHERE_TO_GET = (
    "FER2013 is on Kaggle (https://www.kaggle.com/datasets/msambare/fer2013 for the "
    "folders, or the 'challenges-in-representation-learning' competition for "
    "fer2013.csv)"
)
SHOW_LINES = 5


def read_csv_rows(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Parse a FER2013 CSV: images, labels, split codes, kept row numbers and problems found."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise FerbenchError(f"{path}: not a readable CSV ({exc})") from exc
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in ("emotion", "pixels") if c not in frame.columns]
    if missing:
        raise FerbenchError(
            f"{path}: missing column(s) {', '.join(missing)}; a FER2013 CSV has "
            f"emotion,pixels,Usage (found: {', '.join(frame.columns)})"
        )
    pixels = frame["pixels"].str.strip()
    counts = pixels.str.count(" ").to_numpy() + 1
    counts[pixels.str.len().to_numpy() == 0] = 0
    side = np.round(np.sqrt(counts)).astype(int)
    labels = pd.to_numeric(frame["emotion"], errors="coerce").to_numpy()
    if "Usage" in frame.columns:
        splits = frame["Usage"].str.strip().str.lower().map(USAGE_TO_SPLIT).to_numpy()
    else:
        splits = np.zeros(len(frame))
    common = np.bincount(side[side > 0]).argmax() if (side > 0).any() else 48
    bad = {
        "pixel count not a square": (side * side != counts) | (counts == 0),
        f"size differs from {common}x{common}": (side * side == counts)
        & (side != common)
        & (counts > 0),
        "label out of range 0-6": ~np.isin(labels, np.arange(7)),
        "unknown Usage": pd.isna(splits),
    }
    keep = ~np.logical_or.reduce(list(bad.values()))
    rows = np.flatnonzero(keep)
    try:
        flat = np.fromstring(" ".join(pixels.iloc[rows].tolist()), dtype=np.int32, sep=" ")
    except ValueError:  # a non-numeric token somewhere: find the rows one by one
        flat = np.zeros(0, np.int32)
    if flat.size != len(rows) * common * common or (
        flat.size and (flat.min() < 0 or flat.max() > 255)
    ):
        flat, rows, bad["pixel values not integers 0-255"] = _parse_rows_one_by_one(
            pixels, rows, common
        )
    problems = {}
    for reason, mask in bad.items():
        lines = np.flatnonzero(mask) + 2  # 1-based, after the header line
        if len(lines):
            problems[f"rows skipped: {reason}"] = {
                "count": int(len(lines)),
                "lines": lines[:SHOW_LINES].tolist(),
            }
    images = flat.reshape(-1, common, common).astype(np.uint8)
    return images, labels[rows].astype(np.int64), splits[rows].astype(np.int8), rows, problems


def _parse_rows_one_by_one(pixels: pd.Series, rows: np.ndarray, side: int):
    """Slow path for files with non-numeric or out-of-range pixels: find and drop those rows."""
    good, parsed = [], []
    bad = np.zeros(len(pixels), dtype=bool)
    for row in rows:
        try:
            values = np.array(pixels.iat[row].split(), dtype=np.int32)
        except ValueError:
            values = None
        if values is None or values.size != side * side or values.min() < 0 or values.max() > 255:
            bad[row] = True
            continue
        good.append(row)
        parsed.append(values)
    flat = np.concatenate(parsed) if parsed else np.zeros(0, np.int32)
    return flat, np.asarray(good, dtype=np.int64), bad


def read_csv(path: Path) -> FaceArrays:
    images, labels, splits, _, problems = read_csv_rows(path)
    return FaceArrays(
        images,
        labels,
        splits,
        list(FER2013_CLASSES),
        source=f"fer2013 csv {path}",
        problems=problems,
    )


def is_fer2013_csv(path: Path) -> bool:
    name = path.name.lower()
    if not (name.endswith(".csv") or name.endswith(".csv.gz")):
        return False
    try:
        header = pd.read_csv(path, nrows=0).columns
    except Exception:
        return False
    return {"emotion", "pixels"} <= {c.strip() for c in header}


def read_folders(
    root: Path,
    size: int | None,
    val_fraction: float = 0.1,
    seed: int = 0,
    class_names: list[str] | None = None,
) -> FaceArrays:
    """Read ``train/<class>/`` and ``test/<class>/`` (plus ``val/`` when present).

    The official split is restored from ``Training_/PublicTest_/PrivateTest_`` file-name prefixes;
    without them a stratified validation split is carved from train with a fixed seed.
    """
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" not in split_dirs:
        raise FerbenchError(f"{root}: expected a train/ folder with one sub-folder per class")
    found = sorted(
        {canonical(d.name) for p in split_dirs.values() for d in p.iterdir() if d.is_dir()}
    )
    if class_names is None:
        class_names = [c for c in FER2013_CLASSES if c in found] + [
            c for c in found if c not in FER2013_CLASSES
        ]
    files, labels, splits, problems = [], [], [], {}
    empty = []
    for split_name, folder in split_dirs.items():
        default_split = {"train": 0, "val": 1, "test": 2}[split_name]
        for class_dir in sorted(d for d in folder.iterdir() if d.is_dir()):
            class_files = list_images(class_dir)
            if not class_files:
                empty.append(f"{split_name}/{class_dir.name}")
            label = class_names.index(canonical(class_dir.name))
            for file in class_files:
                files.append(file)
                labels.append(label)
                prefix = file.name.lower().split("_")[0] + "_"
                splits.append(PREFIX_TO_SPLIT.get(prefix, default_split))
    if empty:
        problems["empty class folders"] = {"count": len(empty), "folders": empty}
    images, ok, corrupt = read_gray_batch(files, size)
    if corrupt:
        problems["files skipped: unreadable or corrupt"] = {
            "count": len(corrupt),
            "files": [str(f) for f in corrupt[:SHOW_LINES]],
        }
    labels = np.asarray(labels)[ok]
    splits = np.asarray(splits, dtype=np.int8)[ok]
    data = FaceArrays(
        images, labels, splits, class_names, source=f"image folders {root}", problems=problems
    )
    if not (splits == 1).any():
        carve_validation(data, val_fraction, seed)
    return data


def carve_validation(data: FaceArrays, fraction: float, seed: int) -> None:
    """Move a stratified `fraction` of train to val, in place, and say so in the notes."""
    train_idx = np.flatnonzero(data.splits == 0)
    if len(train_idx) < 2 or fraction <= 0:
        return
    picked = stratified_fraction(data.labels[train_idx], fraction, seed)
    data.splits[train_idx[picked]] = 1
    data.notes.append(
        f"no validation split found: carved a stratified {fraction:.0%} of train "
        f"(seed {seed}, {int(picked.sum())} images)"
    )
