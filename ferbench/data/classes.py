"""Class sets: select, reorder, drop or merge classes of a loaded dataset."""

from __future__ import annotations

import numpy as np

from ferbench.data.arrays import FaceArrays
from ferbench.errors import FerbenchError

FER2013_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]

# Common spellings users write for the same expression (FER+ uses nouns).
ALIASES = {
    "anger": "angry",
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
    "contemptuous": "contempt",
    "neutrality": "neutral",
    "afraid": "fear",
    "scared": "fear",
}


def canonical(name: str) -> str:
    name = str(name).strip().lower()
    return ALIASES.get(name, name)


def _check_known(names, known: list[str], what: str) -> None:
    for name in names:
        if name not in known:
            raise FerbenchError(
                f"unknown class '{name}' in {what}; known classes: {', '.join(known)}"
            )


def apply_class_set(
    data: FaceArrays,
    classes: list[str] | None = None,
    merge: dict[str, str] | None = None,
    drop: list[str] | None = None,
) -> FaceArrays:
    """Merge first (``{disgust: angry}``), then drop, then select and order with ``classes``."""
    if not (classes or merge or drop):
        return data
    known = list(data.class_names)
    merge = {canonical(k): canonical(v) for k, v in (merge or {}).items()}
    drop = [canonical(c) for c in (drop or [])]
    _check_known(merge.keys(), known, "merge")
    _check_known(merge.values(), known, "merge")
    _check_known(drop, known, "drop")
    names = [merge.get(c, c) for c in known]  # old index -> new name (None when dropped)
    survivors = [c for c in known if c not in merge and c not in drop]
    if classes:
        classes = [canonical(c) for c in classes]
        _check_known(classes, survivors, "classes")
        survivors = classes
    lookup = np.array(
        [survivors.index(n) if n in survivors and n not in drop else -1 for n in names]
    )
    new_labels = lookup[data.labels]
    keep = new_labels >= 0
    out = data.subset(keep)
    out.labels = new_labels[keep]
    out.class_names = list(survivors)
    return out
