"""Run trials into run directories: skip what is finished, resume what was interrupted,
record what failed, never let two processes write one trial (the layout is ``runs.RunDir``'s).

A finished trial is skipped when its config hash (settings that change the result) and its data
fingerprint (the content of the faces, wherever the file lives) are both unchanged.  A result is
never deleted by a change: a trial whose folder holds other settings or data runs beside it
(:func:`place_trial`); only ``--fresh`` clears a folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ferbench.config import Trial, changed_settings, to_plain
from ferbench.data import SPLITS, FaceArrays, load_dataset
from ferbench.data.leaks import clean_accuracy
from ferbench.device import Runtime, resolve_runtime, select_device
from ferbench.errors import FerbenchError
from ferbench.infer.batched import measure_speed
from ferbench.models.checkpoint import checkpoint_meta, load_checkpoint, save_checkpoint
from ferbench.models.preprocess import Preprocess
from ferbench.report.metrics import classification_metrics
from ferbench.runs import RunDir
from ferbench.train.budget import machine_bound
from ferbench.train.distill import resolve_teacher, teacher_probabilities, vote_targets
from ferbench.train.engine import (
    SplitTensors,
    Trainer,
    balanced_class_weights,
    dirac_init,
    evaluate,
    seed_everything,
)
from ferbench.utils.allocator import keep_freed_memory
from ferbench.utils.clock import paused_s, running_time
from ferbench.utils.fileio import write_json, write_text, write_yaml
from ferbench.utils.provenance import device_info, versions


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


_DATA_MEMO: dict[tuple, FaceArrays] = {}


def trial_data(trial: Trial) -> FaceArrays:
    """The trial's dataset, loaded once per process (a grid shares it across trials)."""
    key = (json.dumps(to_plain(trial.data), sort_keys=True), trial.base_dir)
    if key not in _DATA_MEMO:
        _DATA_MEMO.clear()  # keep one dataset in memory, not every one a grid touched
        _DATA_MEMO[key] = load_dataset(trial.data, base_dir=Path(trial.base_dir))
    return _DATA_MEMO[key]


@dataclass(frozen=True)
class Placement:
    """Where a trial runs, and why there: its own folder unless that one holds a result of
    other settings or other data, which is never touched (the trial then runs beside it, in
    ``<name>~<hash>``)."""

    run: RunDir
    reason: str = ""  # empty when the trial runs in its own folder

    @property
    def plan(self) -> str:
        """What running the trial will do: skip, resume or start."""
        run = self.run
        if run.finished:
            return "skipped (finished)"
        if run.last_checkpoint.exists():
            try:
                return f"resumes after epoch {int(run.history()['epoch'].iloc[-1])}"
            except (OSError, ValueError, IndexError, KeyError):
                return "resumes from last.pt"
        return "starts"


def place_trial(trial: Trial, results: Path, fresh: bool = False) -> Placement:
    """The run folder of `trial` under `results`.  Its own (``<experiment>/<name>``) when that
    is empty, holds the same settings and data, or `fresh` asks to redo it there; otherwise a
    sibling named with a short hash of the trial's settings and data, so both results stay."""
    home = RunDir(Path(results) / trial.experiment / trial.name)
    if fresh or home.empty or not home.file("config.yaml").exists():  # nothing trained there
        return Placement(home)
    changes = changed_settings(home.config(), trial.to_dict())
    fingerprint = trial_data(trial).fingerprint()
    if not changes and home.settings_hash() == trial.config_hash():
        if home.data_fingerprint in (None, fingerprint):
            return Placement(home)
        changes = ["the data changed (other faces or labels)"]
    elif not changes:
        changes = ["settings changed"]
    digest = hashlib.sha256(f"{trial.config_hash()}:{fingerprint}".encode()).hexdigest()[:8]
    variant = RunDir(home.path.with_name(f"{home.path.name}~{digest}"))
    return Placement(
        variant,
        f"{home.path.name} holds another run ({'; '.join(changes)}), kept; "
        f"this one runs in {variant.path.name}",
    )


