"""Unit tests of the small pieces: LR schedules, trial naming and validation, leaderboard
aggregation, RunDir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ferbench.config import ConfigError, TrainConfig, config_hash
from ferbench.errors import FerbenchError
from ferbench.report.leaderboard import Run, leaderboards, runs_frame
from ferbench.runs import RunDir, best_run
from ferbench.train.engine import LRSchedule
from ferbench.train.experiment import expand


def test_lr_schedules():
    step = LRSchedule(TrainConfig(lr=0.1, scheduler="step", step_size=2, gamma=0.5, epochs=6))
    assert [step.lr_at(e) for e in (0, 1.9, 2, 4)] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    cosine = LRSchedule(TrainConfig(lr=0.1, scheduler="cosine", epochs=10, min_lr=0.0))
    assert cosine.lr_at(0) == pytest.approx(0.1) and cosine.lr_at(5) == pytest.approx(0.05)
    assert cosine.lr_at(10) == pytest.approx(0.0, abs=1e-9)
    one = LRSchedule(TrainConfig(lr=0.1, scheduler="onecycle", epochs=10, warmup_epochs=2))
    assert one.lr_at(1) == pytest.approx(0.1 * 1.001 / 2)  # linear warm-up
    assert one.lr_at(2) == pytest.approx(0.1) and one.lr_at(6) == pytest.approx(0.05)
    plateau = LRSchedule(TrainConfig(lr=0.1, scheduler="plateau", plateau_patience=1, gamma=0.1))
    for loss in (1.0, 1.0, 1.0):
        plateau.end_epoch(loss)
    assert plateau.lr_at(3) == pytest.approx(0.01)
    restored = LRSchedule(plateau.cfg)
    restored.load_state_dict(plateau.state_dict())
    assert restored.lr_at(3) == pytest.approx(0.01)


def _expand(**raw):
    return expand({"models": ["cnn5"], **raw}, "exp.yaml")


def test_trial_names_come_from_the_grid_axes():
    trials = _expand(
        name="grid",
        models=["cnn5", {"name": "cnn3", "lr": [0.1, 0.01]}],
        train={"seed": [0, 1], "epochs": 2},
    )
    names = sorted(t.name for t in trials)
    assert names == sorted(
        [
            "cnn5/seed=0",
            "cnn5/seed=1",
            "cnn3/lr=0.1/seed=0",
            "cnn3/lr=0.1/seed=1",
            "cnn3/lr=0.01/seed=0",
            "cnn3/lr=0.01/seed=1",
        ]
    )
    assert {t.train.epochs for t in trials} == {2} and {
        t.train.lr for t in trials if "lr=0.1/" in t.name
    } == {0.1}
    same_model = _expand(models=[{"name": "cnn5", "lr": 0.1}, {"name": "cnn5", "lr": 0.2}])
    assert [t.name for t in same_model] == ["cnn5/lr=0.1/seed=0", "cnn5/lr=0.2/seed=0"]
    seeds = _expand(models=["cnn5", {"name": "cnn5", "seed": 2}, {"name": "cnn5", "seed": [3]}])
    assert [t.name for t in seeds] == ["cnn5/seed=0", "cnn5/seed=2", "cnn5/seed=3"]


def test_data_size_is_honoured_or_refused():
    trial = _expand(data={"kind": "synthetic", "size": 40})[0]
    assert trial.model.input_size == trial.data.size == 40
    assert _expand(models=[{"name": "cnn5", "input_size": 40}], data={"size": 40})
    with pytest.raises(ConfigError, match=r"exp.yaml: data.size: 40 disagrees with models\[0\]"):
        _expand(models=[{"name": "cnn5", "input_size": 48}], data={"size": 40})


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"name": "../../../elsewhere"}, "name"),
        ({"name": ".hidden"}, "name"),
        ({"models": [{"name": "cnn5", "args": {"x": "a/b"}}]}, r"models\[0\].args.x"),
        ({"train": {"optimizer": ["sgd"], "lr": ["../x"]}}, "train.lr"),
    ],
)
def test_unsafe_folder_names_are_refused(raw, key):
    with pytest.raises(FerbenchError, match=f"exp.yaml: {key}: "):
        _expand(**raw)


def test_config_hash_ignores_where_the_data_lives():
    a, b = (_expand(data={"kind": "fer2013", "path": p})[0] for p in ("x/f.csv", "y/f.csv.gz"))
    assert a.config_hash() == b.config_hash()
    assert config_hash(a.to_dict()) != _expand(train={"lr": 0.5})[0].config_hash()


def _run(name: str, model: str, seed: int, acc: float, recall: dict, lr=0.1) -> Run:
    config = {
        "experiment": "e",
        "model": {"name": model, "input_size": 48},
        "data": {"kind": "fer2013", "path": f"/somewhere/{seed}/fer2013.csv"},
        "train": {"seed": seed, "lr": lr},
        "class_names": list(recall),
        "data_identity": "abcdef0123",
    }
    per_class = {c: {"recall": r, "support": 10} for c, r in recall.items()}
    metrics = {"accuracy": acc, "per_class": per_class, "parameters": 1e6, "flops": 2e6}
    return Run(Path(name), "done", config, metrics)


def test_leaderboard_groups_seeds_across_data_paths():
    runs = [
        _run("e/a/0", "cnn3", 0, 0.60, {"happy": 0.9, "fear": 0.3}),
        _run("e/a/1", "cnn3", 1, 0.62, {"happy": 0.8, "fear": 0.5}),
        _run("e/b/0", "cnn5", 0, 0.50, {"happy": 0.7, "fear": 0.2}),
    ]
    boards = leaderboards(runs_frame(runs))
    assert len(boards) == 1  # one dataset: same fingerprint, whatever the path
    board = next(iter(boards.values()))
    top = board.iloc[0]
    assert (top["model"], top["n"]) == ("cnn3", 2)
    assert top["accuracy_mean"] == pytest.approx(0.61)
    assert top["accuracy_std"] == pytest.approx(pd.Series([0.60, 0.62]).std())
    assert (top["worst_class"], top["worst_class_recall_mean"]) == ("fear", pytest.approx(0.4))


def test_run_dir_status_and_best_run(tmp_path):
    for index, (model, val) in enumerate((("cnn3", 0.5), ("cnn3", 0.6), ("cnn5", 0.9))):
        run = RunDir(tmp_path / "exp" / f"trial{index}")  # folder names say nothing
        run.path.mkdir(parents=True)
        (run.path / "config.yaml").write_text(f"model: {{name: {model}}}\n")
        (run.path / "metrics.json").write_text(json.dumps({"best_val_acc": val}))
        run.best_checkpoint.write_bytes(b"x")
        run.write_status("done", f"trial{index}", "hash")
        assert run.state == "done" and run.status()["config_hash"] == "hash"
    assert best_run("cnn3", tmp_path).path.name == "trial1"
    with pytest.raises(FerbenchError, match="finished models: cnn3, cnn5"):
        best_run("resnet18", tmp_path)
    run = RunDir(tmp_path / "exp" / "trial0")
    run.clear()
    assert not run.best_checkpoint.exists() and run.state == "unknown"


def test_a_run_whose_process_died_is_stopped_and_says_how_far_it_got(tmp_path):
    run = RunDir(tmp_path / "exp" / "cnn3")
    with run.lock() as acquired:
        assert acquired
        run.write_status("running", "cnn3", "hash")
        (run.path / "config.yaml").write_text("train: {epochs: 50}\n")
        (run.path / "history.csv").write_text("epoch,val_acc\n1,0.40\n2,0.45\n3,0.43\n")
        assert run.state == "running"  # its process holds the lock
    assert run.state == "stopped"  # the lock went with the process; the status still says running
    assert run.progress() == "epoch 3 of 50, best val acc 0.450 (epoch 2)"
    history = "epoch,val_acc,train_s,eval_s\n1,0.40,900,20\n2,0.45,430,20\n3,0.43,440,20\n"
    (run.path / "history.csv").write_text(history)  # the pace of the recent epochs
    assert (
        run.progress()
        == "epoch 3 of 50, best val acc 0.450 (epoch 2), ~6.0 h left at 7.7 min an epoch"
    )


def test_log_lines_say_how_long_the_trial_has_left():
    """Under nohup each epoch is one line; it ends with the time left at the recent pace."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from ferbench.train.progress import RichReporter

    out = io.StringIO()
    reporter = RichReporter(Console(file=out, force_terminal=False, width=200), total_trials=1)
    reporter.trial_started(SimpleNamespace(name="cnn3/seed=0"), start_epoch=4, epochs=10)
    row = {"train_acc": 0.5, "val_acc": 0.4, "val_loss": 1.2, "eval_s": 10.0}
    for epoch, train_s in ((5, 500.0), (6, 110.0), (7, 110.0)):  # the first one slow
        reporter.epoch_done(epoch, 10, {**row, "train_s": train_s})
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("500.0s, ~42.5 min left at 8.5 min an epoch")
    assert lines[-1].endswith("110.0s, ~6.0 min left at 2.0 min an epoch")  # median of three
    reporter.epoch_done(10, 10, {**row, "train_s": 110.0})
    assert out.getvalue().splitlines()[-1].endswith("110.0s")  # nothing left to say


