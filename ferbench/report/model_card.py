"""The model card of a shipped weight: what it was trained on, how it was chosen, what it scores.

Rendered from the run directory and from measurements of the shipped file itself (see
``ferbench.models.ship``); nothing in it is typed by hand.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ferbench.models.checkpoint import describe_views
from ferbench.runs import RunDir


def _file_name(path: str | None) -> str:
    """The data file as a user names it (`fer2013.csv.gz`): the machine's folders left out."""
    return str(path).replace("\\", "/").rstrip("/").split("/")[-1] if path else "PATH"


def _interval(evaluation: dict) -> str:
    """The 95% Wilson interval of an evaluation's accuracy over the faces it scored
    (``69.9–72.9%``): a card's figure moves by this much with the draw of test faces alone."""
    from ferbench.report.leaderboard import test_faces
    from ferbench.report.stats import accuracy_interval, interval_text

    faces = test_faces(evaluation) or evaluation.get("images")
    if not faces:
        return "-"
    return f"{interval_text(*accuracy_interval(evaluation['accuracy'], int(faces)))}%"


def render_card(
    name: str,
    run: RunDir,
    evals: dict[str, dict],
    seeds: list[dict],
    extra: dict,
    sha256: str,
    size_bytes: int,
    license_text: str,
) -> str:
    config, metrics = run.config(), run.metrics()
    test, val = evals["test"], evals["val"]
    classes = list(test["per_class"])
    data = config.get("data", {})
    device = config.get("device", {})
    isa = f" ({device['isa']})" if device.get("isa") else ""
    hardware = f"{device.get('name', '?')}{isa}, {device.get('threads', '?')} threads"
    tta = describe_views(test["tta"], test["tta_shift"], test.get("scales", [1.0]))
    test_accs = [s["test_acc"] for s in seeds if s.get("test_acc") is not None]
    spread = mean_std(test_accs)
    dataset = test.get("dataset") or test["data_source"]
    data_file, labels_file = _file_name(data.get("path")), _file_name(data.get("labels"))
    data_args = f"--set data.path={data_file}"
    eval_args = data_file
    if data.get("kind") == "ferplus":
        data_args += f" --set data.labels={labels_file or 'fer2013new.csv'}"
        eval_args += f" --kind ferplus --labels {labels_file or 'fer2013new.csv'}"
    experiment = config.get("experiment", "EXPERIMENT")
    tag = name.split(".", 1)[1]
    int8 = extra.get("int8", {})
    latency = extra.get("latency", {})
    lines = [
        f"# `{name}`",
        "",
        f"`{config.get('model', {}).get('name')}` trained by ferbench on {dataset}: "
        f"**{test['accuracy']:.2%} test accuracy** (95% CI {_interval(test)}; "
        f"{test['split']} split, {tta}), chosen on the validation split ({val['accuracy']:.2%}).",
        "",
        "```python",
        "from ferbench.models import create_model",
        "",
        f'model = create_model("{name}", pretrained=True)',
        f"# command line: ferbench predict photo.jpg --model {name}",
        "```",
        "",
        "## Data",
        "",
        f"- Source: {dataset} (fingerprint `{test['data_fingerprint']}`)",
        f"- Classes ({len(classes)}): {', '.join(classes)}",
        f"- Faces: {_counts(config)}; input {data.get('size')}×{data.get('size')} grayscale",
        *[f"- Note: {n}" for n in test.get("data_notes", [])],
        "",
        "## Protocol",
        "",
        *(
            [
                f"- Started from the shipped `{config['model']['pretrained']}` weights (same "
                "training images, never its test ones); the classifier was sized afresh for "
                "these classes."
            ]
            if config.get("model", {}).get("pretrained")
            else []
        ),
        *_teacher_lines(config),
        *(
            ["- Targets: each face's normalised annotator votes (`train.targets: votes`)."]
            if config.get("train", {}).get("targets") == "votes"
            else []
        ),
        f"- Trained on the training split for {metrics.get('epochs_run')} epochs; the checkpoint "
        f"of epoch {metrics.get('best_epoch')} has the best validation accuracy and is the one "
        "shipped. The test split was evaluated once, after training.",
        *_calibration_lines(extra.get("calibration")),
        f"- Test-time augmentation: {tta}. Shipped as fp16 ({size_bytes / 1e6:.2f} MB, sha256 "
        f"`{sha256}`), evaluated as shipped.",
        f"- Seeds: {', '.join(str(s['seed']) for s in seeds)}; test accuracy {spread}. "
        f"{_chosen_seed(seeds)}",
        "",
        "## Results (the shipped file)",
        "",
        "| split | accuracy | 95% CI (Wilson) | balanced accuracy | macro-F1 | ECE |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[
            f"| {e['split']} | {e['accuracy']:.4f} | {_interval(e)} | "
            f"{e['balanced_accuracy']:.4f} | "
            f"{e['macro_f1']:.4f} | {e['ece']:.4f} |"
            for e in (val, test)
        ],
        "",
        "| class | precision | recall | F1 | support |",
        "| --- | ---: | ---: | ---: | ---: |",
        *[
            f"| {c} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
            for c, r in test["per_class"].items()
        ],
        "",
        "Confusion matrix (test; rows true, columns predicted):",
        "",
        "| true \\ predicted | " + " | ".join(classes) + " |",
        "| --- |" + " ---: |" * len(classes),
        *[
            f"| {c} | " + " | ".join(str(v) for v in row) + " |"
            for c, row in zip(classes, test["confusion"])
        ],
        "",
        *robustness_lines(
            extra.get("robustness"), extra.get("framing"), test, extra.get("robustness_source")
        ),
        "## Deployment",
        "",
        _int8_line(int8, name),
        f"- Batch-1 latency {latency.get('latency_batch1_ms', float('nan')):.2f} ms in PyTorch"
        f"{_onnx_latency(extra.get('onnx_latency_ms', {}))}; "
        f"{latency.get('inference_images_per_s', 0):,.0f} images/s at batch 256 in PyTorch "
        f"({latency.get('cpu', '?')}, {latency.get('threads', '?')} threads, fp32).",
        "",
        "## Training",
        "",
        f"- {metrics.get('wall_time_s', 0) / 60:.1f} min for the whole trial on {hardware}; "
        f"{metrics.get('train_images_per_s', 0):.0f} training images/s in "
        f"{'fp32' if test['amp'] == 'off' else test['amp']}.",
        f"- Recipe: `experiments/{experiment}.yaml` (trial `{config.get('trial')}`).",
        f"- Versions: {_versions(config)}.",
        "",
        "Reproduce:",
        "",
        "```bash",
        f"ferbench run experiments/{experiment}.yaml {data_args}",
        f"ferbench ship results/{experiment}/{config.get('trial')} --tag {tag}",
        f"ferbench eval {eval_args} --model {name}",
        "```",
        "",
        "## License",
        "",
        license_text.strip() or "See the data set's own terms.",
        "",
    ]
    return "\n".join(lines)


