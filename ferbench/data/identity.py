"""Which faces a model was trained on, against the splits of a dataset: the one check behind
distillation teachers, fine-tuning starts and eval's leak figures.

A model is known by the data fingerprint recorded with it (its run's config.yaml, its
checkpoint, the shipped index) at the face size it was taken at.  Data with that fingerprint
is the same faces in the same splits: the model trained on exactly its training split.  Any
other data is compared face by face: the model's training faces are loaded (from its run's data
spec, or from the other data's own file read as the model's dataset, e.g. a FER+ set's
fer2013.csv for a FER2013 model) and only accepted as the model's where their fingerprint is
the recorded one; then each face is hashed at the same size (equal sources give equal pixels)
and the other data's validation and test faces are looked up among the model's training faces.
So a teacher trained on a folder split with another seed, whose fingerprint of the whole set
may even match its student's in every face, is caught by the faces it trained on.  Exact:
pixel-identical faces after the same decoding and resizing; re-encoded copies are the
near-duplicate search's job (data/leaks.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferbench.config import DataSpec
from ferbench.data.arrays import FaceArrays
from ferbench.errors import FerbenchError

JUDGED = ("val", "test")  # what a model that teaches or starts a run must never have trained on


@dataclass(frozen=True)
class TrainedOn:
    """What a model's training faces are known by."""

    name: str  # as the user named the model: a shipped tag, a run folder, a checkpoint
    fingerprint: str | None  # data fingerprint recorded with the model (None: not recorded)
    size: int | None  # the face size that fingerprint was taken at
    spec: DataSpec | None = None  # its run's data (size included), where its run folder is here
    dataset: str = ""  # the public name of its data, for messages


@dataclass(frozen=True)
class Seen:
    """How a model's training faces meet a dataset's splits."""

    verdict: str  # same (exactly its training split), apart, seen, or unknown (not checkable)
    # per split of the data: how many of its faces the model trained on that the data's own
    # training split lacks (what a student would learn from the model only)
    counts: dict[str, int] = field(default_factory=dict)
    # per split of the data, in its order: True where the model trained on the face
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    reason: str = ""  # for unknown: why; for seen: how the model's data differs


def trained_on(name: str, meta: dict, path: Path | str | None = None) -> TrainedOn:
    """From a checkpoint's (or exported model's) metadata; the run folder the file sits in, when
    it is one, adds its data spec."""
    preprocess = meta.get("preprocess") or {}
    size = preprocess.get("input_size")
    fingerprint = meta.get("data_fingerprint") or None
    spec, dataset = None, ""
    if path is not None:
        config = _run_config(Path(path).parent)
        if config:
            data = dict(config.get("data") or {})
            size = data.get("size") or size
            fingerprint = config.get("data_fingerprint") or fingerprint
            dataset = str(config.get("dataset") or "")
            try:
                spec = DataSpec(**data)
            except TypeError:  # a config from another ferbench version
                spec = None
    return TrainedOn(name, fingerprint, int(size) if size else None, spec, dataset)


def seen_faces(
    model: TrainedOn,
    spec: DataSpec,
    data: FaceArrays | None = None,
    base_dir: Path | None = None,
) -> Seen:
    """Whether `model` trained on faces of the validation or test split of the data `spec`
    loads (`data`: those faces already loaded, at any size)."""
    size = model.size or (data.size if data is not None else spec.size)
    if data is not None and data.size == size:
        faces = data
    else:
        faces = _load(spec.replace(size=size), base_dir)
        if faces is None:
            return Seen("unknown", reason=f"its data {spec.path or spec.kind} did not load here")
    if model.fingerprint and faces.fingerprint() == model.fingerprint:
        return Seen("same")
    own = _own_faces(model, spec, size, base_dir)
    if own is None:
        what = model.dataset or "data"
        where = f"fingerprint {model.fingerprint[:8]}" if model.fingerprint else "not recorded"
        return Seen("unknown", reason=f"its training faces ({what}, {where}) are not here")
    trained = face_hashes(own.split("train")[0])
    own_train = face_hashes(faces.split("train")[0])
    counts, masks = {}, {}
    for split in JUDGED:
        hashes = face_hashes(faces.split(split)[0])
        masks[split] = np.isin(hashes, trained)
        counts[split] = int((masks[split] & ~np.isin(hashes, own_train)).sum())
    verdict = "seen" if any(counts.values()) else "apart"
    return Seen(verdict, counts, masks, _difference(model.spec, spec))


