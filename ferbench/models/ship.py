"""A finished run → shipped package weights: fp16 file, sha256, measured model card, index entry.

The card's figures are measured on the shipped fp16 file through the path `ferbench eval` takes,
so the number a user reproduces is the number printed.  For maintainers:
``ferbench ship results/weights-fer2013/vggfer_s/size=40/seed=0 --tag fer2013``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch

from ferbench.config import DataSpec
from ferbench.errors import FerbenchError
from ferbench.models.checkpoint import FORMAT, describe_views, load_checkpoint
from ferbench.models.pretrained import INDEX, WEIGHTS_DIR, PretrainedWeights, read_index
from ferbench.runs import RunDir, iter_runs
from ferbench.utils.fileio import sha256_file, write_json, write_text

MAX_BYTES = 5 * 1024 * 1024  # a shipped file stays small enough for the wheel


def ship(
    run_dir: Path,
    tag: str,
    data: DataSpec | None = None,
    license_text: str = "",
    weights_dir: Path = WEIGHTS_DIR,
    progress: Callable[[str], None] = lambda text: None,
    calibrate: bool = False,
    scales: tuple[float, ...] | None = None,
    robustness: bool = False,
) -> PretrainedWeights:
    """Write `<model>.<tag>.pt` (fp16), its card and its index entry into `weights_dir`.
    With `calibrate`, the output layer is first divided by the temperature that minimises the
    validation log-loss (infer/calibration.py): honest probabilities, a single view's prediction
    unchanged.  With `robustness`, the card and index also carry the corruption suite and the
    framing gap on the test split (infer/robustness.py; minutes).  `scales` replaces the run's
    test zooms (multi-scale test views) in the shipped file: `ferbench eval` and the card then
    take them, and a calibration is fitted on them.

    Everything is made and checked in a staging folder first (size, loading, evaluation, the
    sha256 of the bytes that will be installed); only then are the files renamed into place, so
    a ship that fails for any reason leaves the shipped files byte-identical."""
    run = RunDir(Path(run_dir))
    if not run.finished:
        raise FerbenchError(f"{run.path}: not a finished run (no done status and best.pt)")
    payload = load_checkpoint(run.best_checkpoint)
    name = f"{payload['model']}.{tag}"
    data = data or _run_data(run)
    if scales is not None:
        payload = {**payload, "tta_scales": list(scales)}
    if calibrate:
        progress("fitting a temperature on the validation split")
        payload = _calibrated(run.best_checkpoint, payload, data)
    weights_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ship-", dir=weights_dir))
    try:
        staged = _stage(
            run, payload, name, data, license_text, weights_dir, staging, progress, robustness
        )
        for file in (f"{name}.pt", f"{name}.md", INDEX.name):  # the index last: it names them
            os.replace(staging / file, weights_dir / file)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    read_index.cache_clear()
    return staged


def _stage(
    run: RunDir,
    payload: dict,
    name: str,
    data: DataSpec,
    license_text: str,
    weights_dir: Path,
    staging: Path,
    progress: Callable[[str], None],
    robustness: bool = False,
) -> PretrainedWeights:
    """The fp16 file, card and index of a ship, written and checked in `staging`."""
    from ferbench.infer.cross_eval import evaluate_checkpoint
    from ferbench.infer.predictor import Predictor
    from ferbench.report.model_card import render_card

    path = staging / f"{name}.pt"
    state = {k: v.half() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    torch.save({**payload, "format": FORMAT, "weights": name, "state_dict": state}, path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise FerbenchError(
            f"{name}: {size / 2**20:.1f} MB in fp16, over the {MAX_BYTES / 2**20:.0f} MB a "
            "shipped weight may weigh; nothing was replaced"
        )
    sha = sha256_file(path)
    progress("evaluating the fp16 file (validation, test)")
    shipped = Predictor(path, amp="checkpoint")  # loads it: a file that fails here never ships
    evals = {s: evaluate_checkpoint(shipped, data, s) for s in ("val", "test")}
    progress("measuring int8 (ONNX Runtime) and batch-1 latency")
    extra = {**_onnx_figures(path, data), "latency": _latency(shipped)}
    if payload.get("calibration"):
        extra["calibration"] = payload["calibration"]
    if robustness:
        from ferbench.data.corrupt import FAMILIES, SEVERITIES
        from ferbench.infer.cross_eval import framing_of, robustness_of

        progress("robustness suite on the test split")
        extra["robustness"] = robustness_of(shipped, data, "test", list(FAMILIES), SEVERITIES)
        progress("framing gap on the test split")
        extra["framing"] = framing_of(shipped, data, "test")
    elif run.file("robustness.json").is_file():  # measured on the run's checkpoint by eval
        measured = json.loads(run.file("robustness.json").read_text())
        extra["robustness"], extra["framing"] = measured.get("robustness"), measured.get("framing")
        extra["robustness_source"] = "the run's best.pt (fp32 weights), robustness.json"
    if sha256_file(path) != sha:
        raise FerbenchError(f"{name}: the staged file changed while it was measured; not shipped")
    siblings = _seed_runs(run)
    card = render_card(name, run, evals, siblings, extra, sha, size, license_text)
    write_text(staging / f"{name}.md", card)
    test = evals["test"]
    row = {
        "model": payload["model"],
        "file": path.name,
        "sha256": sha,
        "class_names": list(payload["class_names"]),
        "input_size": int(payload["preprocess"]["input_size"]),
        "model_args": dict(payload["model_args"]),
        "dataset": test["dataset"],
        "data_fingerprint": test["data_fingerprint"],
        "metrics": {
            "test_acc": test["accuracy"],
            "val_acc": evals["val"]["accuracy"],
            "macro_f1": test["macro_f1"],
            "balanced_accuracy": test["balanced_accuracy"],
            "ece": test["ece"],
            "temperature": (payload.get("calibration") or {}).get("temperature", 1.0),
            **_robustness_figures(extra),
            "test_acc_seeds": [s["test_acc"] for s in siblings],
            # what training it cost, for the totals of an ensemble it joins
            **{k: run.metrics().get(k) for k in ("train_time_s", "train_cpu_s", "wall_time_s")},
            "tta": shipped.tta,
            "scales": list(shipped.scales),
            "latency_ms": {
                "torch_fp32": extra["latency"]["latency_batch1_ms"],
                **{f"onnx_{k}": v for k, v in extra.get("onnx_latency_ms", {}).items()},
            },
        },
        "recipe": run.config().get("experiment", ""),
        "card": f"{name}.md",
        "license": license_text.splitlines()[0] if license_text else "",
    }
    index_path = weights_dir / INDEX.name
    try:
        rows = json.loads(index_path.read_text()) if index_path.is_file() else {}
    except ValueError:
        raise FerbenchError(f"{index_path} is not valid JSON; fix or remove it first") from None
    rows[name] = row
    write_json(staging / INDEX.name, dict(sorted(rows.items())))
    return PretrainedWeights(name=name, **{**row, "class_names": tuple(row["class_names"])})


def _calibrated(checkpoint: Path, payload: dict, data: DataSpec) -> dict:
    """`payload` with its output layer divided by the temperature fitted on the validation
    split's test views, and a `calibration` record of the fit (log-loss and ECE before, after)."""
    import numpy as np

    from ferbench.data import load_dataset
    from ferbench.infer.batched import mean_view_probs, view_logits
    from ferbench.infer.calibration import fit_temperature, fold_temperature, view_log_loss
    from ferbench.infer.cross_eval import matched_split
    from ferbench.infer.predictor import Predictor
    from ferbench.report.metrics import expected_calibration_error

    predictor = Predictor(checkpoint, amp="checkpoint")
    scales = tuple(payload.get("tta_scales") or (1.0,))
    faces = load_dataset(data.replace(size=predictor.input_size), base_dir=Path("."))
    val = matched_split(faces, "val", predictor.class_names)
    images = torch.from_numpy(np.ascontiguousarray(val.images))
    labels = torch.from_numpy(val.labels).long()
    logits = view_logits(
        predictor.model,
        predictor.preprocess,
        images,
        predictor.runtime,
        tta_shift=predictor.tta_shift,
        tta_flip=predictor.tta == "flip",
        scales=scales,
    )
    temperature = fit_temperature(logits, labels)
    fold_temperature(predictor.model, temperature, predictor.preprocess(images[:64]))
    state = predictor.model.state_dict()
    if set(state) != set(payload["state_dict"]):
        raise FerbenchError(f"{checkpoint}: its weights did not load back as saved; not shipped")

    def figures(t: float) -> tuple[float, float]:
        ece = expected_calibration_error(mean_view_probs(logits, t).numpy(), val.labels)
        return round(float(view_log_loss(logits, labels, t)), 4), round(ece, 4)

    (loss_before, ece_before), (loss_after, ece_after) = figures(1.0), figures(temperature)
    calibration = {
        "temperature": round(temperature, 4),
        "fitted_on": f"validation split ({len(labels):,} faces, "
        f"{describe_views(predictor.tta, predictor.tta_shift, scales)})",
        "val_log_loss": [loss_before, loss_after],
        "val_ece": [ece_before, ece_after],
    }
    return {**payload, "state_dict": state, "calibration": calibration}


