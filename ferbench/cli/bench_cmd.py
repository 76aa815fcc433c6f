"""`ferbench bench`: training and inference speed, against the compute bound and a reference
pipeline, plus the live loop against the reference webcam loop."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ferbench.cli._common import (
    TrainDeviceOption,
    console,
    friendly_errors,
    working,
)
from ferbench.errors import FerbenchError


@friendly_errors
def bench(
    models: str = typer.Option(
        "cnn5,cnn3,resnet18", "--models", help="Comma-separated model names."
    ),
    device: TrainDeviceOption = "auto",
    data: str = typer.Option(None, "--data", help="Dataset path (default: synthetic faces)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Training batch size."),
    steps: int = typer.Option(10, "--steps", help="Timed training steps per measurement."),
    no_reference: bool = typer.Option(
        False, "--no-reference", help="Skip the ImageFolder/PIL pipeline."
    ),
    compile_model: bool = typer.Option(
        False,
        "--compile",
        help="Also time the ferbench path through torch.compile: eager and compiled images/s "
        "side by side (bench.csv adds the warm-up seconds compilation costs).",
    ),
    amp: str = typer.Option(
        "auto",
        "--amp",
        help="Precision of the ferbench path and bound: auto (bf16 on CUDA and on CPUs with bf16 "
        "instructions), bf16, fp16 (CUDA) or off. The reference pipeline is always fp32.",
    ),
    channels_last: str = typer.Option(
        "auto",
        "--channels-last",
        help="Memory layout of the ferbench path and bound: auto (on where it pays), on or off.",
    ),
    video: Path = typer.Option(
        None,
        "--video",
        help="Also time the live loop against the reference loop on this clip, and `predict` "
        "on it (the recordings path) beside `live --no-window --log`: frames/s, cores, memory.",
    ),
    truth: Path = typer.Option(
        None,
        "--truth",
        help="With --video: the labelled video's truth CSV (`ferbench data video`); scores "
        "detection and labels instead of timing training.",
    ),
    checkpoint: str = typer.Option(
        None,
        "--checkpoint",
        help="Checkpoint for --video and --backends: a .pt or .onnx file, a run folder or a "
        "shipped tag such as vggfer_s.fer2013 (with --truth: default the shipped model). With "
        "it, only the checkpoint is timed: no training table.",
    ),
    jobs: int = typer.Option(
        1,
        "--jobs",
        "-j",
        min=1,
        help="Also time N trials training at once, each with its share of the threads (what "
        "`ferbench run --jobs N` does): their total bound img/s against one trial's (CPU).",
    ),
    backends: bool = typer.Option(
        False,
        "--backends",
        help="Inference backends side by side: PyTorch fp32 / dynamic int8, ONNX Runtime fp32 / "
        "int8 (needs ferbench[onnx]); batch-1 latency, batch-256 throughput, ratios.",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="CSV with every figure (default bench.csv; with --truth, <video>-live.csv beside "
        "the video, so that the truth CSV is never written over).",
    ),
) -> None:
    """Measure training and inference speed against the compute bound and a reference pipeline.

    Per model: training images/s (ferbench, compute bound, ImageFolder+PIL reference), inference
    images/s, batch-1 latency and peak memory; with --video, live frames/s and faces found.

    Examples:
      ferbench bench --models cnn3,resnet18 --device cpu
      ferbench bench --models resnet18 --device cuda --data data/fer2013.csv --batch-size 256
      ferbench bench --models cnn3 --video clip.mp4 --checkpoint results/quickstart/cnn3/seed=0
      ferbench bench --models cnn3,vggfer_s --amp off --no-reference   # fp32 vs the bound only
      ferbench bench --models vggfer_s --no-reference --jobs 2   # run --jobs 2 worth it here?
      ferbench data video bench.mp4 --data fer2013.csv   # a labelled video of test faces
      ferbench bench --video bench.mp4 --truth bench.csv # recall, precision, labels right
                                                         # (figures in bench-live.csv)
      ferbench bench --models cnn3,vggfer_s --backends --data fer2013.csv  # ONNX vs PyTorch
      ferbench bench --backends --checkpoint vggfer_s.fer2013   # a shipped model's backends
    """
    import pandas as pd

    from ferbench.bench.train_speed import BenchConfig
    from ferbench.data import load_dataset
    from ferbench.utils.fileio import write_text

    names = [m.strip() for m in models.split(",") if m.strip()]
    checkpoint = _checkpoint_or_tag(checkpoint)
    if truth is not None:
        if video is None:
            raise typer.BadParameter("--truth scores a --video; give both")
        out = out or video.with_name(f"{video.stem}-live.csv")
        if out.resolve() in (truth.resolve(), video.resolve()):
            raise FerbenchError(f"--out {out} is an input of this benchmark; name another")
        _live_accuracy(video, truth, checkpoint, names[0], out)
        return
    out = out or Path("bench.csv")
    dataset = load_dataset(
        {"kind": "auto", "path": data} if data else {"kind": "synthetic", "n_per_class": 200}
    )
    config = BenchConfig(
        batch_size=batch_size,
        steps=steps,
        reference=not no_reference,
        compile=compile_model,
        amp=amp,
        channels_last=channels_last,
        jobs=jobs,
    )
    rows = []
    if checkpoint is None or not (backends or video):  # a checkpoint names what is timed
        rows = _bench_training(names, dataset, config, device)
    frame = pd.DataFrame(rows)
    if video is not None:
        from ferbench.bench.live_speed import bench_live

        live_rows = bench_live(video, checkpoint, names[0])
        live = Table(title=f"live loop on {video.name} (640x360)", header_style="bold")
        for column in ("loop", "frames/s", "frames with a face", "faces", "ms per face"):
            live.add_column(column, justify="left" if column == "loop" else "right")
        for r in live_rows:
            live.add_row(
                r["loop"],
                f"{r['fps']:.1f}",
                f"{r['frames_with_face']}/{r['frames']}",
                str(r["faces"]),
                f"{r['classify_ms_per_face']:.2f}",
            )
        console.print(live)
        frame = pd.concat([frame, pd.DataFrame(live_rows), _bench_recording(video, checkpoint)])
        frame = frame.reset_index(drop=True)
    if backends:
        backend_rows = _bench_backends(names, checkpoint, dataset)
        frame = pd.concat([frame, pd.DataFrame(backend_rows)], ignore_index=True)
    write_text(out, frame.to_csv(index=False))
    console.print(f"[green]wrote[/] {out}")


def _bench_recording(video: Path, checkpoint: str | None):
    """`predict` on the video (the recordings path) beside `live --no-window --log`, each in its
    own process: frames/s, cores busy, peak memory, and whether the two tables are equal."""
    import pandas as pd

    from ferbench.bench.recording_speed import bench_recording
    from ferbench.infer.predictor import resolve_source

    checkpoint = checkpoint or str(resolve_source(None, None, "results"))
    with working(f"timing live and predict on {video.name}"):
        rows = bench_recording(video, checkpoint)
    table = Table(title=f"recordings: predict vs live on {video.name}", header_style="bold")
    for column in ("loop", "frames/s", "cores busy", "peak MB", "faces", "vs live"):
        table.add_column(column, justify="left" if column == "loop" else "right")
    for r in rows:
        vs = f"{r['vs_live']:.2f}x" + ("" if r["same_table_as_live"] else " (tables differ)")
        table.add_row(
            r["loop"],
            f"{r['fps']:.1f}",
            f"{r['cpu_cores']:.2f}",
            f"{r['peak_rss_mb']:,.0f}",
            str(r["faces"]),
            vs if "vs_live" in r else "",
        )
    console.print(table)
    return pd.DataFrame(rows)


def _live_accuracy(video: Path, truth: Path, checkpoint: str | None, model: str, out: Path):
    import pandas as pd

    from ferbench.bench.live_speed import bench_live
    from ferbench.infer.predictor import resolve_source
    from ferbench.utils.fileio import write_text

    checkpoint = checkpoint or str(resolve_source(None, None, "results"))
    with working(f"running the live loops on {video.name}"):
        rows = bench_live(video, checkpoint, model, truth)
    ceiling = rows[-1]["end_to_end_accuracy"]
    table = Table(
        title=f"live accuracy on {video.name} ({escape(checkpoint)})",
        caption="each cell: a box counts for a face at IoU ≥ 0.5 / when it is on the face "
        "(IoU ≥ 0.5 or each box's centre inside the other)",
        header_style="bold",
    )
    columns = (
        "loop",
        "frames/s",
        "recall",
        "precision",
        "false boxes",
        "labels right",
        "of ceiling",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "loop" else "right")

    def both(r: dict, key: str, fmt) -> str:
        return f"{fmt(r[key])} / {fmt(r[key + '_on_face'])}"

    for r in rows[:-1]:
        table.add_row(
            escape(r["loop"]),
            f"{r['fps']:.1f}",
            both(r, "recall", "{:.1%}".format),
            both(r, "precision", "{:.1%}".format),
            both(r, "false_boxes", str),
            both(r, "end_to_end_accuracy", "{:.1%}".format),
            both(r, "end_to_end_accuracy", lambda v: f"{v / max(ceiling, 1e-9):.0%}"),
        )
    table.add_row(rows[-1]["loop"], "", "", "", "", f"{ceiling:.1%}", "100%")
    console.print(table)
    write_text(out, pd.DataFrame(rows).to_csv(index=False))
    console.print(f"[green]wrote[/] {out}")


def _bench_training(names, dataset, config, device) -> list:
    """Training speed of each model against the compute bound (and the reference pipeline),
    printed as a table with this machine's speedrun budget."""
    from ferbench.bench.train_speed import bench_models

    with working("benchmarking") as update:
        rows = bench_models(names, dataset, config, device, progress=update)
    table = Table(
        title=f"ferbench bench ({rows[0]['device'] if rows else device}, "
        f"{rows[0]['precision'] if rows else config.amp}, batch {config.batch_size})",
        header_style="bold",
    )
    columns = [
        ("model", "model", "{}"),
        ("train img/s", "train_img_s", "{:,.0f}"),
        *(
            [
                ("compiled img/s", "compiled_img_s", "{:,.0f}"),
                ("compiled", "compile_speedup", "{:.2f}x"),
            ]
            if config.compile
            else []
        ),
        ("bound img/s", "compute_bound_img_s", "{:,.0f}"),
        ("of bound", "ferbench_vs_bound", "{:.0%}"),
        *(
            [
                (f"bound, {config.jobs} jobs", "jobs_bound_img_s", "{:,.0f}"),
                ("vs 1 job", "jobs_vs_one", "{:.2f}x"),
            ]
            if config.jobs > 1
            else []
        ),
        ("reference img/s", "reference_img_s", "{:,.0f}"),
        ("speedup", "speedup_vs_reference", "{:.2f}x"),
        ("infer img/s", "inference_img_s", "{:,.0f}"),
        ("latency ms", "latency_batch1_ms", "{:.2f}"),
        ("peak MB", "peak_memory_mb", "{:,.0f}"),
    ]
    for title, _, _ in columns:
        table.add_column(title, justify="left" if title == "model" else "right")
    for row in rows:
        table.add_row(
            *[fmt.format(row[key]) if row[key] is not None else "-" for _, key, fmt in columns]
        )
    console.print(table)
    _print_budget(rows, device, config.amp, config.batch_size, config.channels_last)
    return rows


