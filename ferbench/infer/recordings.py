"""One recording → one face table, streamed to disk in chunks, resumable, on every core.

The faces are found by live's `FaceLocator` (same detector, tracker, re-checks) and classified
by the shared `Predictor` on `crop_faces`, so a table equals what `live --log` writes for the
same video.  Three stages overlap on threads (OpenCV, torch and ONNX Runtime release the GIL):

1. decode, tell scene cuts, and run the full detections that depend on the frames alone
   (every `detect_every` frames and after a cut) with a detector of its own;
2. the locator: tracking, O-Net re-checks and the re-searches that depend on its state;
3. classification of the crops of many frames in one pass, smoothing, the table, summaries.

Live runs stages 1 and 2 on one thread, where detection keeps it busy and the classifier idles.

Memory stays flat: rows go to chunk files of `chunk_frames` frames, summaries are running
counts.  After each chunk, the state that the next frame depends on (tracks, ids, smoothing,
counts) is saved beside the chunks, so an interrupted video continues from its last complete
chunk with no frame missing or doubled; a finished one is joined and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ferbench.errors import FerbenchError
from ferbench.faces.defaults import COAST, DETECT_EVERY, FER_MARGIN
from ferbench.infer.facetable import face_rows, join_chunks, write_chunk

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv"}
STATE = "state.json"


@dataclass(frozen=True)
class Settings:
    """Everything a table depends on (and how it is computed); picklable for workers."""

    checkpoint: str
    backend: str = "auto"  # the concrete backend the driver chose: workers never re-measure
    device: str = "cpu"
    detector: str = "mtcnn"
    detector_model: str | None = None
    detect_width: int | None = None
    detect_every: int = DETECT_EVERY
    coast: int = COAST
    verify: bool = True
    smooth: float = 0.0
    margin: float = FER_MARGIN
    align: bool = True  # crops aligned by the landmarks to the model's template (faces/align.py)
    every: int = 1  # analyse every Nth frame
    fps: float | None = None  # or about this many frames a second
    format: str = "csv"
    chunk_frames: int = 500
    batch: int = 64  # faces classified in one pass, across frames (same probabilities)
    pipeline: bool = True  # three overlapped stages; off for one video per core (--jobs)
    plot: bool = False  # the timeline plot beside each table

    def key(self) -> str:
        """What makes two tables differ: the checkpoint's identity and the analysis settings."""
        from ferbench.utils.fileio import sha256_file

        fields = {k: v for k, v in asdict(self).items() if k not in ("batch", "pipeline")}
        fields["checkpoint"] = sha256_file(Path(self.checkpoint))
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    def step(self, fps_in: float) -> int:
        if self.fps:
            return max(1, int(round(fps_in / self.fps)))
        return max(1, self.every)


class IdCounter:
    """Face ids counting up, whose next value can be saved and restored (itertools.count's
    cannot be read without taking one)."""

    def __init__(self, start: int = 0):
        self.next = start

    def __iter__(self):
        return self

    def __next__(self) -> int:
        self.next += 1
        return self.next - 1


