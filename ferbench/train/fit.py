"""Train one trial in its run directory: load the faces, build model and trainer, train with
exact resume from last.pt, choose the checkpoint on validation, test it once and write the
evaluation (metrics.json, per-class table, confusion matrix, curves, and the validation and test
probabilities with the test views that ensembles and run records use).  Where a trial runs and
whether it runs at all is the runner's job (train/runner.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ferbench.config import Trial, to_plain
from ferbench.data import SPLITS, FaceArrays, load_dataset
from ferbench.data.leaks import clean_accuracy
from ferbench.device import Runtime, resolve_runtime, select_device
from ferbench.errors import FerbenchError
from ferbench.infer.batched import measure_speed
from ferbench.models.checkpoint import checkpoint_meta, load_checkpoint, save_checkpoint
from ferbench.models.preprocess import Preprocess
from ferbench.report.evaluation import write_evaluation
from ferbench.report.metrics import classification_metrics
from ferbench.runs import RunDir
from ferbench.train.budget import machine_bound
from ferbench.train.distill import (
    OnlineTeacher,
    Teacher,
    check_teacher,
    resolve_teacher,
    teacher_probabilities,
    vote_targets,
)
from ferbench.train.engine import (
    SplitTensors,
    Trainer,
    balanced_class_weights,
    dirac_init,
    evaluate,
    seed_everything,
)
from ferbench.train.ensemble import PREDICTIONS, keep_predictions
from ferbench.utils.allocator import keep_freed_memory
from ferbench.utils.clock import paused_s, running_time
from ferbench.utils.fileio import sha256_file, write_text, write_yaml
from ferbench.utils.provenance import device_info, versions


class Reporter:
    """Progress hooks; the default reports nothing (subprocesses, Ray workers, tests)."""

    def trial_started(self, trial: Trial, start_epoch: int, epochs: int) -> None: ...
    def batch(self, step: int, steps: int, loss: float, acc: float) -> None: ...
    def epoch_done(self, epoch: int, epochs: int, row: dict) -> None: ...
    def note(self, text: str) -> None: ...
    def final_pass(self, split: str) -> None:
        """The best checkpoint's one pass over `split` (test, then val) starts."""


_DATA_MEMO: dict[tuple, FaceArrays] = {}