def test_expected_calibration_error():
    from ferbench.report.metrics import classification_metrics, expected_calibration_error

    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    honest = np.tile([0.75, 0.25], (8, 1))  # says 75%, right 6 times of 8
    honest_labels = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    assert expected_calibration_error(honest, honest_labels) == pytest.approx(0.0)
    overconfident = np.tile([0.99, 0.01], (8, 1))  # says 99%, right half the time
    assert expected_calibration_error(overconfident, labels) == pytest.approx(0.49)
    metrics = classification_metrics(labels, overconfident.argmax(1), ["a", "b"], overconfident)
    assert metrics["ece"] == pytest.approx(0.49)


def test_data_identity_ignores_the_input_size():
    """cnn5 (32 px) and cnn3 (48 px) on the same faces share a leaderboard."""
    from ferbench.data import load_dataset

    small, large = (
        load_dataset({"kind": "synthetic", "n_per_class": 5, "size": s}) for s in (32, 48)
    )
    assert small.fingerprint() != large.fingerprint()
    assert small.label_fingerprint() == large.label_fingerprint()
    runs = [
        _run("e/a/0", "cnn5", 0, 0.5, {"happy": 0.5}),
        _run("e/b/0", "cnn3", 0, 0.6, {"happy": 0.6}),
    ]
    runs[1].config["data_fingerprint"] = "another-size"  # data_identity is what groups
    assert len(leaderboards(runs_frame(runs))) == 1


