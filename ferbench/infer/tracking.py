"""Keep face identities across frames, and smooth each face's probabilities.

Each track remembers its box and its velocity (pixels per frame, from its last two sightings):
between detections and when matching new ones, a face is where its velocity says it is now, so
a face crossing the frame keeps its identity and its box follows it instead of staying behind.
Where that carried box is a guess (see `FaceTracker.uncertain`), the live loop has it re-checked.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union else 0.0


def affinity(a, b) -> float:
    """How likely two boxes are the same face a moment apart: their IoU, or for boxes of a
    similar size, 1 - distance / (1.5 sides) (a face walking past moves further than it
    overlaps: on the crowd clip a face crosses its own width in three frames)."""
    overlap = iou(a, b)
    side = (a[2] + a[3] + b[2] + b[3]) / 4
    if not side or max(a[2], b[2]) > 1.5 * min(a[2], b[2]):
        return overlap
    dx = (a[0] + a[2] / 2) - (b[0] + b[2] / 2)
    dy = (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
    return max(overlap, 1 - (dx * dx + dy * dy) ** 0.5 / (1.5 * side))


class FaceTracker:
    """Greedy matching of new boxes to the predicted boxes of known faces.

    A face the detector misses keeps moving along its velocity for up to `coast` detection
    rounds (detectors drop faces for a frame or two while the face is plainly still there).
    """

    RECHECK_MOTION = 0.1  # of the face's side: a box carried further is a guess

    def __init__(self, min_iou: float = 0.3, coast: int = 1, ids: Iterator[int] | None = None):
        """`ids`: where new identities come from; trackers that share one (the browser's
        sessions) never give two faces the same id."""
        self.min_iou, self.max_missed = min_iou, coast
        self.tracks: dict[int, dict] = {}
        self._ids = ids if ids is not None else itertools.count()

    def update(self, boxes: list, frame: int = 0) -> list[int]:
        """Assign a track id to each box found on `frame` (best pairs first, by overlap or
        centre distance with where each face should be now); forget faces unseen for
        `max_missed` updates."""
        predicted = {t: self._predict(track, frame) for t, track in self.tracks.items()}
        pairs = sorted(
            (
                (affinity(predicted[t], box), t, b)
                for t in self.tracks
                for b, box in enumerate(boxes)
            ),
            reverse=True,
        )
        ids: list[int | None] = [None] * len(boxes)
        free = set(self.tracks)
        for score, track_id, b in pairs:
            if score < self.min_iou or track_id not in free or ids[b] is not None:
                continue
            free.discard(track_id)
            track = self.tracks[track_id]
            elapsed = max(frame - track["frame"], 1)
            old, new = track["box"], boxes[b]
            track["velocity"] = ((new[0] - old[0]) / elapsed, (new[1] - old[1]) / elapsed)
            track.update(box=new, frame=frame, missed=0)
            ids[b] = track_id
        for b, box in enumerate(boxes):
            if ids[b] is None:
                ids[b] = next(self._ids)
                self.tracks[ids[b]] = {
                    "box": box,
                    "frame": frame,
                    "velocity": None,  # unknown until the face is seen again
                    "missed": 0,
                }
        for track in free:
            self.tracks[track]["missed"] += 1
            if self.tracks[track]["missed"] > self.max_missed:
                del self.tracks[track]
        return ids

    def uncertain(self, frame: int) -> tuple[list[int], list]:
        """Ids and predicted boxes of the faces whose box on `frame` is a guess worth checking:
        missed by the last detection, seen only once (motion unknown), or carried more than
        RECHECK_MOTION of its side since last seen.  A face standing still, or moving as its
        velocity says over a short way, is not re-checked between detections."""
        ids = [t for t, track in self.tracks.items() if self._uncertain(track, frame)]
        return ids, [self._predict(self.tracks[t], frame) for t in ids]

    def _uncertain(self, track: dict, frame: int) -> bool:
        elapsed = frame - track["frame"]
        if elapsed <= 0:
            return False  # found on this very frame
        if track["missed"] or track["velocity"] is None:
            return True
        vx, vy = track["velocity"]
        return (abs(vx) + abs(vy)) * elapsed > self.RECHECK_MOTION * track["box"][2]

    def refresh(self, ids: list[int], boxes: list, frame: int) -> None:
        """Move known faces to where a verifier (MTCNN's O-Net) found them on `frame`, as a
        detection would; a face whose box came back None is no longer there and is forgotten."""
        for track_id, box in zip(ids, boxes):
            track = self.tracks[track_id]
            if box is None:
                del self.tracks[track_id]
                continue
            elapsed = max(frame - track["frame"], 1)
            old = track["box"]
            step = ((box[0] - old[0]) / elapsed, (box[1] - old[1]) / elapsed)
            if track["velocity"] is not None:  # a short look: half the weight
                step = tuple((v + s) / 2 for v, s in zip(track["velocity"], step))
            track.update(box=box, frame=frame, velocity=step, missed=0)

    def forget_unseen(self, ids: list[int], frame: int) -> None:
        """Forget those of `ids` that no detection found on `frame` (a re-check said their
        face had gone; the search after it did not find them elsewhere)."""
        for track_id in ids:
            if track_id in self.tracks and self.tracks[track_id]["frame"] != frame:
                del self.tracks[track_id]

    def reset(self) -> None:
        """Forget every face (after a scene cut); identities keep counting up."""
        self.tracks.clear()

    def active(self, frame: int = 0) -> tuple[list[int], list]:
        """Ids and boxes (where each face should be on `frame`) of the faces to show."""
        ids = list(self.tracks)
        return ids, [self._predict(self.tracks[i], frame) for i in ids]

    @staticmethod
    def _predict(track: dict, frame: int) -> tuple[int, int, int, int]:
        x, y, w, h = track["box"]
        vx, vy = track["velocity"] or (0.0, 0.0)
        elapsed = max(frame - track["frame"], 0)
        return (int(round(x + vx * elapsed)), int(round(y + vy * elapsed)), w, h)


class ProbabilitySmoother:
    """Exponential smoothing of each face's probabilities over frames, by track id.  Its own
    state, apart from the tracker's: in the live loop the two run on different threads."""

    def __init__(self, smooth: float = 0.0):
        self.smooth = smooth
        self.last: dict[int, np.ndarray] = {}

    def __call__(self, ids: list[int], probs: np.ndarray) -> np.ndarray:
        if self.smooth <= 0:
            return probs
        out = probs.copy()
        for row, track_id in enumerate(ids):
            if track_id in self.last:
                out[row] = self.smooth * self.last[track_id] + (1 - self.smooth) * probs[row]
        self.last = dict(zip(ids, out))  # identities are never reused: drop the gone ones
        return out