def trial_data(trial: Trial) -> FaceArrays:
    """The trial's dataset, loaded once per process (a grid shares it across trials)."""
    key = (json.dumps(to_plain(trial.data), sort_keys=True), trial.base_dir)
    if key not in _DATA_MEMO:
        _DATA_MEMO.clear()  # keep one dataset in memory, not every one a grid touched
        _DATA_MEMO[key] = load_dataset(trial.data, base_dir=Path(trial.base_dir))
    return _DATA_MEMO[key]


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
    teacher: Teacher | None  # train.distill's teacher, resolved once
    checks: tuple[str, ...] = ()  # teacher and start checked against the splits (config.yaml)


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
    teacher, teacher_probs, online_teacher = None, None, None
    checks = []  # a teacher or start that trained on our val/test faces is refused here
    if cfg.distill:
        teacher = resolve_teacher(cfg.distill.teacher, Path(trial.base_dir))
        checks += check_teacher(teacher, trial.data, data, Path(trial.base_dir))
    if trial.model.pretrained:
        from ferbench.models.pretrained import check_start

        checks.append(check_start(trial.model.pretrained, trial.data, data, Path(trial.base_dir)))
    for line in checks:
        reporter.note(f"{trial.name}: {line}")
    if teacher and cfg.distill.views in ("student", "clean"):
        online_teacher = OnlineTeacher(teacher, data.class_names, runtime, preprocess)
        reporter.note(
            f"{trial.name}: the teacher ({len(online_teacher.members)} models) sees every "
            "training batch"
        )
    elif teacher:
        reporter.note(f"{trial.name}: the teacher's probabilities on the training faces")
        teacher_probs = torch.from_numpy(
            teacher_probabilities(
                teacher,
                data,
                trial.data,
                Path(trial.base_dir),
                lambda text: reporter.note(f"{trial.name}: {text}"),
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
        teacher_probs=teacher_probs,
        teacher=online_teacher,
        vote_targets=votes,
    )
    meta = checkpoint_meta(
        trial.model.name,
        model_args,
        data.class_names,
        preprocess,
        trial.tta_shift,
        tta=trial.eval.tta,
        tta_scales=list(trial.eval.scales),
        amp=runtime.amp,
        config_hash=trial.config_hash(),
        trial=trial.name,
        data_fingerprint=data.fingerprint(),
    )
    return _Setup(
        model,
        net,
        preprocess,
        runtime,
        trainer,
        splits,
        meta,
        parameters,
        flops,
        teacher,
        checks=tuple(checks),
    )


def _pretrained_args(pretrained: str | None) -> dict:
    """Constructor arguments of the shipped weights a trial starts from, so its checkpoint
    rebuilds the same architecture (the class count and input size are the trial's own)."""
    from ferbench.models.pretrained import read_index

    return dict(read_index()[pretrained].model_args) if pretrained else {}


def _write_config(
    run: RunDir,
    trial: Trial,
    data: FaceArrays,
    runtime: Runtime,
    teacher: Teacher | None,
    checks: tuple[str, ...] = (),
) -> None:
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
            **({"teacher": teacher.describe()} if teacher else {}),
            **({"data_checks": list(checks)} if checks else {}),
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
    _write_config(run, trial, data, runtime, setup.teacher, setup.checks)
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
    end = cfg.epochs
    if _patience_spent(cfg.early_stopping, start_epoch, best):  # killed after its stop
        reporter.note(f"{trial.name}: stopped early after epoch {start_epoch}; testing")
        end = start_epoch
    for epoch in range(start_epoch, end):
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
        if _patience_spent(cfg.early_stopping, epoch + 1, best):
            reporter.note(
                f"{trial.name}: early stop after epoch {epoch + 1} "
                f"(no val improvement in {epoch + 1 - best['epoch']} epochs)"
            )
            break
    return _finish(
        trial, run, setup, data.class_names, history, best, setup_seconds, paused_at_start, reporter
    )


def _patience_spent(patience: int | None, epochs_done: int, best: dict) -> bool:
    """Whether early stopping ends the training after `epochs_done` epochs: checked after
    each epoch and again on resume, so a run killed after its stopping epoch (or during its
    test pass) does not train one more epoch that the uninterrupted run never trained."""
    return bool(patience) and epochs_done - best["epoch"] >= patience


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


def _robustness(trial: Trial, run: RunDir, reporter: Reporter) -> dict:
    """eval.corruptions: the robustness suite on the test split with the best checkpoint, as
    `ferbench eval DATA --corruptions` scores it (one view per face, the same seeded faces)."""
    from ferbench.data.corrupt import resolve_families
    from ferbench.infer.cross_eval import robustness_of
    from ferbench.infer.predictor import Predictor
    from ferbench.infer.robustness import headline

    start = running_time()
    reporter.note(f"{trial.name}: robustness suite ({', '.join(trial.eval.corruptions)})")
    result = robustness_of(
        Predictor(run.best_checkpoint, amp="checkpoint"),
        trial.data,
        "test",
        resolve_families(trial.eval.corruptions),
        (1, 2, 3, 4, 5),
        base_dir=Path(trial.base_dir),
    )
    result["seconds"] = round(running_time() - start, 1)
    reporter.note(f"{trial.name}: {headline(result)}")
    return result


def _finish(
    trial: Trial,
    run: RunDir,
    setup: _Setup,
    class_names: list[str],
    history: list[dict],
    best: dict,
    setup_seconds: float = 0.0,
    paused_at_start: float = 0.0,
    reporter: Reporter | None = None,
) -> dict:
    """Test the best checkpoint once; metrics with where the trial's time went (`phase_s`:
    data and model setup, training, validation passes, the test pass, the speed measurement)."""
    from ferbench.report.plots import curves_figure

    test_start = running_time()
    eval_cfg = trial.eval
    model, (_, val, test) = setup.model, setup.splits
    model.load_state_dict(load_checkpoint(run.best_checkpoint)["state_dict"])

    def with_test_views(split):
        """The split through the trial's test views and zooms (the per-epoch validation takes
        the plain face at zoom 1, so that selection stays cheap)."""
        return evaluate(
            model,
            setup.preprocess,
            split,
            setup.runtime,
            eval_cfg.batch_size,
            trial.tta_shift,
            trial.tta_flip,
            trial.eval.scales,
        )

    reporter = reporter or Reporter()
    reporter.final_pass("test")
    result = with_test_views(test)
    truth = test.labels.cpu().numpy()
    metrics = classification_metrics(truth, result.predictions, class_names, result.probs)
    if len(val):  # what `ferbench ensemble` would compute: a finished run is a candidate as is
        reporter.final_pass("val")
        val_result = with_test_views(val)
        keep_predictions(
            run.file(PREDICTIONS),
            sha256_file(run.best_checkpoint),
            setup.meta["data_fingerprint"],
            {"val": val_result.probs, "test": result.probs},
        )
        metrics["val_acc_test_views"] = val_result.accuracy
    metrics.update(clean_accuracy(trial_data(trial), "test", truth == result.predictions))
    frame = pd.DataFrame(history)
    train_seconds = float(frame["train_s"].sum())
    images = float((frame["train_images_per_s"] * frame["train_s"]).sum())
    reached = frame[frame["val_acc"] >= eval_cfg.target_acc]
    metrics.update(
        {
            "test_loss": result.loss,
            "tta": eval_cfg.tta,
            "scales": list(eval_cfg.scales),
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
    if eval_cfg.corruptions:
        metrics["robustness"] = _robustness(trial, run, reporter)
        phases["robustness"] = metrics["robustness"]["seconds"]
    metrics["phase_s"] = {k: round(v, 2) for k, v in phases.items()}
    metrics["trial_s"] = round(sum(phases.values()), 2)
    # SIGSTOP pauses of this sitting, left out of the phases above (utils/clock.py)
    metrics["paused_s"] = round(paused_s() - paused_at_start, 1)
    title = f"{trial.experiment}/{trial.name}  test acc {metrics['accuracy']:.3f}"
    write_evaluation(run, metrics, class_names, title)
    curves_figure(frame, run.file("curves.png"), title)
    run.write_status("done", trial.name, trial.config_hash(), test_acc=metrics["accuracy"])
    return metrics