def refuse_seen(
    model: TrainedOn,
    key: str,
    spec: DataSpec,
    data: FaceArrays | None = None,
    base_dir: Path | None = None,
) -> str:
    """One line saying what was checked; a one-line error naming `key` when the model trained
    on validation or test faces of the data (a teacher or a start that saw them hands them to
    the student, and validation chooses its checkpoint)."""
    seen = seen_faces(model, spec, data, base_dir)
    if seen.verdict == "seen":
        counts = [f"{seen.counts[s]:,} {s}" for s in ("test", "val") if seen.counts.get(s)]
        why = f" ({seen.reason})" if seen.reason else ""
        raise FerbenchError(
            f"{key}: {model.name} was trained on {' and '.join(counts)} faces of this run"
            f"{why}; use one trained on this run's training split only"
        )
    if seen.verdict == "same":
        return f"{key}: {model.name} was trained on this run's training split"
    if seen.verdict == "apart":
        return f"{key}: {model.name} never trained on this run's validation or test faces"
    return (
        f"{key}: could not check that {model.name} never saw this run's test faces: {seen.reason}"
    )


def leak_figures(
    model: TrainedOn,
    spec: DataSpec,
    data: FaceArrays,
    split: str,
    correct: np.ndarray,
    kept: np.ndarray | None = None,
) -> dict:
    """eval's "also trained on" figures for `split` of `data`: where the model trained on
    exactly this data, the near-duplicates of its training split (data/leaks.py); where it
    trained on other splits of these faces, the faces it trained on (exact); nothing where it
    never saw them or that cannot be told (another dataset, no fingerprint recorded)."""
    from ferbench.data.leaks import clean_accuracy

    if split not in JUDGED:
        return {}
    seen = seen_faces(model, spec, data)
    if seen.verdict == "same":
        figures, kind = clean_accuracy(data, split, correct, kept), "near-duplicates"
    elif seen.masks.get(split) is not None and seen.masks[split].any():
        figures = clean_accuracy(data, split, correct, kept, leaked=seen.masks[split])
        kind = "its training faces, exact copies"
    else:
        return {}
    return {**figures, "leak_kind": kind} if figures else {}


def face_hashes(images: np.ndarray) -> np.ndarray:
    """A 64-bit content hash per face of an N×H×W stack (equal pixels, equal hash)."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
         for row in flat),
        dtype=np.uint64,
        count=len(flat),
    )  # fmt: skip


def _own_faces(
    model: TrainedOn, spec: DataSpec, size: int, base_dir: Path | None
) -> FaceArrays | None:
    """The model's training data at `size`: its run's data spec, or the given data's file read
    as FER2013 or FER+ (one source, two label sets); only where the fingerprint is the one the
    model recorded (its run's own spec is trusted when none was)."""
    candidates = []
    if model.spec is not None:
        candidates.append((model.spec, model.spec.size or size))
    if model.fingerprint and _fer2013_source(spec, base_dir):
        whole = spec.replace(classes=None, merge=None, drop=None, fraction=1.0)
        candidates.append((whole.replace(kind="fer2013", labels=None), size))
        candidates.append((whole.replace(kind="ferplus"), size))
    for candidate, at in candidates:
        faces = _load(candidate.replace(size=at), base_dir)
        if faces is None:
            continue
        if model.fingerprint and faces.fingerprint() != model.fingerprint:
            continue
        if at != size:  # the recorded size differs from the comparison's: load it there
            faces = _load(candidate.replace(size=size), base_dir)
        if faces is not None:
            return faces
    return None


def _fer2013_source(spec: DataSpec, base_dir: Path | None) -> bool:
    """The data is FER2013's CSV (as FER2013 or FER+): the one source two label sets share."""
    if spec.kind in ("fer2013", "ferplus"):
        return bool(spec.path)
    if spec.kind != "auto" or not spec.path:
        return False
    from ferbench.data.loader import detect_kind, resolve_source

    try:
        return detect_kind(resolve_source(spec.path, base_dir)) == "fer2013"
    except (FerbenchError, OSError):
        return False


def _load(spec: DataSpec, base_dir: Path | None) -> FaceArrays | None:
    from ferbench.data.loader import load_dataset

    try:
        return load_dataset(spec, base_dir=base_dir)
    except (FerbenchError, OSError, ValueError):
        return None


def _run_config(folder: Path) -> dict:
    if not (folder / "config.yaml").is_file():
        return {}
    from ferbench.runs import RunDir

    return RunDir(folder).config()


def _difference(theirs: DataSpec | None, ours: DataSpec) -> str:
    """What sets the model's data apart from ours, as `data.seed 1, here 0`."""
    if theirs is None:
        return ""
    keys = ("kind", "path", "labels", "seed", "val_fraction", "fraction", "classes", "fold")
    differ = [
        f"data.{k} {getattr(theirs, k)}, here {getattr(ours, k)}"
        for k in keys
        if getattr(theirs, k) != getattr(ours, k)
    ]
    return f"its {'; '.join(differ)}" if differ else ""
