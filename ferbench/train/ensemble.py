"""Ensembles of finished runs, chosen on the validation split only, written as a run directory.

Members and weights come from greedy forward selection with replacement (Caruana et al. 2004):
start from the run with the lowest validation log-loss, then repeatedly add the run (possibly
again) whose averaged probabilities lower it most, until nothing helps.  The test
split is evaluated once, with the final weights.  Each member is evaluated as its run was (its
input size, preprocessing and ten-crop shift), so members of different sizes combine.  A member's
probabilities are kept in its run directory (``predictions.npz``, keyed by the checkpoint's
sha256 and the faces' fingerprint; a training writes it as it tests), so a finished run, or its
record, is a candidate without being evaluated again.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ferbench.config import DataSpec, zoom_label
from ferbench.errors import FerbenchError
from ferbench.models.pretrained import PretrainedWeights, read_index
from ferbench.report.evaluation import write_evaluation
from ferbench.report.metrics import classification_metrics
from ferbench.runs import RunDir, iter_runs, trial_key
from ferbench.utils.fileio import atomic_path, cache_dir, sha256_file, write_text, write_yaml
from ferbench.utils.provenance import device_info, versions


@dataclass
class Member:
    name: str  # its run folder (or record), or a shipped tag
    val: np.ndarray  # probabilities, validation split
    test: np.ndarray
    labels: dict[str, np.ndarray]  # the splits' true labels (the same for every member)
    faces: DataSpec  # the faces it saw, at its input size
    metrics: dict  # its size and training time (a run's metrics.json), for the ensemble's totals
    temperature: float = 1.0  # its probabilities were tempered so (fitted on validation)

    def calibrated(self) -> Member:
        """This member with its probabilities tempered by the T that minimises its own
        validation log-loss: members trained with label smoothing and mixup are underconfident
        by different amounts, so their plain average listens to each in the wrong measure."""
        from ferbench.infer.calibration import fit_probability_temperature, tempered

        t = fit_probability_temperature(self.val, self.labels["val"])
        return replace(self, val=tempered(self.val, t), test=tempered(self.test, t), temperature=t)


def split_candidates(paths: list[Path]) -> tuple[list[Path], list[PretrainedWeights]]:
    """Results folders and shipped tags (``vggfer_s.fer2013``) among the candidates given; a
    one-line error for a path that is neither."""
    shipped = read_index()
    folders, tags = [], []
    for path in paths:
        if Path(path).exists():
            folders.append(Path(path))
        elif str(path) in shipped:
            tags.append(shipped[str(path)])
        else:
            names = ", ".join(shipped) or "none shipped"
            raise FerbenchError(f"{path}: neither a results folder nor a shipped tag ({names})")
    return folders, tags


def candidate_runs(roots: list[Path]) -> list[RunDir]:
    """Finished runs under `roots` (ensemble directories themselves are left out): run
    directories with their best.pt, and run records (benchmarks/runs/, kept by `compare
    --export`) that hold their predictions.  A trial found twice (its run directory and its
    record) is a candidate once, as its run directory."""
    runs = [r for root in roots for r in iter_runs(root)]
    usable = [
        r
        for r in runs
        if r.kind == "training"
        and (r.finished or (r.state == "done" and any(r.path.glob("predictions*.npz"))))
    ]
    chosen: dict[tuple, RunDir] = {}
    for run in sorted(usable, key=lambda r: not r.finished):  # run directories first
        chosen.setdefault(trial_key(run.config(), str(run.path)), run)
    return [r for r in usable if r in chosen.values()]


PREDICTIONS = "predictions.npz"
SPLITS = ("val", "test")  # what a member's probabilities cover: selection, then the one test


def predictions_file(scales: tuple[float, ...] | None) -> str:
    """Where a run keeps its members' probabilities: one file per set of other test zooms, so
    that an ensemble with multi-scale views does not push out the one with the runs' own."""
    return PREDICTIONS if scales is None else f"predictions-zoom{zoom_label(scales, '+')}.npz"


def views_label(scales: tuple[float, ...] | None) -> str:
    """How an ensemble's members were evaluated: each run's own test views (None), or those
    views at these zooms."""
    return "members" if scales is None else f"members at zooms {zoom_label(scales)}"


