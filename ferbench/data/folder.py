"""Any folder of labelled faces: ``<root>/<class>/*`` or ``<root>/{train,val,test}/<class>/*``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferbench.data.arrays import FaceArrays, stratified_fraction
from ferbench.data.classes import canonical
from ferbench.data.fer2013 import SHOW_LINES, carve_validation, read_folders
from ferbench.data.images import list_images, read_gray_batch
from ferbench.errors import FerbenchError


def has_split_folders(root: Path) -> bool:
    return (root / "train").is_dir()


def class_folders(root: Path) -> tuple[list[Path], list[str]]:
    """The class folders of `root` (sorted, hidden ones skipped) and their canonical names."""
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise FerbenchError(
            f"{root}: no class folders found (expected <root>/<class>/*.png or "
            "<root>/train/<class>/...)"
        )
    return class_dirs, [canonical(d.name) for d in class_dirs]


def synonym_note(class_dirs: list[Path], class_names: list[str]) -> str | None:
    """The note that says which folder names were read through the synonym table."""
    renamed = [f"{d.name}→{c}" for d, c in zip(class_dirs, class_names) if d.name != c]
    return (
        f"class folders read through the synonym table: {', '.join(renamed)}" if renamed else None
    )


def read_class_folders(
    root: Path, size: int, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> FaceArrays:
    """Read a labelled face folder; without split folders carve stratified val and test splits."""
    if has_split_folders(root):
        return read_folders(root, size, val_fraction, seed)
    class_dirs, class_names = class_folders(root)
    files, labels, empty = [], [], []
    for label, class_dir in enumerate(class_dirs):
        class_files = list_images(class_dir)
        if not class_files:
            empty.append(class_dir.name)
        files += class_files
        labels += [label] * len(class_files)
    images, ok, corrupt = read_gray_batch(files, size)
    problems = {}
    if empty:
        problems["empty class folders"] = {"count": len(empty), "folders": empty}
    if corrupt:
        problems["files skipped: unreadable or corrupt"] = {
            "count": len(corrupt),
            "files": [str(f) for f in corrupt[:SHOW_LINES]],
        }
    labels = np.asarray(labels, dtype=np.int64)[ok]
    splits = np.zeros(len(labels), dtype=np.int8)
    data = FaceArrays(
        images, labels, splits, class_names, source=f"face folders {root}", problems=problems
    )
    note = synonym_note(class_dirs, class_names)
    if note:
        data.notes.append(note)
    carve_test(data, test_fraction, seed, "no split folders")
    carve_validation(data, val_fraction, seed)
    return data


def carve_test(data: FaceArrays, fraction: float, seed: int, why: str) -> None:
    """Move a stratified `fraction` of every face to test, in place (sets with no split)."""
    if fraction > 0 and len(data.labels) > 2:
        test = stratified_fraction(data.labels, fraction, seed + 1)
        data.splits[test] = 2
        data.notes.append(f"{why}: carved a stratified {fraction:.0%} test split (seed {seed})")
