"""Drawing on frames: face box, label with probability, a bar chart of all classes, frames/s."""

from __future__ import annotations

import numpy as np

from ferbench.utils.opencv import cv2

PALETTE = [
    (60, 60, 230),
    (60, 160, 60),
    (160, 60, 160),
    (40, 200, 240),
    (200, 120, 40),
    (240, 200, 40),
    (180, 180, 180),
    (120, 80, 200),
]  # BGR per class
FONT = cv2.FONT_HERSHEY_SIMPLEX


def draw_face(frame: np.ndarray, box, probs: np.ndarray, class_names: list[str]) -> None:
    x, y, w, h = box
    top = int(np.argmax(probs))
    colour = PALETTE[top % len(PALETTE)]
    thickness = max(1, w // 80)
    cv2.rectangle(frame, (x, y), (x + w, y + h), colour, thickness + 1)
    scale = max(0.4, min(1.2, w / 160))
    label = f"{class_names[top]} {probs[top]:.0%}"
    (tw, th), base = cv2.getTextSize(label, FONT, scale, thickness)
    ty = y - 6 if y - th - 10 > 0 else y + h + th + 6
    cv2.rectangle(frame, (x, ty - th - 4), (x + tw + 4, ty + base - 2), colour, -1)
    cv2.putText(frame, label, (x + 2, ty - 2), FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    _draw_bars(frame, box, probs, class_names, scale)


def _draw_bars(
    frame: np.ndarray, box, probs: np.ndarray, class_names: list[str], scale: float
) -> None:
    """A small horizontal bar chart of every class probability beside the face."""
    x, y, w, h = box
    row = max(8, int(h / max(len(class_names), 1)))
    bar_w = max(30, int(w * 0.6))
    left = x + w + 4
    if left + bar_w + 40 > frame.shape[1]:
        left = max(0, x - bar_w - 44)
    text_scale = max(0.3, min(0.5, row / 24))
    for i, (name, p) in enumerate(zip(class_names, probs)):
        top = y + i * row
        if top + row > frame.shape[0]:
            break
        cv2.rectangle(frame, (left, top + 1), (left + bar_w, top + row - 1), (40, 40, 40), -1)
        cv2.rectangle(
            frame,
            (left, top + 1),
            (left + int(bar_w * float(p)), top + row - 1),
            PALETTE[i % len(PALETTE)],
            -1,
        )
        cv2.putText(
            frame,
            name[:3],
            (left + bar_w + 3, top + row - 2),
            FONT,
            text_scale,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )


def draw_fps(frame: np.ndarray, fps: float, faces: int) -> None:
    text = f"{fps:5.1f} fps  {faces} face{'s' if faces != 1 else ''}"
    cv2.putText(frame, text, (10, 28), FONT, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(frame, text, (10, 28), FONT, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