@dataclass
class Summary:
    """Running aggregates: per person, frames seen in each expression; a timeline of expression
    shares in at most MAX_BINS bins (pairs merge when it fills), whatever the video's length."""

    class_names: list[str]
    people: dict = field(default_factory=dict)  # id -> [first frame, last frame, counts...]
    bins: list = field(default_factory=list)  # per bin: counts per class
    width: int = 1  # frames per bin
    MAX_BINS = 512

    def add(self, frame: int, ids, probs) -> None:
        while frame // self.width >= self.MAX_BINS:
            self.bins = [
                [a + b for a, b in zip(*self.bins[i : i + 2])] if i + 1 < len(self.bins)
                else self.bins[i]
                for i in range(0, len(self.bins), 2)
            ]  # fmt: skip
            self.width *= 2
        slot = frame // self.width
        while len(self.bins) <= slot:
            self.bins.append([0] * len(self.class_names))
        for face_id, p in zip(ids, probs):
            top = int(np.argmax(p))
            person = self.people.setdefault(str(face_id), [frame, frame] + [0] * len(p))
            person[1] = frame
            person[2 + top] += 1
            self.bins[slot][top] += 1

    def state(self) -> dict:
        return {"people": self.people, "bins": self.bins, "width": self.width}

    def write(self, path: Path, fps: float, plot: bool) -> None:
        """<table>.people.csv: each person's share of each expression; with `plot`, the
        timeline of expression shares as <table>.timeline.png."""
        import pandas as pd

        rows = []
        for person, (first, last, *counts) in self.people.items():
            total = max(sum(counts), 1)
            rows.append(
                {"person": int(person), "frames": sum(counts),
                 "first_s": round(first / fps, 3), "last_s": round(last / fps, 3),
                 **{name: round(c / total, 4) for name, c in zip(self.class_names, counts)}}
            )  # fmt: skip
        columns = ["person", "frames", "first_s", "last_s", *self.class_names]
        people = path.with_name(path.stem + ".people.csv")
        pd.DataFrame(rows, columns=columns).to_csv(people.with_suffix(".tmp"), index=False)
        people.with_suffix(".tmp").replace(people)
        if plot:
            self._plot(path.with_name(path.stem + ".timeline.png"), fps)

    def _plot(self, path: Path, fps: float) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        counts = np.array(self.bins, dtype=float).reshape(-1, len(self.class_names))
        shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        times = (np.arange(len(counts)) + 0.5) * self.width / fps
        fig, ax = plt.subplots(figsize=(10, 3.5))
        ax.stackplot(times, shares.T, labels=self.class_names)
        ax.set(xlabel="time (s)", ylabel="share of faces", ylim=(0, 1), title=path.stem)
        ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=8)
        fig.tight_layout()
        fig.savefig(path.with_suffix(".tmp.png"), dpi=100)
        plt.close(fig)
        path.with_suffix(".tmp.png").replace(path)


class _Precomputed:
    """The locator's detector: the boxes stage 1 found for this frame when it has them, else
    (a re-search after a lost face) a detection on the spot."""

    def __init__(self, detector):
        self.detector, self.pending, self.last_landmarks = detector, None, None
        self.verify = getattr(detector, "verify", None)

    def __call__(self, frame):
        if self.pending is not None:
            boxes, self.last_landmarks = self.pending
            self.pending = None
            return boxes
        boxes = self.detector(frame)
        self.last_landmarks = getattr(self.detector, "last_landmarks", None)
        return boxes


_MODELS: dict = {}


def load_models(settings: Settings):
    """The predictor and two detectors (stage 1's and the locator's), loaded once per process
    and kept for the next video."""
    from ferbench.faces.detect import make_detector
    from ferbench.infer.backend import predictor_for

    key = (settings.checkpoint, settings.backend, settings.device, settings.detector,
           settings.detector_model, settings.detect_width)  # fmt: skip
    if key not in _MODELS:
        _MODELS.clear()
        predictor, _ = predictor_for(Path(settings.checkpoint), settings.backend, settings.device)

        def detector():
            return make_detector(
                settings.detector, settings.detector_model, detect_width=settings.detect_width
            )

        _MODELS[key] = predictor, detector(), detector()
    return _MODELS[key]


def video_identity(video: Path) -> dict:
    stat = video.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def part_dir(table: Path) -> Path:
    return table.with_name(table.name + ".part")


