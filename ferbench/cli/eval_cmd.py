"""`ferbench eval`: a trained model on any dataset split (cross-dataset numbers)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ferbench.cli._common import (
    AlignOption,
    CheckpointOption,
    InferDeviceOption,
    ModelOption,
    ResultsOption,
    ScalesOption,
    announce_choice,
    announce_default_model,
    console,
    friendly_errors,
    parse_scales,
    working,
)
from ferbench.errors import FerbenchError


@friendly_errors
def evaluate(
    data: str = typer.Argument(
        ..., help="Dataset: FER2013 CSV or folders, a face folder, or 'synthetic'."
    ),
    model: ModelOption = None,
    checkpoint: CheckpointOption = None,
    kind: str = typer.Option(
        "auto", help="auto, fer2013, ferplus, folder, rafdb, affectnet, expw or synthetic."
    ),
    labels: str = typer.Option(None, help="FER+ vote file for --kind ferplus."),
    split: str = typer.Option(
        "auto",
        help="auto (test where the data has splits; every image of a folder without split "
        "folders), train, val, test or all.",
    ),
    tta: bool = typer.Option(
        True,
        "--tta/--no-tta",
        help="The run's own test views (ten-crop, or face and mirror) where it used them.",
    ),
    scales: ScalesOption = None,
    detect: bool = typer.Option(
        False,
        "--detect",
        help="The folder holds portraits, not face crops: find the largest face in each image "
        "first (images with no face are counted).",
    ),
    detector: str = typer.Option("mtcnn", "--detector", help="With --detect: mtcnn or haar."),
    align: AlignOption = True,
    corruptions: str = typer.Option(
        None,
        "--corruptions",
        help="Also score the split's faces under common corruptions at severities 1-5: 'all', "
        "'held-out' (the families the robust default never trained on), a group (light, "
        "noise, blur, digital, framing) or families, comma separated (README: Robustness). "
        "Prints accuracy per family and severity, mCA and the drift toward one class.",
    ),
    severities: str = typer.Option(
        "1,2,3,4,5", "--severities", help="With --corruptions: which severities, e.g. 3."
    ),
    framing: bool = typer.Option(
        False,
        "--framing",
        help="Also score the split's faces as live mode frames them: each found by the detector "
        "in a larger frame, then box-cropped and aligned by its landmarks; prints the accuracy "
        "each framing costs against the dataset's own crops (the framing gap).",
    ),
    out: Path = typer.Option(None, "--out", help="Write the metrics as JSON."),
    results: ResultsOption = Path("results"),
    device: InferDeviceOption = "cpu",
) -> None:
    """Evaluate a trained model on a dataset split; classes are matched by name.

    Images of classes the model does not know are left out and counted.

    Examples:
      ferbench eval data/fer2013.csv --model cnn3
      ferbench eval fer2013.csv --kind ferplus --labels fer2013new.csv --checkpoint best.pt
      ferbench eval my_faces/ --model resnet18 --split test --out eval.json
      ferbench eval portraits/ --detect          # anger/, sadness/, ...: whole photos
      ferbench eval fer2013.csv.gz --scales 0.9,1,1.1   # multi-scale test views
      ferbench eval fer2013.csv.gz --corruptions all     # the robustness suite
    """
    from ferbench.config import DataSpec, parse_data
    from ferbench.infer.cross_eval import evaluate_checkpoint
    from ferbench.infer.predictor import Predictor
    from ferbench.models.checkpoint import describe_views
    from ferbench.utils.fileio import write_json

    if corruptions and detect:
        raise FerbenchError("--corruptions scores face crops: it does not combine with --detect")
    families, levels = parse_suite(corruptions, severities) if corruptions else ([], ())
    announce_default_model(model, checkpoint)
    predictor = Predictor.from_cli(
        model, checkpoint, results, device, amp="checkpoint", data=data, announce=announce_choice
    )
    spec = parse_data("--kind", "data", {"kind": kind, "path": data, "labels": labels})
    if data == "synthetic":
        spec = DataSpec()
    finder = None
    if detect:
        from ferbench.faces.detect import still_detector

        finder = still_detector(detector)
    metrics = evaluate_checkpoint(
        predictor,
        spec,
        split,
        tta=tta,
        detector=finder,
        scales=parse_scales(scales),
        align=align,
    )
    how = describe_views(metrics["tta"], metrics["tta_shift"], metrics["scales"])
    precision = metrics["amp"] if metrics["amp"] != "off" else "fp32"
    console.print(
        f"[bold]{predictor.model_name}[/] ({escape(str(predictor.path))}) on {metrics['split']} of "
        f"{escape(metrics['data_source'])}: {metrics['images']:,} images, {how}, {precision}"
    )
    if metrics["no_face"]:
        console.print(f"[yellow]no face found[/] in {metrics['no_face']:,} images (left out)")
    for note in metrics["data_notes"]:
        console.print(f"[cyan]note:[/] {escape(note)}")
    renamed = [f"{d}→{m}" for d, m in metrics["class_map"].items() if d != m]
    if renamed:
        console.print(f"classes matched by synonym: {escape(', '.join(renamed))}")
    if metrics["left_out"]["images"]:
        console.print(
            f"[yellow]left out[/] {metrics['left_out']['images']:,} images of classes the model "
            f"does not know: {', '.join(metrics['left_out']['classes'])}"
        )
    table = Table(header_style="bold")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in metrics["per_class"].items():
        table.add_row(
            name,
            f"{row['precision']:.3f}",
            f"{row['recall']:.3f}",
            f"{row['f1']:.3f}",
            str(row["support"]),
        )
    console.print(table)
    low, high = metrics["accuracy_ci95"]  # 95% Wilson interval over the faces scored
    console.print(
        f"accuracy [bold]{metrics['accuracy']:.4f}[/] (95% CI {low:.4f}–{high:.4f}, "
        f"{metrics['faces']:,} faces)  balanced accuracy {metrics['balanced_accuracy']:.4f}  "
        f"macro-F1 {metrics['macro_f1']:.4f} (classes present)  ECE {metrics['ece']:.4f}"
    )
    console.print(f"predicted share (truth): {_shares_line(metrics)}", highlight=False)
    if "leaked" in metrics:
        console.print(
            f"{metrics['leaked']:,} of these faces were also trained on ("
            f"{metrics.get('leak_kind', 'near-duplicates')}, in the model's training split): "
            f"accuracy without them [bold]{metrics['accuracy_clean']:.4f}[/]"
            f"{clean_interval(metrics)}, "
            f"on them {metrics['accuracy_leaked']:.4f}  (ferbench data leaks)"
        )
    if families:
        from ferbench.infer.cross_eval import robustness_of

        total, done = 1 + len(families) * len(levels), iter(range(1, 10**6))
        with working(f"robustness suite: {total} conditions") as update:
            metrics["robustness"] = robustness_of(
                predictor,
                spec,
                metrics["split"],
                families,
                levels,
                progress=lambda text: update(f"robustness suite: {text} ({next(done)}/{total})"),
            )
        print_robustness(metrics["robustness"])
    if framing:
        from ferbench.infer.cross_eval import framing_of

        with working("framing gap") as update:
            gap = framing_of(
                predictor, spec, metrics["split"], progress=lambda text: update(f"framing: {text}")
            )
        metrics["framing"] = gap
        print_framing(gap)
    if out:
        write_json(out, metrics)
        console.print(f"[green]wrote[/] {out}")


def parse_suite(corruptions: str, severities: str) -> tuple[list[str], tuple[int, ...]]:
    """--corruptions and --severities, checked before any model or data loads."""
    from ferbench.data.corrupt import SEVERITIES, resolve_families

    try:
        families = resolve_families(corruptions)
        levels = tuple(int(s) for s in severities.split(","))
    except ValueError as exc:
        raise FerbenchError(f"--corruptions/--severities: {exc}") from None
    if not set(levels) <= set(SEVERITIES):
        raise FerbenchError(f"--severities: choose among 1-5, not {severities}")
    return families, levels


def print_robustness(result: dict) -> None:
    """The suite as a table (families × severities, trained families marked) and one line."""
    from ferbench.infer.robustness import family_table, headline

    table = Table(header_style="bold", title="accuracy under corruption (one view per face)")
    table.add_column("family")
    table.add_column("group")
    for s in result["severities"]:
        table.add_column(f"s{s}", justify="right")
    table.add_column("mean", justify="right")
    for row in family_table(result):
        name = row["family"] + ("" if row["trained"] else " [dim](held out)[/]")
        cells = [f"{row[f's{s}']:.1%}" for s in result["severities"]]
        table.add_row(name, row["group"], *cells, f"[bold]{row['mean']:.1%}[/]")
    console.print(table)
    console.print(headline(result))


def clean_interval(metrics: dict) -> str:
    """`` (95% CI 0.6900–0.7200)`` of the accuracy without the leaked faces."""
    from ferbench.report.stats import accuracy_interval, interval_text

    kept = metrics["faces"] - metrics["leaked"]
    if kept <= 0:
        return ""
    return f" (95% CI {interval_text(*accuracy_interval(metrics['accuracy_clean'], kept), 1, 4)})"


def print_framing(gap: dict) -> None:
    console.print(
        f"framing: the detector found {gap['detected']:,} of {gap['faces']:,} faces; on them, "
        f"dataset crops {gap['clean_detected']:.1%}, box crops {gap['box']['accuracy']:.1%} "
        f"({-gap['box']['gap'] * 100:+.1f} points), aligned crops "
        f"{gap['aligned']['accuracy']:.1%} ({-gap['aligned']['gap'] * 100:+.1f} points)"
    )


def _shares_line(metrics: dict) -> str:
    """Each class's share of the predictions against its share of the truth."""
    from ferbench.report.metrics import class_shares

    predicted, truth = class_shares(metrics)
    return "  ".join(f"{n} {p:.0%} ({truth[n]:.0%})" for n, p in predicted.items())
