"""A labelled video for judging the live loop by what it labels correctly.

`make_labelled_video` composites test-split faces (FER2013's, or any dataset's) into 640×360
frames with known boxes and labels: shots of 8-20 frames with 1-3 faces each, every face moving
and changing scale a little, a hard cut to new faces and a new background between shots.
`score` then matches the loop's per-frame boxes to the truth and reports detection recall and
precision, end-to-end label accuracy (the share of true faces that got a box with the right
label), and the ceiling: the same true crops classified directly.  Two matching rules, both
reported: IoU ≥ 0.5 with the pasted crop, and *on the face* (IoU ≥ 0.5, or each box's centre
inside the other): FER2013's crops hold the head at scales up to 2x apart, so a detector's box on
the right face, framed by the face rather than by the crop, can overlap the crop by less than 0.5
(measured: 14% of the faces of the default benchmark video, each with a detection scored ≥ 0.97).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ferbench.config import DataSpec
from ferbench.errors import FerbenchError
from ferbench.faces.detect import crop_faces
from ferbench.infer.tracking import iou
from ferbench.utils.opencv import cv2

SIZE = (640, 360)
FPS = 15
TRUTH_COLUMNS = ["frame", "face", "x", "y", "w", "h", "label"]
BORDER = 0.2  # replicated border around each pasted crop, feathered into the background


@dataclass
class _Face:
    image: np.ndarray
    label: str
    x: float
    y: float
    side: float
    vx: float
    vy: float
    growth: float


def make_labelled_video(
    data: DataSpec, out: Path, frames: int = 450, split: str = "test", seed: int = 0
) -> tuple[Path, Path]:
    """Write `out` (.mp4) and `out`.csv (one row per face per frame: the truth)."""
    from ferbench.data import load_dataset

    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise FerbenchError(f"{out}: the labelled video is written as .mp4")
    faces = load_dataset(data)
    images, labels = faces.split(split)
    if not len(labels):
        raise FerbenchError(f"the {split} split of {faces.source} is empty")
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    truth = out.with_suffix(".csv")
    next_face, frame_index = 0, 0
    with open(truth, "w", newline="") as handle:
        rows = csv.writer(handle)
        rows.writerow(TRUTH_COLUMNS)
        while frame_index < frames:
            background = _background(rng)
            shot: list[_Face] = []
            for _ in range(int(rng.integers(1, 4))):
                pick = int(rng.integers(len(labels)))
                face = _place(rng, images[pick], faces.class_names[labels[pick]], shot)
                if face is not None:
                    shot.append(face)
            for _ in range(int(rng.integers(8, 21))):
                if frame_index >= frames:
                    break
                frame = background.copy()
                for i, face in enumerate(shot):
                    box = _draw(frame, face)
                    rows.writerow([frame_index, next_face + i, *box, face.label])
                    face.x, face.y = face.x + face.vx, face.y + face.vy
                    face.side *= face.growth
                writer.write(frame)
                frame_index += 1
            next_face += len(shot)
    writer.release()
    return out, truth


def _background(rng) -> np.ndarray:
    """A smooth random gradient with mild noise: no faces, some texture for the detectors."""
    h, w = SIZE[1], SIZE[0]
    low = rng.integers(40, 200, (3, 4, 3)).astype(np.uint8)
    frame = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 6, (h, w, 3))
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def _place(rng, image, label, others: list[_Face]) -> _Face | None:
    """A face 90-150 px wide where it stays in frame for a shot and overlaps no other face."""
    for _ in range(20):
        side = float(rng.uniform(90, 150))
        reach = side * (1 + 2 * BORDER) * 1.1  # with its border and room to move and grow
        x = float(rng.uniform(side * BORDER, SIZE[0] - reach))
        y = float(rng.uniform(side * BORDER, SIZE[1] - reach))
        box = (x - side * BORDER, y - side * BORDER, reach, reach)
        if all(
            iou(box, (o.x - o.side * BORDER, o.y - o.side * BORDER, reach, reach)) == 0
            for o in others
        ):
            return _Face(
                image,
                label,
                x,
                y,
                side,
                float(rng.uniform(-2.5, 2.5)),
                float(rng.uniform(-1.5, 1.5)),
                float(rng.uniform(0.99, 1.01)),
            )
    return None


def _draw(frame: np.ndarray, face: _Face) -> tuple[int, int, int, int]:
    """Paste the face with a replicated border feathered into the background (a crop's hard
    edge on a flat background is not how faces look to a detector); returns the true box:
    the crop itself."""
    side = int(round(face.side))
    pad = int(round(side * BORDER))
    x = int(round(min(max(face.x, pad), SIZE[0] - side - pad)))
    y = int(round(min(max(face.y, pad), SIZE[1] - side - pad)))
    patch = cv2.resize(face.image, (side, side), interpolation=cv2.INTER_CUBIC)
    patch = cv2.copyMakeBorder(patch, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    ramp = np.clip(
        np.minimum(np.arange(side + 2 * pad), np.arange(side + 2 * pad)[::-1]) / pad, 0, 1
    )
    alpha = np.minimum(ramp[:, None], ramp[None, :])[:, :, None]
    region = frame[y - pad : y + side + pad, x - pad : x + side + pad]
    region[:] = (alpha * patch[:, :, None] + (1 - alpha) * region).astype(np.uint8)
    return x, y, side, side


# --- scoring ---------------------------------------------------------------------------------


def read_truth(path: Path) -> pd.DataFrame:
    truth = pd.read_csv(path)
    missing = set(TRUTH_COLUMNS) - set(truth.columns)
    if missing:
        raise FerbenchError(f"{path}: not a truth file (missing {', '.join(sorted(missing))})")
    return truth


def on_face(box: tuple, true_box: tuple, min_iou: float = 0.5) -> bool:
    """The box marks this face: enough overlap, or each box's centre inside the other (a box
    between two faces, or on a neighbour, fails both)."""
    return iou(box, true_box) >= min_iou or (_holds(box, true_box) and _holds(true_box, box))


def _holds(box: tuple, other: tuple) -> bool:
    x, y, w, h = box
    cx, cy = other[0] + other[2] / 2, other[1] + other[3] / 2
    return x <= cx <= x + w and y <= cy <= y + h


def score_both(found: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """`score` under IoU ≥ 0.5, plus the same keys suffixed `_on_face` under `on_face`."""
    face = score(found, truth, rule="face")
    return {**score(found, truth), **{f"{k}_on_face": v for k, v in face.items()}}


def score(
    found: pd.DataFrame, truth: pd.DataFrame, min_iou: float = 0.5, rule: str = "iou"
) -> dict:
    """Per-frame greedy matching of found boxes (frame, x, y, w, h, label) to the truth, best
    IoU first; a pair counts when IoU ≥ `min_iou` (`rule="iou"`) or when the box is `on_face`."""
    matched = correct = 0
    found_by_frame = {f: g for f, g in found.groupby("frame")}
    for frame, expected in truth.groupby("frame"):
        boxes = found_by_frame.get(frame)
        free = [] if boxes is None else list(boxes.itertuples(index=False))
        for t in expected.itertuples(index=False):
            tbox = (t.x, t.y, t.w, t.h)
            best = max(free, key=lambda f: iou((f.x, f.y, f.w, f.h), tbox), default=None)
            if best is None:
                continue
            box = (best.x, best.y, best.w, best.h)
            if not (on_face(box, tbox, min_iou) if rule == "face" else iou(box, tbox) >= min_iou):
                continue
            free.remove(best)
            matched += 1
            correct += best.label == t.label
    true_faces, boxes = len(truth), len(found)
    return {
        "true_faces": true_faces,
        "boxes": boxes,
        "recall": matched / max(true_faces, 1),
        "precision": matched / max(boxes, 1),
        "false_boxes": boxes - matched,
        "end_to_end_accuracy": correct / max(true_faces, 1),
    }


def ceiling(predictor, video: Path, truth: pd.DataFrame, margin: float) -> float:
    """Accuracy of the true boxes' crops classified directly: what a perfect detector gives."""
    capture = cv2.VideoCapture(str(video))
    by_frame = {f: g for f, g in truth.groupby("frame")}
    correct, index = 0, 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        rows = by_frame.get(index)
        if rows is not None:
            boxes = [tuple(r) for r in rows[["x", "y", "w", "h"]].itertuples(index=False)]
            probs = predictor.predict(crop_faces(frame, boxes, margin))
            predicted = [predictor.class_names[int(p.argmax())] for p in probs]
            correct += sum(p == t for p, t in zip(predicted, rows["label"]))
        index += 1
    capture.release()
    return correct / max(len(truth), 1)
