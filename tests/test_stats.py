"""The statistics behind every reported interval and paired comparison, against known values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from ferbench.report.stats import (
    accuracy_interval,
    bootstrap_interval,
    compare_paired,
    interval_text,
    mcnemar_exact,
    paired_bootstrap,
    wilson_interval,
)


@pytest.mark.parametrize(
    "correct,total,low,high",
    [
        # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombe_table(correct, total, low, high):
    got = wilson_interval(correct, total)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_of_the_readme_figure():
    """73.11% of 3,589 PrivateTest faces: about ±1.45 points, and the stored fraction gives back
    the same count of correct faces."""
    low, high = accuracy_interval(0.731123, 3589)
    assert (low, high) == wilson_interval(2624, 3589)
    assert 0.0140 < (high - low) / 2 < 0.0150
    assert low < 0.731123 < high


def test_mcnemar_exact_by_hand():
    """1 face only A gets right, 9 only B: p = 2 (C(10,0) + C(10,1)) / 2^10 = 22/1024."""
    a = np.array([1] + [0] * 9 + [1] * 5 + [0] * 3, dtype=bool)
    b = np.array([0] + [1] * 9 + [1] * 5 + [0] * 3, dtype=bool)
    assert mcnemar_exact(a, b) == (1, 9, pytest.approx(22 / 1024))
    assert mcnemar_exact(a, b)[2] == pytest.approx(binomtest(1, 10, 0.5).pvalue)
    assert mcnemar_exact(a, a) == (0, 0, 1.0)  # no discordant face: no evidence either way
    only_a, only_b, p = mcnemar_exact(a, b[::-1])
    assert p == pytest.approx(binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue)


def test_mcnemar_exact_is_capped_at_one():
    a = np.array([1, 0, 1, 0], dtype=bool)
    b = np.array([0, 1, 1, 0], dtype=bool)
    assert mcnemar_exact(a, b) == (1, 1, 1.0)


def test_bootstrap_interval_agrees_with_wilson_on_a_large_sample():
    correct = np.zeros(3589, dtype=bool)
    correct[:2624] = True
    low, high = bootstrap_interval(correct)
    wilson = wilson_interval(2624, 3589)
    assert low == pytest.approx(wilson[0], abs=0.002)
    assert high == pytest.approx(wilson[1], abs=0.002)
    assert bootstrap_interval(correct) == (low, high)  # seeded: the same figures every time


def test_paired_bootstrap_difference_and_interval():
    rng = np.random.default_rng(3)
    a = rng.random(2000) < 0.75
    b = a.copy()
    flip = rng.choice(2000, 60, replace=False)  # B loses 60 faces A gets right, or gains them
    b[flip] = ~b[flip]
    difference, low, high = paired_bootstrap(a, b)
    assert difference == pytest.approx(a.mean() - b.mean())
    assert low <= difference <= high
    # the pairing: the interval is far narrower than two independent intervals suggest
    wa, wb = wilson_interval(a.sum(), 2000), wilson_interval(b.sum(), 2000)
    assert high - low < 0.5 * ((wa[1] - wa[0]) + (wb[1] - wb[0]))
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)


def test_compare_paired_reports_everything():
    a = np.array([1] * 70 + [0] * 30, dtype=bool)
    b = np.array([1] * 60 + [0] * 40, dtype=bool)
    result = compare_paired(a, b)
    assert result.faces == 100
    assert result.difference == pytest.approx(0.10)
    assert (result.only_a, result.only_b) == (10, 0)
    assert result.p_value == pytest.approx(2 / 1024)
    assert result.difference_interval[0] > 0  # A is better on every discordant face
    assert set(result.as_dict()) >= {"difference_ci95", "mcnemar_exact_p", "accuracy_a_ci95"}
    with pytest.raises(ValueError):
        compare_paired(a, b[:50])


def test_interval_text():
    assert interval_text(0.71623, 0.74598) == "71.6–74.6"
    assert interval_text(float("nan"), 0.5) == "-"
    assert interval_text("", "") == "-"


def test_macro_f1_averages_over_the_classes_present():
    """Issue 55: a class absent from the truth scored F1 0 and pulled macro-F1 to 0.667."""
    from ferbench.report.metrics import classification_metrics

    metrics = classification_metrics(np.array([0, 1]), np.array([0, 1]), ["a", "b", "c"])
    assert metrics["macro_f1"] == pytest.approx(1.0)
    assert metrics["macro_f1_classes"] == "present in the truth"
    # predicting the absent class is still an error: it costs the true class its recall and
    # F1, and the absent class is not averaged in
    metrics = classification_metrics(np.array([0, 1, 1]), np.array([0, 2, 1]), ["a", "b", "c"])
    assert metrics["macro_f1"] == pytest.approx((1.0 + 2 / 3) / 2)


def test_accuracy_carries_its_interval():
    from ferbench.report.metrics import classification_metrics

    truth = np.array([0] * 50 + [1] * 50)
    predicted = truth.copy()
    predicted[:20] = 1
    metrics = classification_metrics(truth, predicted, ["a", "b"])
    assert metrics["accuracy"] == pytest.approx(0.8)
    assert metrics["accuracy_ci95"] == pytest.approx(list(wilson_interval(80, 100)))
    assert metrics["faces"] == 100


def test_a_model_card_gives_its_accuracy_an_interval():
    from ferbench.report.model_card import _interval

    assert _interval({"accuracy": 0.731123, "images": 3589}) == "71.6–74.5%"
    confusion = [[40, 10], [10, 40]]  # the faces counted from the confusion matrix
    assert _interval({"accuracy": 0.8, "confusion": confusion}) == "71.1–86.7%"
