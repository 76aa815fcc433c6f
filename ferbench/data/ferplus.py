"""FER+: Microsoft's ten-annotator relabelling of FER2013, applied row by row to the CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ferbench.data.arrays import FaceArrays
from ferbench.data.fer2013 import read_csv_rows
from ferbench.errors import FerbenchError

VOTE_COLUMNS = [
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
]
CLASS_NAMES = ["neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt"]


def out_of_sequence_rows(names: pd.Series) -> np.ndarray:
    """Rows whose image name repeats another row's and breaks the running numbering.

    FER+ lists four names twice; the copy out of sequence carries another image's votes.
    """
    numbers = pd.to_numeric(names.str.extract(r"(\d+)")[0], errors="coerce")
    duplicated = names.notna() & names.duplicated(keep=False)
    previous = numbers.ffill().shift(1)
    following = numbers.bfill().shift(-1)
    out = duplicated & ~((previous < numbers) & (numbers < following))
    return np.flatnonzero(out.to_numpy())


def read_ferplus(csv_path: Path, votes_path: Path, include_contempt: bool = True) -> FaceArrays:
    """Majority protocol: drop dropped images and those whose top vote is unknown or NF."""
    if not votes_path.is_file():
        raise FerbenchError(
            f"FER+ vote file not found: {votes_path} (fer2013new.csv from "
            "https://github.com/microsoft/FERPlus)"
        )
    votes = pd.read_csv(votes_path)
    votes.columns = [c.strip() for c in votes.columns]
    missing = [c for c in VOTE_COLUMNS + ["unknown", "NF", "Image name"] if c not in votes.columns]
    if missing:
        raise FerbenchError(f"{votes_path}: missing column(s) {', '.join(missing)}")
    images, _, splits, rows, problems = read_csv_rows(csv_path)
    if len(votes) < rows.max(initial=-1) + 1:
        raise FerbenchError(
            f"{votes_path} has {len(votes)} rows but {csv_path} has more; "
            "FER+ must line up row by row with fer2013.csv"
        )
    table = votes[VOTE_COLUMNS + ["unknown", "NF"]].to_numpy()[rows]
    names = votes["Image name"].iloc[rows].reset_index(drop=True)
    top = table.argmax(axis=1)
    dropped_by_ferplus = names.isna().to_numpy()
    not_an_emotion = top >= len(VOTE_COLUMNS)
    repeated = np.isin(rows, out_of_sequence_rows(votes["Image name"]))
    keep = ~(dropped_by_ferplus | not_an_emotion | repeated)
    class_names = list(CLASS_NAMES)
    if not include_contempt:
        keep &= top != VOTE_COLUMNS.index("contempt")
        class_names = class_names[:-1]
    problems.update(
        {
            "images without a FER+ label": int(dropped_by_ferplus.sum()),
            "top vote unknown or not a face": int((not_an_emotion & ~dropped_by_ferplus).sum()),
            "repeated image names with another image's votes": int(repeated.sum()),
        }
    )
    return FaceArrays(
        images[keep],
        top[keep],
        splits[keep],
        class_names,
        source=f"fer+ majority {votes_path} on {csv_path}",
        problems=problems,
        # the ten annotators' votes over the kept classes, for train.targets: votes
        extras={"votes": table[keep][:, : len(class_names)].astype(np.float32)},
    )
