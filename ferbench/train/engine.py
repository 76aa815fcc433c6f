"""Training and evaluation of one trial, from memory, on GPU or CPU.

The whole dataset is held as uint8 tensors (on the GPU when there is one); batches are sliced,
converted, augmented and normalised there.  Data order, augmentation and dropout are seeded per
epoch, so a run resumed from ``last.pt`` continues exactly as if it had never stopped.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ferbench.config import TrainConfig
from ferbench.data.arrays import FaceArrays
from ferbench.data.augment import mix_batch
from ferbench.data.corrupt import random_corruptions, training_families
from ferbench.device import Runtime
from ferbench.errors import FerbenchError
from ferbench.infer.batched import predict_logits
from ferbench.models.preprocess import Preprocess
from ferbench.train.distill import distillation_loss, soft_cross_entropy
from ferbench.utils.clock import running_time


class TrainingDiverged(FerbenchError):
    pass


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


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


NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD or Adam(W) with no weight decay on biases and norm scales; the biases of norm layers
    take `norm_bias_lr` times the learning rate (``lr_scale`` of their group)."""
    norm_biases = {
        id(m.bias) for m in model.modules() if isinstance(m, NORMS) and m.bias is not None
    }
    decay, no_decay, boosted = [], [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        if id(param) in norm_biases and cfg.norm_bias_lr != 1.0:
            boosted.append(param)
        else:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    if boosted:
        groups.append({"params": boosted, "weight_decay": 0.0, "lr_scale": cfg.norm_bias_lr})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


@dataclass
class LRSchedule:
    """Learning rate as a function of fractional epoch, with warmup; plateau keeps its state."""

    cfg: TrainConfig
    plateau_scale: float = 1.0
    plateau_best: float = math.inf
    plateau_wait: int = 0

    def lr_at(self, epoch_progress: float) -> float:
        cfg, base = self.cfg, self.cfg.lr
        warmup = cfg.warmup_epochs
        if warmup > 0 and epoch_progress < warmup:
            return base * (epoch_progress + 1e-3) / warmup
        kind, total = cfg.scheduler, max(cfg.epochs, 1)
        if kind == "step":
            return base * cfg.gamma ** int(epoch_progress // max(cfg.step_size, 1))
        if kind in ("cosine", "onecycle"):
            span = max(total - warmup, 1e-9)
            t = min(max((epoch_progress - warmup) / span, 0.0), 1.0)
            if kind == "onecycle":  # linear decay to min_lr after warmup
                return cfg.min_lr + (base - cfg.min_lr) * (1 - t)
            return cfg.min_lr + (base - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
        if kind == "plateau":
            return max(base * self.plateau_scale, cfg.min_lr)
        return base

    def end_epoch(self, val_loss: float) -> None:
        if self.cfg.scheduler != "plateau":
            return
        if val_loss < self.plateau_best - 1e-4:
            self.plateau_best, self.plateau_wait = val_loss, 0
        else:
            self.plateau_wait += 1
            if self.plateau_wait > self.cfg.plateau_patience:
                self.plateau_scale *= self.cfg.gamma
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


class WeightAverage:
    """An exponential moving average of a model's weights and norm statistics, updated after
    every optimizer step, with timm's warm-up (the decay grows as (1 + t) / (10 + t) until it
    reaches `decay`), so the first epochs are not averaged with the random initialisation."""

    def __init__(self, model: nn.Module, decay: float):
        self.model = copy.deepcopy(_unwrap(model)).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.decay, self.updates = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        averaged, current = self.model.state_dict(), _unwrap(model).state_dict()
        floats = [k for k, v in averaged.items() if v.is_floating_point()]
        torch._foreach_lerp_([averaged[k] for k in floats], [current[k] for k in floats], 1 - decay)
        for key, value in averaged.items():
            if not value.is_floating_point():
                value.copy_(current[key])

    def state_dict(self) -> dict:
        return {"updates": self.updates, "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["weights"])


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile's wrapper


def dirac_init(model: nn.Module) -> int:
    """Each 3x3 (or larger, odd) convolution whose output is at least as wide as its input
    starts as the identity on its first input-width filters (airbench), the rest as they
    were; returns how many layers changed."""
    changed = 0
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, nn.Conv2d) or module.groups != 1:
                continue
            out_ch, in_ch, kh, kw = module.weight.shape
            if out_ch < in_ch or kh != kw or kh % 2 == 0 or kh == 1:
                continue
            nn.init.dirac_(module.weight[:in_ch])
            changed += 1
    return changed


@dataclass
class EpochStats:
    loss: float
    acc: float
    seconds: float  # wall clock (a paused process's pause included)
    images: int
    cpu_seconds: float = 0.0  # CPU time of the process, all threads (pauses excluded)


@dataclass
class Trainer:
    """Everything one epoch of training needs; the runner owns checkpoints and files."""

    model: nn.Module
    preprocess: Preprocess
    cfg: TrainConfig
    runtime: Runtime
    class_weights: torch.Tensor | None = None
    schedule: LRSchedule | None = None
    optimizer: torch.optim.Optimizer | None = None
    scaler: torch.amp.GradScaler | None = None
    on_batch: Callable[[int, int, float, float], None] | None = None
    average: WeightAverage | None = None
    teacher_probs: torch.Tensor | None = None  # N_train × classes, in the train split's order
    teacher: Callable[[torch.Tensor], torch.Tensor] | None = None  # or probabilities per batch
    vote_targets: torch.Tensor | None = None  # likewise: normalised annotator votes (FER+)

    def __post_init__(self) -> None:
        self.optimizer = self.optimizer or build_optimizer(self.model, self.cfg)
        if self.cfg.ema > 0 and self.average is None:
            self.average = WeightAverage(self.model, self.cfg.ema)
        self.schedule = self.schedule or LRSchedule(self.cfg)
        self.device = self.runtime.device
        if self.runtime.amp == "fp16":
            self.scaler = torch.amp.GradScaler("cuda")
        self.loss_fn = nn.CrossEntropyLoss(
            weight=self.class_weights, label_smoothing=self.cfg.label_smoothing
        )

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated, checkpointed as best.pt and shipped: the moving
        average when `ema` is on, else the trained model itself."""
        return self.average.model if self.average is not None else self.model

    def state_dict(self) -> dict:
        """What the next epoch depends on besides the weights, for last.pt: optimizer,
        schedule, GradScaler, weight average and the RNG states (each epoch also reseeds its
        own streams)."""
        state = {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": _numpy_rng_state(),
                "python": random.getstate(),
            },
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.average is not None:
            state["average"] = self.average.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.average is not None and state.get("average"):
            self.average.load_state_dict(state["average"])
        rng = state.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "numpy" in rng:
            _set_numpy_rng_state(rng["numpy"])
        if "python" in rng:
            random.setstate(rng["python"])

    def _flip_plan(self, count: int, epoch: int) -> torch.Tensor:
        """Which faces are mirrored this epoch: a seeded random half in epoch 0, then each
        face the other way round from the epoch before."""
        first = torch.Generator().manual_seed(self.cfg.seed * 7919 + 17)
        return (torch.rand(count, generator=first) < 0.5) ^ bool(epoch % 2)

    def train_epoch(self, train: SplitTensors, epoch: int) -> EpochStats:
        cfg, seed = self.cfg, self.cfg.seed
        torch.manual_seed(seed * 100003 + epoch)  # dropout: same stream after a resume
        order_gen = torch.Generator().manual_seed(seed * 1000003 + epoch)
        aug_gen = torch.Generator().manual_seed(seed * 10007 + epoch)
        corrupt_gen = torch.Generator().manual_seed(seed * 100019 + epoch + 7)
        corruptions = training_families(cfg.augment)
        teach_clean = bool(cfg.distill and cfg.distill.views == "clean")
        order = torch.randperm(len(train), generator=order_gen).to(train.images.device)
        batch_size = cfg.batch_size
        steps = max(1, len(train) // batch_size)  # drop the last partial batch, as usual
        self.model.train()
        total_loss = torch.zeros((), device=self.device)
        total_correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        start, cpu_start = running_time(), time.process_time()
        augment = cfg.augment.per_image() if cfg.augment.active else None
        mix_rng = np.random.default_rng([seed, epoch, 3]) if cfg.augment.mixing else None
        flips = (
            self._flip_plan(len(train), epoch) if augment and cfg.augment.alternate_flip else None
        )
        for step in range(steps):
            lr = self.schedule.lr_at(epoch + step / steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            index = order[step * batch_size : (step + 1) * batch_size]
            if flips is not None:
                augment["flip_mask"] = flips[index.cpu()]
            gray = self.preprocess.gray(
                train.images[index].to(self.device, non_blocking=True), augment, aug_gen
            )
            clean = gray
            if corruptions:
                gray = random_corruptions(
                    gray,
                    corruptions,
                    cfg.augment.corrupt,
                    cfg.augment.corrupt_severity,
                    corrupt_gen,
                )
            x = self.preprocess.normalize(gray)
            y = train.labels[index].to(self.device, non_blocking=True)
            mix = None
            if mix_rng is not None:
                x, mix = mix_batch(x, cfg.augment.mixup, cfg.augment.cutmix, mix_rng)
            with self.runtime.autocast():
                logits = self.model(x).float()
                if self.vote_targets is not None:
                    votes = self.vote_targets[index].to(self.device, non_blocking=True)
                    votes = mix.targets(votes) if mix is not None else votes
                    loss = soft_cross_entropy(logits, votes, self.class_weights)
                elif mix is not None:
                    loss = mix.share * self.loss_fn(logits, y) + (1 - mix.share) * self.loss_fn(
                        logits, y[mix.partner]
                    )
                else:
                    loss = self.loss_fn(logits, y)
                if self.teacher_probs is not None:
                    target = self.teacher_probs[index].to(self.device, non_blocking=True)
                    loss = distillation_loss(logits, loss, target, cfg.distill, mix)
                elif self.teacher is not None:  # it saw the mixed batch: no mixing of targets
                    shown = x
                    if teach_clean and mix is None:  # the clean face's answer for the corrupted
                        shown = self.preprocess.normalize(clean)
                    loss = distillation_loss(logits, loss, self.teacher(shown), cfg.distill)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            if self.average is not None:
                self.average.update(self.model)
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
        self.runtime.synchronize()
        return EpochStats(
            mean_loss,
            total_correct.item() / max(seen, 1),
            running_time() - start,
            seen,
            time.process_time() - cpu_start,
        )


def _numpy_rng_state() -> dict:
    """numpy's global RNG state as plain values and a tensor (loadable with weights_only)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }


def _set_numpy_rng_state(state: dict) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["pos"], state["has_gauss"], state["gauss"]))


@dataclass
class SplitResult:
    loss: float
    accuracy: float
    predictions: np.ndarray
    probs: np.ndarray  # N × classes (ten-crop mean with TTA)


def evaluate(
    model: nn.Module,
    preprocess: Preprocess,
    split: SplitTensors,
    runtime: Runtime,
    batch_size: int = 512,
    tta_shift: int = 0,
    tta_flip: bool = False,
    scales: tuple[float, ...] = (1.0,),
) -> SplitResult:
    """Mean cross-entropy, accuracy, predicted labels and probabilities on one split (its test
    views at each zoom of `scales`)."""
    if len(split) == 0:
        return SplitResult(float("nan"), float("nan"), np.zeros(0, np.int64), np.zeros((0, 0)))
    logits = predict_logits(
        model, preprocess, split.images, runtime, batch_size, tta_shift, tta_flip, scales
    )
    labels = split.labels.cpu()
    loss = (
        F.cross_entropy(logits, labels).item()
        if not (tta_shift or tta_flip or len(scales) > 1)
        else F.nll_loss(logits, labels).item()
    )
    predictions = logits.argmax(1)
    return SplitResult(
        loss,
        (predictions == labels).float().mean().item(),
        predictions.numpy(),
        torch.softmax(logits, 1).numpy(),
    )


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)
