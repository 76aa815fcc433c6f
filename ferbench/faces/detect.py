"""Face detectors behind one small interface: ``detector(bgr_frame) -> [(x, y, w, h), ...]``.

Below data/ and infer/: the live loop, image prediction and the readers of datasets whose
images are whole photos (CK+, JAFFE) all find faces with them.

Default: MTCNN (faces/mtcnn.py, weights shipped).  ``haar``: OpenCV's ``alt2`` cascade, scale
factor 1.2, 3 neighbours, on a grayscale frame downscaled to at most 800 pixels wide (never
upscaled), chosen by measurement on the crowd clip against the reference settings (``default``
cascade, 1.3 / 5): ``alt2`` finds faces on more frames at the same cost, and 800 px keeps the
~60 px faces of a 1080p crowd above the cascade's 20 px window.  ``yunet``: YuNet through
``cv2.FaceDetectorYN`` when the user supplies its ONNX model file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferbench.errors import FerbenchError
from ferbench.utils.opencv import cv2

Box = tuple[int, int, int, int]


class HaarDetector:
    """Haar cascade on a frame downscaled to `detect_width` pixels wide (0: full size)."""

    def __init__(
        self,
        cascade: str = "haarcascade_frontalface_alt2.xml",
        scale_factor: float = 1.2,
        min_neighbors: int = 3,
        min_size: int = 20,
        detect_width: int = 800,
        equalize: bool = False,
    ):
        path = Path(cascade)
        if not path.is_file():
            path = Path(cv2.data.haarcascades) / cascade
        self.classifier = cv2.CascadeClassifier(str(path))
        if self.classifier.empty():
            raise FerbenchError(
                f"cannot load Haar cascade {cascade} (opencv-python below 5 ships them)"
            )
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_size, self.detect_width, self.equalize = min_size, detect_width, equalize

    def __call__(self, frame: np.ndarray) -> list[Box]:
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        scale = min(1.0, self.detect_width / gray.shape[1]) if self.detect_width else 1.0
        small = (
            cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            if scale < 1
            else gray
        )
        if self.equalize:  # helps in dim light, hurts on flat backgrounds: off by default
            small = cv2.equalizeHist(small)
        found = self.classifier.detectMultiScale(
            small,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        return [
            tuple(int(round(v / scale)) for v in box) for box in np.asarray(found).reshape(-1, 4)
        ]


class YuNetDetector:
    """OpenCV's YuNet CNN face detector (face_detection_yunet_*.onnx, supplied by the user)."""

    def __init__(self, model_path: str, score_threshold: float = 0.7, detect_width: int = 640):
        if not Path(model_path).is_file():
            raise FerbenchError(
                f"YuNet model not found: {model_path} (download "
                "face_detection_yunet_2023mar.onnx from opencv_zoo)"
            )
        self.net = cv2.FaceDetectorYN.create(model_path, "", (320, 320), score_threshold)
        self.detect_width = detect_width

    def __call__(self, frame: np.ndarray) -> list[Box]:
        bgr = frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        scale = min(1.0, self.detect_width / bgr.shape[1])
        small = cv2.resize(bgr, None, fx=scale, fy=scale) if scale < 1 else bgr
        self.net.setInputSize((small.shape[1], small.shape[0]))
        _, faces = self.net.detect(small)
        if faces is None:
            return []
        return [tuple(int(round(v / scale)) for v in face[:4]) for face in faces]


DETECTORS = ("mtcnn", "haar", "yunet")


def make_detector(kind: str = "mtcnn", model: str | None = None, **kwargs):
    """`mtcnn` (CNN, shipped), `haar` (OpenCV cascade) or `yunet` (needs its ONNX file)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if kind == "mtcnn":
        from ferbench.faces.mtcnn import MtcnnDetector

        return MtcnnDetector(**kwargs)
    if kind == "haar":
        return HaarDetector(**kwargs)
    if kind == "yunet":
        return YuNetDetector(
            model or "face_detection_yunet_2023mar.onnx",
            detect_width=kwargs.get("detect_width") or 640,
        )
    raise FerbenchError(f"unknown detector '{kind}'; use {', '.join(DETECTORS)}")


def expand_box(box: Box, margin: float, width: int, height: int) -> Box:
    """Grow a detector box by `margin` of its size on each side (FER2013 crops include some
    forehead and chin) and clip it to the frame."""
    x, y, w, h = box
    dx, dy = int(round(w * margin)), int(round(h * margin))
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    return x0, y0, x1 - x0, y1 - y0


def crop_faces(frame: np.ndarray, boxes: list[Box], margin: float) -> list[np.ndarray]:
    """Views of the face regions; the predictor turns only these small crops to gray."""
    height, width = frame.shape[:2]
    crops = []
    for box in boxes:
        x, y, w, h = expand_box(box, margin, width, height)
        crops.append(frame[y : y + h, x : x + w])
    return crops


# MTCNN for photos: the original paper's P-Net / R-Net thresholds and a final O-Net face score
# of 0.9.  Video keeps its lower ones (0.5 / 0.6 / 0.7), where a blurred, half-turned face
# scores 0.7-0.9 and the tracker confirms it over frames; a photo has one look, and there the
# boxes scoring 0.7-0.9 were flags, desk edges and hair.  Clear faces score above 0.98 (the six
# of multiface.jpg: 0.98-1.0; the astronaut and cameraman portraits: 0.999), textures and
# non-face scenes at most 0.62 (scikit-image's sample images).
STILL_THRESHOLDS = (0.6, 0.7)
STILL_MIN_SCORE = 0.9


def still_detector(kind: str = "mtcnn"):
    """Detectors for photos: more pixels, finer steps and a stricter face score than live mode,
    as time matters less and no later frame confirms a face."""
    if kind == "haar":
        return HaarDetector(scale_factor=1.1, min_neighbors=4, detect_width=1600)
    if kind == "mtcnn":
        return make_detector(
            kind, detect_width=1280, thresholds=STILL_THRESHOLDS, min_score=STILL_MIN_SCORE
        )
    return make_detector(kind, detect_width=1280)


class PortraitDetector:
    """For photos that hold one face by construction (CK+ frames, JAFFE): the still detector's
    largest face; where it finds none, a second look with live mode's lower thresholds, on the
    photo and then on its equalised histogram, takes the best-scoring box.  A portrait set has
    no crowd to mistake, so a lower bar costs nothing there, and a blurred frame (Gaussian
    sigma 6 on the astronaut: O-Net 0.88) or a dim, flat one (contrast / 6: found only after
    equalising) is kept instead of shortening the counts.  `second_looks` counts those."""

    def __init__(self):
        self.strict = still_detector()
        self.lenient = make_detector("mtcnn", detect_width=1280)
        self.second_looks = 0

    def __call__(self, image: np.ndarray) -> list[Box]:
        boxes = self.strict(image)
        if boxes:
            return [max(boxes, key=lambda b: b[2] * b[3])]
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        for view in (image, cv2.equalizeHist(gray)):
            boxes = self.lenient(view)
            if boxes:
                self.second_looks += 1
                return [boxes[int(np.argmax(self.lenient.last_scores))]]
        return []
