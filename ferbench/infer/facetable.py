"""The face table: one row per face per frame (frame, time, a person id, box, label, its
probability, every class's probability, landmarks).  `live --log` and `predict` on videos both
format their rows here, so a video's table is the same whichever wrote it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

FIXED = ["frame", "time_s", "face", "x", "y", "w", "h", "label", "probability"]


def columns(class_names: list[str]) -> list[str]:
    return [*FIXED, *class_names, "landmarks"]


def face_rows(frame, time_s, ids, boxes, probs, class_names, landmarks=None) -> list[tuple]:
    """(frame, time, id, box, label, top probability, probabilities, landmarks) per face;
    `landmarks`: id -> five (x, y) points where the detector gave them on this frame."""
    rows = []
    for face_id, box, p in zip(ids, boxes, probs):
        top = int(np.argmax(p))
        marks = (landmarks or {}).get(face_id)
        text = " ".join(str(int(round(v))) for v in np.ravel(marks)) if marks is not None else ""
        rows.append(
            (int(frame), float(time_s), int(face_id), tuple(int(v) for v in box),
             class_names[top], p, text)
        )  # fmt: skip
    return rows


def csv_cells(row: tuple) -> list:
    frame, time_s, face, box, label, p, marks = row
    top = int(np.argmax(p))
    return [frame, f"{time_s:.3f}", face, *box, label, f"{p[top]:.4f}",
            *[f"{v:.4f}" for v in p], marks]  # fmt: skip


class FaceLog:
    """The table streamed to a CSV file as frames come (`live --log`): each face shows at once
    in a log being watched (tail -f)."""

    def __init__(self, path: Path, class_names: list[str]):
        self.class_names = class_names
        self._file = open(path, "w", newline="")
        self._rows = csv.writer(self._file)
        self._rows.writerow(columns(class_names))

    def write(self, frame, time_s, ids, boxes, probs, landmarks=None) -> None:
        rows = face_rows(frame, time_s, ids, boxes, probs, self.class_names, landmarks)
        for row in rows:
            self._rows.writerow(csv_cells(row))
        if rows:
            self._file.flush()

    def close(self) -> None:
        self._file.close()


FORMATS = ("csv", "parquet")


def write_chunk(path: Path, rows: list[tuple], class_names: list[str], fmt: str) -> None:
    """One chunk of a table (CSV rows without the header, or a Parquet file), written to a
    temporary name and renamed: a chunk on disk is always complete."""
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "csv":
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            for row in rows:
                writer.writerow(csv_cells(row))
    else:
        import pyarrow.parquet as pq

        pq.write_table(_arrow_table(rows, class_names), tmp)
    tmp.replace(path)


def join_chunks(chunks: list[Path], target: Path, class_names: list[str], fmt: str) -> None:
    """The chunks, in order, as one table at `target` (written beside it, then renamed),
    streamed: one chunk in memory at a time."""
    tmp = target.with_name(target.name + ".tmp")
    if fmt == "csv":
        with open(tmp, "w", newline="") as out:
            csv.writer(out).writerow(columns(class_names))
            for chunk in chunks:
                with open(chunk, newline="") as part:
                    while block := part.read(1 << 20):
                        out.write(block)
    else:
        import pyarrow.parquet as pq

        with pq.ParquetWriter(tmp, _schema(class_names)) as writer:
            for chunk in chunks:
                writer.write_table(pq.read_table(chunk, schema=_schema(class_names)))
    tmp.replace(target)


def _schema(class_names: list[str]):
    import pyarrow as pa

    fields = [("frame", pa.int64()), ("time_s", pa.float64()), ("face", pa.int64())]
    fields += [(c, pa.int32()) for c in ("x", "y", "w", "h")]
    fields += [("label", pa.string()), ("probability", pa.float32())]
    fields += [(c, pa.float32()) for c in class_names] + [("landmarks", pa.string())]
    return pa.schema(fields)


def _arrow_table(rows: list[tuple], class_names: list[str]):
    import pyarrow as pa

    schema = _schema(class_names)
    probs = np.array([r[5] for r in rows], dtype=np.float32).reshape(-1, len(class_names))
    data = {
        "frame": [r[0] for r in rows],
        "time_s": [round(r[1], 3) for r in rows],
        "face": [r[2] for r in rows],
        **{c: [r[3][i] for r in rows] for i, c in enumerate(("x", "y", "w", "h"))},
        "label": [r[4] for r in rows],
        "probability": probs.max(1) if len(rows) else [],
        **{c: probs[:, i] for i, c in enumerate(class_names)},
        "landmarks": [r[6] for r in rows],
    }
    return pa.table(data, schema=schema)
