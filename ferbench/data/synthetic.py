"""Procedural faces for the seven FER2013 expressions: runs everything with no download.

Each class is a mean facial configuration (mouth curve and opening, brow height and slant, eye
opening, nose wrinkle, lip asymmetry); every face draws its own configuration around that mean and
a random pose, scale, skin and background tone, lighting gradient, blur and noise.  The classes
overlap (fear vs surprise, angry vs disgust, sad vs neutral), so the task is learnable but not
trivial; the same seed always gives the same faces.
"""

from __future__ import annotations

import numpy as np

from ferbench.data.arrays import FaceArrays
from ferbench.data.classes import FER2013_CLASSES
from ferbench.utils.opencv import cv2

CANVAS = 64
#                 curve  open  width  brow_up  brow_slant  eye_open  wrinkle  asym
EXPRESSIONS = {
    "angry": (-0.3, 0.05, 0.85, -0.7, -1.0, 0.80, 0.2, 0.0),
    "disgust": (-0.5, 0.15, 0.90, -0.4, -0.5, 0.60, 1.0, 0.8),
    "fear": (-0.2, 0.55, 1.20, 0.6, 0.8, 1.35, 0.0, 0.0),
    "happy": (0.9, 0.30, 1.20, 0.1, 0.0, 0.75, 0.1, 0.0),
    "sad": (-0.8, 0.00, 0.90, 0.0, 0.9, 0.70, 0.0, 0.0),
    "surprise": (0.0, 0.95, 0.75, 1.0, 0.2, 1.45, 0.0, 0.0),
    "neutral": (0.0, 0.00, 1.00, 0.0, 0.0, 1.00, 0.0, 0.0),
}
SPREAD = np.array([0.3, 0.15, 0.12, 0.3, 0.3, 0.18, 0.25, 0.25])


def _draw_face(rng: np.random.Generator, params: np.ndarray) -> np.ndarray:
    curve, mouth_open, width, brow_up, slant, eye_open, wrinkle, asym = params
    background = rng.uniform(20, 200)
    canvas = np.full((CANVAS, CANVAS), background, np.float32)
    cx, cy = CANVAS / 2 + rng.normal(0, 1.5), CANVAS / 2 + 2 + rng.normal(0, 1.5)
    face_w, face_h = rng.uniform(19, 23), rng.uniform(24, 28)
    skin = rng.uniform(110, 230)
    s = 4  # sub-pixel precision for cv2 drawing
    pt = lambda x, y: (int(round(x * (1 << s))), int(round(y * (1 << s))))  # noqa: E731
    ax = lambda a, b: (int(round(a * (1 << s))), int(round(b * (1 << s))))  # noqa: E731
    if rng.random() < 0.7:  # hair
        cv2.ellipse(
            canvas,
            pt(cx, cy - 4),
            ax(face_w + 2, face_h + 2),
            0,
            180,
            360,
            float(rng.uniform(0, 80)),
            -1,
            cv2.LINE_AA,
            s,
        )
    cv2.ellipse(canvas, pt(cx, cy), ax(face_w, face_h), 0, 0, 360, skin, -1, cv2.LINE_AA, s)
    dark = skin * rng.uniform(0.15, 0.4)
    eye_y, eye_dx = cy - 5, rng.uniform(7.5, 9.0)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        cv2.ellipse(
            canvas,
            pt(ex, eye_y),
            ax(3.8, max(0.6, 2.0 * eye_open)),
            0,
            0,
            360,
            skin * 1.1 if eye_open > 1.1 else dark,
            -1,
            cv2.LINE_AA,
            s,
        )
        cv2.circle(canvas, pt(ex, eye_y), int(1.3 * (1 << s)), dark * 0.5, -1, cv2.LINE_AA, s)
        brow_y = eye_y - 5.5 - 2.5 * brow_up
        inner = (ex - side * 1.0, brow_y - 2.2 * slant)
        outer = (ex + side * 5.5, brow_y + 2.2 * slant)
        cv2.line(canvas, pt(*inner), pt(*outer), dark, 2, cv2.LINE_AA, s)
    cv2.line(canvas, pt(cx, cy - 2), pt(cx - 1, cy + 5), skin * 0.7, 1, cv2.LINE_AA, s)
    if wrinkle > 0.5:
        for dy in (-3.0, -1.0):
            cv2.line(
                canvas, pt(cx - 2.5, cy + dy), pt(cx + 2.5, cy + dy), skin * 0.6, 1, cv2.LINE_AA, s
            )
    mouth_y, half = cy + 12, 6.5 * width
    xs = np.linspace(-half, half, 15)
    corners_lift = 4.0 * curve
    ys = mouth_y + corners_lift * (1 - (xs / half) ** 2) - 0.5 * corners_lift
    ys = ys - asym * 2.0 * np.clip(xs / half, 0, 1)
    upper = np.stack([cx + xs, ys - 0.6 * mouth_open * 3 * (1 - (xs / half) ** 2)], 1)
    lower = np.stack([cx + xs, ys + mouth_open * 5 * (1 - (xs / half) ** 2)], 1)
    polygon = np.concatenate([upper, lower[::-1]]) * (1 << s)
    cv2.fillPoly(canvas, [polygon.round().astype(np.int32)], dark * 0.8, cv2.LINE_AA, s)
    cv2.polylines(
        canvas, [(upper * (1 << s)).round().astype(np.int32)], False, dark * 0.6, 1, cv2.LINE_AA, s
    )
    return canvas


def _photometric(rng: np.random.Generator, canvas: np.ndarray, size: int) -> np.ndarray:
    angle, scale = rng.normal(0, 8), rng.uniform(1.1, 1.35)  # FER2013 crops faces tightly
    matrix = cv2.getRotationMatrix2D((CANVAS / 2, CANVAS / 2), angle, scale)
    matrix[:, 2] += rng.normal(0, 2.0, 2)
    image = cv2.warpAffine(canvas, matrix, (CANVAS, CANVAS), borderMode=cv2.BORDER_REPLICATE)
    gx, gy = np.meshgrid(np.linspace(-1, 1, CANVAS), np.linspace(-1, 1, CANVAS))
    direction = rng.normal(0, 1, 2)
    image = image * (1 + 0.25 * (direction[0] * gx + direction[1] * gy)) * rng.uniform(0.7, 1.2)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.2))
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    image = image + rng.normal(0, rng.uniform(2, 12), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def synth_face(rng: np.random.Generator, expression: str, size: int = 48) -> np.ndarray:
    params = np.array(EXPRESSIONS[expression]) + rng.normal(0, 1, len(SPREAD)) * SPREAD
    return _photometric(rng, _draw_face(rng, params), size)


def make_synthetic(
    n_per_class: int = 300,
    size: int = 48,
    seed: int = 0,
    split_fractions: tuple[float, float] = (0.15, 0.15),
) -> FaceArrays:
    """Balanced synthetic FER set in FER2013's class order with train / val / test splits."""
    rng = np.random.default_rng(seed)
    classes = list(FER2013_CLASSES)
    labels = np.repeat(np.arange(len(classes)), n_per_class)
    images = np.stack([synth_face(rng, classes[label], size) for label in labels])
    position = np.tile(np.arange(n_per_class), len(classes))
    val_n = int(round(n_per_class * split_fractions[0]))
    test_n = int(round(n_per_class * split_fractions[1]))
    splits = np.where(position < test_n, 2, np.where(position < test_n + val_n, 1, 0))
    return FaceArrays(
        images,
        labels,
        splits,
        classes,
        source=f"synthetic faces (seed {seed}, {n_per_class} per class)",
    )
