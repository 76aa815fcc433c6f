"""Keep face identities across frames (IoU matching) and smooth each face's probabilities."""

from __future__ import annotations

import numpy as np


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union else 0.0


class FaceTracker:
    """Greedy IoU matching of new boxes to known faces; exponential smoothing of probabilities.

    A face the detector misses keeps its last box for up to `coast` detection rounds (Haar
    cascades drop faces for a frame or two while the face is plainly still there).
    """

    def __init__(self, smooth: float = 0.0, min_iou: float = 0.3, coast: int = 1):
        self.smooth, self.min_iou, self.max_missed = smooth, min_iou, coast
        self.tracks: dict[int, dict] = {}
        self.next_id = 0

    def update(self, boxes: list) -> list[int]:
        """Assign a track id to each box; forget faces unseen for `max_missed` updates."""
        ids: list[int] = []
        free = set(self.tracks)
        for box in boxes:
            best = max(free, key=lambda t: iou(self.tracks[t]["box"], box), default=None)
            if best is not None and iou(self.tracks[best]["box"], box) >= self.min_iou:
                free.discard(best)
                self.tracks[best].update(box=box, missed=0)
                ids.append(best)
            else:
                self.tracks[self.next_id] = {"box": box, "missed": 0, "probs": None}
                ids.append(self.next_id)
                self.next_id += 1
        for track in free:
            self.tracks[track]["missed"] += 1
            if self.tracks[track]["missed"] > self.max_missed:
                del self.tracks[track]
        return ids

    def reset(self) -> None:
        """Forget every face (after a scene cut); identities keep counting up."""
        self.tracks.clear()

    def active(self) -> tuple[list[int], list]:
        """Ids and boxes of the faces to show: detected now or coasting."""
        ids = list(self.tracks)
        return ids, [self.tracks[i]["box"] for i in ids]

    def smooth_probs(self, ids: list[int], probs: np.ndarray) -> np.ndarray:
        if self.smooth <= 0:
            return probs
        out = probs.copy()
        for row, track_id in enumerate(ids):
            previous = self.tracks[track_id]["probs"]
            if previous is not None:
                out[row] = self.smooth * previous + (1 - self.smooth) * probs[row]
            self.tracks[track_id]["probs"] = out[row]
        return out
