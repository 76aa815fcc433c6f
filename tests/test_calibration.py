"""Temperature scaling: fitted on validation logits, folded into the output layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from ferbench.errors import FerbenchError
from ferbench.infer.calibration import fit_temperature, fold_temperature, view_log_loss
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
