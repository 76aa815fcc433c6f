"""Preprocess: what turns a uint8 face crop into model input; stored in every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ferbench.data.augment import augment_batch


@dataclass(frozen=True)
class Preprocess:
    input_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels_last: bool = False  # a runtime layout choice, not part of the saved recipe

    @classmethod
    def for_model(cls, card, input_size: int | None = None, channels_last: bool = False):
        """The preprocessing a model card asks for, at `input_size` (default: the card's)."""
        return cls(
            input_size or card.input_size,
            card.in_chans,
            tuple(card.mean),
            tuple(card.std),
            channels_last,
        )

    def to_dict(self) -> dict:
        return {
            "input_size": self.input_size,
            "in_chans": self.in_chans,
            "mean": list(self.mean),
            "std": list(self.std),
            "grayscale": True,
        }

    @classmethod
    def from_dict(cls, data: dict, channels_last: bool = False) -> "Preprocess":
        return cls(
            int(data["input_size"]),
            int(data["in_chans"]),
            tuple(data["mean"]),
            tuple(data["std"]),
            channels_last,
        )

    def _stat(self, values: tuple[float, ...], x: torch.Tensor) -> float | torch.Tensor:
        """A mean or std per channel (one value serves every channel)."""
        if len(values) == 1 or x.shape[1] == 1:
            return values[0]
        return torch.tensor(values[: x.shape[1]], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)

    def __call__(
        self,
        batch_u8: torch.Tensor,
        augment: dict | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """N×H×W or N×1×H×W uint8 → normalised float N×C×H×W (augmented when asked)."""
        return self.normalize(self.gray(batch_u8, augment, generator))

    @staticmethod
    def gray(
        batch_u8: torch.Tensor,
        augment: dict | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """N×H×W or N×1×H×W uint8 → float N×1×H×W grey faces in [0, 1], augmented when asked
        (the step before `normalize`, where corruptions apply)."""
        x = batch_u8.unsqueeze(1) if batch_u8.dim() == 3 else batch_u8
        x = x.float().div_(255.0)
        if augment:
            x = augment_batch(x, generator=generator, **augment)
        return x

    def normalize(self, gray: torch.Tensor) -> torch.Tensor:
        """N×1×H×W grey faces in [0, 1] → the model's input (channels, statistics, layout)."""
        x = gray
        if self.in_chans > 1:  # the grey face on every channel, each with its own statistics
            x = x.expand(-1, self.in_chans, -1, -1)
        x = (x - self._stat(self.mean, x)) / self._stat(self.std, x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input → N×1×H×W grey faces in [0, 1] (the inverse of `normalize`, so a
        second model can see exactly the batch this one trained on)."""
        gray = x[:, :1].float()
        return gray * self._stat(self.std[:1], gray) + self._stat(self.mean[:1], gray)
