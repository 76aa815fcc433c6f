"""Write FaceArrays in the formats users exchange: FER2013 CSV and class folders."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ferbench.data.arrays import FaceArrays
from ferbench.data.classes import FER2013_CLASSES
from ferbench.errors import FerbenchError
from ferbench.utils.fileio import atomic_path
from ferbench.utils.opencv import cv2

USAGE = ("Training", "PublicTest", "PrivateTest")
FOLDER_SPLIT = ("train", "val", "test")


def write_csv(data: FaceArrays, path: Path) -> Path:
    """FER2013 CSV (emotion,pixels,Usage); labels must follow FER2013's class order."""
    if any(c not in FER2013_CLASSES for c in data.class_names):
        raise FerbenchError("the FER2013 CSV format only holds FER2013's seven classes")
    emotion = [FER2013_CLASSES.index(data.class_names[label]) for label in data.labels]
    pixels = [" ".join(map(str, image.ravel().tolist())) for image in data.images]
    frame = pd.DataFrame(
        {"emotion": emotion, "pixels": pixels, "Usage": [USAGE[s] for s in data.splits]}
    )
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, compression="gzip" if path.suffix == ".gz" else None)
    return path


def write_folders(data: FaceArrays, root: Path) -> Path:
    """``root/{train,val,test}/<class>/<split>_<n>.png``."""
    for index, (image, label, split) in enumerate(zip(data.images, data.labels, data.splits)):
        folder = root / FOLDER_SPLIT[split] / data.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{USAGE[split]}_{index:06d}.png"), image)
    return root


def write_class_folder(
    images, labels, class_names: list[str], root: Path, stems: list[str]
) -> Path:
    """``root/<class>/<stem>.png``: one split's faces as the class folders any tool reads
    (PNG, lossless, so what is written is exactly the faces that were scored)."""
    for image, label, stem in zip(images, labels, stems):
        folder = root / class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{stem}.png"), image)
    return root