def execute_trial(
    trial: Trial,
    results: Path,
    device: str = "auto",
    fresh: bool = False,
    reporter: Reporter | None = None,
) -> Outcome:
    """Run one trial unless it is finished; never raises for trial errors and never deletes a
    result unless `fresh` asks to (see :func:`place_trial`)."""
    reporter = reporter or Reporter()
    start = time.perf_counter()
    try:
        placement = place_trial(trial, results, fresh)
    except Exception as exc:  # the data failed to load: recorded in the trial's own folder
        placement = Placement(RunDir(Path(results) / trial.experiment / trial.name))
        if placement.run.empty:
            return _failed(trial, placement.run, exc, start)
        return Outcome(trial.name, "failed", str(placement.run.path), error=_one_line(exc))
    run = placement.run
    if placement.reason:
        reporter.note(f"{trial.name}: {placement.reason}")
    with run.lock() as acquired:
        if not acquired:
            return Outcome(
                trial.name, "locked", str(run.path), error="another process is running it"
            )
        status = run.status()
        try:
            if fresh:
                run.clear()
            elif status.get("status") == "done" and run.best_checkpoint.exists():
                metrics = run.metrics()
                return Outcome(
                    trial.name,
                    "skipped",
                    str(run.path),
                    test_acc=metrics.get("accuracy"),
                    val_acc=metrics.get("best_val_acc"),
                )
            run.file("error.txt").unlink(missing_ok=True)
            resumable = {trial.config_hash(), status.get("config_hash")} - {None}
            metrics = fit(trial, run, device, reporter, resumable)
        except KeyboardInterrupt:
            run.write_status("interrupted", trial.name, trial.config_hash())
            raise
        except Exception as exc:  # any failure is recorded and the grid goes on
            return _failed(trial, run, exc, start)
    return Outcome(
        trial.name,
        "done",
        str(run.path),
        time.perf_counter() - start,
        test_acc=metrics["accuracy"],
        val_acc=metrics["best_val_acc"],
    )