def _checkpoint_or_tag(checkpoint: str | None) -> str | None:
    """--checkpoint checked before any timing, so a typo costs no minutes: a file, a run folder
    (its best.pt) or a shipped tag."""
    if checkpoint is None:
        return None
    from ferbench.models.pretrained import read_index
    from ferbench.runs import checkpoint_path

    if checkpoint in read_index():
        return str(read_index()[checkpoint].verified_path())
    path = checkpoint_path(checkpoint)
    if not path.is_file():
        raise FerbenchError(
            f"--checkpoint: {checkpoint} is not a checkpoint file, a run folder with best.pt or "
            f"a shipped tag ({', '.join(read_index())})"
        )
    return str(path)


def _bench_backends(names: list[str], checkpoint: str | None, dataset) -> list[dict]:
    import tempfile

    from ferbench.bench.backends import bench_backends
    from ferbench.bench.live_speed import speed_checkpoint

    rows = []
    faces = dataset.split("val")[0][:1000]
    with tempfile.TemporaryDirectory(prefix="ferbench-bench-") as tmp:
        for name in names if not checkpoint else names[:1]:
            path = speed_checkpoint(checkpoint, name, Path(tmp))
            with working("inference backends") as update:
                rows += bench_backends(path, faces, progress=update)
    table = Table(title="inference backends (CPU)", header_style="bold")
    for column in ("model", "backend", "batch-1 ms", "vs fp32", "batch-256 img/s", "vs fp32"):
        table.add_column(column, justify="left" if column in ("model", "backend") else "right")
    for r in rows:
        table.add_row(
            r["model"],
            r["backend"],
            f"{r['latency_batch1_ms']:.2f}",
            f"{r['latency_vs_torch_fp32']:.2f}x",
            f"{r['throughput_batch256_img_s']:,.0f}",
            f"{r['throughput_vs_torch_fp32']:.2f}x",
        )
    console.print(table)
    return rows


def _print_budget(
    rows: list[dict], device: str, amp: str, batch_size: int, channels_last: str
) -> None:
    """This machine's bound B (vggfer_s at 48x48, batch 128, the precision runs use) and the
    speedrun budget 300 s x 509 / B it earns; remembered for the runs that record it."""
    from ferbench.train.budget import (
        BOUND_BATCH,
        BOUND_MODEL,
        BOUND_SIZE,
        machine_bound,
        speedrun_budget,
    )

    row = next((r for r in rows if r["model"] == BOUND_MODEL), None)
    same = row is not None and amp == "auto" and batch_size == BOUND_BATCH
    same = same and channels_last == "auto"
    same = same and row.get("input_size", BOUND_SIZE) == BOUND_SIZE
    measured = row["compute_bound_img_s"] if same else None
    bound = machine_bound(device if device != "auto" else "cpu", measured)
    console.print(
        f"this machine's bound B = {bound:,.0f} img/s ({BOUND_MODEL}, {BOUND_SIZE}x{BOUND_SIZE}, "
        f"batch {BOUND_BATCH}): speedrun budget {speedrun_budget(bound):,.0f} s "
        f"(300 s x 509 / B), 12 budgets {12 * speedrun_budget(bound):,.0f} s"
    )
