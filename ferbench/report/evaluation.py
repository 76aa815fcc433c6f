"""A finished evaluation's files in its run directory, the same for a trained model's test and
an ensemble's: metrics.json, per_class.csv, confusion.csv and confusion.png."""

from __future__ import annotations

import pandas as pd

from ferbench.runs import RunDir
from ferbench.utils.fileio import write_json, write_text


def write_evaluation(run: RunDir, metrics: dict, class_names: list[str], title: str) -> None:
    from ferbench.report.plots import confusion_figure  # matplotlib: only once there is a plot

    write_json(run.file("metrics.json"), metrics)
    per_class = pd.DataFrame(metrics["per_class"]).T.rename_axis("class").reset_index()
    write_text(run.file("per_class.csv"), per_class.to_csv(index=False))
    confusion = pd.DataFrame(metrics["confusion"], index=class_names, columns=class_names)
    write_text(run.file("confusion.csv"), confusion.rename_axis("true\\predicted").to_csv())
    confusion_figure(metrics["confusion"], class_names, run.file("confusion.png"), title)
