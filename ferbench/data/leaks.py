"""Faces of the validation and test splits that were also trained on (near-duplicates).

FER2013 holds 531 groups of pixel-identical images shared between Training and its test
splits, and more near-copies (re-encoded, re-cropped, watermarked).  Two steps find them:

1. Candidates: a perceptual hash per face (the signs of the 8×8 lowest frequencies of the DCT of
   its 32×32 thumbnail against their median, as pHash).  It survives JPEG re-encoding (at most 4
   of 64 bits at quality 75) but not a shift (1-2 px move 14-22 bits), so each validation or
   test face is hashed again at every shift of up to ±2 px and compared with every training
   face at its best alignment; pairs within `CANDIDATE_BITS` are candidates.
2. Confirmation: the normalised cross-correlation of the two faces at their best alignment
   (3-px border left out) must reach `MIN_SIMILARITY`.  Looked at on FER2013 PrivateTest, pairs
   at 0.86-0.90 were the same photo 7 times in 8, at 0.90-0.93 8 in 8; the hash distance alone
   does not separate them (at 6 bits 29% of pairs correlate at 0.9 or more, at 8 bits 2%).

Exact copies (pixel-identical) are counted among the leaked.  Brute force, about 40 s for
FER2013 on 2 cores, so the report is kept in the cache folder, keyed by the faces' fingerprint.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from ferbench.data.arrays import SPLITS, FaceArrays
from ferbench.utils.fileio import cache_dir, write_json
from ferbench.utils.opencv import cv2

CANDIDATE_BITS = 8
MIN_SIMILARITY = 0.9
SHIFT = 2  # pixels, each way
_WEIGHTS = (np.uint64(1) << np.arange(64, dtype=np.uint64)).astype(np.uint64)


def _dct_rows(n: int = 32, keep: int = 8) -> np.ndarray:
    """The first `keep` rows of the orthonormal DCT-II matrix of size n."""
    k, i = np.arange(keep)[:, None], np.arange(n)[None, :]
    rows = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    rows[0] /= np.sqrt(2.0)
    return rows.astype(np.float32)


_DCT = _dct_rows()


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """One 64-bit pHash per face of an N×H×W uint8 stack."""
    if not len(images):
        return np.zeros(0, np.uint64)
    thumbs = np.stack(
        [cv2.resize(im, (32, 32), interpolation=cv2.INTER_AREA) for im in images]
    ).astype(np.float32)
    low = np.einsum("ij,njk,lk->nil", _DCT, thumbs, _DCT).reshape(len(images), 64)
    bits = low > np.median(low[:, 1:], axis=1, keepdims=True)
    return (bits.astype(np.uint64) * _WEIGHTS).sum(axis=1, dtype=np.uint64)


def shifted(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The faces moved by (dx, dy) pixels, the border repeated."""
    pad = np.pad(images, ((0, 0), (SHIFT, SHIFT), (SHIFT, SHIFT)), mode="edge")
    h, w = images.shape[1:]
    return pad[:, SHIFT - dy : SHIFT - dy + h, SHIFT - dx : SHIFT - dx + w]


def nearest(train: np.ndarray, query: np.ndarray, chunk: int = 256):
    """For each query hash, the closest training hash: (distance in bits, index)."""
    best = np.full(len(query), 65, dtype=np.int64)
    where = np.zeros(len(query), dtype=np.int64)
    for start in range(0, len(query), chunk):
        distance = np.bitwise_count(query[start : start + chunk, None] ^ train[None, :])
        where[start : start + chunk] = distance.argmin(1)
        best[start : start + chunk] = distance.min(1)
    return best, where


