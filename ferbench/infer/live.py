"""The live loop in two stages: read a frame and find its faces (detect, track, re-check), then
classify them in one batch, draw, write, show; with `overlap` the first runs a few frames ahead
on a worker thread."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ferbench.errors import FerbenchError
from ferbench.faces.align import FaceFramer
from ferbench.faces.defaults import COAST, DETECT_EVERY, FER_MARGIN
from ferbench.infer.ahead import RunAhead
from ferbench.infer.facetable import FaceLog
from ferbench.infer.overlay import draw_face, draw_fps
from ferbench.infer.predictor import Predictor
from ferbench.infer.tracking import FaceTracker, ProbabilitySmoother
from ferbench.utils.opencv import cv2

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


def check_source(source: str) -> None:
    """A video file is found and opened before any model loads or backend is measured (a
    camera is opened by the live loop itself: opening it twice is slow on some drivers)."""
    if source.isdigit() or "://" in source:
        return
    open_source(source).release()


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


class FaceLocator:
    """The loop's first stage for one stream: the faces of each frame, with stable ids.

    Detects every `detect_every` frames and after a scene cut, carries faces along their
    motion between detections, and with `verify` (a detector's re-check, MTCNN's O-Net)
    re-checks those whose carried box is a guess: re-framed where it still holds a face; where
    one does not, the whole frame is searched again (a face that jumped is found, one that
    left is dropped).  One per camera, file or browser tab; `ids` shared between locators
    keeps identities unique across them."""

    def __init__(
        self,
        detector,
        detect_every: int = DETECT_EVERY,
        coast: int = COAST,
        verify: bool = True,
        stats: LiveStats | None = None,
        ids=None,
    ):
        self.detector, self.detect_every = detector, max(detect_every, 1)
        self.verify = getattr(detector, "verify", None) if verify else None
        self.tracker = FaceTracker(coast=coast, ids=ids)
        self.stats = stats if stats is not None else LiveStats()
        self.index = 0
        self._previous = None
        self.landmarks: dict = {}  # id -> five points, for the faces detected on this frame

    def __call__(self, frame: np.ndarray) -> tuple[list[int], list]:
        tracker, index = self.tracker, self.index
        thumb = thumbnail(frame)
        cut = self._previous is not None and _is_cut(self._previous, thumb)
        self._previous = thumb
        if cut:  # a new scene: boxes of the old one must not linger or coast onto it
            tracker.reset()
            self.stats.cuts += 1
        t0 = time.perf_counter()
        detected = needs_detection(index, self.detect_every, cut)
        self.landmarks = {}
        if detected:
            self._detect(frame, index)
        ids, boxes = tracker.uncertain(index) if self.verify else ([], [])
        if ids:  # carried boxes that are guesses: still on a face?
            checked = self.verify(frame, boxes)
            if None in checked and not detected:  # one lost its face: search the frame again
                self._detect(frame, index)
                tracker.forget_unseen([i for i, box in zip(ids, checked) if box is None], index)
            else:
                tracker.refresh(ids, checked, index)
        self.stats.detect_s += time.perf_counter() - t0
        self.index += 1
        return _in_frame(*tracker.active(index), frame.shape)

    def _detect(self, frame: np.ndarray, index: int) -> None:
        ids = self.tracker.update(self.detector(frame), index)
        marks = getattr(self.detector, "last_landmarks", None)  # where a detector gives them
        self.landmarks = dict(zip(ids, marks)) if marks is not None else {}

    def snapshot(self) -> dict:
        """The state after the last frame, as JSON, so that a long video's analysis continues
        from it exactly as if never stopped (`ids` must then be a `recordings.IdCounter`)."""
        return {
            "index": self.index,
            "previous": None if self._previous is None else self._previous.tolist(),
            "tracks": {str(k): dict(v) for k, v in self.tracker.tracks.items()},
            "next_id": self.tracker._ids.next,
            "cuts": self.stats.cuts,
        }

    def restore(self, state: dict) -> None:
        self.index, self.stats.cuts = state["index"], state["cuts"]
        previous = state["previous"]
        self._previous = None if previous is None else np.array(previous, dtype=np.uint8)
        self.tracker.tracks = {int(k): v for k, v in state["tracks"].items()}
        self.tracker._ids.next = state["next_id"]


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """The 32×18 gray thumbnail scene cuts are told from (shrunk first: the colour conversion
    then touches 576 pixels, not the whole frame)."""
    return cv2.cvtColor(cv2.resize(frame, (32, 18)), cv2.COLOR_BGR2GRAY)


def needs_detection(locator_index: int, detect_every: int, cut: bool) -> bool:
    """Whether the locator runs a full detection on this frame (before any re-check)."""
    return cut or locator_index % max(detect_every, 1) == 0


class Annotator:
    """The loop's second stage, shared by every source: classify a frame's faces in one batch,
    draw them, and hand the frame to the web page, the video file and the face log."""

    def __init__(
        self,
        predictor: Predictor,
        margin: float = FER_MARGIN,
        output: Path | None = None,
        log: Path | None = None,
        fps: float = 30.0,
        server=None,
        stats: LiveStats | None = None,
        align: bool = True,
    ):
        self.predictor, self.margin, self.server = predictor, margin, server
        # each face's crop framed like the training faces by its landmarks (faces/align.py)
        template = predictor.face_template if align else None
        self.framer = FaceFramer(template, predictor.input_size, margin)
        self.output, self.fps = output, fps
        self.stats = stats if stats is not None else LiveStats()
        self._writer = None
        self._log = FaceLog(log, predictor.class_names) if log else None

    def __call__(
        self,
        frame: np.ndarray,
        ids: list[int],
        boxes: list,
        smoother,
        time_s: float,
        landmarks: dict | None = None,
    ) -> list[dict]:
        """Draws on `frame` in place; returns its faces (id, box, label, probabilities)."""
        stats, names = self.stats, self.predictor.class_names
        t0 = time.perf_counter()
        crops = self.framer(frame, ids, boxes, landmarks)
        self.framer.forget(ids)
        probs = smoother(ids, self.predictor.predict(crops))
        stats.classify_s += time.perf_counter() - t0
        for box, p in zip(boxes, probs):
            draw_face(frame, box, p, names)
        stats.frames += 1
        stats.faces += len(boxes)
        stats.frames_with_face += bool(boxes)
        draw_fps(frame, stats.fps, len(boxes))
        faces = _faces(ids, boxes, probs, names)
        if self.server is not None:
            self.server.publish(frame, faces, stats.fps)
        if self.output is not None:
            if self._writer is None:
                self._writer = _open_writer(self.output, self.fps, frame.shape)
                self._size = (frame.shape[1], frame.shape[0])
            if (frame.shape[1], frame.shape[0]) != self._size:  # another tab, another size
                frame = cv2.resize(frame, self._size)
            self._writer.write(frame)
        if self._log:
            self._log.write(stats.frames - 1, time_s, ids, boxes, probs, landmarks)
        return faces

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
        if self._log:
            self._log.close()


def run_live(
    predictor: Predictor,
    source: str,
    detector,
    output: Path | None = None,
    show: bool = True,
    log: Path | None = None,
    detect_every: int = DETECT_EVERY,
    smooth: float = 0.0,
    margin: float = FER_MARGIN,
    max_frames: int | None = None,
    coast: int = COAST,
    server=None,
    verify: bool = True,
    overlap: bool = True,
    align: bool = True,
) -> LiveStats:
    """Run until the source ends, `max_frames`, or q/Esc in the window.  `server` (a
    FrameServer) receives every annotated frame with its faces for the browser view.  With
    `verify`, carried boxes that are guesses are re-checked (see FaceLocator).  With `overlap`,
    frames are read and their faces found on a worker thread, a few frames ahead of the
    classifying and drawing (decoding a 1080p frame then overlaps the classifier)."""
    capture = open_source(source)
    if show:
        check_display()
    fps_in = capture.get(cv2.CAP_PROP_FPS) or 30.0
    stats = LiveStats()
    locator = FaceLocator(detector, detect_every, coast, verify, stats)
    annotate = Annotator(predictor, margin, output, log, fps_in, server, stats, align)
    smoother = ProbabilitySmoother(smooth)
    located = _read_and_locate(capture, locator, max_frames)
    if overlap:  # the worker releases the capture after its last read, never during one
        located = RunAhead(located, release=capture.release)
    restore_threads = _one_thread_per_op(predictor.model) if overlap else (lambda: None)
    start = time.perf_counter()
    try:
        for frame, ids, boxes, landmarks in located:
            stats.seconds = time.perf_counter() - start
            now = stats.seconds if source.isdigit() else stats.frames / fps_in
            annotate(frame, ids, boxes, smoother, now, landmarks)
            stats.seconds = time.perf_counter() - start
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
        located.close()  # the worker stops before the capture it reads goes
        restore_threads()
        if not overlap:
            capture.release()
        annotate.close()
        if show:
            cv2.destroyAllWindows()
    return stats


def _read_and_locate(capture, locator: FaceLocator, max_frames: int | None):
    """Each frame of the capture with its faces' ids, boxes and landmarks."""
    while max_frames is None or locator.index < max_frames:
        ok, frame = capture.read()
        if not ok:
            return
        yield (frame, *locator(frame), locator.landmarks)


def _one_thread_per_op(model):
    """While the two stages overlap, torch (and an ONNX Runtime classifier) use one thread per
    operation: each stage then has a core, instead of both splitting small operations (P-Net
    levels, a few 48×48 faces) over two.  Returns the function that restores the settings.
    Measured on the labelled video (2 AVX2 cores): one stage, two threads 43 frames/s; two
    stages, two threads each 48; two stages, one thread each 51."""
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    onnx_threads = model.use_threads(1) if hasattr(model, "use_threads") else None

    def restore() -> None:
        torch.set_num_threads(torch_threads)
        if hasattr(model, "use_threads"):
            model.use_threads(onnx_threads)

    return restore


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
