"""`ferbench data info` and `ferbench data synth`."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ferbench.cli._common import console, friendly_errors, working

app = typer.Typer(help="Inspect datasets and write the synthetic face set.", no_args_is_help=True)


@app.command("info")
@friendly_errors
def info(
    path: str = typer.Argument(..., help="FER2013 CSV or folders, a face folder, or 'synthetic'."),
    kind: str = typer.Option(
        "auto", help="auto, fer2013, ferplus, folder, rafdb, affectnet, expw or synthetic."
    ),
    labels: str = typer.Option(None, help="FER+ vote file (fer2013new.csv) for --kind ferplus."),
    size: int = typer.Option(None, help="Resize faces to SIZE x SIZE."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Decode again, ignore the cache."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the same figures as JSON: kind, counts, skipped, notes."
    ),
) -> None:
    """Format detected, image size, counts per split x class, and data problems found.

    Reads FER2013 (CSV or folders), FER+, face folders, and RAF-DB, AffectNet and ExpW as
    they are distributed (their own label codes mapped to ferbench's class names).

    Examples:
      ferbench data info data/fer2013.csv
      ferbench data info RAF-DB/basic --json
    """
    from ferbench.data import SPLITS, load_dataset
    from ferbench.data.quality import summarize_problems

    spec = {"kind": "synthetic"} if path == "synthetic" else {"kind": kind, "path": path}
    spec.update({k: v for k, v in {"labels": labels, "size": size}.items() if v is not None})
    spec["cache"] = not no_cache
    start = time.perf_counter()
    data = load_dataset(spec)
    seconds = time.perf_counter() - start
    if as_json:
        _print_json(data, summarize_problems(data, cache=not no_cache), seconds)
        return
    console.print(
        f"[bold]{escape(data.source)}[/]  {len(data):,} images of {data.size}x{data.size}, "
        f"loaded in {seconds:.2f} s  fingerprint {data.fingerprint()[:12]}"
    )
    for note in data.notes:
        console.print(f"[cyan]note:[/] {escape(note)}")
    counts = data.counts()
    table = Table(header_style="bold")
    table.add_column("split")
    for name in data.class_names:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right", style="bold")
    for split, row in zip(SPLITS, counts):
        table.add_row(split, *[f"{c:,}" for c in row], f"{row.sum():,}")
    table.add_row("total", *[f"{c:,}" for c in counts.sum(0)], f"{counts.sum():,}", style="bold")
    console.print(table)
    problems = summarize_problems(data, cache=not no_cache)
    if not problems:
        console.print("[green]no data problems found[/]")
    for what, detail in problems.items():
        console.print(f"[yellow]problem:[/] {escape(what)}: {escape(str(detail))}")


@app.command("synth")
@friendly_errors
def synth(
    out: Path = typer.Argument(..., help="Output folder (or .csv file with --format csv)."),
    n_per_class: int = typer.Option(300, help="Faces per expression."),
    size: int = typer.Option(48, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Same seed, same faces."),
    fmt: str = typer.Option(
        "folder", "--format", help="folder (train/val/test/<class>/*.png) or csv."
    ),
) -> None:
    """Write the synthetic face set in a real format other tools read.

    Example:  ferbench data synth synth_faces --n-per-class 100 --format folder
    """
    from ferbench.data.export import write_csv, write_folders
    from ferbench.data.synthetic import make_synthetic

    data = make_synthetic(n_per_class, size, seed)
    if fmt == "csv":
        target = write_csv(data, out if out.suffix in (".csv", ".gz") else out / "fer2013.csv")
    elif fmt == "folder":
        target = write_folders(data, out)
    else:
        raise typer.BadParameter("--format must be folder or csv")
    console.print(f"[green]wrote[/] {len(data):,} synthetic faces to {target}")


@app.command("corrupt")
@friendly_errors
def corrupt(
    source: str = typer.Argument(
        ..., help="FER2013 CSV or folders, a face folder, or 'synthetic'."
    ),
    out: Path = typer.Argument(..., help="Folder to write OUT/<family>/<severity>/<class>/*.png."),
    corruptions: str = typer.Option(
        "all", "--corruptions", help="all, held-out, a group or families, comma separated."
    ),
    severities: str = typer.Option("1,2,3,4,5", "--severities", help="Which severities."),
    split: str = typer.Option("test", "--split", help="Which split's faces (all: every face)."),
    kind: str = typer.Option("auto", help="auto, fer2013, ferplus, folder, rafdb, ..."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same corrupted faces."),
) -> None:
    """Write a split's faces under common corruptions as class folders, for other tools.

    The very faces `ferbench eval DATA --corruptions` scores (48 px, the same seed), one folder
    per family and severity, plus clean/: each is a face folder that `ferbench eval`, or any
    tool that reads class folders, takes as it is.  README: Robustness.

    Example:  ferbench data corrupt fer2013.csv.gz corrupted/ --corruptions noise,blur
    """
    from ferbench.cli.eval_cmd import parse_suite
    from ferbench.config import DataSpec, parse_data
    from ferbench.data import load_dataset
    from ferbench.data.corrupt import REFERENCE_SIDE, corrupt_faces
    from ferbench.data.export import write_class_folder
    from ferbench.infer.cross_eval import matched_split

    families, levels = parse_suite(corruptions, severities)
    spec = (
        DataSpec()
        if source == "synthetic"
        else parse_data("--kind", "data", {"kind": kind, "path": source})
    )
    data = load_dataset(spec.replace(size=REFERENCE_SIDE))
    faces = matched_split(data, split, list(data.class_names))
    stems = [f"{i:06d}" for i in range(len(faces.labels))]
    write_class_folder(faces.images, faces.labels, data.class_names, out / "clean", stems)
    for family in families:
        for level in levels:
            corrupted = corrupt_faces(faces.images, family, level, seed)
            write_class_folder(
                corrupted, faces.labels, data.class_names, out / family / str(level), stems
            )
    console.print(
        f"[green]wrote[/] {len(stems):,} {split} faces of {data.source} clean and under "
        f"{len(families)} corruptions x {len(levels)} severities to {out}"
    )


@app.command("video")
@friendly_errors
def video(
    out: Path = typer.Argument(
        ..., help="The .mp4 to write; the truth goes to the same name .csv."
    ),
    data: str = typer.Option(
        "synthetic", "--data", help="Faces to composite: a FER2013 CSV, a folder or 'synthetic'."
    ),
    split: str = typer.Option("test", "--split", help="Which split's faces (never train)."),
    frames: int = typer.Option(450, "--frames", help="Length (15 frames/s)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same video."),
) -> None:
    """Write a labelled 640x360 video of faces for `ferbench bench --video V --truth V.csv`.

    Shots of 8-20 frames with 1-3 faces each (90-150 px, moving and scaling a little), a cut to
    new faces and a new background between shots; the CSV holds every face's box and label on
    every frame.

    Example:  ferbench data video bench.mp4 --data fer2013.csv
    """
    from ferbench.bench.labelled_video import make_labelled_video
    from ferbench.config import DataSpec

    spec = DataSpec(kind="synthetic") if data == "synthetic" else DataSpec(kind="auto", path=data)
    clip, truth = make_labelled_video(spec, out, frames, split, seed)
    console.print(f"[green]wrote[/] {clip} ({frames} frames) and its truth {truth}")


@app.command("leaks")
@friendly_errors
def leaks(
    path: str = typer.Argument(..., help="A dataset with a training split (FER2013, RAF-DB, ...)."),
    kind: str = typer.Option("auto", help="auto, fer2013, ferplus, folder, rafdb, ..."),
    labels: str = typer.Option(None, help="FER+ vote file (fer2013new.csv) for --kind ferplus."),
    show: int = typer.Option(10, "--show", help="List this many leaked faces per split."),
    out: Path = typer.Option(None, "--out", help="Write the whole report (indices) as JSON."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Compute again, ignore the cache."),
) -> None:
    """Validation and test faces that were also trained on: a near-duplicate in the training
    split (candidates by perceptual hash at the best of 25 alignments, robust to re-encoding
    and a 2-px shift, confirmed by a correlation of 0.9 or more), exact copies among them;
    and test faces with a near-duplicate in validation, which chooses checkpoints.
    `ferbench eval` reports the accuracy without the trained-on ones.

    Example:  ferbench data leaks fer2013.csv.gz --out leaks.json
    """
    from ferbench.data import load_dataset
    from ferbench.data.leaks import leak_report
    from ferbench.utils.fileio import write_json

    spec = {"kind": kind, "path": path, "labels": labels, "cache": not no_cache}
    data = load_dataset({k: v for k, v in spec.items() if v is not None})
    with working("hashing faces at 25 alignments (once per dataset, then cached)"):
        report = leak_report(data, cache=not no_cache)
    console.print(f"[bold]{escape(data.dataset)}[/]: {report['train']:,} training faces")
    for split in ("val", "test"):
        part = report[split]
        share = len(part["leaked"]) / max(part["faces"], 1)
        console.print(
            f"{split}: [bold]{len(part['leaked']):,}[/] of {part['faces']:,} faces ({share:.1%}) "
            f"have a near-duplicate in train, {part['exact']:,} of them pixel-identical"
        )
        _show_pairs(part, "train", show)
    part = report["val_test"]
    share = len(part["leaked"]) / max(part["faces"], 1)
    console.print(
        f"val ↔ test: [bold]{len(part['leaked']):,}[/] of {part['faces']:,} test faces "
        f"({share:.1%}) have a near-duplicate in validation, {part['exact']:,} of them "
        "pixel-identical (validation chooses checkpoints, temperatures and ensembles)"
    )
    _show_pairs(part, "val", show)
    if out:
        write_json(out, report)
        console.print(f"[green]wrote[/] {out}")


def _show_pairs(part: dict, pool: str, show: int) -> None:
    """The first `show` duplicates of a leak report's part, one dim line each."""
    pairs = zip(part["leaked"], part["match"], part["distance"], part["similarity"])
    for q, t, d, sim in list(pairs)[:show]:
        console.print(f"  face {q} ~ {pool} face {t} ({d} bits, similarity {sim:.2f})", style="dim")


def _print_json(data, problems: dict, seconds: float) -> None:
    """The figures of `data info` as one JSON object on stdout."""
    import json
    import sys

    from ferbench.data import SPLITS

    counts = data.counts()
    report = {
        "kind": data.source.split()[0],
        "dataset": data.dataset,
        "images": len(data),
        "size": data.size,
        "classes": list(data.class_names),
        "counts": {
            split: {name: int(n) for name, n in zip(data.class_names, row)}
            for split, row in zip(SPLITS, counts)
        },
        "skipped": {k: v for k, v in problems.items() if k in data.problems},
        "problems": {k: v for k, v in problems.items() if k not in data.problems},
        "notes": list(data.notes),
        "fingerprint": data.fingerprint(),
        "load_seconds": round(seconds, 3),
    }
    sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
