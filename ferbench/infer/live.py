"""The live loop: read a frame, detect faces, classify them in one batch, draw, write, show."""

from __future__ import annotations

import csv
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferbench.errors import FerbenchError
from ferbench.infer.detect import FER_MARGIN, crop_faces
from ferbench.infer.overlay import draw_face, draw_fps
from ferbench.infer.predictor import Predictor
from ferbench.infer.tracking import FaceTracker
from ferbench.opencv import cv2

QUIT_KEYS = {ord("q"), ord("Q"), 27}
WINDOW = "ferbench live"


@dataclass
class LiveStats:
    frames: int = 0
    frames_with_face: int = 0
    faces: int = 0
    seconds: float = 0.0
    detect_s: float = 0.0
    classify_s: float = 0.0
    per_face_ms: list[float] = field(default_factory=list)
    cuts: int = 0  # scene changes seen (each forced a fresh detection)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        return {
            "frames": self.frames,
            "frames_with_face": self.frames_with_face,
            "faces": self.faces,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
            "detect_ms_per_frame": round(1000 * self.detect_s / max(self.frames, 1), 2),
            "classify_ms_per_face": round(1000 * self.classify_s / max(self.faces, 1), 2),
            "scene_cuts": self.cuts,
        }


def open_source(source: str) -> cv2.VideoCapture:
    is_camera = source.isdigit()
    if not is_camera and "://" not in source and not Path(source).exists():
        raise FerbenchError(f"video file not found: {source}")
    try:  # OpenCV's own camera warnings would bury our one-line error
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:
        pass
    capture = cv2.VideoCapture(int(source) if is_camera else source)
    if not capture.isOpened():
        if is_camera:
            raise FerbenchError(
                f"cannot open camera {source}: no camera on this machine? "
                "Try --source FILE --no-window"
            )
        raise FerbenchError(f"cannot open video {source} (unsupported codec or unreachable URL)")
    return capture