def _failed(trial: Trial, run: RunDir, exc: Exception, start: float) -> Outcome:
    message = _one_line(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        message = f"out of GPU memory ({message}); lower batch_size"
    run.path.mkdir(parents=True, exist_ok=True)
    write_text(run.file("error.txt"), traceback.format_exc())
    run.write_status("failed", trial.name, trial.config_hash(), error=message)
    return Outcome(trial.name, "failed", str(run.path), time.perf_counter() - start, error=message)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


@dataclass
class _Setup:
    """What fit builds before the first epoch."""

    model: torch.nn.Module
    net: torch.nn.Module  # the compiled model when train.compile, else `model`
    preprocess: Preprocess
    runtime: Runtime
    trainer: Trainer
    splits: tuple[SplitTensors, SplitTensors, SplitTensors]
    meta: dict
    parameters: int
    flops: int


def _setup(trial: Trial, data: FaceArrays, device_name: str, reporter: Reporter) -> _Setup:
    from ferbench.models import create_model, model_card
    from ferbench.models.profile import count_flops, count_parameters

    cfg = trial.train
    runtime = resolve_runtime(
        select_device(device_name), cfg.amp, cfg.channels_last, cfg.data_on_device
    )
    keep_freed_memory()  # also where a trial runs in a spawned worker or on Ray
    card = model_card(trial.model.name)
    size = trial.model.input_size
    model_args = {
        **_pretrained_args(trial.model.pretrained),
        "num_classes": len(data.class_names),
        "in_chans": card.in_chans,
        "input_size": size,
        **trial.model.args,
    }
    model = create_model(trial.model.name, pretrained=trial.model.pretrained or False, **model_args)
    parameters, flops = count_parameters(model), count_flops(model, card.in_chans, size)
    model = model.to(runtime.device, memory_format=runtime.memory_format)
    preprocess = Preprocess.for_model(card, size, runtime.channels_last)
    storage = runtime.device if runtime.data_on_device else torch.device("cpu")
    splits = tuple(SplitTensors.from_arrays(data, s, storage) for s in ("train", "val", "test"))
    weights = None
    if cfg.class_weights == "balanced":
        weights = balanced_class_weights(splits[0].labels.cpu().numpy(), len(data.class_names)).to(
            runtime.device
        )
    if cfg.dirac_init and not trial.model.pretrained:
        dirac_init(model)
    net = torch.compile(model) if cfg.compile else model
    teacher = None
    if cfg.distill:
        reporter.note(f"{trial.name}: the teacher's probabilities on the training faces")
        teacher = torch.from_numpy(
            teacher_probabilities(
                resolve_teacher(cfg.distill.teacher, Path(trial.base_dir)),
                data,
                trial.data,
                Path(trial.base_dir),
            )
        ).to(storage)
    votes = None
    if cfg.targets == "votes":
        votes = torch.from_numpy(vote_targets(data)).to(storage)
    trainer = Trainer(
        net,
        preprocess,
        cfg,
        runtime,
        class_weights=weights,
        on_batch=reporter.batch,
        teacher_probs=teacher,
        vote_targets=votes,
    )
    meta = checkpoint_meta(
        trial.model.name,
        model_args,
        data.class_names,
        preprocess,
        trial.tta_shift,
        tta=trial.eval.tta,
        amp=runtime.amp,
        config_hash=trial.config_hash(),
        trial=trial.name,
        data_fingerprint=data.fingerprint(),
    )
    return _Setup(model, net, preprocess, runtime, trainer, splits, meta, parameters, flops)


def _pretrained_args(pretrained: str | None) -> dict:
    """Constructor arguments of the shipped weights a trial starts from, so its checkpoint
    rebuilds the same architecture (the class count and input size are the trial's own)."""
    from ferbench.models.pretrained import read_index

    return dict(read_index()[pretrained].model_args) if pretrained else {}


def _write_config(run: RunDir, trial: Trial, data: FaceArrays, runtime: Runtime) -> None:
    counts = data.counts()
    write_yaml(
        run.file("config.yaml"),
        {
            **trial.to_dict(),
            "config_hash": trial.config_hash(),
            "data_fingerprint": data.fingerprint(),
            "data_identity": data.label_fingerprint(),
            "data_source": data.source,
            "dataset": data.dataset,
            "data_notes": data.notes,
            "class_names": list(data.class_names),
            "data_counts": {s: counts[i].tolist() for i, s in enumerate(SPLITS)},
            "versions": versions(),
            "device": device_info(runtime.device),
            "bound_img_s": round(machine_bound(runtime.device), 1),
            **runtime.describe(),
            **(
                {
                    "teacher": resolve_teacher(
                        trial.train.distill.teacher, Path(trial.base_dir)
                    ).describe()
                }
                if trial.train.distill
                else {}
            ),
        },
    )


def fit(
    trial: Trial,
    run: RunDir,
    device_name: str,
    reporter: Reporter,
    resumable: set[str] | frozenset[str] = frozenset(),
) -> dict:
    """Train with model selection on validation, then evaluate the best checkpoint on test once.

    A run resumed from last.pt continues exactly as the uninterrupted run would have: the
    checkpoint carries the optimizer, the schedule, the GradScaler, the best epoch (the
    early-stopping count is derived from it), the RNG states and the history up to its epoch
    (history.csv, written after it, is rebuilt from it); data order, augmentation and dropout
    are seeded per epoch.  `resumable`: the config hashes whose last.pt this trial
    may continue (its own, and the one its folder's status recorded)."""
    cfg, eval_cfg = trial.train, trial.eval
    seed_everything(cfg.seed, cfg.deterministic)
    paused_at_start = paused_s()
    setup_start = running_time()
    data = trial_data(trial)
    counts = data.counts()
    for split in ("train", "val", "test"):
        if counts[SPLITS.index(split)].sum() == 0:
            raise FerbenchError(f"the {split} split of {data.source} is empty")
    setup = _setup(trial, data, device_name, reporter)
    setup_seconds = running_time() - setup_start
    train, val, test = setup.splits
    trainer, runtime = setup.trainer, setup.runtime
    _write_config(run, trial, data, runtime)
    run.write_status(
        "running", trial.name, trial.config_hash(), data_fingerprint=data.fingerprint()
    )

    history: list[dict] = []
    start_epoch, best = 0, {"val_acc": -1.0, "val_loss": float("inf"), "epoch": 0}
    if run.last_checkpoint.exists():
        start_epoch, best, history = _resume(
            run, setup.model, trainer, trial, reporter, resumable or {trial.config_hash()}
        )
    reporter.trial_started(trial, start_epoch, cfg.epochs)
    elapsed = history[-1]["elapsed_s"] if history else 0.0
    for epoch in range(start_epoch, cfg.epochs):
        stats = trainer.train_epoch(train, epoch)
        eval_start = running_time()
        result = evaluate(trainer.eval_model, setup.preprocess, val, runtime, eval_cfg.batch_size)
        val_loss, val_acc = result.loss, result.accuracy
        eval_seconds = running_time() - eval_start
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
            "train_cpu_s": stats.cpu_seconds,
        }
        history.append(row)
        improved = val_acc > best["val_acc"] or (
            val_acc == best["val_acc"] and val_loss < best["val_loss"]
        )
        meta = {**setup.meta, "epoch": epoch + 1, "val_acc": val_acc}
        if improved:
            best = {"val_acc": val_acc, "val_loss": val_loss, "epoch": epoch + 1}
            save_checkpoint(run.best_checkpoint, trainer.eval_model, meta)
        save_checkpoint(
            run.last_checkpoint,
            setup.model,
            meta,
            **trainer.state_dict(),
            best=best,
            history=history,
        )
        write_text(run.file("history.csv"), pd.DataFrame(history).to_csv(index=False))
        reporter.epoch_done(epoch + 1, cfg.epochs, row)
        stale = epoch + 1 - best["epoch"]  # epochs since the best one: the early-stopping count
        if cfg.early_stopping and stale >= cfg.early_stopping:
            reporter.note(
                f"{trial.name}: early stop after epoch {epoch + 1} "
                f"(no val improvement in {stale} epochs)"
            )
            break
    return _finish(
        trial, run, setup, data.class_names, history, best, setup_seconds, paused_at_start
    )


