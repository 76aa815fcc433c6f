"""Matplotlib figures for run directories and reports (headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ferbench.fileio import atomic_path  # noqa: E402


def save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=110, bbox_inches="tight")
    plt.close(fig)


def draw_confusion(ax, matrix: np.ndarray, class_names: list[str], normalise: bool, title: str):
    values = matrix / np.maximum(matrix.sum(1, keepdims=True), 1) if normalise else matrix
    ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalise else max(1, values.max()))
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = (1 if normalise else values.max()) / 2
    for i in ticks:
        for j in ticks:
            text = f"{values[i, j]:.2f}" if normalise else f"{int(values[i, j])}"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="white" if values[i, j] > threshold else "black",
            )


def confusion_figure(matrix, class_names: list[str], path: Path, title: str = "") -> None:
    matrix = np.asarray(matrix)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    draw_confusion(axes[0], matrix, class_names, False, "counts")
    draw_confusion(axes[1], matrix, class_names, True, "row-normalised (recall)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save(fig, path)


def curves_figure(history: pd.DataFrame, path: Path, title: str = "") -> None:
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss_ax.plot(history["epoch"], history["train_loss"], label="train")
    loss_ax.plot(history["epoch"], history["val_loss"], label="val")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    acc_ax.plot(history["epoch"], history["train_acc"], label="train")
    acc_ax.plot(history["epoch"], history["val_acc"], label="val")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy")
    acc_ax.legend()
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save(fig, path)
