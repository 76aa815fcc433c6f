"""FaceArrays: the one in-memory dataset every reader produces and every trainer consumes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class FaceArrays:
    """Grayscale uint8 faces (N×H×W), int labels, a split code per image (0 train, 1 val,
    2 test)."""

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    class_names: list[str]
    source: str = ""
    notes: list[str] = field(default_factory=list)  # e.g. "val carved from train (10%)"
    problems: dict[str, object] = field(default_factory=dict)  # skipped rows, corrupt files, ...
    # per-face values beside the label: AffectNet's valence and arousal, CK+'s and JAFFE's
    # subject (subject-independent folds)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    _fingerprint: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.images = np.ascontiguousarray(self.images, dtype=np.uint8)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.splits = np.asarray(self.splits, dtype=np.int8)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def size(self) -> int:
        return int(self.images.shape[-1]) if len(self) else 0

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.splits == SPLITS.index(name)
        return self.images[mask], self.labels[mask]

    def counts(self) -> np.ndarray:
        """Counts per split × class."""
        table = np.zeros((len(SPLITS), len(self.class_names)), dtype=np.int64)
        np.add.at(table, (self.splits.astype(np.int64), self.labels), 1)
        return table

    @property
    def dataset(self) -> str:
        """The dataset's public name (FER2013, FER+, ...), never a path on this machine: what
        cards, notes and benchmark rows say the faces were."""
        return dataset_name(self.source)

    def fingerprint(self) -> str:
        """Content hash of images, labels, splits and class names (recorded in every run);
        computed once per arrays object (they are never changed in place)."""
        key = (id(self.images), id(self.labels), id(self.splits), tuple(self.class_names))
        if self._fingerprint is None or self._fingerprint[0] != key:
            digest = hashlib.blake2b(digest_size=16)
            for array in (self.images, self.labels, self.splits):
                digest.update(np.ascontiguousarray(array).tobytes())
            digest.update("|".join(self.class_names).encode())
            self._fingerprint = (key, digest.hexdigest())
        return self._fingerprint[1]

    def label_fingerprint(self) -> str:
        """Hash of labels, splits and class names only: the same for a dataset resized to any
        input size, so runs of models with different input sizes share a leaderboard."""
        digest = hashlib.blake2b(digest_size=16)
        for array in (self.labels, self.splits):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update("|".join(self.class_names).encode())
        return digest.hexdigest()

    def subset(self, mask: np.ndarray) -> "FaceArrays":
        return FaceArrays(
            self.images[mask],
            self.labels[mask],
            self.splits[mask],
            list(self.class_names),
            self.source,
            list(self.notes),
            dict(self.problems),
            {name: values[mask] for name, values in self.extras.items()},
        )


_PUBLIC_NAMES = (
    ("fer2013 csv", "FER2013"),
    ("image folders", "FER2013 (image folders)"),
    ("fer+ majority", "FER+ (majority labels)"),
    ("fer+ votes", "FER+ (vote distributions)"),
    ("rafdb", "RAF-DB (basic, aligned)"),
    ("affectnet", "AffectNet (manually annotated)"),
    ("expw", "ExpW"),
    ("ckplus", "CK+"),
    ("jaffe", "JAFFE"),
)


def dataset_name(source: str) -> str:
    """A reader's source line ("fer2013 csv /home/me/fer2013.csv") as the dataset's public
    name ("FER2013"); a folder of the user's own faces is named by the folder, not its path."""
    for prefix, name in _PUBLIC_NAMES:
        if source.startswith(prefix):
            return name
    if source.startswith("face folders "):
        return f"face folders '{source.removeprefix('face folders ').rstrip('/').split('/')[-1]}'"
    return source


def stratified_fraction(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask picking `fraction` of each class (at least one image per non-empty class)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        take = max(1, int(round(len(idx) * fraction)))
        mask[rng.choice(idx, size=take, replace=False)] = True
    return mask
