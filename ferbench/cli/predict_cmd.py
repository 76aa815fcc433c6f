"""`ferbench predict`: expressions of the faces in images, videos, or folders of them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from ferbench.cli import predict_videos as pv
from ferbench.cli._common import (
    AlignOption,
    CheckpointOption,
    InferDeviceOption,
    MarginOption,
    ModelOption,
    ResultsOption,
    announce_choice,
    announce_default_model,
    console,
    err_console,
    friendly_errors,
)
from ferbench.errors import FerbenchError
from ferbench.faces.defaults import FER_MARGIN


@friendly_errors
def predict(
    paths: list[Path] = typer.Argument(..., help="Image or video files, or folders of them."),
    model: ModelOption = None,
    checkpoint: CheckpointOption = None,
    no_detect: bool = typer.Option(False, "--no-detect", help="Each image is already a face crop."),
    as_json: bool = typer.Option(
        False, "--json", help="Print JSON (one entry per face) to stdout."
    ),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV (one row per face) to stdout."),
    annotate: Path = typer.Option(
        None, "--annotate", help="Write annotated copies into this folder."
    ),
    detector: str = typer.Option(
        "mtcnn", "--detector", help="mtcnn (CNN, shipped; default) or haar (OpenCV cascade)."
    ),
    margin: MarginOption = FER_MARGIN,
    align: AlignOption = True,
    results: ResultsOption = Path("results"),
    device: InferDeviceOption = "cpu",
    out: Path = pv.OutOption,
    fmt: str = pv.FormatOption,
    every: int = pv.EveryOption,
    fps: float = pv.FpsOption,
    summary: bool = pv.SummaryOption,
    jobs: int = pv.JobsOption,
    ray: str = pv.RayOption,
    fresh: bool = pv.FreshOption,
    backend: str = pv.BackendOption,
    detect_every: int = pv.DetectEveryOption,
    smooth: float = pv.SmoothOption,
) -> None:
    """Detect faces (or take each image as a face with --no-detect) and classify them.

    Examples:
      ferbench predict photo.jpg                  # the shipped vggfer_s.fer2013
      ferbench predict group.jpg --model cnn3     # your best finished cnn3 run
      ferbench predict faces/ --checkpoint results/quickstart/cnn3/seed=0/best.pt --no-detect --csv
      ferbench predict sessions/ --out tables/    # a face table per video (resumable)
      ferbench predict sessions/ --out tables/ --format parquet --fps 5 --summary --jobs 2
      ferbench predict sessions/ --out /nfs/tables/ --ray auto   # on a Ray cluster
    """
    from ferbench.faces.detect import DETECTORS
    from ferbench.infer.images import annotation_targets, expand_paths, predict_images
    from ferbench.infer.predictor import Predictor

    videos, paths = pv.split_inputs(paths)
    if videos:  # each video to a table in --out; then the images, if any were given too
        paths = [p for p in paths if not p.is_dir() or expand_paths([p])]
        expand_paths(paths)  # a missing file fails before any video is analysed
        announce_default_model(model, checkpoint)
        opts = (margin, fmt, every, fps, summary, jobs, ray, fresh, backend, detect_every, smooth)
        opts += (align,)
        pv.predict_videos(videos, out, model, checkpoint, results, device, detector, *opts)
        if not paths:
            return
    expand_paths(paths)  # a missing file fails before the model loads
    if annotate is not None:
        annotation_targets(paths, annotate)  # so does an --annotate over the originals
    if detector not in DETECTORS:
        raise FerbenchError(f"unknown detector '{detector}'; use {', '.join(DETECTORS)}")
    announce_default_model(model, checkpoint)
    predictor = Predictor.from_cli(model, checkpoint, results, device, announce=announce_choice)
    rows, skipped = predict_images(
        predictor,
        paths,
        detect=not no_detect,
        margin=margin,
        annotate=annotate,
        detector_kind=detector,
        align=align,
    )
    for path, reason in skipped:
        err_console.print(f"[yellow]skipped[/] {path}: {reason}")
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if as_csv:
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(
            ["file", "x", "y", "w", "h", "label", "probability", *predictor.class_names]
        )
        for r in rows:
            writer.writerow(
                [
                    r["file"],
                    *(r["box"] or [""] * 4),
                    r["label"],
                    f"{r['probability']:.4f}",
                    *[f"{r['probabilities'][c]:.4f}" for c in predictor.class_names],
                ]
            )
        return
    table = Table(title=f"{predictor.model_name}: {len(rows)} faces", header_style="bold")
    for column in ("file", "box", "label", "prob", *predictor.class_names):
        table.add_column(
            column, justify="right" if column not in ("file", "label", "box") else "left"
        )
    for r in rows:
        table.add_row(
            Path(r["file"]).name,
            ",".join(map(str, r["box"])) if r["box"] else "whole",
            r["label"],
            f"{r['probability']:.2f}",
            *[f"{r['probabilities'][c]:.2f}" for c in predictor.class_names],
        )
    console.print(table)