def member_probabilities(
    run: RunDir, progress=lambda text: None, scales: tuple[float, ...] | None = None
) -> Member:
    """Validation and test probabilities of a run's best checkpoint on its own data (its test
    views, at each zoom of `scales` when given), from the run's predictions file when it was
    made by this checkpoint on these faces (a run record's, by whichever checkpoint it had)."""
    from ferbench.data import load_dataset
    from ferbench.infer.predictor import Predictor

    spec = _data_here(run)
    stored = run.file(predictions_file(scales))
    record = not run.best_checkpoint.exists()  # a run record: its predictions, made where it ran
    predictor = None if record else Predictor(run.best_checkpoint, amp="checkpoint")
    size = run.config()["model"]["input_size"] if record else predictor.input_size
    spec = spec.replace(size=size)
    faces = load_dataset(spec)
    checkpoint = None if record else sha256_file(run.best_checkpoint)
    source = "its record" if record else "this checkpoint"
    probs = _probabilities(
        predictor, faces, scales, stored, checkpoint, str(run.path), source, progress
    )
    if probs is None:
        raise FerbenchError(
            f"{run.path}: a run record without its best.pt or {stored.name} for these faces "
            "and views; ensemble it where its run directory is, or without --scales"
        )
    return Member(str(run.path), *probs, _labels(faces), spec, run.metrics())


def shipped_member(
    weights: PretrainedWeights,
    data: DataSpec,
    progress=lambda text: None,
    scales: tuple[float, ...] | None = None,
) -> Member:
    """A shipped model as a candidate, on the faces of the runs it joins (at its own input size,
    with its own test views): only where its card's data fingerprint says it was trained on
    those very faces and splits, since a model trained on other splits may have seen these
    validation or test faces.  Its probabilities are kept in the cache folder."""
    from ferbench.data import load_dataset
    from ferbench.infer.predictor import Predictor
    from ferbench.models.profile import count_flops, count_parameters

    spec = data.replace(size=weights.input_size)
    faces = load_dataset(spec)
    if faces.fingerprint() != weights.data_fingerprint:
        raise FerbenchError(
            f"{weights.name} was trained on other faces than the runs it would join (data "
            f"fingerprint {weights.data_fingerprint[:8]}, theirs {faces.fingerprint()[:8]}); "
            "a shipped model joins ensembles of its own training data only"
        )
    predictor = Predictor(weights.verified_path(), amp="checkpoint")
    stored = cache_dir() / f"{weights.name}-{predictions_file(scales)}"
    probs = _probabilities(
        predictor, faces, scales, stored, weights.sha256, weights.name, "the cache", progress
    )
    metrics = {
        "parameters": count_parameters(predictor.model),
        "flops": count_flops(predictor.model, predictor.preprocess.in_chans, spec.size),
        # shipped before the index kept them: unknown, so the ensemble's total is unknown too
        "train_time_s": weights.metrics.get("train_time_s"),
        "wall_time_s": weights.metrics.get("wall_time_s"),
    }
    return Member(weights.name, *probs, _labels(faces), spec, metrics)


def _data_here(run: RunDir) -> DataSpec:
    spec = run.data_spec()
    if spec is None:
        raise FerbenchError(f"{run.path}: its data {run.config()['data'].get('path')} is not here")
    return spec


def _faces_key(faces, scales: tuple[float, ...] | None) -> str:
    return faces.fingerprint() + ("" if scales is None else f" zooms {zoom_label(scales)}")


def _probabilities(predictor, faces, scales, stored: Path, checkpoint, name, source, progress):
    """(validation, test) probabilities of a checkpoint on `faces` with its test views: from
    `stored` when this checkpoint (its sha256; None: a record's, whichever made it) made them on
    these faces and views, else evaluated now and kept there; None when not stored and there is
    no checkpoint to evaluate (a run record)."""
    key = _faces_key(faces, scales)
    probs = _read_predictions(stored, key, checkpoint)
    if probs is not None:
        progress(f"{name}: {stored.name} of {source}")
    elif predictor is not None:
        progress(f"evaluating {name}")
        probs = {s: predictor.predict_arrays(faces.split(s)[0], scales=scales) for s in SPLITS}
        keep_predictions(stored, checkpoint, key, probs)
    return None if probs is None else (probs["val"], probs["test"])


