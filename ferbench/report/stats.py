"""Uncertainty of the figures ferbench reports, in one place.

A test accuracy on 3,589 faces moves by about ±1.5 points (95%) from the draw of faces alone, so
a figure without its interval cannot say whether 73.11% beats 72.67%.  The field's practice
(Dror et al., ACL 2018; Bouthillier et al., MLSys 2021): a 95% interval for each accuracy (Wilson
for a single proportion, or a bootstrap over test items), and two models on the same test items
compared with a paired test (McNemar's exact test, a paired bootstrap of the difference), since
their errors are correlated and two separate intervals overlap far more than the difference is
uncertain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom, norm

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0  # intervals are reproducible: the same files give the same figures


def wilson_interval(
    correct: int, total: int, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Wilson score interval of a proportion (Wilson 1927; Newcombe 1998, method 3): unlike the
    normal approximation it stays inside [0, 1] and keeps its coverage near 0% and 100%."""
    if total <= 0:
        return (float("nan"), float("nan"))
    z = float(norm.ppf(0.5 + confidence / 2))
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))


def accuracy_interval(accuracy: float, total: int) -> tuple[float, float]:
    """The Wilson interval of an accuracy stored as a fraction of `total` faces: the count of
    correct faces is recovered exactly (fractions keep at least six digits, faces are fewer
    than a million)."""
    return wilson_interval(round(accuracy * total), total)


def bootstrap_interval(
    values: np.ndarray,
    samples: int = BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (per-face correctness, 0/1), test
    faces resampled with replacement (Efron & Tibshirani 1993)."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return (float("nan"), float("nan"))
    means = _resampled_means(values, samples, seed)
    alpha = (1 - confidence) / 2
    return (float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)))


def _resampled_means(values: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """Means of `samples` resamples, in chunks so that memory stays small for any test set."""
    rng = np.random.default_rng(seed)
    n, means, chunk = len(values), [], max(1, 2_000_000 // max(len(values), 1))
    for start in range(0, samples, chunk):
        picks = rng.integers(0, n, size=(min(chunk, samples - start), n))
        means.append(values[picks].mean(axis=1))
    return np.concatenate(means)


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> tuple[int, int, float]:
    """McNemar's exact test on paired correctness: (faces only A gets right, faces only B gets
    right, two-sided p).  Under the null each discordant face is a fair coin, so p is twice the
    binomial tail of the smaller count (capped at 1); faces both get right or wrong say nothing
    about which is better."""
    a, b = _paired(a_correct, b_correct)
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    discordant = only_a + only_b
    if discordant == 0:
        return only_a, only_b, 1.0
    p = 2.0 * float(binom.cdf(min(only_a, only_b), discordant, 0.5))
    return only_a, only_b, min(1.0, p)


def paired_bootstrap(
    a_correct: np.ndarray,
    b_correct: np.ndarray,
    samples: int = BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """Accuracy of A minus accuracy of B and its percentile bootstrap interval, the same faces
    resampled for both (the pairing keeps their correlated errors out of the interval)."""
    a, b = _paired(a_correct, b_correct)
    difference = a.astype(np.float64) - b.astype(np.float64)
    low, high = bootstrap_interval(difference, samples, confidence, seed)
    return float(difference.mean()), low, high


def _paired(a_correct: np.ndarray, b_correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"paired correctness needs two vectors of one length ({a.shape}, {b.shape})"
        )
    return a, b


@dataclass(frozen=True)
class PairedComparison:
    """Two models on the same test faces: each accuracy with its interval, their difference
    with its paired interval, and McNemar's exact p."""

    faces: int
    accuracy_a: float
    accuracy_b: float
    interval_a: tuple[float, float]
    interval_b: tuple[float, float]
    difference: float
    difference_interval: tuple[float, float]
    only_a: int
    only_b: int
    p_value: float

    def as_dict(self) -> dict:
        return {
            "faces": self.faces,
            "accuracy_a": self.accuracy_a,
            "accuracy_a_ci95": list(self.interval_a),
            "accuracy_b": self.accuracy_b,
            "accuracy_b_ci95": list(self.interval_b),
            "difference": self.difference,
            "difference_ci95": list(self.difference_interval),
            "difference_method": f"paired percentile bootstrap, {BOOTSTRAP_SAMPLES} resamples",
            "only_a_correct": self.only_a,
            "only_b_correct": self.only_b,
            "mcnemar_exact_p": self.p_value,
        }


def compare_paired(a_correct: np.ndarray, b_correct: np.ndarray) -> PairedComparison:
    """Everything `compare --paired` prints for two runs' per-face correctness."""
    a, b = _paired(a_correct, b_correct)
    difference, low, high = paired_bootstrap(a, b)
    only_a, only_b, p = mcnemar_exact(a, b)
    return PairedComparison(
        faces=len(a),
        accuracy_a=float(a.mean()),
        accuracy_b=float(b.mean()),
        interval_a=wilson_interval(int(a.sum()), len(a)),
        interval_b=wilson_interval(int(b.sum()), len(b)),
        difference=difference,
        difference_interval=(low, high),
        only_a=only_a,
        only_b=only_b,
        p_value=p,
    )


def interval_text(low: float, high: float, scale: float = 100.0, digits: int = 1) -> str:
    """``71.6–74.6`` (percent points by default): how tables show an interval."""
    if low is None or high is None or any(map(_missing, (low, high))):
        return "-"
    return f"{low * scale:.{digits}f}–{high * scale:.{digits}f}"


def _missing(value) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True