def robustness_lines(
    suite: dict | None, framing: dict | None, test: dict, source: str | None = None
) -> list[str]:
    """The card's robustness section: the predicted-class shares against the truth (the drift
    a user would otherwise discover), and where measured, accuracy under the corruption suite
    (families × severities, mCA, held-out families, worst family) and the framing gap."""
    from ferbench.infer.robustness import family_table, headline
    from ferbench.report.metrics import class_shares

    predicted, truth = class_shares(test)
    lines = [
        "## Robustness",
        "",
        "Share of the test predictions per class against the truth (clean faces):",
        "",
        "| | " + " | ".join(predicted) + " |",
        "| --- |" + " ---: |" * len(predicted),
        "| predicted | " + " | ".join(f"{v:.1%}" for v in predicted.values()) + " |",
        "| truth | " + " | ".join(f"{v:.1%}" for v in truth.values()) + " |",
        "",
    ]
    if suite:
        severities = suite["severities"]
        lines += [
            "Accuracy under common corruptions of the test faces (`ferbench eval DATA "
            "--corruptions all`; one view per face, the clean figure too; held-out families "
            "were never seen in training"
            + (f"; measured on {source}" if source else "; measured on the shipped file")
            + "):",
            "",
            "| family | group | " + " | ".join(f"s{s}" for s in severities) + " | mean |",
            "| --- | --- |" + " ---: |" * (len(severities) + 1),
            *[
                f"| {r['family']}{'' if r['trained'] else ' (held out)'} | {r['group']} | "
                + " | ".join(f"{r[f's{s}']:.1%}" for s in severities)
                + f" | {r['mean']:.1%} |"
                for r in family_table(suite)
            ],
            "",
            f"- {headline(suite)}.",
        ]
        at3 = suite["mca_by_severity"].get("3")
        if at3 is not None:
            lines.append(
                f"- Severity 3: mCA {at3:.1%}, {(suite['clean']['accuracy'] - at3) * 100:.1f} "
                "points under clean."
            )
    if framing:
        lines.append(
            f"- Framing gap (test faces found by live mode's detector in a larger frame, "
            f"{framing['detected']:,} of {framing['faces']:,}): dataset crops "
            f"{framing['clean_detected']:.1%}, box crops {framing['box']['accuracy']:.1%}, "
            f"aligned crops (the default) {framing['aligned']['accuracy']:.1%}."
        )
    return [*lines, ""]


