"""Per-person expression timelines from a live log (one row per face per frame, stable ids).

For each tracked person seen on at least `min_frames` frames: a CSV of the probabilities over
time, a plot of them, and a row in ``people.csv`` with the share of frames in each expression.
Shorter tracks (a face glimpsed, a false box) are counted and left out.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ferbench.errors import FerbenchError
from ferbench.utils.fileio import write_text

FIXED = ["frame", "time_s", "face", "x", "y", "w", "h", "label", "probability"]
NOT_CLASSES = {*FIXED, "landmarks"}  # the log's other columns (landmarks since issue 56)


def write_timelines(log: Path, out: Path, min_frames: int = 5) -> dict:
    """Read the live log at `log` and write the timelines into `out`; returns a summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    faces = pd.read_csv(log)
    if not set(FIXED) <= set(faces.columns):
        raise FerbenchError(f"{log}: not a ferbench live log (columns {', '.join(FIXED)}, ...)")
    classes = [c for c in faces.columns if c not in NOT_CLASSES]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, short = [], 0
    for person, track in faces.groupby("face", sort=True):
        if len(track) < min_frames:
            short += 1
            continue
        track = track.sort_values("frame")
        write_text(out / f"person_{person}.csv", track[["time_s", *classes]].to_csv(index=False))
        share = track["label"].value_counts(normalize=True)
        rows.append(
            {
                "person": person,
                "first_s": float(track["time_s"].iloc[0]),
                "last_s": float(track["time_s"].iloc[-1]),
                "frames": len(track),
                "dominant": share.idxmax(),
                **{f"share_{c}": round(float(share.get(c, 0.0)), 4) for c in classes},
            }
        )
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.stackplot(track["time_s"], *[track[c] for c in classes], labels=classes, alpha=0.85)
        ax.set(xlabel="time (s)", ylabel="probability", ylim=(0, 1))
        ax.set_title(f"person {person}: mostly {share.idxmax()} ({share.max():.0%} of frames)")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"person_{person}.png", dpi=100)
        plt.close(fig)
    people = pd.DataFrame(rows)
    write_text(out / "people.csv", people.to_csv(index=False))
    return {"people": len(rows), "short_tracks": short, "folder": str(out)}
