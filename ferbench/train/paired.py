"""Per-face correctness of a finished run on its test faces, for `compare --paired`.

A paired test needs both runs' verdict on each test face, in the same order.  A run (or its
record in benchmarks/runs/) keeps its test probabilities in ``predictions.npz``, in the order of
its data's test split; the true labels are not kept there, so they are read from the run's data
(it must be on this machine), and the data's label fingerprint must be the run's
``data_identity``: the same labels, splits and classes, hence the same faces in the same order.
An ensemble written before it kept its own probabilities is rebuilt from its members' (their
runs or records, a shipped tag evaluated here) with the weights and temperatures its metrics
name.  Either way the correctness must reproduce the run's recorded accuracy to the face, or
the comparison is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferbench.errors import FerbenchError
from ferbench.runs import RunDir


@dataclass
class TestVerdicts:
    name: str
    identity: str  # the data's label fingerprint: same value, same test faces in the same order
    correct: np.ndarray  # bool per test face
    source: str  # where the probabilities came from


def test_verdicts(path: Path, records: Path = Path("benchmarks/runs")) -> TestVerdicts:
    """Which test faces a finished run (a run directory or its record) gets right."""
    run = RunDir(Path(path))
    config, metrics = run.config(), run.metrics()
    if not config or not metrics:
        raise FerbenchError(f"{path}: not a finished run (no config.yaml or metrics.json)")
    identity = config.get("data_identity") or ""
    labels, data = _labels(run, identity)
    stored = run.file("predictions.npz")
    if stored.is_file():
        with np.load(stored) as kept:
            test = kept["test"]
        source = str(stored)
    elif config.get("kind") == "ensemble" and metrics.get("members"):
        test = _ensemble_test(run, metrics["members"], data, records)
        source = f"its {len(metrics['members'])} members' probabilities, weights, temperatures"
    else:
        raise FerbenchError(
            f"{path}: no predictions.npz (test probabilities per face): a paired test needs "
            "them; runs trained since they were kept have them, older ones need evaluating again"
        )
    if len(test) != len(labels["test"]):
        raise FerbenchError(
            f"{path}: {len(test)} test probabilities for {len(labels['test'])} test faces"
        )
    correct = test.argmax(1) == labels["test"]
    recorded = round(float(metrics["accuracy"]) * len(correct))
    if int(correct.sum()) != recorded:
        raise FerbenchError(
            f"{path}: its test probabilities get {int(correct.sum())} faces right, its "
            f"metrics.json {recorded}: they are not the evaluation it reports"
        )
    return TestVerdicts(str(path), identity, correct, source)


def _labels(run: RunDir, identity: str) -> tuple[dict[str, np.ndarray], object]:
    """The validation and test labels of the run's data, checked against its identity."""
    from ferbench.data import load_dataset

    spec = run.data_spec()
    if spec is None:
        where = (run.config().get("data") or {}).get("path")
        raise FerbenchError(
            f"{run.path}: its data ({where}) is not on this machine; the test labels that "
            "pair the two runs' faces are read from it"
        )
    faces = load_dataset(spec)
    if identity and faces.label_fingerprint() != identity:
        raise FerbenchError(
            f"{run.path}: the data here has other labels or splits than the run's "
            f"(identity {faces.label_fingerprint()[:8]}, the run's {identity[:8]})"
        )
    return {s: faces.split(s)[1] for s in ("val", "test")}, spec


def _ensemble_test(run: RunDir, members: list[dict], data, records: Path) -> np.ndarray:
    """An ensemble's test probabilities from its members', as build_ensemble combined them:
    each tempered by the T fitted on its validation faces (checked against the recorded one),
    weighted by its recorded weight."""
    from ferbench.models.pretrained import read_index
    from ferbench.train.ensemble import member_probabilities, shipped_member

    shipped = read_index()
    total = None
    for entry in members:
        name = entry["run"]
        if name in shipped:
            member = shipped_member(shipped[name], data)
        else:
            member = member_probabilities(RunDir(_member_folder(name, run, records)))
        recorded_t = float(entry.get("temperature", 1.0))
        if recorded_t != 1.0:
            member = member.calibrated()
            if round(member.temperature, 4) != round(recorded_t, 4):
                raise FerbenchError(
                    f"{run.path}: member {name} fits T {member.temperature:.4f} here, the "
                    f"ensemble recorded {recorded_t:.4f}"
                )
        part = member.test * float(entry["weight"])
        total = part if total is None else total + part
    return total


def _member_folder(name: str, ensemble: RunDir, records: Path) -> Path:
    """A member's run directory, or its record: results/X is kept as <records>/X, and an
    ensemble's own record sits in <records>/ensemble/ beside its members'."""
    relative = name.removeprefix("results/")
    own_records = ensemble.path.parent.parent  # <records>/ensemble/<trial> → <records>
    for candidate in (Path(name), records / relative, own_records / relative):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FerbenchError(
        f"{ensemble.path}: member {name} is neither here nor recorded in {records}/"
    )


def paired_comparison(a: Path, b: Path, records: Path = Path("benchmarks/runs")):
    """McNemar's exact test and the paired bootstrap of two runs on the same test faces."""
    from ferbench.report.stats import compare_paired

    first, second = test_verdicts(a, records), test_verdicts(b, records)
    if first.identity != second.identity:
        raise FerbenchError(
            f"{a} and {b} were tested on different faces (data identity "
            f"{first.identity[:8]} and {second.identity[:8]}): a paired test needs the same"
        )
    return first, second, compare_paired(first.correct, second.correct)