def analyse_video(video: Path, table: Path, settings: Settings, progress=None) -> dict:
    """Analyse `video` into `table` (continuing an interrupted run of the same settings);
    `progress(frames)` is told of each batch of frames done.  Returns the video's figures."""
    from ferbench.faces.align import FaceFramer
    from ferbench.infer.live import FaceLocator, LiveStats, _one_thread_per_op, open_source
    from ferbench.infer.tracking import ProbabilitySmoother

    video, table = Path(video), Path(table)
    capture = open_source(str(video))
    try:
        fps_in = capture.get(cv2_prop("CAP_PROP_FPS")) or 30.0
        predictor, ahead_detector, own_detector = load_models(settings)
        names = predictor.class_names
        parts = part_dir(table)
        identity = {**video_identity(video), "settings": settings.key()}
        state = _read_state(parts, identity)
        if state is None:
            shutil.rmtree(parts, ignore_errors=True)
            parts.mkdir(parents=True)
        stats = LiveStats()
        detector = _Precomputed(own_detector)
        locator = FaceLocator(
            detector, settings.detect_every, settings.coast, settings.verify, stats, IdCounter()
        )
        smoother = ProbabilitySmoother(settings.smooth)
        summary = Summary(list(names))
        chunks, start_frame, done_before = 0, 0, 0
        framer = FaceFramer(
            predictor.face_template if settings.align else None,
            predictor.input_size,
            settings.margin,
        )
        if state is not None:
            locator.restore(state["locator"])
            framer.restore(state.get("framer", {}))
            smoother.last = {int(k): np.array(v, np.float32) for k, v in state["smooth"].items()}
            summary.people, summary.bins = state["summary"]["people"], state["summary"]["bins"]
            summary.width = state["summary"]["width"]
            chunks, start_frame = state["chunks"], state["next_frame"]
            done_before, stats.faces = state["frames"], state["faces"]
            for stale in parts.glob("chunk-*"):  # written after the last saved state
                if int(stale.name.split("-")[1].split(".")[0]) >= chunks:
                    stale.unlink()
            for _ in range(start_frame):
                if not capture.grab():
                    break
        step = settings.step(fps_in)
        restore_threads = _one_thread_per_op(predictor.model)
        start = time.perf_counter()
        frames_done = 0
        items = _stages(
            capture, locator, framer, detector, ahead_detector, settings, step, start_frame
        )
        try:
            pending, rows = [], []
            for item in items:
                pending.append(item)
                if sum(len(p[2]) for p in pending) < settings.batch and item[5] is None:
                    continue
                rows += _classify(pending, predictor, smoother, summary, settings, fps_in)
                frames_done += len(pending)
                if progress is not None:
                    progress(len(pending))
                last = pending[-1]
                pending = []
                if last[5] is not None:  # a chunk boundary: its rows and the state to disk
                    write_chunk(_chunk(parts, chunks, settings), rows, names, settings.format)
                    chunks += 1
                    stats.faces += len(rows)
                    rows = []
                    _write_state(parts, identity, chunks, last[5], smoother, summary,
                                 done_before + frames_done, stats.faces)  # fmt: skip
            if pending:
                rows += _classify(pending, predictor, smoother, summary, settings, fps_in)
                frames_done += len(pending)
                if progress is not None:
                    progress(len(pending))
            if rows or chunks == 0:
                write_chunk(_chunk(parts, chunks, settings), rows, names, settings.format)
                chunks += 1
                stats.faces += len(rows)
        finally:
            items.close()
            restore_threads()
        seconds = time.perf_counter() - start
        total_frames = done_before + frames_done
        if total_frames == 0:
            raise FerbenchError(f"no frame of {video} could be decoded (corrupt or empty video)")
        table.parent.mkdir(parents=True, exist_ok=True)
        join_chunks(
            [_chunk(parts, i, settings) for i in range(chunks)], table, names, settings.format
        )
        summary.write(table, fps_in, settings.plot)
        shutil.rmtree(parts, ignore_errors=True)
    finally:
        capture.release()
    fps = frames_done / seconds if seconds else 0.0
    return {
        "frames": total_frames,
        "faces": stats.faces,
        "people": len(summary.people),
        "seconds": round(seconds, 3),
        "fps": round(fps, 2),
        "fps_in": round(fps_in, 3),
        "video_s": round(total_frames * step / fps_in, 3),
        "new_frames": frames_done,  # analysed in this call (the rest before an interruption)
        "realtime": round(fps * step / fps_in, 3),  # video seconds per second of analysis
        "resumed_at": start_frame,
        "cuts": stats.cuts,
    }


def cv2_prop(name: str) -> int:
    from ferbench.utils.opencv import cv2

    return getattr(cv2, name)