def _resume(
    run: RunDir,
    model,
    trainer: Trainer,
    trial: Trial,
    reporter: Reporter,
    resumable: set[str] | frozenset[str],
) -> tuple[int, dict, list[dict]]:
    payload = load_checkpoint(run.last_checkpoint)
    if payload.get("config_hash") not in resumable:
        raise FerbenchError(
            f"{run.last_checkpoint} is from other settings than {trial.name}; "
            "run with --fresh to start this trial over"
        )
    model.load_state_dict(payload["state_dict"])
    trainer.load_state_dict(payload)
    epoch = int(payload["epoch"])
    history = [dict(row) for row in payload.get("history", [])]
    if not history and run.file("history.csv").exists():  # a last.pt from before it kept them
        frame = run.history()
        history = frame[frame["epoch"] <= epoch].to_dict("records")
    reporter.note(f"{trial.name}: resuming after epoch {epoch}")
    return epoch, dict(payload["best"]), history


def _finish(
    trial: Trial,
    run: RunDir,
    setup: _Setup,
    class_names: list[str],
    history: list[dict],
    best: dict,
    setup_seconds: float = 0.0,
    paused_at_start: float = 0.0,
) -> dict:
    """Test the best checkpoint once; metrics with where the trial's time went (`phase_s`:
    data and model setup, training, validation passes, the test pass, the speed measurement)."""
    from ferbench.report.plots import curves_figure

    test_start = running_time()
    eval_cfg = trial.eval
    model, test = setup.model, setup.splits[2]
    model.load_state_dict(load_checkpoint(run.best_checkpoint)["state_dict"])
    result = evaluate(
        model,
        setup.preprocess,
        test,
        setup.runtime,
        eval_cfg.batch_size,
        trial.tta_shift,
        trial.tta_flip,
    )
    truth = test.labels.cpu().numpy()
    metrics = classification_metrics(truth, result.predictions, class_names, result.probs)
    metrics.update(clean_accuracy(trial_data(trial), "test", truth == result.predictions))
    frame = pd.DataFrame(history)
    train_seconds = float(frame["train_s"].sum())
    images = float((frame["train_images_per_s"] * frame["train_s"]).sum())
    reached = frame[frame["val_acc"] >= eval_cfg.target_acc]
    metrics.update(
        {
            "test_loss": result.loss,
            "tta": eval_cfg.tta,
            "best_epoch": int(best["epoch"]),
            "best_val_acc": float(best["val_acc"]),
            "epochs_run": int(frame["epoch"].max()),
            "parameters": setup.parameters,
            "flops": setup.flops,
            "train_time_s": train_seconds,
            # CPU seconds of training, every thread: unlike the wall clock, no pause counts
            "train_cpu_s": (
                float(frame["train_cpu_s"].sum())
                if "train_cpu_s" in frame and frame["train_cpu_s"].notna().all()
                else None  # some epochs ran before it was measured: no partial sum
            ),
            "wall_time_s": float(frame["elapsed_s"].iloc[-1]),
            "train_images_per_s": images / max(train_seconds, 1e-9),
            "target_val_acc": eval_cfg.target_acc,
            "time_to_target_s": float(reached["elapsed_s"].iloc[0]) if len(reached) else None,
            "epoch_to_target": int(reached["epoch"].iloc[0]) if len(reached) else None,
        }
    )
    test_seconds = running_time() - test_start
    speed_start = running_time()
    if eval_cfg.speed:
        metrics.update(measure_speed(model, setup.preprocess, setup.runtime))
    phases = {
        "setup": setup_seconds,
        "train": train_seconds,
        "validate": float(frame["eval_s"].sum()),
        "test": test_seconds,
        "speed": running_time() - speed_start,
    }
    metrics["phase_s"] = {k: round(v, 2) for k, v in phases.items()}
    metrics["trial_s"] = round(sum(phases.values()), 2)
    # SIGSTOP pauses of this sitting, left out of the phases above (utils/clock.py)
    metrics["paused_s"] = round(paused_s() - paused_at_start, 1)
    title = f"{trial.experiment}/{trial.name}  test acc {metrics['accuracy']:.3f}"
    write_evaluation(run, metrics, class_names, title)
    curves_figure(frame, run.file("curves.png"), title)
    run.write_status("done", trial.name, trial.config_hash(), test_acc=metrics["accuracy"])
    return metrics


def write_evaluation(run: RunDir, metrics: dict, class_names: list[str], title: str) -> None:
    """metrics.json, per_class.csv, confusion.csv and confusion.png of a finished evaluation."""
    from ferbench.report.plots import confusion_figure

    write_json(run.file("metrics.json"), metrics)
    per_class = pd.DataFrame(metrics["per_class"]).T.rename_axis("class").reset_index()
    write_text(run.file("per_class.csv"), per_class.to_csv(index=False))
    confusion = pd.DataFrame(metrics["confusion"], index=class_names, columns=class_names)
    write_text(run.file("confusion.csv"), confusion.rename_axis("true\\predicted").to_csv())
    confusion_figure(metrics["confusion"], class_names, run.file("confusion.png"), title)


def default_threads(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(jobs, 1))