def check_display() -> None:
    """A window needs a display and an OpenCV build with GUI support; say so in one line."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise FerbenchError(
            "no display found; watch in a browser with --serve, or run headless with "
            "--no-window --output annotated.mp4"
        )
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise FerbenchError(
            "this OpenCV build has no GUI (opencv-python-headless replaced ferbench's "
            "opencv-python): `pip uninstall -y opencv-python-headless && pip install "
            "--force-reinstall 'opencv-python<5'`, or watch with --serve or --no-window --output"
        ) from None


def run_live(
    predictor: Predictor,
    source: str,
    detector,
    output: Path | None = None,
    show: bool = True,
    log: Path | None = None,
    detect_every: int = 1,
    smooth: float = 0.0,
    margin: float = FER_MARGIN,
    max_frames: int | None = None,
    coast: int = 1,
    server=None,
    verify: bool = True,
) -> LiveStats:
    """Run until the source ends, `max_frames`, or q/Esc in the window.  `server` (a
    FrameServer) receives every annotated frame with its faces for the browser view.  With
    `verify` and a detector that can (MTCNN), a face the last detection missed is re-checked
    on every frame it coasts: re-framed where O-Net still sees a face, dropped where not."""
    capture = open_source(source)
    if show:
        check_display()
    fps_in = capture.get(cv2.CAP_PROP_FPS) or 30.0
    writer = None
    log_handle = open(log, "w", newline="") if log else None
    log_writer = csv.writer(log_handle) if log_handle else None
    if log_writer:
        log_writer.writerow(
            [
                "frame",
                "time_s",
                "face",
                "x",
                "y",
                "w",
                "h",
                "label",
                "probability",
                *predictor.class_names,
            ]
        )
    tracker = FaceTracker(smooth=smooth, coast=coast)
    verify = getattr(detector, "verify", None) if verify else None
    stats = LiveStats()
    boxes: list = []
    ids: list[int] = []
    previous = None
    start = time.perf_counter()
    try:
        while max_frames is None or stats.frames < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            thumb = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (32, 18))
            cut = previous is not None and _is_cut(previous, thumb)
            previous = thumb
            if cut:  # a new scene: boxes of the old one must not linger or coast onto it
                tracker.reset()
                stats.cuts += 1
            t0 = time.perf_counter()
            if cut or stats.frames % max(detect_every, 1) == 0:
                tracker.update(detector(frame), stats.frames)
            ids, boxes = tracker.coasting(stats.frames) if verify else ([], [])
            if ids:  # faces the detector missed: still a face here, or gone?
                tracker.refresh(ids, verify(frame, boxes), stats.frames)
            stats.detect_s += time.perf_counter() - t0
            ids, boxes = _in_frame(*tracker.active(stats.frames), frame.shape)
            t0 = time.perf_counter()
            probs = predictor.predict(crop_faces(frame, boxes, margin))
            stats.classify_s += time.perf_counter() - t0
            probs = tracker.smooth_probs(ids, probs)
            for box, p in zip(boxes, probs):
                draw_face(frame, box, p, predictor.class_names)
            stats.frames += 1
            stats.faces += len(boxes)
            stats.frames_with_face += bool(boxes)
            stats.seconds = time.perf_counter() - start
            draw_fps(frame, stats.fps, len(boxes))
            if server is not None:
                server.publish(frame, _faces(ids, boxes, probs, predictor.class_names), stats.fps)
            if output is not None:
                if writer is None:
                    writer = _open_writer(output, fps_in, frame.shape)
                writer.write(frame)
            if log_writer:
                now = stats.seconds if source.isdigit() else (stats.frames - 1) / fps_in
                for face, (box, p) in enumerate(zip(boxes, probs)):
                    top = int(np.argmax(p))
                    log_writer.writerow(
                        [
                            stats.frames - 1,
                            f"{now:.3f}",
                            ids[face],
                            *box,
                            predictor.class_names[top],
                            f"{p[top]:.4f}",
                            *[f"{v:.4f}" for v in p],
                        ]
                    )
            if show:
                if stats.frames == 1:  # open at the frame's size (capped), not Qt's default
                    scale = min(1.0, 1280 / frame.shape[1])
                    cv2.resizeWindow(
                        WINDOW, int(frame.shape[1] * scale), int(frame.shape[0] * scale)
                    )
                cv2.imshow(WINDOW, frame)
                if cv2.waitKey(1) & 0xFF in QUIT_KEYS:
                    break
    finally:
        stats.seconds = time.perf_counter() - start
        capture.release()
        if writer is not None:
            writer.release()
        if log_handle:
            log_handle.close()
        if show:
            cv2.destroyAllWindows()
    return stats


def _in_frame(ids: list[int], boxes: list, shape) -> tuple[list[int], list]:
    """Faces whose predicted box still shows at least 8×8 pixels of the frame."""
    height, width = shape[:2]
    kept = [
        (i, b)
        for i, b in zip(ids, boxes)
        if min(b[0] + b[2], width) - max(b[0], 0) >= 8
        and min(b[1] + b[3], height) - max(b[1], 0) >= 8
    ]
    return [i for i, _ in kept], [b for _, b in kept]


CUT_THRESHOLD = 24.0  # mean |Δ| of 32×18 gray thumbnails; camera motion stays well below


def _is_cut(previous: np.ndarray, thumb: np.ndarray) -> bool:
    """A hard cut (or a jump of the camera): most of the picture changed at once."""
    return float(np.abs(previous.astype(np.int16) - thumb).mean()) > CUT_THRESHOLD


def _faces(ids, boxes, probs, class_names) -> list[dict]:
    return [
        {
            "id": int(face_id),
            "box": [int(v) for v in box],
            "label": class_names[int(np.argmax(p))],
            "probabilities": [round(float(v), 4) for v in p],
        }
        for face_id, box, p in zip(ids, boxes, probs)
    ]


def _open_writer(path: Path, fps: float, shape) -> cv2.VideoWriter:
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(
        *("mp4v" if path.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG")
    )
    writer = cv2.VideoWriter(str(path), fourcc, fps, (shape[1], shape[0]))
    if not writer.isOpened():
        raise FerbenchError(f"cannot write video {path}; use .mp4 or .avi")
    return writer
