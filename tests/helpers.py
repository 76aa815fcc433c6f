"""Small builders shared by several test modules."""

from __future__ import annotations

from pathlib import Path


def empty_folder(root: Path) -> Path:
    """An existing folder with no class folders: its trial fails when the data loads."""
    (root / "empty").mkdir(exist_ok=True)
    return root / "empty"
