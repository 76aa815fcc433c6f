"""Faces framed like the model's training faces.

A detector's box frames a face its own way; FER2013's crops framed faces another way, and a
model trained on them loses points on any other framing (README: Robustness, the framing gap).
The detector's five landmarks (eyes, nose tip, mouth corners) say where the face is far more
precisely than its box: a similarity transform (rotation, uniform scale, shift; Umeyama 1991,
least squares) takes them onto a template, the landmarks' median position in the training
faces as the same detector sees them, and the crop the model gets is framed, levelled and
scaled as its training faces were.  Tracked frames, which have no new landmarks, reuse each
face's last landmarks relative to its box.
"""

from __future__ import annotations

import numpy as np

from ferbench.faces.defaults import FER_MARGIN
from ferbench.faces.detect import crop_faces
from ferbench.utils.opencv import cv2

# Median landmarks of FER2013's training faces, as fractions of the crop's side (x, y): left
# eye, right eye, nose, left and right mouth corners as live mode's MTCNN finds them on the faces
# upscaled 4x in a frame of replicated border (`measure_template` on a seeded sample of 1,500
# training faces: 1,358 found).  Every shipped model trained on these crops.
FER2013_TEMPLATE = (
    (0.3179, 0.3924),
    (0.6936, 0.3860),
    (0.5038, 0.6038),
    (0.3529, 0.7902),
    (0.6629, 0.7889),
)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 similarity transform (no reflection) that takes points `src` onto `dst` in the
    least-squares sense (Umeyama 1991)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(sigma) @ sign) / max(s.var(0).sum(), 1e-12)
    shift = mu_d - scale * rotation @ mu_s
    return np.hstack([scale * rotation, shift[:, None]])


def aligned_crop(
    frame: np.ndarray, points: np.ndarray, template=FER2013_TEMPLATE, size: int = 48
) -> np.ndarray:
    """The face whose five landmarks are `points` (frame pixels), warped so that they land on
    `template` in a square crop.  The crop is `size` pixels or, for a larger face, up to four
    times that (the predictor then shrinks it with area averaging rather than the warp
    aliasing it); the frame's edge pixels extend beyond it, as the box crops' clipping would."""
    unit = np.asarray(template, np.float64)
    face_side = np.linalg.norm(points[1] - points[0]) / max(np.linalg.norm(unit[1] - unit[0]), 1e-6)
    side = int(np.clip(round(face_side), size, 4 * size))
    matrix = similarity(points, unit * side)
    return cv2.warpAffine(
        frame, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


class FaceFramer:
    """Crops of a frame's faces for the classifier: aligned to `template` where the face has
    landmarks (from this frame's detection, or its last one relative to the box for a tracked
    face), the box crop (with `margin`) where it has none; `template` None: box crops only."""

    def __init__(self, template=FER2013_TEMPLATE, size: int = 48, margin: float = FER_MARGIN):
        self.template, self.size, self.margin = template, size, margin
        self._relative: dict = {}  # face id -> landmarks as fractions of its box

    def __call__(self, frame: np.ndarray, ids: list, boxes: list, landmarks=None) -> list:
        if self.template is None:
            return crop_faces(frame, boxes, self.margin)
        crops = []
        for face_id, box in zip(ids, boxes):
            points = self._points(face_id, box, (landmarks or {}).get(face_id))
            if points is None:
                crops += crop_faces(frame, [box], self.margin)
            else:
                crops.append(aligned_crop(frame, points, self.template, self.size))
        return crops

    def _points(self, face_id, box, detected):
        x, y, w, h = box
        origin, extent = np.array([x, y], np.float64), np.array([max(w, 1), max(h, 1)], np.float64)
        if detected is not None:
            points = np.asarray(detected, np.float64)
            self._relative[face_id] = (points - origin) / extent
            return points
        relative = self._relative.get(face_id)
        return None if relative is None else origin + relative * extent

    def snapshot(self) -> dict:
        """The tracked faces' landmarks as JSON (a resumed video's analysis continues with
        them, so its crops equal an uninterrupted run's)."""
        return {str(k): v.tolist() for k, v in self._relative.items()}

    def restore(self, state: dict) -> None:
        self._relative = {int(k): np.array(v, np.float64) for k, v in state.items()}

    def forget(self, keep_ids) -> None:
        """Drop the landmarks of faces no longer tracked (keeps the state bounded)."""
        keep = set(keep_ids)
        self._relative = {k: v for k, v in self._relative.items() if k in keep}


def framed_faces(
    faces: np.ndarray, detector, upscale: int = 4, border: float = 0.5
) -> tuple[list[np.ndarray | None], list, list]:
    """Each face crop as a detector sees it in a larger frame: upscaled `upscale`× and padded by
    `border` of its side on each side with its edge pixels replicated.  Returns per face the
    padded BGR frame, the largest box (or None) and its landmarks (or None)."""
    frames, boxes, marks = [], [], []
    for face in faces:
        big = cv2.resize(face, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        pad = int(round(big.shape[0] * border))
        frame = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        found = detector(frame)
        points = getattr(detector, "last_landmarks", None)
        if not found:
            frames.append(frame), boxes.append(None), marks.append(None)
            continue
        largest = int(np.argmax([w * h for _, _, w, h in found]))
        frames.append(frame)
        boxes.append(found[largest])
        marks.append(None if points is None or not len(points) else points[largest])
    return frames, boxes, marks


def measure_template(faces: np.ndarray, detector, upscale: int = 4, border: float = 0.5):
    """The median landmarks of training faces (N×S×S uint8) as fractions of their side, as
    `detector` finds them (each face upscaled and padded as in `framed_faces`), and how many
    faces gave landmarks."""
    side = faces.shape[-1] * upscale
    pad = int(round(side * border))
    found = []
    for _, box, points in zip(*framed_faces(faces, detector, upscale, border)):
        if points is not None:
            found.append((np.asarray(points) - pad) / side)
    if not found:
        raise ValueError("the detector found no face to measure a template on")
    return np.median(np.stack(found), 0), len(found)
