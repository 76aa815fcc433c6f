"""Run directories: the one place that knows their layout, lock and status.

A trial writes into ``<results>/<experiment>/<trial name>/``: config.yaml (the resolved config,
data fingerprint, versions, device), status.json, history.csv, metrics.json, per_class.csv,
confusion.csv/.png, curves.png, best.pt and last.pt.  Everything after training (compare,
predict, live, eval) reads runs through :class:`RunDir`, so any launcher can produce them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import statistics
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ferbench.errors import FerbenchError
from ferbench.utils.fileio import write_json

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


def now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # files ---------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def best_checkpoint(self) -> Path:
        return self.path / "best.pt"

    @property
    def last_checkpoint(self) -> Path:
        return self.path / "last.pt"

    def data_spec(self):
        """The data this run trained on, as a spec that loads it here at any size; None when
        its file is not on this machine (the faces' identity is in `data_fingerprint`)."""
        from ferbench.config import DataSpec

        config = dict(self.config().get("data") or {})
        config.pop("size", None)
        path = config.get("path")
        if config.get("kind") == "synthetic" or (path and Path(path).expanduser().exists()):
            return DataSpec(**config)
        return None

    @property
    def empty(self) -> bool:
        """No output of any run (a folder that only holds a lock, or none at all)."""
        return not any((self.path / name).exists() for name in OUTPUT_FILES)

    def settings_hash(self) -> str | None:
        """The hash of this run's result-changing settings under today's rules: its config.yaml
        hashed again, so a run from before a new option or runtime key still matches its trial."""
        from ferbench.config import config_hash

        config = self.config()
        return config_hash(config) if config else self.status().get("config_hash")

    @property
    def data_fingerprint(self) -> str | None:
        """The content fingerprint of the faces this run trained on (None: not recorded)."""
        return self.status().get("data_fingerprint") or self.config().get("data_fingerprint")

    def clear(self) -> None:
        """Remove every output, so a `--fresh` trial starts from nothing (the only deletion)."""
        for name in OUTPUT_FILES:
            (self.path / name).unlink(missing_ok=True)

    # lock ----------------------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[bool]:
        """An exclusive, non-blocking lock; yields False when another process holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # no flock on this platform: run unlocked
            yield True
            return
        with open(self.path / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # status --------------------------------------------------------------------------------
    def status(self) -> dict:
        return _read_json(self.path / "status.json")

    @property
    def state(self) -> str:
        """done, running, stopped, failed, interrupted, or unknown.  A run whose status says
        running but whose lock nobody holds was killed (a closed terminal, a reboot, a session
        that ended): it is *stopped*, and resumes from last.pt when its experiment is run again."""
        state = self.status().get("status", "unknown")
        if state == "running" and (self.path / ".lock").exists():
            try:
                with self.lock() as free:
                    if free:
                        return "stopped"
            except OSError:  # a read-only copy of the results: nobody can tell
                pass
        return state

    def progress(self) -> str:
        """How far an unfinished run got: epochs done of planned, best validation accuracy and
        its epoch, and the time the epochs left take at the pace of the last three."""
        try:
            history = self.history()
        except (OSError, ValueError):
            return "no epoch finished"
        if history.empty:
            return "no epoch finished"
        planned = (self.config().get("train") or {}).get("epochs")
        done = int(history["epoch"].iloc[-1])
        best = history["val_acc"].idxmax()
        text = (
            f"epoch {done} of {planned or '?'}, best val acc "
            f"{float(history['val_acc'][best]):.3f} (epoch {int(history['epoch'][best])})"
        )
        if isinstance(planned, int) and planned > done:
            text += time_left(history.filter(["train_s", "eval_s"]).sum(axis=1), planned - done)
        return text

    def write_status(self, state: str, trial: str, config_hash: str, **extra) -> None:
        previous = self.status()
        started = previous.get("started", now()) if state != "running" else now()
        write_json(
            self.path / "status.json",
            {
                "status": state,
                "trial": trial,
                "config_hash": config_hash,
                "started": started,
                "updated": now(),
                "host": socket.gethostname(),
                "pid": os.getpid(),
                **(
                    {"data_fingerprint": previous["data_fingerprint"]}
                    if "data_fingerprint" in previous
                    else {}
                ),
                **extra,
            },
        )

    # contents ------------------------------------------------------------------------------
    def config(self) -> dict:
        import yaml

        try:
            return yaml.safe_load((self.path / "config.yaml").read_text()) or {}
        except (OSError, yaml.YAMLError):
            return {}

    def metrics(self) -> dict:
        return _read_json(self.path / "metrics.json")

    def history(self):
        import pandas as pd

        return pd.read_csv(self.path / "history.csv")

    @property
    def model_name(self) -> str:
        """The model this run trained, as its config says (never guessed from the path)."""
        return str(self.config().get("model", {}).get("name", ""))

    @property
    def kind(self) -> str:
        """``training`` (a trial of an experiment) or ``ensemble`` (a combination of finished
        runs, written by `ferbench ensemble`): what config.yaml declares; ensembles from before
        the declaration are known by their model name."""
        config = self.config()
        declared = config.get("kind")
        if declared:
            return str(declared)
        return "ensemble" if config.get("model", {}).get("name") == "ensemble" else "training"

    @property
    def finished(self) -> bool:
        return self.state == "done" and self.best_checkpoint.exists()


def trial_key(config: dict, fallback: str) -> tuple[str, str]:
    """A trial's identity across folders and machines, from its config.yaml: its experiment and
    trial name (settings and seed), so that a run directory and its record are one trial."""
    return str(config.get("experiment", "")), str(config.get("trial", fallback))


def checkpoint_path(path: Path | str) -> Path:
    """A run folder names its best.pt; a file names itself."""
    path = Path(path)
    return path / "best.pt" if path.is_dir() else path


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def iter_runs(root: Path | str) -> Iterator[RunDir]:
    """Every run directory (a folder with status.json or config.yaml) under `root`, sorted."""
    root = Path(root)
    if not root.exists():
        raise FerbenchError(f"no such results folder: {root}")
    dirs = {p.parent for pattern in ("status.json", "config.yaml") for p in root.rglob(pattern)}
    for path in sorted(dirs):
        yield RunDir(path)


@dataclass(frozen=True)
class Choice:
    """The run `--model NAME` stands for, with the one line that says which and why."""

    run: RunDir
    line: str


def best_run(model_name: str, results: Path | str, data: str | Path | None = None) -> RunDir:
    """The finished run of `model_name` under `results` that `--model` means (`choose_run`)."""
    return choose_run(model_name, results, data).run


def choose_run(model_name: str, results: Path | str, data: str | Path | None = None) -> Choice:
    """The finished run of `model_name` that `--model NAME` means, by one rule: runs on real
    faces first (synthetic ones only where there is no other); among them the runs on `data`
    when given and some trained on that file, else the runs on the data of the newest finished
    one; of those, the best validation accuracy.  Validation accuracies are compared only on
    the same validation faces: a synthetic run's 99% says nothing against FER2013's 65%."""
    results = Path(results)
    runs, available = [], set()
    for run in iter_runs(results) if results.exists() else ():
        if not run.finished:
            continue
        available.add(run.model_name)
        if run.model_name == model_name:
            runs.append(run)
    if not runs:
        have = ", ".join(sorted(available)) or "none"
        raise FerbenchError(
            f"no finished run of '{model_name}' under {results} (finished models: "
            f"{have}); train one with `ferbench run experiments/quickstart.yaml` "
            "or pass --checkpoint PATH"
        )
    real = [r for r in runs if not _synthetic(r)]
    pool = real or runs
    passed = (
        [f"{len(runs) - len(real)} on synthetic faces"] if real and len(real) < len(runs) else []
    )
    given = [r for r in pool if data is not None and _same_file(r, data)]
    if given:
        same, why = given, f"on {data}"
    else:
        newest = max(pool, key=_finished_at)
        same = [r for r in pool if _data_key(r) == _data_key(newest)]
        why = "on the data of the newest finished run"
        if data is not None:
            why += f" (none trained on {data})"
    if len(same) < len(pool):
        passed.append(f"{len(pool) - len(same)} on other data")
    best = max(same, key=lambda r: (_val_acc(r), _finished_at(r)))
    config, metrics = best.config(), best.metrics()
    test = metrics.get("accuracy")
    line = (
        f"--model {model_name}: {best.path}, trained on "
        f"{config.get('dataset') or config.get('data_source') or 'unrecorded data'} "
        f"(data {str(config.get('data_fingerprint') or '?')[:8]}), val acc {_val_acc(best):.1%}"
        + (f", test acc {test:.1%}" if isinstance(test, (int, float)) else "")
        + f"; best on validation of {len(same)} finished {model_name} run(s) {why}"
        + (f", passed over {' and '.join(passed)}" if passed else "")
        + " (--checkpoint picks another)"
    )
    return Choice(best, line)


def _synthetic(run: RunDir) -> bool:
    return (run.config().get("data") or {}).get("kind") == "synthetic"


def _data_key(run: RunDir) -> str:
    """Which faces and splits a run trained and validated on, at any size."""
    config = run.config()
    return str(
        config.get("data_identity") or config.get("data_fingerprint") or config.get("data_source")
    )


def _same_file(run: RunDir, data: str | Path) -> bool:
    path = (run.config().get("data") or {}).get("path")
    try:
        return bool(path) and os.path.samefile(Path(path).expanduser(), Path(data).expanduser())
    except OSError:
        return False


def _finished_at(run: RunDir) -> str:
    """When the run last wrote its status (ISO time; the file's time for older runs)."""
    updated = run.status().get("updated")
    if updated:
        return str(updated)
    path = run.file("status.json")
    path = path if path.exists() else run.best_checkpoint
    return dt.datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")


def _val_acc(run: RunDir) -> float:
    value = run.metrics().get("best_val_acc")
    return float(value) if isinstance(value, (int, float)) else 0.0


def time_left(epoch_seconds, epochs_left: int) -> str:
    """The ", ~6.0 h left at 7.7 min an epoch" of a progress line: the pace is the median of
    the last three epochs (training and evaluation), so one slow first epoch or a pause does not
    set it; "" when nothing is left or no epoch was timed."""
    recent = [float(s) for s in list(epoch_seconds)[-3:]]
    pace = statistics.median(recent) if recent else 0.0
    if epochs_left <= 0 or not pace > 0:
        return ""
    return f", ~{_duration(epochs_left * pace)} left at {_duration(pace)} an epoch"


def _duration(seconds: float) -> str:
    """42 s, 7.6 min, 4.1 h: the unit a person reads a wait in."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
