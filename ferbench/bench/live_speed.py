"""The live loop against the reference webcam loop, side by side on the same 640×360 clip.

Reference loop (the thesis program): full-frame Haar cascade (default frontal face, scale factor
1.3, min neighbours 5) on every frame, one forward pass per face at batch 1, ``cv2.putText``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from ferbench.bench.labelled_video import ceiling, read_truth, score_both
from ferbench.errors import FerbenchError
from ferbench.faces.defaults import COAST, DETECT_EVERY, FER_MARGIN
from ferbench.faces.detect import HaarDetector, make_detector
from ferbench.infer.backend import predictor_for
from ferbench.infer.live import run_live
from ferbench.infer.predictor import Predictor
from ferbench.runs import best_run
from ferbench.utils.opencv import cv2

SIZE = (640, 360)


def resize_clip(source: Path, target: Path) -> int:
    capture = cv2.VideoCapture(str(source))
    if not capture.isOpened():
        raise FerbenchError(f"cannot open video {source}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE)
    frames = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, SIZE, interpolation=cv2.INTER_AREA))
        frames += 1
    writer.release()
    return frames


def reference_loop(
    clip: Path, predictor: Predictor, output: Path, records: list | None = None
) -> dict:
    """The reference loop; `records` receives (frame, x, y, w, h, label) per face found."""
    cascade = cv2.CascadeClassifier(
        str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")
    )
    capture = cv2.VideoCapture(str(clip))
    writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*"mp4v"), 30, SIZE)
    model, pre = predictor.model, predictor.preprocess
    frames = with_face = faces = 0
    classify = 0.0
    start = time.perf_counter()
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        found = cascade.detectMultiScale(gray, 1.3, 5)
        for x, y, w, h in found:
            t0 = time.perf_counter()
            crop = cv2.resize(gray[y : y + h, x : x + w], (pre.input_size, pre.input_size))
            with torch.no_grad():
                probs = torch.softmax(model(pre(torch.from_numpy(crop)[None])), 1)[0]
            classify += time.perf_counter() - t0
            label = predictor.class_names[int(probs.argmax())]
            if records is not None:
                records.append((frames, int(x), int(y), int(w), int(h), label))
            cv2.rectangle(frame, (x, y), (x + w, y + h), (255, 0, 0), 2)
            cv2.putText(
                frame,
                f"{label} {float(probs.max()):.2f}",
                (x, y - 10),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.9,
                (255, 0, 0),
                2,
            )
        writer.write(frame)
        frames += 1
        with_face += len(found) > 0
        faces += len(found)
    seconds = time.perf_counter() - start
    writer.release()
    return {
        "loop": "reference (Haar 1.3/5 full frame, batch-1 fp32)",
        "frames": frames,
        "frames_with_face": with_face,
        "faces": faces,
        "fps": frames / seconds,
        "classify_ms_per_face": 1000 * classify / max(faces, 1),
    }


def speed_checkpoint(checkpoint: str | None, model_name: str, tmp: Path) -> Path:
    """The checkpoint to time: the given one, else the best finished run of the model, else an
    untrained model of the same shape (speed does not depend on the weights)."""
    if checkpoint:
        return Path(checkpoint)
    try:
        return best_run(model_name, "results").best_checkpoint
    except FerbenchError:
        pass
    from ferbench.data.classes import FER2013_CLASSES
    from ferbench.models import Preprocess, create_model, model_card
    from ferbench.models.checkpoint import checkpoint_meta, save_checkpoint

    card = model_card(model_name)
    args = {"num_classes": 7, "in_chans": card.in_chans, "input_size": card.input_size}
    path = tmp / f"untrained-{model_name.replace('/', '-')}.pt"
    meta = checkpoint_meta(model_name, args, FER2013_CLASSES, Preprocess.for_model(card))
    save_checkpoint(path, create_model(model_name, **args), meta)
    return path


def _describe(detector) -> str:
    if isinstance(detector, HaarDetector):
        return (
            f"Haar alt2 {detector.scale_factor}/{detector.min_neighbors} on "
            f"{detector.detect_width} px"
        )
    return f"MTCNN min face {detector.min_face} px on {detector.detect_width} px"


def bench_live(
    video: Path, checkpoint: str | None, model_name: str, truth: Path | None = None
) -> list[dict]:
    """The reference loop and ferbench's loops on `video` (resized to 640×360 unless a `truth`
    file scores it as it is): frames/s, faces found and, with `truth`, detection recall and
    precision and end-to-end label accuracy next to the ceiling (true boxes classified)."""
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory(prefix="ferbench-live-") as tmp:
        tmp_path = Path(tmp)
        clip, expected = Path(video), None
        if truth is None:
            clip = tmp_path / "clip.mp4"
            resize_clip(video, clip)
            loops = [("haar", DETECT_EVERY, "torch", None, True, True)]
            loops += [("mtcnn", DETECT_EVERY, "torch", None, True, True)]
            loops += [("mtcnn", DETECT_EVERY, "torch-int8", None, True, True)]
        else:  # (detector, detect every, classifier backend, width (None: default), overlap,
            # crops aligned by the landmarks)
            expected = read_truth(truth)
            loops = [("haar", DETECT_EVERY, "torch", None, True, True)]
            loops += [("mtcnn", 1, "torch", None, True, True)]
            loops += [("mtcnn", DETECT_EVERY, "torch", None, True, True)]
            loops += [("mtcnn", DETECT_EVERY, "auto", None, False, True)]  # one thread: the before
            loops += [("mtcnn", DETECT_EVERY, "auto", None, True, False)]  # box crops: the before
            loops += [("mtcnn", DETECT_EVERY, "auto", None, True, True)]  # `ferbench live`
        found: list = []
        path = speed_checkpoint(checkpoint, model_name, tmp_path)
        base = Predictor(path)
        rows = [reference_loop(clip, base, tmp_path / "reference.mp4", found)]
        if expected is not None:
            columns = ["frame", "x", "y", "w", "h", "label"]
            rows[0].update(score_both(pd.DataFrame(found, columns=columns), expected))
        predictors = {"torch": (base, "torch fp32")}
        for kind, every, backend, width, overlap, align in loops:
            if backend not in predictors:  # auto: what `ferbench live` picks by measurement
                predictor, choice = predictor_for(path, backend)
                name = choice.split(":")[0].split(";")[0].replace("-int8", " int8")
                predictors[backend] = predictor, name
            predictor, backend_name = predictors[backend]
            detector = make_detector(kind, detect_width=width)
            log = tmp_path / "faces.csv"
            stats = run_live(
                predictor,
                str(clip),
                detector,
                output=tmp_path / "ours.mp4",
                show=False,
                log=log,
                detect_every=every,
                coast=COAST,
                overlap=overlap,
                align=align,
            )
            summary = stats.summary()
            row = {
                "loop": f"ferbench ({backend_name}, batched, "
                f"{_describe(detector)}, every {every} frame{'s' if every > 1 else ''}, "
                f"coast {COAST}{', overlapped' if overlap else ''}"
                f"{', aligned crops' if align else ', box crops'})",
                "frames": summary["frames"],
                "frames_with_face": summary["frames_with_face"],
                "faces": summary["faces"],
                "fps": summary["fps"],
                "classify_ms_per_face": summary["classify_ms_per_face"],
            }
            if expected is not None:
                row.update(score_both(pd.read_csv(log), expected))
            rows.append(row)
        if expected is not None:
            rows.append(
                {
                    "loop": "ceiling: the true boxes classified directly",
                    "end_to_end_accuracy": ceiling(base, clip, expected, FER_MARGIN),
                }
            )
    return rows