def test_preprocess_normalises_each_channel_with_its_own_statistics():
    import torch

    from ferbench.models.preprocess import Preprocess

    grey = torch.full((2, 8, 8), 51, dtype=torch.uint8)  # 0.2 after scaling
    x = Preprocess(8, 3, (0.1, 0.2, 0.3), (0.5, 1.0, 2.0))(grey)
    assert x.shape == (2, 3, 8, 8)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([0.2, 0.0, -0.05]), atol=1e-6)
    one = Preprocess(8, 1, (0.1,), (0.5,))(grey)
    assert torch.allclose(one[0, 0, 0, 0], torch.tensor(0.2))


def test_trial_clock_leaves_out_the_time_the_process_was_stopped():
    """A training paused with SIGSTOP (for a timing measurement beside it) does not count the
    pause in its recorded time; the wall clock does."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import time\nfrom ferbench.utils.clock import running_time, paused_s\n"
        "t0, w0 = running_time(), time.perf_counter()\nprint('ready', flush=True)\n"
        "time.sleep(5)\nprint(running_time() - t0, time.perf_counter() - w0, paused_s())\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    child.send_signal(signal.SIGSTOP)
    time.sleep(4)
    child.send_signal(signal.SIGCONT)
    running, wall, paused = map(float, child.communicate(timeout=30)[0].split())
    assert wall >= 4.9 and 3.5 <= paused <= 4.3
    assert abs(running - (wall - paused)) < 0.05 and running < 1.5


def test_zoomed_views_keep_the_centre_and_the_size():
    import torch

    from ferbench.data.augment import zoomed
    from ferbench.device import resolve_runtime
    from ferbench.infer.batched import view_logits
    from ferbench.models.preprocess import Preprocess

    face = torch.zeros(1, 1, 16, 16)
    face[..., 6:10, 6:10] = 1.0  # a bright square at the centre
    assert zoomed(face, 1.0) is face
    closer, farther = zoomed(face, 2.0), zoomed(face, 0.5)
    assert closer.shape == farther.shape == face.shape
    assert closer[..., 8, 8] == 1 and closer.sum() > 2 * face.sum()  # the square grows
    assert farther[..., 8, 8] > 0 and farther.sum() < face.sum() / 2  # and shrinks
    assert farther[..., 0, :].abs().sum() == 0  # the border a smaller face leaves is blank

    class Brightness(torch.nn.Module):  # "logits" that say how bright each view is
        def forward(self, x):
            return x.mean((1, 2, 3))[:, None].repeat(1, 2)

    images = torch.full((3, 16, 16), 200, dtype=torch.uint8)
    runtime = resolve_runtime("cpu", "off", channels_last="off", data_on_device="on")
    plain = Preprocess(16, 1, (0.0,), (1.0,))
    ten = view_logits(Brightness(), plain, images, runtime, tta_shift=2)
    zooms = view_logits(Brightness(), plain, images, runtime, tta_shift=2, scales=(0.8, 1, 1.2))
    assert ten.shape == (3, 10, 2) and zooms.shape == (3, 30, 2)
    assert torch.equal(zooms[:, 10:20], ten)  # zoom 1 is the ten-crop as it was
    assert (zooms[:, :10, 0] < ten[:, :, 0]).all()  # zoomed out: a blank border darkens it