def aligned_nearest(train: np.ndarray, faces: np.ndarray):
    """Each face's closest training hash over every shift of up to ±SHIFT pixels."""
    best = np.full(len(faces), 65, dtype=np.int64)
    where = np.zeros(len(faces), dtype=np.int64)
    for dy in range(-SHIFT, SHIFT + 1):
        for dx in range(-SHIFT, SHIFT + 1):
            distance, index = nearest(train, perceptual_hashes(shifted(faces, dx, dy)))
            closer = distance < best
            best[closer], where[closer] = distance[closer], index[closer]
    return best, where


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two faces at the best of the ±SHIFT alignments of `b`,
    the border that the shifts fill left out."""
    x = a[SHIFT + 1 : -SHIFT - 1, SHIFT + 1 : -SHIFT - 1].astype(np.float32).ravel()
    x = x - x.mean()
    best = -1.0
    for dy in range(-SHIFT, SHIFT + 1):
        for dx in range(-SHIFT, SHIFT + 1):
            moved = shifted(b[None], dx, dy)[0]
            y = moved[SHIFT + 1 : -SHIFT - 1, SHIFT + 1 : -SHIFT - 1].astype(np.float32).ravel()
            y = y - y.mean()
            denominator = float(np.linalg.norm(x) * np.linalg.norm(y))
            if denominator > 0:
                best = max(best, float(x @ y) / denominator)
            elif not x.any() and not y.any():  # two flat faces
                best = max(best, 1.0 if a.mean() == b.mean() else 0.0)
    return best


def leak_report(data: FaceArrays, cache: bool = True) -> dict:
    """Per evaluation split: the indices (into `data`) of faces with a near-duplicate in the
    training split, the training face each matches, its hash distance and similarity, and how
    many are pixel-identical.  `val_test`: the test faces with a near-duplicate in the
    validation split, found the same way (validation chooses checkpoints, temperatures and
    ensemble members, so a face in both is a test face that helped choose)."""
    key = f"{data.fingerprint()}-{CANDIDATE_BITS}-{MIN_SIMILARITY}-{SHIFT}-v2"
    file = cache_dir() / f"leaks-{key}.json"
    if cache:
        try:
            return json.loads(file.read_text())
        except (OSError, ValueError):
            pass
    train = np.flatnonzero(data.splits == 0)
    report: dict = {"train": int(len(train)), "candidate_bits": CANDIDATE_BITS,
                    "min_similarity": MIN_SIMILARITY, "shift": SHIFT}  # fmt: skip
    for code, split in enumerate(SPLITS[1:], 1):
        report[split] = _duplicates(data, np.flatnonzero(data.splits == code), train)
    report["val_test"] = _duplicates(
        data, np.flatnonzero(data.splits == 2), np.flatnonzero(data.splits == 1)
    )
    if cache:
        try:
            write_json(file, report)
        except OSError:
            pass
    return report


def _duplicates(data: FaceArrays, queries: np.ndarray, pool: np.ndarray) -> dict:
    """The faces of `queries` (indices into `data`) with a near-duplicate among those of
    `pool`: the face each matches, its hash distance and similarity, and how many are
    pixel-identical."""
    found: list[tuple[int, int, int, float]] = []
    if len(queries) and len(pool):
        distance, match = aligned_nearest(
            perceptual_hashes(data.images[pool]), data.images[queries]
        )
        for q, t, d in zip(queries, pool[match], distance):
            if d <= CANDIDATE_BITS:
                score = similarity(data.images[q], data.images[t])
                if score >= MIN_SIMILARITY:
                    found.append((int(q), int(t), int(d), round(score, 4)))
    return {
        "faces": int(len(queries)),
        "leaked": [f[0] for f in found],
        "match": [f[1] for f in found],
        "distance": [f[2] for f in found],
        "similarity": [f[3] for f in found],
        "exact": sum(_same_pixels(data.images[q], data.images[t]) for q, t, _, _ in found),
    }


def leaked_mask(data: FaceArrays, split: str, cache: bool = True) -> np.ndarray:
    """For the faces of `split` in their order: True where the face was also trained on."""
    idx = np.flatnonzero(data.splits == SPLITS.index(split))
    if split == "train" or not len(idx):
        return np.zeros(len(idx), dtype=bool)
    leaked = set(leak_report(data, cache=cache)[split]["leaked"])
    return np.array([i in leaked for i in idx.tolist()], dtype=bool)


def _same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    return hashlib.blake2b(a.tobytes()).digest() == hashlib.blake2b(b.tobytes()).digest()


def clean_accuracy(
    data: FaceArrays, split: str, correct: np.ndarray, kept=None, leaked=None
) -> dict:
    """`leaked` (faces of `split` also trained on), `accuracy_clean` without them and
    `accuracy_leaked` on them, for per-face `correct` flags of that split in its order (`kept`:
    which of the split's faces were evaluated); empty without a training split.  `leaked`: which
    faces of the split the model trained on, where known otherwise (data/identity.py); by
    default the near-duplicates of the data's own training split."""
    if split not in ("val", "test") or not len(correct):
        return {}
    if leaked is None:
        if not (data.splits == 0).any():
            return {}
        leaked = leaked_mask(data, split)
    leaked = leaked[kept] if kept is not None else leaked
    return {
        "leaked": int(leaked.sum()),
        "accuracy_clean": float(correct[~leaked].mean()) if (~leaked).any() else float("nan"),
        "accuracy_leaked": float(correct[leaked].mean()) if leaked.any() else float("nan"),
    }
