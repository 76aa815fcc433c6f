"""Run trials into run directories: skip what is finished, resume what was interrupted,
record what failed, never let two processes write one trial.

A run directory holds config.yaml, status.json, history.csv, metrics.json, per_class.csv,
confusion.csv/.png, curves.png, best.pt and last.pt.  ``compare`` reads only these files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import torch

from ferbench import __version__
from ferbench.checkpoint import load_checkpoint, save_checkpoint
from ferbench.data import SPLITS, load_dataset
from ferbench.engine import (
    Preprocess,
    SplitTensors,
    Trainer,
    balanced_class_weights,
    evaluate,
    measure_speed,
    resolve_runtime,
    seed_everything,
    select_device,
)
from ferbench.errors import FerbenchError
from ferbench.experiment import Trial
from ferbench.fileio import write_json, write_text, write_yaml
from ferbench.metrics import classification_metrics

OUTPUT_FILES = (
    "config.yaml",
    "status.json",
    "history.csv",
    "metrics.json",
    "per_class.csv",
    "confusion.csv",
    "confusion.png",
    "curves.png",
    "best.pt",
    "last.pt",
    "error.txt",
)


class Reporter:
    """Progress hooks; the default reports nothing (subprocesses, Ray workers, tests)."""

    def trial_started(self, trial: Trial, start_epoch: int, epochs: int) -> None: ...
    def batch(self, step: int, steps: int, loss: float, acc: float) -> None: ...
    def epoch_done(self, epoch: int, epochs: int, row: dict) -> None: ...
    def note(self, text: str) -> None: ...


@dataclass
class Outcome:
    name: str
    status: str  # done, skipped, failed, locked
    run_dir: str
    seconds: float = 0.0
    test_acc: float | None = None
    val_acc: float | None = None
    error: str = ""


def now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def read_status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


@contextmanager
def trial_lock(run_dir: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock per trial; yields False when another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock on this platform: run unlocked
        yield True
        return
    with open(run_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def execute_trial(
    trial: Trial,
    results: Path,
    device: str = "auto",
    fresh: bool = False,
    reporter: Reporter | None = None,
) -> Outcome:
    """Run one trial unless it is finished with the same config; never raises for trial errors."""
    reporter = reporter or Reporter()
    run_dir = Path(results) / trial.experiment / trial.name
    start = time.perf_counter()
    with trial_lock(run_dir) as acquired:
        if not acquired:
            return Outcome(
                trial.name, "locked", str(run_dir), error="another process is running it"
            )
        status = read_status(run_dir)
        same = status.get("config_hash") == trial.config_hash()
        if status.get("status") == "done" and same and not fresh:
            metrics = _read_metrics(run_dir)
            return Outcome(
                trial.name,
                "skipped",
                str(run_dir),
                test_acc=metrics.get("accuracy"),
                val_acc=metrics.get("best_val_acc"),
            )
        if fresh or (status and not same):
            if status and not same and not fresh:
                reporter.note(f"{trial.name}: settings changed since the last run; starting over")
            _clear(run_dir)
        (run_dir / "error.txt").unlink(missing_ok=True)
        try:
            metrics = fit(trial, run_dir, device, reporter)
        except KeyboardInterrupt:
            _write_status(run_dir, trial, "interrupted")
            raise
        except Exception as exc:  # any failure is recorded and the grid goes on
            message = _one_line(exc)
            if isinstance(exc, torch.cuda.OutOfMemoryError):
                message = f"out of GPU memory ({message}); lower batch_size"
            write_text(run_dir / "error.txt", traceback.format_exc())
            _write_status(run_dir, trial, "failed", error=message)
            return Outcome(
                trial.name, "failed", str(run_dir), time.perf_counter() - start, error=message
            )
    return Outcome(
        trial.name,
        "done",
        str(run_dir),
        time.perf_counter() - start,
        test_acc=metrics["accuracy"],
        val_acc=metrics["best_val_acc"],
    )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _read_metrics(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def _clear(run_dir: Path) -> None:
    for name in OUTPUT_FILES:
        (run_dir / name).unlink(missing_ok=True)


def _write_status(run_dir: Path, trial: Trial, status: str, **extra) -> None:
    previous = read_status(run_dir)
    write_json(
        run_dir / "status.json",
        {
            "status": status,
            "trial": trial.name,
            "config_hash": trial.config_hash(),
            "started": previous.get("started", now()) if status != "running" else now(),
            "updated": now(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            **extra,
        },
    )


def _versions() -> dict:
    import sklearn
    import timm

    return {
        "ferbench": __version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "timm": timm.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


def _device_info(device: torch.device) -> dict:
    info = {"type": device.type, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def fit(trial: Trial, run_dir: Path, device_name: str, reporter: Reporter) -> dict:
    """Train with model selection on validation, then evaluate the best checkpoint on test once."""
    from ferbench.models import create_model, model_card
    from ferbench.models.profile import count_flops, count_parameters

    device = select_device(device_name)
    cfg, eval_cfg = trial.train, trial.eval
    seed_everything(cfg["seed"], cfg["deterministic"])
    data = load_dataset(trial.data, base_dir=Path(trial.base_dir))
    counts = data.counts()
    for split in ("train", "val", "test"):
        if counts[SPLITS.index(split)].sum() == 0:
            raise FerbenchError(f"the {split} split of {data.source} is empty")
    card = model_card(trial.model["name"])
    size = trial.model["input_size"]
    model_args = {
        "num_classes": len(data.class_names),
        "in_chans": card.in_chans,
        "input_size": size,
        **trial.model.get("args", {}),
    }
    model = create_model(trial.model["name"], **model_args)
    parameters, flops = count_parameters(model), count_flops(model, card.in_chans, size)
    runtime = resolve_runtime(cfg, device)
    amp, channels_last, on_device = runtime.amp, runtime.channels_last, runtime.data_on_device
    model = model.to(
        device, memory_format=torch.channels_last if channels_last else torch.preserve_format
    )
    cfg = {**cfg, "amp": amp}
    preprocess = Preprocess(size, card.in_chans, card.mean, card.std, channels_last)
    storage = device if on_device else torch.device("cpu")
    train, val, test = (
        SplitTensors.from_arrays(data, s, storage) for s in ("train", "val", "test")
    )
    weights = None
    if cfg["class_weights"] == "balanced":
        weights = balanced_class_weights(train.labels.cpu().numpy(), len(data.class_names)).to(
            device
        )
    net = torch.compile(model) if cfg["compile"] else model
    trainer = Trainer(net, preprocess, cfg, device, class_weights=weights, on_batch=reporter.batch)
    meta = {
        "model": trial.model["name"],
        "model_args": model_args,
        "class_names": list(data.class_names),
        "preprocess": preprocess.to_dict(),
        "config_hash": trial.config_hash(),
        "trial": trial.name,
        "data_fingerprint": data.fingerprint(),
    }
    config = {
        **trial.resolved(),
        "config_hash": trial.config_hash(),
        "data_fingerprint": data.fingerprint(),
        "data_source": data.source,
        "data_notes": data.notes,
        "class_names": list(data.class_names),
        "data_counts": {s: counts[i].tolist() for i, s in enumerate(SPLITS)},
        "versions": _versions(),
        "device": _device_info(device),
        "amp": amp,
        "channels_last": channels_last,
        "data_on_device": on_device,
    }
    write_yaml(run_dir / "config.yaml", config)
    _write_status(run_dir, trial, "running")

    history: list[dict] = []
    start_epoch, best = 0, {"val_acc": -1.0, "val_loss": float("inf"), "epoch": 0}
    last_path = run_dir / "last.pt"
    if last_path.exists():
        start_epoch, best, history = _resume(last_path, run_dir, model, trainer, trial, reporter)
    reporter.trial_started(trial, start_epoch, cfg["epochs"])
    stale = 0
    elapsed = history[-1]["elapsed_s"] if history else 0.0
    for epoch in range(start_epoch, cfg["epochs"]):
        stats = trainer.train_epoch(train, epoch)
        eval_start = time.perf_counter()
        val_loss, val_acc, _ = evaluate(net, preprocess, val, device, eval_cfg["batch_size"], amp)
        eval_seconds = time.perf_counter() - eval_start
        trainer.schedule.end_epoch(val_loss)
        elapsed += stats.seconds + eval_seconds
        row = {
            "epoch": epoch + 1,
            "train_loss": stats.loss,
            "train_acc": stats.acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": trainer.optimizer.param_groups[0]["lr"],
            "train_s": stats.seconds,
            "eval_s": eval_seconds,
            "elapsed_s": elapsed,
            "train_images_per_s": stats.images / max(stats.seconds, 1e-9),
        }
        history.append(row)
        write_text(run_dir / "history.csv", pd.DataFrame(history).to_csv(index=False))
        improved = val_acc > best["val_acc"] or (
            val_acc == best["val_acc"] and val_loss < best["val_loss"]
        )
        if improved:
            best = {"val_acc": val_acc, "val_loss": val_loss, "epoch": epoch + 1}
            save_checkpoint(
                run_dir / "best.pt", model, {**meta, "epoch": epoch + 1, "val_acc": val_acc}
            )
            stale = 0
        else:
            stale += 1
        save_checkpoint(
            last_path,
            model,
            {**meta, "epoch": epoch + 1, "val_acc": val_acc},
            optimizer=trainer.optimizer.state_dict(),
            schedule=trainer.schedule.state_dict(),
            best=best,
        )
        reporter.epoch_done(epoch + 1, cfg["epochs"], row)
        if cfg["early_stopping"] and stale >= cfg["early_stopping"]:
            reporter.note(
                f"{trial.name}: early stop after epoch {epoch + 1} "
                f"(no val improvement in {stale} epochs)"
            )
            break
    return _finish(
        trial,
        run_dir,
        model,
        preprocess,
        test,
        device,
        amp,
        history,
        best,
        data.class_names,
        parameters,
        flops,
    )


def _resume(
    last_path: Path, run_dir: Path, model, trainer: Trainer, trial: Trial, reporter: Reporter
) -> tuple[int, dict, list[dict]]:
    payload = load_checkpoint(last_path)
    if payload.get("config_hash") != trial.config_hash():
        reporter.note(f"{trial.name}: last.pt is from other settings; starting over")
        return 0, {"val_acc": -1.0, "val_loss": float("inf"), "epoch": 0}, []
    model.load_state_dict(payload["state_dict"])
    trainer.optimizer.load_state_dict(payload["optimizer"])
    trainer.schedule.load_state_dict(payload["schedule"])
    epoch = int(payload["epoch"])
    history = []
    if (run_dir / "history.csv").exists():
        frame = pd.read_csv(run_dir / "history.csv")
        history = frame[frame["epoch"] <= epoch].to_dict("records")
    reporter.note(f"{trial.name}: resuming after epoch {epoch}")
    return epoch, dict(payload["best"]), history


def _finish(
    trial: Trial,
    run_dir: Path,
    model,
    preprocess: Preprocess,
    test: SplitTensors,
    device: torch.device,
    amp: str,
    history: list[dict],
    best: dict,
    class_names: list[str],
    parameters: int,
    flops: int,
) -> dict:
    from ferbench.plots import confusion_figure, curves_figure

    eval_cfg, cfg = trial.eval, trial.train
    best_payload = load_checkpoint(run_dir / "best.pt")
    model.load_state_dict(best_payload["state_dict"])
    shift = max(cfg["augment"].get("crop_padding", 0), 2) if eval_cfg["tta"] == "tencrop" else 0
    test_loss, _, predictions = evaluate(
        model, preprocess, test, device, eval_cfg["batch_size"], amp, tta_shift=shift
    )
    truth = test.labels.cpu().numpy()
    metrics = classification_metrics(truth, predictions, class_names)
    frame = pd.DataFrame(history)
    train_seconds = float(frame["train_s"].sum())
    images = float((frame["train_images_per_s"] * frame["train_s"]).sum())
    reached = frame[frame["val_acc"] >= eval_cfg["target_acc"]]
    metrics.update(
        {
            "test_loss": test_loss,
            "tta": eval_cfg["tta"],
            "best_epoch": int(best["epoch"]),
            "best_val_acc": float(best["val_acc"]),
            "epochs_run": int(frame["epoch"].max()),
            "parameters": parameters,
            "flops": flops,
            "train_time_s": train_seconds,
            "wall_time_s": float(frame["elapsed_s"].iloc[-1]),
            "train_images_per_s": images / max(train_seconds, 1e-9),
            "target_val_acc": eval_cfg["target_acc"],
            "time_to_target_s": float(reached["elapsed_s"].iloc[0]) if len(reached) else None,
            "epoch_to_target": int(reached["epoch"].iloc[0]) if len(reached) else None,
        }
    )
    if eval_cfg["speed"]:
        metrics.update(measure_speed(model, preprocess, device, amp))
    write_json(run_dir / "metrics.json", metrics)
    per_class = pd.DataFrame(metrics["per_class"]).T.rename_axis("class").reset_index()
    write_text(run_dir / "per_class.csv", per_class.to_csv(index=False))
    confusion = pd.DataFrame(metrics["confusion"], index=class_names, columns=class_names)
    write_text(run_dir / "confusion.csv", confusion.rename_axis("true\\predicted").to_csv())
    title = f"{trial.experiment}/{trial.name}  test acc {metrics['accuracy']:.3f}"
    confusion_figure(metrics["confusion"], class_names, run_dir / "confusion.png", title)
    curves_figure(frame, run_dir / "curves.png", title)
    _write_status(run_dir, trial, "done", test_acc=metrics["accuracy"])
    return metrics


def default_threads(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(jobs, 1))
