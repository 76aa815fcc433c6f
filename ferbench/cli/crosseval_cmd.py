"""`ferbench crosseval`: a matrix of models × datasets, each on its test split."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ferbench.cli._common import (
    ResultsOption,
    console,
    friendly_errors,
    refresh_readme_table,
    working,
)


@friendly_errors
def crosseval(
    models: str = typer.Option(
        "vggfer_s.fer2013",
        "--models",
        help="Comma list: shipped tags, model names (best run) or checkpoint paths.",
    ),
    fer2013: str = typer.Option(None, "--fer2013", help="FER2013 CSV or folders: its PrivateTest."),
    ferplus_labels: str = typer.Option(
        None, "--ferplus-labels", help="With --fer2013: fer2013new.csv, adds the FER+ test split."
    ),
    folders: list[str] = typer.Option(
        [], "--folder", help="A folder of labelled faces (repeatable): its test split or all."
    ),
    portraits: list[str] = typer.Option(
        [],
        "--portraits",
        help="A folder of labelled photos, not crops (repeatable): the largest face in each is "
        "found and cropped first (as `eval --detect`), and images with no face are counted.",
    ),
    detector: str = typer.Option("mtcnn", "--detector", help="For --portraits: mtcnn or haar."),
    out: Path = typer.Option(
        Path("benchmarks/results-crosseval.csv"),
        "--out",
        "-o",
        help="The matrix as CSV (and as Markdown beside it); rows of other models and "
        "datasets already there are kept, this run's replace their own.",
    ),
    readme: Path = typer.Option(
        None,
        "--readme",
        help="Refresh the table between the <!-- benchmarks:<CSV name> --> markers of this file.",
    ),
    results: ResultsOption = Path("results"),
) -> None:
    """Evaluate every model on every dataset (classes matched by name, unknown ones left out and
    counted, each model with its own TTA and precision) and write the matrix as CSV.

    Example:
      ferbench crosseval --models vggfer_s.fer2013,vggfer_s.ferplus --fer2013 fer2013.csv \\
        --ferplus-labels fer2013new.csv --folder my_faces/ --portraits photos/ --readme README.md
    """
    import pandas as pd

    from ferbench.config import DataSpec
    from ferbench.infer.cross_eval import cross_dataset_matrix
    from ferbench.report.benchmarks import matrix_cells, matrix_markdown, merged
    from ferbench.utils.fileio import write_text

    datasets: dict[str, DataSpec] = {}
    if fer2013:
        datasets["FER2013 test"] = DataSpec(kind="auto", path=fer2013)
        if ferplus_labels:
            datasets["FER+ test"] = DataSpec(kind="ferplus", path=fer2013, labels=ferplus_labels)
    for folder in [*folders, *portraits]:
        datasets[Path(folder).name] = DataSpec(kind="folder", path=folder)
    if not datasets:
        raise typer.BadParameter("give --fer2013, --folder or --portraits")
    if out.suffix != ".csv":
        raise typer.BadParameter(f"--out {out}: the file name must end in .csv")
    finder = None
    if portraits:
        from ferbench.faces.detect import still_detector

        finder = still_detector(detector)
    names = [m.strip() for m in models.split(",") if m.strip()]
    with working("evaluating") as update:
        rows = cross_dataset_matrix(
            names, datasets, results, finder, {Path(p).name for p in portraits}, update
        )
    frame = pd.DataFrame(rows)
    table = Table(title="cross-dataset accuracy (test split; classes matched by name)")
    table.add_column("model (classes)")
    for name in datasets:
        table.add_column(name, justify="right")
    for model, cells in matrix_cells(frame).items():
        table.add_row(model, *[cells.get(d, "-") for d in datasets])
    console.print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    matrix = merged(frame, out, ["model", "dataset"])  # other models' and datasets' rows stay
    write_text(out, matrix.to_csv(index=False))
    write_text(out.with_suffix(".md"), matrix_markdown(matrix))
    console.print(f"[green]wrote[/] {out} and {out.with_suffix('.md')}")
    refresh_readme_table(readme, out)
