"""Batched inference on uint8 faces, with optional ten-crop TTA, and its speed.

One function for every place that classifies a whole split: validation and test during training,
`ferbench eval`, export parity checks.  Same preprocessing, same precision, same TTA, so a
number measured in one place is reproduced in another.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ferbench.data.augment import shifted_views, zoomed
from ferbench.device import Runtime
from ferbench.models.preprocess import Preprocess


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    preprocess: Preprocess,
    images: torch.Tensor,
    runtime: Runtime,
    batch_size: int = 512,
    tta_shift: int = 0,
    tta_flip: bool = False,
    scales: tuple[float, ...] = (1.0,),
) -> torch.Tensor:
    """Logits (float32, CPU) for uint8 images, batched; with test views (`tta_shift`: ten-crop,
    `tta_flip`: the face and its mirror, each at every zoom of `scales`) the mean of their
    softmax probabilities is returned as log-probabilities."""
    logits = view_logits(
        model, preprocess, images, runtime, batch_size, tta_shift, tta_flip, scales
    )
    if logits.shape[1] == 1:
        return logits[:, 0]
    return mean_view_probs(logits).clamp_min(1e-12).log()


def mean_view_probs(view_logits: torch.Tensor, temperature=1.0) -> torch.Tensor:
    """N × views × classes logits → N × classes: the mean of the views' softmax at
    `temperature` (how a model with test views is evaluated, and calibrated)."""
    return F.softmax(view_logits / temperature, 2).mean(1)


@torch.no_grad()
def view_logits(
    model: nn.Module,
    preprocess: Preprocess,
    images: torch.Tensor,
    runtime: Runtime,
    batch_size: int = 512,
    tta_shift: int = 0,
    tta_flip: bool = False,
    scales: tuple[float, ...] = (1.0,),
) -> torch.Tensor:
    """The logits of every test view (float32, CPU, N × views × classes; one view without
    TTA): what `predict_logits` averages, and what a calibration is fitted on.  Each zoom of
    `scales` (1: the face as it is) gets the same views."""
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        x = preprocess(images[start : start + batch_size].to(runtime.device, non_blocking=True))
        views = []
        for face in (zoomed(x, s) for s in scales):
            views += shifted_views(face, tta_shift) if tta_shift or tta_flip else [face]
        with runtime.autocast():
            outputs.append(torch.stack([model(v).float().cpu() for v in views], 1))
    if not outputs:
        return torch.zeros(0, 1, 0)
    return torch.cat(outputs)


@torch.no_grad()
def measure_speed(
    model: nn.Module,
    preprocess: Preprocess,
    runtime: Runtime,
    batch_size: int = 256,
    repeats: int = 3,
    latency_runs: int = 20,
) -> dict:
    """Inference images/s at a large batch and median batch-1 latency (ms), warm-up excluded."""
    model.eval()
    size = preprocess.input_size
    images = torch.randint(
        0, 256, (batch_size, 1, size, size), dtype=torch.uint8, device=runtime.device
    )
    with runtime.autocast():
        model(preprocess(images[:8]))
        runtime.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(preprocess(images))
        runtime.synchronize()
        throughput = batch_size * repeats / (time.perf_counter() - start)
        single = images[:1]
        model(preprocess(single))
        times = []
        for _ in range(latency_runs):
            runtime.synchronize()
            t0 = time.perf_counter()
            model(preprocess(single))
            runtime.synchronize()
            times.append(time.perf_counter() - t0)
    return {
        "inference_images_per_s": float(throughput),
        "latency_batch1_ms": float(np.median(times) * 1000),
    }