def _robustness_figures(extra: dict) -> dict:
    """The index's robustness figures: mCA overall and at severity 3, the drift and the
    framing gaps (absent where not measured)."""
    suite, framing = extra.get("robustness"), extra.get("framing")
    out = {}
    if suite:
        out.update(
            test_acc_corrupt=suite["mca"],
            test_acc_corrupt_s3=suite["mca_by_severity"].get("3"),
            test_acc_clean_one_view=suite["clean"]["accuracy"],
            drift_s3=suite["drift"],
        )
    if framing:
        out["framing"] = {k: framing[k]["accuracy"] for k in ("box", "aligned")}
        out["framing"]["dataset_crops"] = framing["clean_detected"]
    return out


def _run_data(run: RunDir) -> DataSpec:
    spec = run.data_spec()
    if spec is None:
        path = (run.config().get("data") or {}).get("path")
        raise FerbenchError(f"{run.path}: its data {path} is not here; pass --data")
    return spec


def _seed_runs(run: RunDir) -> list[dict]:
    """The finished runs that differ from `run` only by seed (the seed is the last folder)."""
    rows = []
    for other in iter_runs(run.path.parent):
        if other.finished and other.path.parent == run.path.parent:
            m = other.metrics()
            rows.append(
                {
                    "seed": other.config().get("train", {}).get("seed"),
                    "test_acc": m.get("accuracy"),
                    "val_acc": m.get("best_val_acc"),
                    "wall_time_s": m.get("wall_time_s"),
                    "chosen": other.path == run.path,
                }
            )
    return rows


def _onnx_figures(path: Path, data: DataSpec) -> dict:
    """Single-view test accuracy of the fp16 file in PyTorch and as ONNX Runtime int8, and the
    batch-1 latency of ONNX Runtime fp32 and int8 (the deployment path: `ferbench export`)."""
    try:
        from ferbench.infer.export import export_checkpoint
        from ferbench.infer.predictor import Predictor

        with tempfile.TemporaryDirectory(prefix="ferbench-ship-") as tmp:
            fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            report = export_checkpoint(path, int8, int8=True, data=data, fp32_out=fp32)
            latency = {}
            for kind, onnx in (("fp32", fp32), ("int8", int8)):
                latency[kind] = Predictor(onnx).measure_speed()["latency_batch1_ms"]
        return {"int8": report.accuracy.get("test", {}), "onnx_latency_ms": latency}
    except FerbenchError as exc:  # onnx extra not installed: the card says so
        return {"int8": {"error": str(exc)}}


def _latency(predictor) -> dict:
    from ferbench.device import cpu_name

    speed = predictor.measure_speed()
    return {**speed, "cpu": cpu_name(), "threads": torch.get_num_threads()}
