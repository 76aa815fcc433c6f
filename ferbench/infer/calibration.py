"""Temperature scaling (Guo et al., 2017): the probabilities a model prints, made honest.

One scalar T is fitted on the validation split's logits (every test view, averaged as the model
is evaluated) to minimise the log-loss, then folded into the classifier (its weights and bias
divided by T).  Predictions do not change; every path that loads the weights (torch, ONNX, live)
then reports calibrated probabilities without knowing a temperature exists.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ferbench.errors import FerbenchError
from ferbench.infer.batched import mean_view_probs


def view_log_loss(view_logits: torch.Tensor, labels: torch.Tensor, temperature) -> torch.Tensor:
    """Log-loss of the views' mean softmax at `temperature` (N × views × classes logits)."""
    probs = mean_view_probs(view_logits, temperature)
    return F.nll_loss(probs.clamp_min(1e-12).log(), labels)


def fit_temperature(view_logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T that minimises the validation log-loss (searched as log T, so T stays positive)."""
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")
    view_logits, labels = view_logits.float(), labels.long()

    def closure():
        optimizer.zero_grad()
        loss = view_log_loss(view_logits, labels, log_t.exp())
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities sharpened (T < 1) or softened (T > 1) as p^(1/T), renormalised: the softmax
    of the log-probabilities divided by T, so one scalar recalibrates a model whose logits are
    gone (an ensemble member's kept predictions)."""
    if temperature == 1.0:
        return probs
    scaled = np.log(np.clip(probs, 1e-12, None)) / temperature
    scaled = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return (scaled / scaled.sum(axis=1, keepdims=True)).astype(probs.dtype)


def fit_probability_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T for `tempered` that minimises the log-loss of `probs` (validation split only)."""
    log_probs = torch.from_numpy(np.log(np.clip(probs, 1e-12, None))).float()
    return fit_temperature(log_probs[:, None, :], torch.from_numpy(np.asarray(labels)))


def fold_temperature(model: nn.Module, temperature: float, sample: torch.Tensor) -> None:
    """Divide the output layer (the last nn.Linear) by `temperature`, in place, and check on
    `sample` (a preprocessed batch) that the logits were divided exactly so; a model whose
    last Linear layer is not its output is left as it was and refused."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise FerbenchError("calibration: the model has no Linear output layer to scale")
    layer = linears[-1]
    model.eval()
    with torch.no_grad():
        before = model(sample).float()
        original = [p.detach().clone() for p in layer.parameters()]
        for param in layer.parameters():
            param.div_(temperature)
        after = model(sample).float()
        if not torch.allclose(after, before / temperature, rtol=1e-3, atol=1e-4):
            for param, value in zip(layer.parameters(), original):
                param.copy_(value)
            raise FerbenchError(
                "calibration: the model's last Linear layer is not its output (scaling it did "
                "not scale the logits); ship it without --calibrate"
            )
