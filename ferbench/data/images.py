"""Image files: listing, parallel decoding to grayscale, resizing."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ferbench.opencv import cv2

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image


def resize_square(gray: np.ndarray, size: int) -> np.ndarray:
    if gray.shape == (size, size):
        return gray
    shrinking = gray.shape[0] > size or gray.shape[1] > size
    return cv2.resize(
        gray, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )


def resize_all(images: np.ndarray, size: int) -> np.ndarray:
    """Every image of an N×H×W stack as size×size (the same array when already that size)."""
    if len(images) == 0 or images.shape[1:] == (size, size):
        return images
    return np.stack([resize_square(image, size) for image in images])


def _read_one(path: Path, size: int | None) -> np.ndarray | None:
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        return None
    if image.dtype != np.uint8:  # 16-bit PNG/TIFF
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1, int(image.max())))
    gray = to_gray(image)
    return resize_square(gray, size) if size else gray


def read_gray_batch(
    files: list[Path], size: int | None
) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Decode files in threads (OpenCV releases the GIL); return images, kept mask, corrupt files.

    Without `size`, every image must share the first readable image's size.
    """
    workers = min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(workers) as pool:
        decoded = list(pool.map(lambda f: _read_one(f, size), files, chunksize=64))
    ok = np.array([d is not None for d in decoded], dtype=bool)
    corrupt = [f for f, d in zip(files, decoded) if d is None]
    kept = [d for d in decoded if d is not None]
    if not kept:
        side = size or 48
        return np.zeros((0, side, side), np.uint8), ok, corrupt
    if size is None:
        side = kept[0].shape[0]
        kept = [resize_square(k, side) for k in kept]
    return np.stack(kept), ok, corrupt
