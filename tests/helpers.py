"""Small builders shared by several test modules."""

from __future__ import annotations

from pathlib import Path


def empty_folder(root: Path) -> Path:
    """An existing folder with no class folders: its trial fails when the data loads."""
    (root / "empty").mkdir(exist_ok=True)
    return root / "empty"


def noise_faces(root: Path, names: tuple[str, ...], count: int, side: int = 48, seed: int = 0):
    """`root/<name>/<i>.png` for each class name: random grey squares (labels, not content)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cv2.imwrite(str(root / name / f"{i}.png"), rng.integers(0, 256, (side, side), np.uint8))
    return root
