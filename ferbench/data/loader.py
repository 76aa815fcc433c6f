"""From a dataset spec (``{kind: fer2013, path: ..., classes: [...], size: 48}``) to FaceArrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferbench.config import DATA_KINDS, DataSpec
from ferbench.data import fer2013, ferplus, folder, published, synthetic
from ferbench.data.arrays import FaceArrays, stratified_fraction
from ferbench.data.cache import cached
from ferbench.data.classes import apply_class_set
from ferbench.data.images import resize_all
from ferbench.errors import FerbenchError

ACCEPTED = (
    "a FER2013 CSV (emotion,pixels,Usage; .csv or .csv.gz), FER2013 folders "
    "(train/<class>/, test/<class>/), a labelled face folder (<root>/<class>/*), RAF-DB, "
    "AffectNet, ExpW, CK+ or JAFFE as distributed, or kind: synthetic"
)


def detect_kind(path: Path) -> str:
    if path.is_file():
        if fer2013.is_fer2013_csv(path):
            return "fer2013"
        raise FerbenchError(
            f"{path}: not a FER2013 CSV (needs columns emotion,pixels); ferbench reads {ACCEPTED}"
        )
    for name in ("fer2013.csv", "fer2013.csv.gz"):
        if (path / name).is_file():
            return "fer2013"
    return published.detect_published(path) or "folder"


def resolve_source(path: str | None, base_dir: Path | None = None) -> Path:
    if not path:
        raise FerbenchError(f"data.path is required for this kind; ferbench reads {ACCEPTED}")
    candidate = Path(path).expanduser()
    if not candidate.is_absolute() and not candidate.exists() and base_dir is not None:
        if (base_dir / candidate).exists():
            candidate = base_dir / candidate
    if not candidate.exists():
        raise FerbenchError(
            f"data not found: {path}. ferbench reads {ACCEPTED}. "
            f"{fer2013.WHERE_TO_GET}; point the experiment at it with "
            f"--set data.path=/path/to/fer2013.csv"
        )
    return candidate


def _read_raw(spec: DataSpec, base_dir: Path | None) -> FaceArrays:
    """Decode the source (cached); class sets and subsamples are applied afterwards."""
    kind = spec.kind
    if kind == "synthetic":
        size = spec.size or 48
        options = {
            "kind": "synthetic",
            "n": spec.n_per_class,
            "size": size,
            "seed": spec.seed,
            "version": 1,
        }
        return cached(
            [],
            options,
            lambda: synthetic.make_synthetic(spec.n_per_class, size, spec.seed),
            spec.cache,
        )
    path = resolve_source(spec.path, base_dir)
    if kind == "auto":
        kind = detect_kind(path)
    if kind in ("fer2013", "ferplus") and path.is_dir():
        csv = next(
            (path / n for n in ("fer2013.csv", "fer2013.csv.gz") if (path / n).is_file()), None
        )
        if kind == "ferplus" and csv is None:
            raise FerbenchError(f"{path}: FER+ needs fer2013.csv (the votes apply row by row)")
        path = csv or path
    if kind == "ferplus":
        votes = resolve_source(spec.labels or str(path.parent / "fer2013new.csv"), base_dir)
        options = {"kind": "ferplus", "contempt": spec.contempt, "version": 2}  # 2: votes kept
        return cached(
            [path, votes],
            options,
            lambda: ferplus.read_ferplus(path, votes, spec.contempt),
            spec.cache,
        )
    if kind == "fer2013" and path.is_file():
        return cached([path], {"kind": "fer2013-csv"}, lambda: fer2013.read_csv(path), spec.cache)
    if kind in published.READERS:
        read = published.READERS[kind]
        options = {"kind": kind, **{k: getattr(spec, k) for k in published.READER_OPTIONS[kind]}}
        return cached([path], options, lambda: read(path, spec), spec.cache)
    if kind in ("fer2013", "folder"):
        options = {"kind": "folder", "size": spec.size, "val": spec.val_fraction, "seed": spec.seed}
        return cached(
            [path],
            options,
            lambda: folder.read_class_folders(path, spec.size, spec.val_fraction, seed=spec.seed),
            spec.cache,
        )
    raise FerbenchError(f"unknown data kind '{kind}'; choose one of {', '.join(DATA_KINDS)}")


def load_dataset(spec: DataSpec | dict, base_dir: Path | None = None) -> FaceArrays:
    """Load, cache, resize, apply the class set and subsample, as the spec says."""
    if isinstance(spec, dict):
        spec = DataSpec(**spec)
    data = _read_raw(spec, base_dir)
    if spec.folds:
        published.assign_folds(data, spec.folds, spec.fold, spec.seed)
    if spec.size and data.size != spec.size and len(data):
        data.images = resize_all(data.images, spec.size)
    data = apply_class_set(data, spec.classes, spec.merge, spec.drop)
    if spec.fraction < 1.0:
        keep = np.zeros(len(data), dtype=bool)
        for split in range(3):
            idx = np.flatnonzero(data.splits == split)
            if len(idx):
                keep[idx[stratified_fraction(data.labels[idx], spec.fraction, spec.seed)]] = True
        data = data.subset(keep)
        data.notes.append(f"stratified {spec.fraction:.0%} subsample of every split")
    return data
