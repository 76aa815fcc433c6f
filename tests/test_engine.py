"""Runtime choices (precision, memory layout) and the compact fast model."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ferbench.config import AugmentConfig, TrainConfig
from ferbench.device import Runtime, cpu_has_native_bf16, resolve_runtime
from ferbench.errors import FerbenchError
from ferbench.models import Preprocess, create_model
from ferbench.train.engine import SplitTensors, Trainer
from ferbench.utils.allocator import keep_freed_memory

CPU = torch.device("cpu")


def test_auto_runtime_on_cpu_follows_the_hardware():
    runtime = resolve_runtime(CPU, "auto", "auto")
    fast = cpu_has_native_bf16()
    assert runtime.amp == ("bf16" if fast else "off")
    assert runtime.channels_last == fast
    assert not runtime.data_on_device


def test_explicit_runtime_settings_win():
    runtime = resolve_runtime(CPU, "off", "off")
    assert (runtime.amp, runtime.channels_last) == ("off", False)
    assert resolve_runtime(CPU, "bf16", "on").channels_last


@pytest.mark.parametrize(
    ("amp", "message"), [("fp16", "fp16 needs a CUDA GPU"), ("fp8", "not one of auto")]
)
def test_impossible_precision_is_a_clear_error(amp, message):
    with pytest.raises(FerbenchError, match=message):
        resolve_runtime(CPU, amp)


FREE_AND_REALLOCATE = """
import resource, torch
from ferbench.utils.allocator import keep_freed_memory

def page_faults() -> int:  # of 20 steps that free and remake a 64 MB gradient
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        torch.ones(16 << 20).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

mapped = page_faults()
changed = keep_freed_memory()
page_faults()  # the heap grows to its working size
print(changed, mapped, page_faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_commands_reuse_freed_memory_instead_of_faulting_in_fresh_pages(monkeypatch):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    run = subprocess.run(
        [sys.executable, "-c", FREE_AND_REALLOCATE],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    )
    changed, mapped, kept = run.stdout.split()
    assert changed == "True"
    assert int(mapped) > 20 * 16_000  # glibc's default: a fresh mmap, 16,384 pages, each time
    assert int(kept) < int(mapped) / 5  # kept: (almost) no fresh pages
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "65536")
    assert not keep_freed_memory()  # the user's setting wins


def test_cpu_bf16_autocast_really_computes_in_bf16():
    conv = torch.nn.Conv2d(1, 4, 3)
    x = torch.randn(2, 1, 8, 8)
    with Runtime(CPU, "bf16", False, False).autocast():
        assert conv(x).dtype == torch.bfloat16
    with Runtime(CPU, "off", False, False).autocast():
        assert conv(x).dtype == torch.float32


@pytest.mark.skipif(
    not cpu_has_native_bf16(),
    reason="no bf16 instructions on this CPU: emulated bf16 takes ~100 s here and `amp: auto` "
    "never picks it",
)
def test_bf16_channels_last_training_learns_like_fp32():
    """A few steps of the real trainer in bf16 + channels_last end close to fp32."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (256, 1, 48, 48), dtype=torch.uint8)
    labels = (images.float().mean((1, 2, 3)) > 127).long()  # learnable: brightness
    cfg = TrainConfig(
        batch_size=64, optimizer="adam", lr=1e-3, augment=AugmentConfig.none(), epochs=3
    )
    losses = {}
    for amp, layout in (("off", False), ("bf16", True)):
        torch.manual_seed(0)
        model = create_model("vggfer_s", num_classes=2)
        if layout:
            model = model.to(memory_format=torch.channels_last)
        prep = Preprocess(48, 1, (0.5,), (0.25,), channels_last=layout)
        trainer = Trainer(model, prep, cfg, Runtime(CPU, amp, layout, False))
        for epoch in range(3):
            stats = trainer.train_epoch(SplitTensors(images, labels), epoch)
        losses[amp] = stats.loss
    assert losses["bf16"] < 0.6 and abs(losses["bf16"] - losses["off"]) < 0.15


def test_vggfer_s_is_compact_and_size_agnostic():
    model = create_model("vggfer_s", num_classes=7)
    assert 1.0e6 < sum(p.numel() for p in model.parameters()) < 1.3e6
    for size in (40, 48, 64):
        assert model.eval()(torch.zeros(1, 1, size, size)).shape == (1, 7)
    wide = create_model("vggfer_s", num_classes=7, widths=(16, 32))
    assert wide(torch.zeros(1, 1, 48, 48)).shape == (1, 7)