def _labels(faces) -> dict[str, np.ndarray]:
    return {split: faces.split(split)[1] for split in SPLITS}


def keep_predictions(
    path: Path, checkpoint: str, faces_key: str, probs: dict[str, np.ndarray]
) -> None:
    """Store a checkpoint's {"val", "test"} probabilities on these faces and views (the faces'
    fingerprint, plus any other zooms) for later ensembles and the run's record.  A read-only
    results folder is skipped: the ensemble still works, uncached."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, key=f"{checkpoint} {faces_key}", **probs)
    except OSError:
        pass


def _read_predictions(
    path: Path, faces_key: str, checkpoint: str | None
) -> dict[str, np.ndarray] | None:
    """{"val": probabilities, "test": probabilities} stored for these faces and views by this
    checkpoint (its sha256; None: a record's, whichever made it), or None (absent, stale or
    unreadable)."""
    try:
        with np.load(path) as stored:
            made_by, _, made_for = str(stored["key"]).partition(" ")
            if made_for != faces_key or checkpoint not in (None, made_by):
                return None
            return {s: stored[s] for s in SPLITS}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def greedy_selection(
    val_probs: list[np.ndarray], labels: np.ndarray, max_rounds: int = 25
) -> list[int]:
    """Counts per member (its weight) from forward selection with replacement on validation
    (Caruana et al. 2004), each round adding the member that lowers the ensemble's log-loss
    most, until none does.  Log-loss, not accuracy: accuracy moves in steps of one face, so the
    climb stops at the first tie and keeps whichever few members the validation faces happen to
    favour (on FER2013, two of five runs); a proper scoring rule rewards every member that makes
    the averaged probabilities better and weights them smoothly."""

    def log_loss(probs: np.ndarray) -> float:
        picked = probs[np.arange(len(labels)), labels]
        return float(-np.log(np.clip(picked, 1e-12, None)).mean())

    counts = [0] * len(val_probs)
    best = int(np.argmin([log_loss(p) for p in val_probs]))
    counts[best], total = 1, val_probs[best].copy()
    score = log_loss(total)
    for _ in range(max_rounds):
        trials = [log_loss((total + p) / (sum(counts) + 1)) for p in val_probs]
        pick = int(np.argmin(trials))
        if trials[pick] >= score:
            break
        counts[pick] += 1
        total += val_probs[pick]
        score = trials[pick]
    return counts


SELECTIONS = {
    "greedy": "greedy forward selection with replacement on the validation log-loss",
    "all": "every candidate, equal weights (nothing chosen on any split)",
}


def build_ensemble(roots: list[Path], out: Path, *args, **kwargs) -> dict:
    """`_build_ensemble` holding `out`'s run lock, as a trial holds its folder's: a trial still
    training there, or another ensemble writing it, is never written over (--replace or not)."""
    run = RunDir(out)
    made = not run.path.exists()
    try:
        with run.lock() as free:
            if not free:
                status = run.status()
                holder = (
                    f"a running trial ({status.get('trial')}, pid {status.get('pid')})"
                    if status.get("status") == "running"
                    else "another process writing it"
                )
                raise FerbenchError(
                    f"--out {out} is held by {holder}; wait for it or write to another folder"
                )
            return _build_ensemble(roots, out, *args, **kwargs)
    finally:  # an ensemble that failed in a folder it made leaves no empty folder behind
        if made and run.path.is_dir() and [p.name for p in run.path.iterdir()] == [".lock"]:
            run.file(".lock").unlink()
            run.path.rmdir()


def _build_ensemble(
    roots: list[Path],
    out: Path,
    max_members: int = 25,
    progress=lambda text: None,
    selection: str = "greedy",
    replace: bool = False,
    scales: tuple[float, ...] | None = None,
    calibrate: bool = False,
) -> dict:
    """Choose, evaluate and write the ensemble of the finished runs under `roots`:
    `selection` greedy (weights from validation) or all (every run, equal weights), each member
    with its own test views (at each zoom of `scales` when given) and, with `calibrate`, its
    probabilities tempered first (a temperature each, fitted on validation).  A folder holding
    another result is written over only with `replace`."""
    if selection not in SELECTIONS:
        raise FerbenchError(f"--selection: '{selection}' is not one of {', '.join(SELECTIONS)}")
    from ferbench.data import load_dataset
    from ferbench.data.leaks import clean_accuracy

    folders, tags = split_candidates(roots)
    runs = candidate_runs(folders)
    if len(runs) + len(tags) < 2:
        raise FerbenchError(f"an ensemble needs at least two finished runs under {roots}")
    if not runs:
        raise FerbenchError(
            "shipped tags join the runs of their data: pass a results folder too (its faces "
            "are what the tags are evaluated on)"
        )
    identities = {r.config().get("data_identity") for r in runs}
    classes = {tuple(r.config().get("class_names") or ()) for r in runs}
    classes |= {tuple(w.class_names) for w in tags}
    if len(classes) > 1:
        sets = " | ".join(sorted(",".join(c) for c in classes))
        raise FerbenchError(
            f"the candidates predict different class sets ({sets}); pass those of one"
        )
    if len(identities) > 1:
        raise FerbenchError("the runs were trained on different data; pass folders of one dataset")
    shipped = [shipped_member(w, _data_here(runs[0]), progress, scales) for w in tags]
    members = [member_probabilities(r, progress, scales) for r in runs] + shipped
    val_held_out = held_out_val_accuracy(members, selection, max_members, calibrate)
    if calibrate:
        members = [m.calibrated() for m in members]
    labels = members[0].labels
    counts = (
        greedy_selection([m.val for m in members], labels["val"], max_members)
        if selection == "greedy"
        else [1] * len(members)
    )
    chosen = [(m, c) for m, c in zip(members, counts) if c]
    weight_sum = sum(c for _, c in chosen)
    weighted = [(m, c / weight_sum) for m, c in chosen]
    if not replace:  # before the test split is evaluated
        _check_not_another_result(
            Path(out), [(m.name, w, m.temperature) for m, w in weighted], views_label(scales)
        )
    val = sum(m.val * w for m, w in weighted)
    test = sum(m.test * w for m, w in weighted)  # evaluated once, here
    class_names = list(runs[0].config()["class_names"])
    metrics = classification_metrics(labels["test"], test.argmax(1), class_names, test)
    heaviest = max(chosen, key=lambda mc: mc[1])[0]  # its input size finds the leaked faces
    correct = test.argmax(1) == labels["test"]
    metrics.update(clean_accuracy(load_dataset(heaviest.faces), "test", correct))
    singles = [m.metrics for m, _ in chosen]
    disagreement = disagreement_matrix([m.val for m, _ in chosen])
    metrics.update(
        {
            # held out: the same choice made on one half of validation, scored on the other
            # (and back), comparable with a single run's; the full choice scores in-sample
            "best_val_acc": val_held_out,
            "best_val_acc_in_sample": float((val.argmax(1) == labels["val"]).mean()),
            "val_acc_method": VAL_HELD_OUT,
            "tta": views_label(scales),
            "parameters": int(_total(singles, "parameters")),
            "flops": int(_total(singles, "flops")),
            "train_time_s": _total(singles, "train_time_s"),
            "wall_time_s": _total(singles, "wall_time_s"),
            "members": [
                {
                    "run": m.name,
                    "weight": w,
                    "temperature": round(m.temperature, 4),
                    "val_acc": float((m.val.argmax(1) == labels["val"]).mean()),
                    "test_acc": float((m.test.argmax(1) == labels["test"]).mean()),
                    # how often it disagrees with the other members (validation): what it adds
                    "val_disagreement": _mean_off_diagonal(disagreement, i),
                }
                for i, (m, w) in enumerate(weighted)
            ],
            "candidates": len(members),
            "selection": SELECTIONS[selection],
        }
    )
    run = RunDir(out)
    run.path.mkdir(parents=True, exist_ok=True)
    base = runs[0].config()
    names = [m.name for m, _ in chosen]
    write_yaml(
        run.file("config.yaml"),
        {
            "kind": "ensemble",
            "experiment": "ensemble",
            "trial": run.path.name,
            "model": {"name": "ensemble", "members": names},
            "data": base.get("data"),
            "eval": {"tta": views_label(scales)},
            **{
                k: base[k]
                for k in ("data_fingerprint", "data_identity", "data_source", "class_names")
                if k in base
            },
            "device": device_info(torch.device("cpu")),  # where the members were combined
            "versions": versions(),
        },
    )
    write_text(
        run.file("disagreement.csv"),
        pd.DataFrame(disagreement, index=names, columns=names).to_csv(float_format="%.4f"),
    )
    keep_predictions(  # its own test probabilities, for `compare --paired`
        run.file(PREDICTIONS), "ensemble", base.get("data_identity", ""), {"val": val, "test": test}
    )
    title = f"ensemble of {len(chosen)}  test acc {metrics['accuracy']:.3f}"
    write_evaluation(run, metrics, class_names, title)
    history = pd.DataFrame(
        [{"epoch": 1, "val_acc": metrics["best_val_acc"], "elapsed_s": metrics["wall_time_s"]}]
    )
    write_text(run.file("history.csv"), history.to_csv(index=False))
    run.write_status("done", run.path.name, "", test_acc=metrics["accuracy"])
    return metrics


VAL_HELD_OUT = (
    "2-fold cross-fit: weights (and temperatures) chosen on one half of validation, scored "
    "on the other half, and back"
)


def held_out_val_accuracy(
    members: list[Member], selection: str, max_members: int, calibrate: bool, seed: int = 0
) -> float:
    """The ensemble's validation accuracy on faces its choices did not see: the validation faces
    split in two halves (seeded), the temperatures and the greedy weights fitted on one half and
    the ensemble scored on the other, then the other way round.  Its accuracy on the faces that
    chose its weights is in-sample and flatters it against single runs' held-out figures."""
    from ferbench.infer.calibration import fit_probability_temperature, tempered

    labels = members[0].labels["val"]
    if len(labels) < 2:
        return float("nan")
    halves = np.array_split(np.random.default_rng(seed).permutation(len(labels)), 2)
    correct = np.zeros(len(labels), dtype=bool)
    for fit, score in ((halves[0], halves[1]), (halves[1], halves[0])):
        probs = [m.val for m in members]
        if calibrate:
            probs = [tempered(p, fit_probability_temperature(p[fit], labels[fit])) for p in probs]
        counts = (
            greedy_selection([p[fit] for p in probs], labels[fit], max_members)
            if selection == "greedy"
            else [1] * len(probs)
        )
        combined = sum(p[score] * c for p, c in zip(probs, counts))
        correct[score] = combined.argmax(1) == labels[score]
    return float(correct.mean())


