"""This machine's training bound and the speedrun budget it earns.

The bound B is `vggfer_s`'s compute-bound training images/s at 48×48, batch 128, in the
precision `ferbench run` picks (one batch already in memory, forward + backward + step), as
`ferbench bench --models vggfer_s --no-reference` reports it.  The speedrun budget is
300 s × 509 / B: 300 s on the Zen 4 where the speedrun was first built (B = 509), about 1,270 s
on 2 AVX2 cores (B ≈ 120).  Every run records B in its config.yaml and benchmark rows carry it,
so a trial's time compares across machines.
"""

from __future__ import annotations

import json
import time

import torch

from ferbench.config import TrainConfig
from ferbench.device import Runtime, cpu_isa, cpu_name, resolve_runtime
from ferbench.utils.fileio import cache_dir, write_json

REFERENCE_BOUND = 509.0  # img/s, 2 Zen 4 cores, bf16
REFERENCE_SECONDS = 300.0
BOUND_MODEL, BOUND_SIZE, BOUND_BATCH = "vggfer_s", 48, 128


def speedrun_budget(bound: float) -> float:
    """Seconds a whole speedrun trial may take on a machine whose bound is `bound`."""
    return REFERENCE_SECONDS * REFERENCE_BOUND / bound


def compute_bound(
    name: str,
    num_classes: int,
    size: int,
    runtime: Runtime,
    batch_size: int = BOUND_BATCH,
    steps: int = 10,
    warmup: int = 2,
    seed: int = 0,
    ready=lambda: None,
) -> float:
    """Images/s of forward + backward + SGD step on one batch that is already a normalised
    tensor: what the model itself costs here, with no data path at all.  `ready` is called
    between the warm-up and the timed steps (processes timed together wait there)."""
    from ferbench.models import create_model, model_card
    from ferbench.models.preprocess import Preprocess
    from ferbench.train.engine import Trainer

    card = model_card(name)
    fmt = torch.channels_last if runtime.channels_last else torch.preserve_format
    generator = torch.Generator().manual_seed(seed)
    model = create_model(name, num_classes=num_classes, in_chans=card.in_chans, input_size=size)
    model = model.to(runtime.device, memory_format=fmt).train()
    preprocess = Preprocess.for_model(card, size, runtime.channels_last)
    trainer = Trainer(model, preprocess, TrainConfig(batch_size=batch_size, epochs=1), runtime)
    images = torch.randint(0, 256, (batch_size, 1, size, size), generator=generator)
    x = preprocess(images.to(torch.uint8).to(runtime.device))
    y = torch.randint(0, num_classes, (batch_size,), generator=generator).to(runtime.device)

    def step():
        with runtime.autocast():
            loss = trainer.loss_fn(model(x).float(), y)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    for _ in range(warmup):
        step()
    runtime.synchronize()
    ready()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    runtime.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


def machine_bound(device: torch.device | str = "cpu", measured: float | None = None) -> float:
    """B for this machine and device, measured once and kept in the cache folder (keyed by the
    CPU or GPU, its instruction set, threads and torch version); `measured` (by `ferbench
    bench`) replaces the kept value."""
    runtime = resolve_runtime(torch.device(device), "auto", "auto")
    name = torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda" else None
    key = "|".join(
        str(v)
        for v in (
            name or cpu_name(),
            cpu_isa(),
            torch.get_num_threads(),
            torch.__version__,
            runtime.amp,
            runtime.device.type,
        )
    )
    file = cache_dir() / "machine-bound.json"
    try:
        known = json.loads(file.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known and measured is None:
        return float(known[key])
    bound = measured or compute_bound(BOUND_MODEL, 7, BOUND_SIZE, runtime)
    known[key] = round(bound, 1)
    try:
        write_json(file, known)
    except OSError:
        pass
    return bound
