"""Image files: listing, parallel decoding to grayscale, resizing."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ferbench.utils.opencv import cv2

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


def read_gray_crops(
    items: list[tuple[Path, tuple[int, int, int, int]]], size: int
) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Face crops given by boxes (x, y, w, h) in image files, as size×size grey faces; each
    file is decoded once however many faces it holds.  Returns the crops, a kept mask (False:
    the file is unreadable or the box lies outside it) and the unreadable files."""
    by_file: dict[Path, list[int]] = {}
    for index, (path, _) in enumerate(items):
        by_file.setdefault(path, []).append(index)
    crops: list[np.ndarray | None] = [None] * len(items)
    corrupt: list[Path] = []

    def decode(path: Path) -> None:
        image = _read_one(path, None)
        if image is None:
            corrupt.append(path)
            return
        height, width = image.shape
        for index in by_file[path]:
            x, y, w, h = items[index][1]
            x0, y0 = max(0, int(x)), max(0, int(y))
            x1, y1 = min(width, int(x + w)), min(height, int(y + h))
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                crops[index] = resize_square(image[y0:y1, x0:x1], size)

    workers = min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(decode, list(by_file)))
    ok = np.array([c is not None for c in crops], dtype=bool)
    kept = [c for c in crops if c is not None]
    stack = np.stack(kept) if kept else np.zeros((0, size, size), np.uint8)
    return stack, ok, corrupt
