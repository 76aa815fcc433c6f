"""Training and evaluation of one trial, from memory, on GPU or CPU.

The whole dataset is held as uint8 tensors (on the GPU when there is one); batches are sliced,
converted, augmented and normalised there.  Data order, augmentation and dropout are seeded per
epoch, so a run resumed from ``last.pt`` continues exactly as if it had never stopped.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ferbench.data.arrays import FaceArrays
from ferbench.data.augment import augment_batch, shifted_views
from ferbench.errors import FerbenchError


class TrainingDiverged(FerbenchError):
    pass


def select_device(name: str = "auto") -> torch.device:
    """auto: cuda, then mps, then cpu; an explicit device that is missing is an error."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FerbenchError(
            "--device cuda: no CUDA GPU is visible to PyTorch "
            f"(torch {torch.__version__}); use --device cpu"
        )
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise FerbenchError("--device mps: Apple MPS is not available here; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise FerbenchError(f"unknown device '{name}'; use auto, cpu, cuda or mps") from None


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


@dataclass
class Preprocess:
    """What turns a uint8 face crop into model input; stored in every checkpoint."""

    input_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels_last: bool = False

    def to_dict(self) -> dict:
        return {
            "input_size": self.input_size,
            "in_chans": self.in_chans,
            "mean": list(self.mean),
            "std": list(self.std),
            "grayscale": True,
        }

    def __call__(
        self,
        batch_u8: torch.Tensor,
        augment: dict | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """N×H×W or N×1×H×W uint8 → normalised float N×C×H×W (augmented when asked)."""
        x = batch_u8.unsqueeze(1) if batch_u8.dim() == 3 else batch_u8
        x = x.float().div_(255.0)
        if augment:
            x = augment_batch(x, generator=generator, **augment)
        x = (x - self.mean[0]) / self.std[0]
        if self.in_chans > 1:
            x = x.expand(-1, self.in_chans, -1, -1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


@dataclass
class SplitTensors:
    images: torch.Tensor  # uint8 N×1×H×W
    labels: torch.Tensor  # int64 N

    @classmethod
    def from_arrays(cls, data: FaceArrays, split: str, device: torch.device) -> "SplitTensors":
        images, labels = data.split(split)
        return cls(
            torch.from_numpy(images).unsqueeze(1).to(device), torch.from_numpy(labels).to(device)
        )

    def __len__(self) -> int:
        return len(self.labels)


def build_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for param in model.parameters():  # no weight decay on biases and norm scales
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(
            groups,
            lr=cfg["lr"],
            momentum=cfg["momentum"],
            nesterov=cfg["nesterov"] and cfg["momentum"] > 0,
        )
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(groups, lr=cfg["lr"])
    return torch.optim.AdamW(groups, lr=cfg["lr"])


@dataclass
class LRSchedule:
    """Learning rate as a function of fractional epoch, with warmup; plateau keeps its state."""

    cfg: dict
    plateau_scale: float = 1.0
    plateau_best: float = math.inf
    plateau_wait: int = 0

    def lr_at(self, epoch_progress: float) -> float:
        cfg, base = self.cfg, self.cfg["lr"]
        warmup = cfg["warmup_epochs"]
        if warmup > 0 and epoch_progress < warmup:
            return base * (epoch_progress + 1e-3) / warmup
        kind, total = cfg["scheduler"], max(cfg["epochs"], 1)
        if kind == "step":
            return base * cfg["gamma"] ** int(epoch_progress // max(cfg["step_size"], 1))
        if kind in ("cosine", "onecycle"):
            span = max(total - warmup, 1e-9)
            t = min(max((epoch_progress - warmup) / span, 0.0), 1.0)
            if kind == "onecycle":  # linear decay to min_lr after warmup
                return cfg["min_lr"] + (base - cfg["min_lr"]) * (1 - t)
            return cfg["min_lr"] + (base - cfg["min_lr"]) * 0.5 * (1 + math.cos(math.pi * t))
        if kind == "plateau":
            return max(base * self.plateau_scale, cfg["min_lr"])
        return base

    def end_epoch(self, val_loss: float) -> None:
        if self.cfg["scheduler"] != "plateau":
            return
        if val_loss < self.plateau_best - 1e-4:
            self.plateau_best, self.plateau_wait = val_loss, 0
        else:
            self.plateau_wait += 1
            if self.plateau_wait > self.cfg["plateau_patience"]:
                self.plateau_scale *= self.cfg["gamma"]
                self.plateau_wait = 0

    def state_dict(self) -> dict:
        return {
            "plateau_scale": self.plateau_scale,
            "plateau_best": self.plateau_best,
            "plateau_wait": self.plateau_wait,
        }

    def load_state_dict(self, state: dict) -> None:
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_wait = int(state["plateau_wait"])


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 instructions (AVX512-BF16, AMX), where oneDNN runs bf16 convolutions
    about twice as fast as fp32; elsewhere bf16 on the CPU is emulated and slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Runtime:
    """How a trial runs on its device; none of it changes what is computed beyond rounding."""

    amp: str  # "bf16", "fp16" or "off"
    channels_last: bool
    data_on_device: bool


def resolve_runtime(cfg: dict, device: torch.device) -> Runtime:
    """Turn the `auto` settings into concrete ones for this device.

    CUDA: bf16 autocast, channels_last, the dataset on the GPU.  CPU: bf16 autocast and
    channels_last where the CPU has bf16 instructions (measured 2.7x the fp32 training
    throughput on a Zen 4 core pair), fp32 otherwise; data stays in host memory.
    """
    cuda = device.type == "cuda"
    fast_cpu = device.type == "cpu" and cpu_has_native_bf16()
    amp = cfg.get("amp", "auto")
    if amp == "auto":
        amp = "bf16" if cuda or fast_cpu else "off"
    if amp not in ("bf16", "fp16", "off"):
        raise FerbenchError(f"amp: '{amp}' is not one of auto, bf16, fp16, off")
    if amp == "fp16" and not cuda:
        raise FerbenchError(
            f"amp: fp16 needs a CUDA GPU (device is {device.type}); use bf16 or off"
        )
    layout = cfg.get("channels_last", "auto")
    channels_last = layout == "on" or (layout == "auto" and (cuda or fast_cpu))
    placement = cfg.get("data_on_device", "auto")
    on_device = placement == "on" or (placement == "auto" and cuda)
    return Runtime(amp, channels_last, on_device)


def autocast_for(device: torch.device, amp: str):
    """bf16/fp16 autocast on CUDA, bf16 on CPU, nothing for `off` or other devices."""
    if device.type == "cuda" and amp in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)
    if device.type == "cpu" and amp == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class EpochStats:
    loss: float
    acc: float
    seconds: float
    images: int


@dataclass
class Trainer:
    """Everything one epoch of training needs; the runner owns checkpoints and files."""

    model: nn.Module
    preprocess: Preprocess
    cfg: dict
    device: torch.device
    class_weights: torch.Tensor | None = None
    schedule: LRSchedule | None = None
    optimizer: torch.optim.Optimizer | None = None
    scaler: torch.amp.GradScaler | None = None
    on_batch: Callable[[int, int, float, float], None] | None = None

    def __post_init__(self) -> None:
        self.optimizer = self.optimizer or build_optimizer(self.model, self.cfg)
        self.schedule = self.schedule or LRSchedule(self.cfg)
        if self.cfg["amp"] == "fp16" and self.device.type == "cuda":
            self.scaler = torch.amp.GradScaler("cuda")
        self.loss_fn = nn.CrossEntropyLoss(
            weight=self.class_weights, label_smoothing=self.cfg["label_smoothing"]
        )

    def train_epoch(self, train: SplitTensors, epoch: int) -> EpochStats:
        cfg, seed = self.cfg, self.cfg["seed"]
        torch.manual_seed(seed * 100003 + epoch)  # dropout: same stream after a resume
        order_gen = torch.Generator().manual_seed(seed * 1000003 + epoch)
        aug_gen = torch.Generator().manual_seed(seed * 10007 + epoch)
        order = torch.randperm(len(train), generator=order_gen).to(train.images.device)
        batch_size = cfg["batch_size"]
        steps = max(1, len(train) // batch_size)  # drop the last partial batch, as usual
        self.model.train()
        total_loss = torch.zeros((), device=self.device)
        total_correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        start = time.perf_counter()
        augment = cfg["augment"] if any(cfg["augment"].values()) else None
        for step in range(steps):
            lr = self.schedule.lr_at(epoch + step / steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            index = order[step * batch_size : (step + 1) * batch_size]
            x = self.preprocess(
                train.images[index].to(self.device, non_blocking=True), augment, aug_gen
            )
            y = train.labels[index].to(self.device, non_blocking=True)
            with autocast_for(self.device, cfg["amp"]):
                logits = self.model(x)
                loss = self.loss_fn(logits.float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            if cfg["grad_clip"] > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg["grad_clip"])
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            total_loss += loss.detach() * len(y)
            total_correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if self.on_batch is not None and (step % 10 == 0 or step == steps - 1):
                running = total_loss.item() / seen
                if not math.isfinite(running):
                    raise TrainingDiverged(
                        f"loss became {running} at epoch {epoch + 1}, step "
                        f"{step + 1} (try a lower lr or grad_clip)"
                    )
                self.on_batch(step + 1, steps, running, total_correct.item() / seen)
        mean_loss = total_loss.item() / max(seen, 1)
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(
                f"loss became {mean_loss} in epoch {epoch + 1} (try a lower lr or grad_clip)"
            )
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return EpochStats(
            mean_loss, total_correct.item() / max(seen, 1), time.perf_counter() - start, seen
        )


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    preprocess: Preprocess,
    images: torch.Tensor,
    device: torch.device,
    batch_size: int = 512,
    amp: str = "auto",
    tta_shift: int = 0,
) -> torch.Tensor:
    """Logits (float32, CPU) for uint8 images, batched; with `tta_shift` the ten-crop mean of
    softmax probabilities is returned as log-probabilities."""
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        x = preprocess(images[start : start + batch_size].to(device, non_blocking=True))
        with autocast_for(device, amp):
            if tta_shift:
                probs = torch.stack(
                    [F.softmax(model(v).float(), 1) for v in shifted_views(x, tta_shift)]
                ).mean(0)
                outputs.append(probs.clamp_min(1e-12).log().cpu())
            else:
                outputs.append(model(x).float().cpu())
    if not outputs:
        return torch.zeros(0, 0)
    return torch.cat(outputs)


def evaluate(
    model: nn.Module,
    preprocess: Preprocess,
    split: SplitTensors,
    device: torch.device,
    batch_size: int = 512,
    amp: str = "auto",
    tta_shift: int = 0,
) -> tuple[float, float, np.ndarray]:
    """Mean cross-entropy, accuracy and predicted labels on one split."""
    if len(split) == 0:
        return float("nan"), float("nan"), np.zeros(0, dtype=np.int64)
    logits = predict_logits(model, preprocess, split.images, device, batch_size, amp, tta_shift)
    labels = split.labels.cpu()
    loss = (
        F.cross_entropy(logits, labels).item()
        if not tta_shift
        else F.nll_loss(logits, labels).item()
    )
    predictions = logits.argmax(1)
    return loss, (predictions == labels).float().mean().item(), predictions.numpy()


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


@torch.no_grad()
def measure_speed(
    model: nn.Module,
    preprocess: Preprocess,
    device: torch.device,
    amp: str,
    batch_size: int = 256,
    repeats: int = 5,
    latency_runs: int = 30,
) -> dict:
    """Inference images/s at a large batch and median batch-1 latency (ms), warm-up excluded."""
    model.eval()
    size = preprocess.input_size
    images = torch.randint(0, 256, (batch_size, 1, size, size), dtype=torch.uint8, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    with autocast_for(device, amp):
        model(preprocess(images[:8]))
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            model(preprocess(images))
        sync()
        throughput = batch_size * repeats / (time.perf_counter() - start)
        single = images[:1]
        model(preprocess(single))
        times = []
        for _ in range(latency_runs):
            sync()
            t0 = time.perf_counter()
            model(preprocess(single))
            sync()
            times.append(time.perf_counter() - t0)
    return {
        "inference_images_per_s": float(throughput),
        "latency_batch1_ms": float(np.median(times) * 1000),
    }
