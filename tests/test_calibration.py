"""Temperature scaling: fitted on validation logits, folded into the output layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from ferbench.errors import FerbenchError
from ferbench.infer.calibration import (
    fit_probability_temperature,
    fit_temperature,
    fold_temperature,
    tempered,
    view_log_loss,
)
from ferbench.models import create_model


def test_the_fitted_temperature_undoes_overconfidence():
    gen = torch.Generator().manual_seed(0)
    honest = torch.randn(20000, 7, generator=gen) * 1.5  # logits whose softmax is the truth
    labels = torch.multinomial(torch.softmax(honest, 1), 1, generator=gen).squeeze(1)
    overconfident = (honest * 2.5).unsqueeze(1)  # one view, 2.5 times too sure
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(2.5, rel=0.05)
    assert view_log_loss(overconfident, labels, temperature) < view_log_loss(
        overconfident, labels, 1.0
    )
    two_views = torch.cat([overconfident, overconfident], 1)  # averaged views fit alike
    assert fit_temperature(two_views, labels) == pytest.approx(temperature, rel=1e-3)


def test_kept_probabilities_are_recalibrated_without_their_logits():
    """An ensemble member's probabilities three times too sharp: the fitted T undoes it."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20000, 7)) * 2
    honest = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = (honest.cumsum(1) < rng.random((len(honest), 1))).sum(1)  # drawn from `honest`
    sharp = tempered(honest, 1 / 3)
    assert np.allclose(sharp, np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True))
    t = fit_probability_temperature(sharp, labels)
    assert t == pytest.approx(3.0, rel=0.05)
    assert np.abs(tempered(sharp, t) - honest).max() < 0.03
    assert (tempered(sharp, t).argmax(1) == sharp.argmax(1)).all()  # predictions unchanged
    assert tempered(sharp, 1.0) is sharp


def test_folding_divides_the_logits_and_refuses_a_layer_that_is_not_the_output():
    model = create_model("vggfer_s", num_classes=7, widths=(8, 16, 32, 64)).eval()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        before = model(x)
        fold_temperature(model, 2.0, x)
        assert torch.allclose(model(x), before / 2.0, atol=1e-5)
    squashed = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
    weights = squashed[0].weight.detach().clone()
    with pytest.raises(FerbenchError, match="last Linear layer is not its output"):
        fold_temperature(squashed, 2.0, torch.randn(5, 4))
    assert torch.equal(squashed[0].weight, weights)  # left as it was