def _stages(capture, locator, framer, detector, ahead_detector, settings, step, start_frame):
    """Stages 1 and 2 (on their threads with `pipeline`): per analysed frame, (frame number,
    ids, boxes, crops, landmarks, locator state at a chunk boundary or None)."""
    from ferbench.infer.ahead import RunAhead

    decoded = _decode_and_detect(
        capture, ahead_detector, settings.detect_every, step, start_frame, locator
    )
    if settings.pipeline:
        decoded = RunAhead(decoded, depth=8, name="ferbench-decode")
    located = _locate(decoded, locator, framer, detector, settings)
    if settings.pipeline:
        located = RunAhead(located, depth=16, name="ferbench-locate")
    return _Closing(located, decoded)


class _Closing:
    """Iterate the last stage; close stops every worker thread (the last one first)."""

    def __init__(self, located, decoded):
        self.located, self.decoded = located, decoded

    def __iter__(self):
        return iter(self.located)

    def close(self):
        for stage in (self.located, self.decoded):
            if hasattr(stage, "close"):
                stage.close()


def _decode_and_detect(capture, detector, detect_every, step, frame_no, locator):
    """Stage 1: every `step`th frame with the detection the locator will ask for on it (where
    that follows from the frames alone: its schedule and scene cuts), else None."""
    from ferbench.infer.live import _is_cut, needs_detection, thumbnail

    index, previous = locator.index, locator._previous
    while capture.grab():
        if frame_no % step:
            frame_no += 1
            continue
        ok, frame = capture.retrieve()
        if not ok:
            return
        thumb = thumbnail(frame)
        cut = previous is not None and _is_cut(previous, thumb)
        previous = thumb
        found = None
        if needs_detection(index, detect_every, cut):
            found = (detector(frame), getattr(detector, "last_landmarks", None))
        yield frame_no, frame, found
        index += 1
        frame_no += 1


def _locate(decoded, locator, framer, detector: _Precomputed, settings: Settings):
    """Stage 2: live's locator and crops on each frame; the crops are copied so the frame can
    go."""
    count = locator.index
    for frame_no, frame, found in decoded:
        detector.pending = found
        ids, boxes = locator(frame)
        crops = [np.ascontiguousarray(c) for c in framer(frame, ids, boxes, locator.landmarks)]
        framer.forget(ids)
        count += 1
        boundary = None
        if count % settings.chunk_frames == 0:
            boundary = {
                "locator": locator.snapshot(),
                "framer": framer.snapshot(),
                "next_frame": frame_no + 1,
            }
        yield frame_no, ids, boxes, crops, dict(locator.landmarks), boundary


def _classify(pending, predictor, smoother, summary, settings, fps_in) -> list[tuple]:
    """Stage 3: the crops of several frames in one pass, then each frame in order as live
    does (smoothing, rows, summary counts)."""
    crops = [c for item in pending for c in item[3]]
    probs = predictor.predict(crops)
    rows, at = [], 0
    names = predictor.class_names
    for frame_no, ids, boxes, frame_crops, landmarks, _ in pending:
        p = smoother(ids, probs[at : at + len(frame_crops)])
        at += len(frame_crops)
        rows += face_rows(frame_no, frame_no / fps_in, ids, boxes, p, names, landmarks)
        summary.add(frame_no, ids, p)
    return rows


def _chunk(parts: Path, i: int, settings: Settings) -> Path:
    return parts / f"chunk-{i:06d}.{settings.format}"


def _read_state(parts: Path, identity: dict) -> dict | None:
    """The saved state of an interrupted run on the same video with the same settings."""
    try:
        state = json.loads((parts / STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if state.get("identity") == identity else None


def _write_state(parts, identity, chunks, boundary, smoother, summary, frames, faces) -> None:
    state = {
        "identity": identity,
        "chunks": chunks,
        "next_frame": boundary["next_frame"],
        "locator": boundary["locator"],
        "framer": boundary["framer"],
        "smooth": {str(k): np.asarray(v, np.float64).tolist() for k, v in smoother.last.items()},
        "summary": summary.state(),
        "frames": frames,
        "faces": faces,
    }
    tmp = parts / (STATE + ".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(parts / STATE)
