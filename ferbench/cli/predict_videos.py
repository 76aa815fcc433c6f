"""`ferbench predict` on videos: the options and the run (the command dispatches here)."""

from __future__ import annotations

from pathlib import Path

import typer

from ferbench.cli._common import console, err_console, working
from ferbench.errors import FerbenchError
from ferbench.faces.defaults import DETECT_EVERY

OutOption = typer.Option(
    None,
    "--out",
    help="Videos: write one face table per video into this folder, mirroring the inputs' "
    "paths, with each person's expression shares (.people.csv); finished videos are skipped "
    "on the next call, an interrupted one continues.",
)
FormatOption = typer.Option("csv", "--format", help="Videos: csv or parquet (needs pyarrow).")
EveryOption = typer.Option(1, "--every", min=1, help="Videos: analyse every Nth frame.")
FpsOption = typer.Option(
    None, "--fps", help="Videos: analyse about this many frames a second (instead of --every)."
)
SummaryOption = typer.Option(
    False, "--summary", help="Videos: also a timeline plot of expression shares per video."
)
JobsOption = typer.Option(
    1, "--jobs", "-j", min=1, help="Videos: analyse N videos at once, one process each."
)
RayOption = typer.Option(
    None,
    "--ray",
    help="Videos: spread them over a Ray cluster (ADDRESS, 'auto' for the running one, "
    "'local' to start one here); --out must be reachable from every node.",
)
FreshOption = typer.Option(False, "--fresh", help="Videos: redo every video, done or not.")
BackendOption = typer.Option(
    "auto", "--backend", help="Videos: classifier backend, as `ferbench live` (auto measures)."
)
DetectEveryOption = typer.Option(
    DETECT_EVERY, "--detect-every", help="Videos: detect faces every N analysed frames."
)
SmoothOption = typer.Option(
    0.0, "--smooth", help="Videos: 0-1, smooth each face's probabilities over frames."
)


def split_inputs(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(videos and folders holding videos, the rest): a folder can be in both."""
    from ferbench.infer.recording_jobs import has_videos, is_video

    videos = [p for p in paths if (p.is_file() and is_video(p)) or has_videos(p)]
    images = [p for p in paths if not (p.is_file() and is_video(p))]
    return videos, images


def predict_videos(
    paths: list[Path],
    out: Path | None,
    model,
    checkpoint,
    results,
    device: str,
    detector: str,
    margin: float,
    fmt: str,
    every: int,
    fps: float | None,
    summary: bool,
    jobs: int,
    ray: str | None,
    fresh: bool,
    backend: str,
    detect_every: int,
    smooth: float,
    align: bool = True,
) -> None:
    from ferbench.faces.detect import DETECTORS
    from ferbench.infer.backend import concrete_backend, predictor_for
    from ferbench.infer.facetable import FORMATS
    from ferbench.infer.predictor import resolve_source
    from ferbench.infer.recording_jobs import run_videos
    from ferbench.infer.recordings import Settings

    if out is None:
        raise FerbenchError("videos write one table each: give --out DIR")
    if fmt not in FORMATS:
        raise FerbenchError(f"--format {fmt}: use {' or '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise FerbenchError("--format parquet needs pyarrow: pip install 'ferbench[parquet]'")
    if detector not in DETECTORS:
        raise FerbenchError(f"unknown detector '{detector}'; use {', '.join(DETECTORS)}")
    if fps is not None and fps <= 0:
        raise FerbenchError("--fps must be above 0")
    source = resolve_source(model, checkpoint, results)
    with working("loading the model") as update:  # auto measures once, here, not per worker
        predictor, choice = predictor_for(source, backend, device, update)
    err_console.print(f"[cyan]{predictor.model_name}[/]: backend {choice}", highlight=False)
    settings = Settings(
        checkpoint=str(Path(source).resolve()),
        backend=concrete_backend(source, predictor, backend),
        device=device,
        detector=detector,
        detect_every=detect_every,
        smooth=smooth,
        margin=margin,
        align=align,
        every=every,
        fps=fps,
        format=fmt,
        plot=summary,
    )
    jobs_done = run_videos(paths, out, settings, jobs, ray, fresh, console=err_console)
    failed = [j for j in jobs_done if j.status == "failed"]
    if failed:
        console.print(f"[yellow]{len(failed)} of {len(jobs_done)} videos failed[/] (see above)")
