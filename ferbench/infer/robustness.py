"""The robustness suite: a model's accuracy on test faces changed as cameras and detectors
change them (data/corrupt.py), each family at severities 1-5, with the drift toward one class.

Every condition is scored with one view per face (the clean figure too, so that "relative to
clean" compares like with like; ten-crop on 80 conditions would cost ten times as much), on the
same seeded corrupted faces for every model.  mCA is the mean accuracy over families and
severities (ImageNet-C's mean corruption accuracy); the drift is the largest share of the
predictions one class takes, against its share of the truth: a model that calls everyone sad
shows it here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ferbench.data.corrupt import FAMILIES, SEVERITIES, TRAINED_FAMILIES, corrupt_faces
from ferbench.data.images import resize_all
from ferbench.report.metrics import expected_calibration_error

DRIFT_SEVERITY = 3  # the severity at which the drift bar is read (the bar: 30%)


def shares(predictions: np.ndarray, classes: int) -> np.ndarray:
    """Share of the predictions (or of the truth) that each class takes."""
    return np.bincount(predictions, minlength=classes) / max(len(predictions), 1)


def _score(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    predicted = probs.argmax(1)
    share = shares(predicted, len(class_names))
    top = int(share.argmax())
    return {
        "accuracy": float((predicted == labels).mean()),
        "ece": expected_calibration_error(probs, labels),
        "top_class": class_names[top],
        "top_share": float(share[top]),
        "shares": {name: round(float(s), 4) for name, s in zip(class_names, share)},
    }


def robustness_suite(
    predict: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    input_size: int,
    families: list[str] | None = None,
    severities: tuple[int, ...] = SEVERITIES,
    seed: int = 0,
    progress: Callable[[str], None] = lambda text: None,
) -> dict:
    """Score `predict` (uint8 faces N×S×S at `input_size` → probabilities) on the clean faces
    and on each family × severity.  `images` are the split's faces at their own resolution
    (FER2013: 48 px): corruptions apply there, then faces are resized to the model's input, so
    models of any input size see the same corrupted faces."""
    families = list(families or FAMILIES)

    def at_input(faces: np.ndarray) -> np.ndarray:
        if faces.shape[-1] == input_size:
            return faces
        return resize_all(faces, input_size)

    progress("clean")
    clean = _score(predict(at_input(images)), labels, class_names)
    conditions = []
    for family in families:
        for severity in severities:
            progress(f"{family} severity {severity}")
            faces = at_input(corrupt_faces(images, family, severity, seed))
            row = _score(predict(faces), labels, class_names)
            conditions.append(
                {
                    "family": family,
                    "group": FAMILIES[family].group,
                    "severity": severity,
                    "parameter": FAMILIES[family].levels[severity - 1],
                    "trained": family in TRAINED_FAMILIES,
                    **row,
                }
            )
    return summarise(clean, conditions, shares(labels, len(class_names)), class_names, seed)


def summarise(
    clean: dict, conditions: list[dict], truth: np.ndarray, class_names: list[str], seed: int
) -> dict:
    """The suite's headline figures from its conditions: mCA overall, per severity, over the
    families the robust default trained on and over the held-out ones, the worst family and the
    drift at severity 3."""

    def mean(rows: list[dict]) -> float | None:
        return float(np.mean([r["accuracy"] for r in rows])) if rows else None

    families = list(dict.fromkeys(r["family"] for r in conditions))
    by_family = {f: mean([r for r in conditions if r["family"] == f]) for f in families}
    severities = sorted({r["severity"] for r in conditions})
    mca = mean(conditions)
    at_drift = [r for r in conditions if r["severity"] == DRIFT_SEVERITY]
    drift = max(at_drift or conditions, key=lambda r: r["top_share"], default=None)
    worst = min(by_family, key=by_family.get) if by_family else None
    return {
        "views": "one view per face",
        "seed": seed,
        "severities": severities,
        "truth_shares": {n: round(float(s), 4) for n, s in zip(class_names, truth)},
        "clean": clean,
        "mca": mca,
        "mca_relative": mca / clean["accuracy"] if mca is not None else None,
        "mca_drop": clean["accuracy"] - mca if mca is not None else None,
        "mca_by_severity": {
            str(s): mean([r for r in conditions if r["severity"] == s]) for s in severities
        },
        "mca_trained": mean([r for r in conditions if r["trained"]]),
        "mca_held_out": mean([r for r in conditions if not r["trained"]]),
        "by_family": by_family,
        "worst_family": worst,
        "worst_family_accuracy": by_family.get(worst),
        "drift": (
            {
                "severity": drift["severity"],
                "family": drift["family"],
                "class": drift["top_class"],
                "share": drift["top_share"],
                "truth_share": float(truth[class_names.index(drift["top_class"])]),
            }
            if drift
            else None
        ),
        "conditions": conditions,
    }


def family_table(result: dict) -> list[dict]:
    """One row per family: its accuracy at each severity and their mean, and whether the robust
    default trained on it (the eval table, the model card and the README)."""
    rows = []
    for family, mean in result["by_family"].items():
        own = [r for r in result["conditions"] if r["family"] == family]
        cells = {r["severity"]: r["accuracy"] for r in own}
        first = own[0]
        rows.append(
            {
                "family": family,
                "group": first["group"],
                "trained": first["trained"],
                **{f"s{s}": cells.get(s) for s in result["severities"]},
                "mean": mean,
            }
        )
    return rows


def headline(result: dict) -> str:
    """One line: clean, mCA (relative), trained / held-out, worst family, drift."""
    drift = result["drift"]
    parts = [
        f"clean {result['clean']['accuracy']:.1%}",
        f"mCA {result['mca']:.1%} ({result['mca_relative']:.2f} of clean, "
        f"{-result['mca_drop'] * 100:+.1f} points)",
    ]
    if result["mca_trained"] is not None and result["mca_held_out"] is not None:
        parts.append(
            f"trained families {result['mca_trained']:.1%}, held-out {result['mca_held_out']:.1%}"
        )
    parts.append(f"worst {result['worst_family']} {result['worst_family_accuracy']:.1%}")
    if drift:
        parts.append(
            f"drift: {drift['class']} takes {drift['share']:.0%} of the predictions under "
            f"{drift['family']} (severity {drift['severity']}; truth {drift['truth_share']:.0%})"
        )
    return "; ".join(parts)


def framing_gap(
    predict_crops: Callable[[list[np.ndarray]], np.ndarray],
    predict_faces: Callable[[np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    detector,
    template,
    input_size: int,
    progress: Callable[[str], None] = lambda text: None,
) -> dict:
    """What the detector's framing costs: each test face placed in a larger frame (upscaled 4×,
    a border of replicated edge pixels), found by `detector` as live mode finds faces, cropped as
    live crops it (the box with its margin, and aligned to `template` by the landmarks), and
    classified with one view; against the same faces as the dataset framed them.  Faces the
    detector misses are counted apart (and as errors in `accuracy_all`)."""
    from ferbench.faces.align import FaceFramer, framed_faces

    progress("detecting the test faces in larger frames")
    frames, boxes, marks = framed_faces(images, detector)
    found = np.array([b is not None for b in boxes])
    result = {"faces": len(labels), "detected": int(found.sum()), "missed": int((~found).sum())}
    clean = predict_faces(images[found]).argmax(1) == labels[found]
    result["clean_detected"] = float(clean.mean()) if found.any() else None
    for name, framer in (
        ("box", FaceFramer(None, input_size)),
        ("aligned", FaceFramer(template, input_size)),
    ):
        progress(f"classifying the {name} crops")
        crops = [
            framer(frame, [0], [box], {0: points} if points is not None else None)[0]
            for frame, box, points in zip(frames, boxes, marks)
            if box is not None
        ]
        right = predict_crops(crops).argmax(1) == labels[found] if crops else np.zeros(0, bool)
        accuracy = float(right.mean()) if len(right) else None
        result[name] = {
            "accuracy": accuracy,
            "accuracy_all": float(right.sum() / max(len(labels), 1)),
            "gap": result["clean_detected"] - accuracy if accuracy is not None else None,
        }
    return result