def _total(singles: list[dict], key: str) -> float | None:
    """The members' sum of `key`; None when a member's is unknown (a shipped tag's training
    time), never a total that leaves one out."""
    values = [s.get(key, 0) for s in singles]
    return None if any(v is None for v in values) else float(sum(values))


def disagreement_matrix(probabilities: list[np.ndarray]) -> np.ndarray:
    """Share of faces on which each pair of members predicts a different class (validation
    split only, like every choice the ensemble makes): diverse members are what ensembling
    gains from; two seeds of one recipe disagree less than two architectures."""
    predicted = np.stack([p.argmax(1) for p in probabilities])
    return (predicted[:, None, :] != predicted[None, :, :]).mean(axis=2)


def _mean_off_diagonal(matrix: np.ndarray, i: int) -> float | None:
    others = np.delete(matrix[i], i)
    return float(others.mean()) if len(others) else None


def _check_not_another_result(
    out: Path, members: list[tuple[str, float, float]], views: str
) -> None:
    """Refuse to write over a result that is not this ensemble again (the same members, weights,
    temperatures and test views): a distillation teacher, a card or a benchmark row may name
    the folder."""
    try:
        held_metrics = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return  # nothing finished there
    before = held_metrics.get("members") or []
    same_members = [
        (m["run"], round(m["weight"], 6), round(m.get("temperature", 1.0), 4)) for m in before
    ] == [(run, round(weight, 6), round(t, 4)) for run, weight, t in members]
    if not (same_members and held_metrics.get("tta") == views):
        if not before:
            held = "another result"
        elif same_members:
            held = f"this ensemble with other test views ({held_metrics.get('tta')})"
        else:
            held = f"an ensemble of {len(before)} members with other weights or temperatures"
        raise FerbenchError(
            f"--out {out} holds {held}; write to another folder, or pass --replace to write over it"
        )
