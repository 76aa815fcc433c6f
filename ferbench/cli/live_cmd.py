"""`ferbench live`: expressions on every face of a camera or video, with frames/s."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import typer

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
    working,
)
from ferbench.errors import FerbenchError
from ferbench.faces.defaults import COAST, DETECT_EVERY, FER_MARGIN


@friendly_errors
def live(
    model: ModelOption = None,
    checkpoint: CheckpointOption = None,
    source: str = typer.Option(
        "0",
        "--source",
        help="Camera index (0), video file, stream URL, or 'browser': the camera of the "
        "browser that opens the --serve page (for remote machines, containers, notebooks).",
    ),
    output: Path = typer.Option(
        None, "--output", "-o", help="Write every annotated frame (.mp4/.avi)."
    ),
    no_window: bool = typer.Option(False, "--no-window", help="Headless: no window."),
    log: Path = typer.Option(
        None,
        "--log",
        help="CSV: one row per face per frame (a stable person id, box, label, probabilities).",
    ),
    summary: Path = typer.Option(
        None,
        "--summary",
        help="Per-person timelines into this folder: probabilities over time (plot and CSV) "
        "and the share of time in each expression (people.csv).",
    ),
    detect_every: int = typer.Option(
        DETECT_EVERY,
        "--detect-every",
        help="Detect faces every N frames (and after each scene cut); between detections boxes "
        "follow each face's motion, and MTCNN re-checks the ones that are guesses.",
    ),
    coast: int = typer.Option(
        COAST, "--coast", help="Keep a face the detector missed for N detection rounds."
    ),
    verify: bool = typer.Option(
        True,
        "--verify/--no-verify",
        help="MTCNN: a carried face whose box is a guess (missed by the last detection, just "
        "appeared, or moving fast) is re-checked by O-Net on each frame between detections: "
        "re-framed if still a face; if not, the frame is searched again (about 1 ms a face).",
    ),
    overlap: bool = typer.Option(
        True,
        "--overlap/--no-overlap",
        help="Read frames and find faces on a second thread, ahead of classifying and drawing.",
    ),
    smooth: float = typer.Option(
        0.0, "--smooth", help="0-1: smooth each face's probabilities over frames."
    ),
    detector: str = typer.Option(
        "mtcnn",
        "--detector",
        help="mtcnn (CNN shipped in the package), haar (OpenCV cascade, faster, misses more) or "
        "yunet (with --detector-model).",
    ),
    detector_model: str = typer.Option(None, "--detector-model", help="YuNet .onnx file."),
    margin: MarginOption = FER_MARGIN,
    align: AlignOption = True,
    backend: str = typer.Option(
        "auto",
        "--backend",
        help="auto (CPU: the fastest measured backend within 0.5 point of fp32 accuracy, "
        "measured once per checkpoint), torch, torch-int8, onnx or onnx-int8.",
    ),
    detect_width: int = typer.Option(
        None,
        "--detect-width",
        help="Detect on frames downscaled to this width (0: full; default mtcnn 640, haar 800).",
    ),
    results: ResultsOption = Path("results"),
    device: InferDeviceOption = "cpu",
    max_frames: int = typer.Option(None, "--max-frames", help="Stop after N frames."),
    serve: int = typer.Option(
        None,
        "--serve",
        help="Show the stream as a web page on this port (0: any free port) instead of a window; "
        "with --source browser, the page that sends the browser's camera (default 8000).",
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="With --serve: the address to bind (0.0.0.0 for the network: the page then wants "
        "the random token in the printed URL).",
    ),
    no_token: bool = typer.Option(
        False,
        "--no-token",
        help="With --host beyond localhost: no token; anyone who reaches the port sees the camera.",
    ),
) -> None:
    """Detect faces, classify each, draw label, probability and a bar chart; q or Esc quits.

    Four ways to watch: a window (default); a web page (--serve PORT: open the printed URL;
    Ctrl-C stops); the camera of your browser (--source browser --serve PORT: the page sends
    its frames, for ferbench on a remote machine: ssh -L PORT:127.0.0.1:PORT HOST, then open
    http://localhost:PORT/); or a file (--no-window --output out.mp4).

    Examples:
      ferbench live                   # camera 0, the shipped vggfer_s.fer2013
      ferbench live --model cnn3
      ferbench live --model cnn3 --serve 8000
      ferbench live --source browser --serve 8000 --log faces.csv
      ferbench live --model cnn3 --source clip.mp4 --no-window --output out.mp4 --log faces.csv
      ferbench live --source crowd.mp4 --no-window --summary timelines/
    """
    from ferbench.faces.detect import DETECTORS, make_detector
    from ferbench.infer.backend import predictor_for
    from ferbench.infer.live import check_source, run_live
    from ferbench.infer.predictor import resolve_source

    # every input is checked before the model loads and the backends are measured
    if detector not in DETECTORS:
        raise FerbenchError(f"unknown detector '{detector}'; use {', '.join(DETECTORS)}")
    browser = source == "browser"
    if browser:
        serve = 8000 if serve is None else serve
    else:
        check_source(source)
    if no_token and serve is not None:
        from ferbench.infer.http_guard import is_loopback

        if not is_loopback(host):
            err_console.print(
                f"[yellow]warning: --no-token with --host {host}: anyone who reaches the port "
                "sees the camera[/]"
            )
    if not no_window and serve is None:
        from ferbench.infer.live import check_display

        check_display()  # before minutes of model loading, not after
    announce_default_model(model, checkpoint)
    source_path = resolve_source(model, checkpoint, results, announce=announce_choice)
    with working("loading the model") as update:
        predictor, choice = predictor_for(source_path, backend, device, update)
    console.print(
        f"[bold]{predictor.model_name}[/] from {source_path} "
        f"({len(predictor.class_names)} classes, {predictor.input_size}px); backend {choice}"
    )
    if summary is not None and log is None:
        log = Path(summary) / "faces.csv"
        log.parent.mkdir(parents=True, exist_ok=True)
    if browser:
        from ferbench.infer.browser import serve_browser

        stats = serve_browser(
            predictor,
            make_detector(detector, detector_model, detect_width=detect_width),
            host,
            serve,
            output=output,
            log=log,
            detect_every=detect_every,
            coast=coast,
            verify=verify,
            smooth=smooth,
            margin=margin,
            align=align,
            max_frames=max_frames,
            announce=_announce_browser_page,
            token=not no_token,
        )
        console.print("stopped")
        _print_summary(stats)
        _print_outputs(output, log, summary)
        return
    server = None
    if serve is not None:
        from ferbench.infer.serve import FrameServer

        server = FrameServer(host, serve, predictor.class_names, token=not no_token).start()
        console.print(
            f"serving the annotated stream on [bold]{server.link}[/] (Ctrl-C stops)",
            soft_wrap=True,
        )
    try:
        stop_on_sigterm = contextlib.nullcontext()
        if server is not None:
            from ferbench.infer.serve import sigterm_as_ctrl_c

            stop_on_sigterm = sigterm_as_ctrl_c()
        with stop_on_sigterm:
            stats = run_live(
                predictor,
                source,
                make_detector(detector, detector_model, detect_width=detect_width),
                output=output,
                show=not no_window and server is None,
                log=log,
                detect_every=detect_every,
                smooth=smooth,
                coast=coast,
                margin=margin,
                align=align,
                max_frames=max_frames,
                server=server,
                verify=verify,
                overlap=overlap,
            )
            _print_summary(stats)
            if server is not None and not source.isdigit():
                console.print(f"the video ended; still serving its last frame on {server.link}")
                while True:  # a camera ends only with Ctrl-C; a file stays on screen until then
                    time.sleep(0.5)
    except KeyboardInterrupt:
        if server is None:
            raise
        console.print("stopped")
    finally:
        if server is not None:
            server.close()
    _print_outputs(output, log, summary)


def _announce_browser_page(url: str) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    query = f"?{parts.query}" if parts.query else ""
    console.print(
        f"open [bold]{url}[/] in the browser whose camera to use; from another machine: "
        f"ssh -L {parts.port}:127.0.0.1:{parts.port} HOST, then open "
        f"http://localhost:{parts.port}/{query} (Ctrl-C stops)",
        soft_wrap=True,  # one line, whatever its length: the URL is copied and grepped
    )


def _print_outputs(output, log, summary) -> None:
    if output:
        console.print(f"annotated video: {output}")
    if log:
        console.print(f"face log: {log}")
    if summary is not None:
        from ferbench.report.timelines import write_timelines

        result = write_timelines(log, summary)
        console.print(
            f"timelines of {result['people']} people in {summary} (people.csv, person_N.png/.csv;"
            f" {result['short_tracks']} tracks under 5 frames left out)"
        )


def _print_summary(stats) -> None:
    summary = stats.summary()
    console.print(
        f"{summary['frames']} frames in {summary['seconds']:.1f} s: "
        f"[bold]{summary['fps']:.1f} frames/s[/], faces on {summary['frames_with_face']} "
        f"frames ({summary['faces']} faces), detection {summary['detect_ms_per_frame']} ms/frame, "
        f"classification {summary['classify_ms_per_face']} ms/face"
    )