def _teacher_lines(config: dict) -> list[str]:
    """A distilled model's teacher and its members (file names only: no machine paths)."""
    teacher, distill = config.get("teacher") or {}, config.get("train", {}).get("distill") or {}
    if not teacher:
        return []
    members = ", ".join(
        f"`{_run_name(m['checkpoint'])}` ({m['weight']:.2f}"
        + ("" if m.get("temperature", 1.0) == 1.0 else f", T {m['temperature']:.2f}")
        + ")"
        for m in teacher.get("members", [])
    )
    return [
        f"- Distilled from `{Path(str(teacher.get('teacher'))).name}`: {members}; loss "
        f"(1 - {distill.get('alpha')}) CE(label) + {distill.get('alpha')} T^2 KL(teacher || "
        f"student), T = {distill.get('temperature')}, on the teacher's probabilities of "
        + (
            "each augmented training batch, as the student saw it."
            if distill.get("views") == "student"
            else "the training faces (its test views, computed once)."
        )
    ]


def _run_name(checkpoint: str) -> str:
    """`experiment/model/axes` of a checkpoint under a results folder (else its last folders)."""
    parts = Path(checkpoint).parent.parts
    if "results" not in parts:
        return "/".join(parts[-4:])
    return "/".join(parts[len(parts) - parts[::-1].index("results") :])


def mean_std(values: list[float]) -> str:
    """``0.6712 ± 0.0031 (3 seeds)``; one value says that no spread was measured."""
    if len(values) > 1:
        mean, std = statistics.mean(values), statistics.stdev(values)
        return f"{mean:.4f} ± {std:.4f} ({len(values)} seeds)"
    return f"{values[0]:.4f} (1 seed, no spread measured)" if values else "n/a"


def _counts(config: dict) -> str:
    counts = config.get("data_counts", {})
    return ", ".join(f"{split} {sum(values):,}" for split, values in counts.items()) or "?"


def _versions(config: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in config.get("versions", {}).items())


def _chosen_seed(seeds: list[dict]) -> str:
    chosen = next(s for s in seeds if s["chosen"])
    best = max(seeds, key=lambda s: s.get("val_acc") or 0)
    verdict = (
        "the best validation accuracy of them" if best is chosen else "not the best on validation"
    )
    return f"Shipped: seed {chosen['seed']} ({verdict})."


def _onnx_latency(ms: dict) -> str:
    if not ms:
        return ""
    return f", ONNX Runtime {ms['fp32']:.2f} ms (fp32) and {ms['int8']:.2f} ms (int8)"


def _int8_line(int8: dict, name: str) -> str:
    if "error" in int8 or not int8:
        return f"- int8: not measured ({int8.get('error', 'no figures')})."
    torch_acc, onnx = int8.get("torch"), int8.get("onnx_int8")
    return (
        f"- ONNX Runtime static int8 (`ferbench export --model {name} --int8`): single-view test "
        f"accuracy {onnx:.4f} against {torch_acc:.4f} in PyTorch ({(onnx - torch_acc) * 100:+.2f} "
        "points)."
    )


def _calibration_lines(calibration: dict | None) -> list[str]:
    if not calibration:
        return []
    (loss_before, loss_after), (ece_before, ece_after) = (
        calibration["val_log_loss"],
        calibration["val_ece"],
    )
    return [
        f"- Calibrated: the output layer divided by the temperature T = "
        f"{calibration['temperature']:.3f} that minimises the log-loss on the "
        f"{calibration['fitted_on']} (log-loss {loss_before:.4f} → {loss_after:.4f}, ECE "
        f"{ece_before:.4f} → {ece_after:.4f}); a single view's prediction is unchanged."
    ]
