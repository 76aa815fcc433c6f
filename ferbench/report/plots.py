"""Every figure ferbench draws (headless Agg backend): a run's confusion matrix and curves, written
by the runner, and the comparison plots of `compare` (per-class recall, confusion matrices,
curves, accuracy against latency)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ferbench.utils.fileio import atomic_path  # noqa: E402


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


MAX_GROUPS = 8


def _label(row) -> str:
    return f"{row['model']} {row['config']}".strip()


def section_plots(
    board: pd.DataFrame, by_run: dict, frame: pd.DataFrame, out: Path, index: int, target: float
) -> list[Path]:
    board = board.head(MAX_GROUPS)
    groups = [
        (_label(row), [by_run[r] for r in row["runs"].split(";") if r in by_run])
        for _, row in board.iterrows()
    ]
    paths = [
        _recall_bars(groups, out / f"per_class_recall_{index}.png"),
        _confusions(groups, out / f"confusion_matrices_{index}.png"),
        _curves(groups, out / f"training_curves_{index}.png", target),
        _pareto(board, out / f"accuracy_vs_latency_{index}.png"),
    ]
    return [p for p in paths if p is not None]


def _recall_bars(groups, path: Path) -> Path:
    classes = groups[0][1][0].metrics["class_names"]
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(max(7, len(classes) * 1.3), 4))
    for i, (label, runs) in enumerate(groups):
        recalls = np.array([[r.metrics["per_class"][c]["recall"] for c in classes] for r in runs])
        ax.bar(
            np.arange(len(classes)) + i * width - 0.4 + width / 2,
            recalls.mean(0),
            width,
            yerr=recalls.std(0) if len(runs) > 1 else None,
            label=label,
            capsize=2,
        )
    ax.set_xticks(range(len(classes)), classes)
    ax.set_ylabel("test recall")
    ax.set_ylim(0, 1)
    ax.set_title("per-class recall (mean over seeds)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    save(fig, path)
    return path


def _confusions(groups, path: Path) -> Path:
    n = min(len(groups), 6)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    for ax, (label, runs) in zip(axes[0], groups[:n]):
        matrix = np.sum([np.asarray(r.metrics["confusion"]) for r in runs], axis=0)
        draw_confusion(ax, matrix, runs[0].metrics["class_names"], True, label[:40])
    fig.suptitle("row-normalised test confusion (summed over seeds)")
    fig.tight_layout()
    save(fig, path)
    return path


def _curves(groups, path: Path, target: float) -> Path:
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for label, runs in groups:
        histories = [r.history for r in runs if r.history is not None]
        if not histories:
            continue
        merged = pd.concat(histories).groupby("epoch").mean(numeric_only=True)
        (line,) = acc_ax.plot(merged.index, merged["val_acc"], label=label)
        if "train_acc" in merged:  # an ensemble's history has validation accuracy only
            acc_ax.plot(merged.index, merged["train_acc"], linestyle=":", color=line.get_color())
        if "val_loss" in merged:
            loss_ax.plot(merged.index, merged["val_loss"], color=line.get_color(), label=label)
    acc_ax.axhline(target, color="grey", linewidth=0.8, linestyle="--")
    acc_ax.set_title("accuracy (solid: val, dotted: train)")
    loss_ax.set_title("validation loss")
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
    return path


def pareto_front(latency: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Indices of points no other point beats on both lower latency and higher accuracy."""
    order = np.argsort(latency)
    front, best = [], -np.inf
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return np.array(front, dtype=int)


def _pareto(board: pd.DataFrame, path: Path) -> Path | None:
    data = board.dropna(subset=["latency_batch1_ms_mean", "accuracy_mean"])
    if data.empty:
        return None
    latency, accuracy = (
        data["latency_batch1_ms_mean"].to_numpy(),
        data["accuracy_mean"].to_numpy() * 100,
    )
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.errorbar(
        latency, accuracy, yerr=data["accuracy_std"].fillna(0).to_numpy() * 100, fmt="o", capsize=3
    )
    for (_, row), x, y in zip(data.iterrows(), latency, accuracy):
        ax.annotate(_label(row)[:30], (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    front = pareto_front(latency, accuracy)
    ax.plot(latency[front], accuracy[front], "r--", label="Pareto front")
    if latency.max() > 5 * latency.min():
        ax.set_xscale("log")
    ax.set_xlabel("batch-1 latency (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy against latency")
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, path)
    return path
