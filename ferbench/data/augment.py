"""Batched augmentation on tensors, on whatever device the batch lives on.

Random crop with padding, flip, rotation and scale are folded into one affine transform per image
and applied to the whole batch with a single ``grid_sample``; random erasing is a broadcast mask.
No per-image Python, no PIL.  Mixup and cutmix mix a batch with a shuffled copy of itself and
say how, so that the trainer mixes the targets by the same share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def augment_batch(
    x: torch.Tensor,
    crop_padding: int = 0,
    flip: bool = False,
    rotate: float = 0.0,
    scale: float = 0.0,
    erase: float = 0.0,
    generator: torch.Generator | None = None,
    alternate_flip: bool = False,
    flip_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Augment a float batch N×C×H×W in place of the reference per-image transforms.
    `flip_mask` (bool, N) says which faces to mirror when the caller alternates flips
    (`alternate_flip`); otherwise each face is mirrored with probability 0.5 when `flip`."""
    n, _, h, w = x.shape
    dev = x.device

    def rand(*shape):
        return torch.rand(*shape, generator=generator, device="cpu").to(dev)

    if crop_padding or flip or rotate or scale:
        angle = (rand(n) * 2 - 1) * math.radians(rotate)
        zoom = 1 + (rand(n) * 2 - 1) * scale
        mirror = torch.ones(n, device=dev)
        if flip:
            coin = rand(n) < 0.5  # drawn either way: the other draws stay the same stream
            if flip_mask is not None:
                coin = flip_mask.to(dev)
            mirror = torch.where(coin, -1.0, 1.0)
        # integer pixel shifts, as a pad-and-crop would give, in normalised coordinates
        shift_x = torch.floor(rand(n) * (2 * crop_padding + 1)) - crop_padding
        shift_y = torch.floor(rand(n) * (2 * crop_padding + 1)) - crop_padding
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [
                torch.stack([cos * mirror, -sin, shift_x * 2 / w], 1),
                torch.stack([sin * mirror, cos, shift_y * 2 / h], 1),
            ],
            1,
        ).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if erase > 0:
        x = random_erase(x, erase, rand)
    return x


@dataclass(frozen=True)
class Mix:
    """How a batch was mixed: face i became `share` of itself and 1 - `share` of face
    `partner[i]`."""

    partner: torch.Tensor
    share: float

    def targets(self, target: torch.Tensor) -> torch.Tensor:
        """Per-face target distributions (votes, a teacher's probabilities) mixed likewise."""
        return target * self.share + target[self.partner] * (1 - self.share)


def mix_batch(
    x: torch.Tensor, mixup: float, cutmix: float, rng: np.random.Generator
) -> tuple[torch.Tensor, Mix]:
    """Mixup (a blend of the two faces) or cutmix (a box of the partner pasted in), one share
    from Beta(alpha, alpha) per batch as timm does; with both on, a coin picks.  The cutmix
    share is the area actually kept once the box is clipped to the image."""
    n, _, h, w = x.shape
    partner = torch.from_numpy(rng.permutation(n)).to(x.device)
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    share = float(rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup))
    other = x[partner]
    if not use_cutmix:
        return x * share + other * (1 - share), Mix(partner, share)
    side = math.sqrt(1 - share)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    top, bottom = max(cy - int(h * side) // 2, 0), min(cy + int(h * side) // 2, h)
    left, right = max(cx - int(w * side) // 2, 0), min(cx + int(w * side) // 2, w)
    x = x.clone()
    x[:, :, top:bottom, left:right] = other[:, :, top:bottom, left:right]
    return x, Mix(partner, 1 - (bottom - top) * (right - left) / (h * w))


def random_erase(x: torch.Tensor, probability: float, rand) -> torch.Tensor:
    """Zero a random rectangle (2-20% of the area, aspect 0.3-3.3) in a fraction of the images."""
    n, _, h, w = x.shape
    area = (0.02 + rand(n) * 0.18) * h * w
    aspect = torch.exp(math.log(0.3) + rand(n) * (math.log(3.3) - math.log(0.3)))
    eh = torch.sqrt(area * aspect).clamp(1, h)
    ew = torch.sqrt(area / aspect).clamp(1, w)
    top = rand(n) * (h - eh)
    left = rand(n) * (w - ew)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (
        (rows >= top.view(n, 1, 1))
        & (rows < (top + eh).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1))
        & (cols < (left + ew).view(n, 1, 1))
    )
    chosen = (rand(n) < probability).view(n, 1, 1)
    return x.masked_fill((inside & chosen).unsqueeze(1), 0.0)


def shifted_views(x: torch.Tensor, shift: int) -> list[torch.Tensor]:
    """Ten-crop test-time augmentation for pad-and-crop training: centre and four corner shifts,
    each also mirrored, all at full input size; with `shift` 0, the face and its mirror."""
    corners = ((-shift, -shift), (-shift, shift), (shift, -shift), (shift, shift)) if shift else ()
    views = [x]  # the centre view is the batch itself: no roll, no copy
    for dy, dx in corners:
        views.append(_zero_border(torch.roll(x, shifts=(dy, dx), dims=(2, 3)), dy, dx))
    return views + [torch.flip(v, dims=(3,)) for v in views]


def zoomed(x: torch.Tensor, factor: float) -> torch.Tensor:
    """The batch scaled by `factor` about the face's centre at the same size (bilinear, zeros
    outside, as the training's scale augmentation samples it): the multi-scale test views, since a
    detector's crop is never exactly the training faces' framing."""
    if factor == 1:
        return x
    theta = torch.zeros(len(x), 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / factor
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _zero_border(view: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Blank, in place, the rows and columns a roll wrapped around, as a padded crop would
    (`torch.roll` already returned a new tensor, so nothing else sees the change)."""
    if dy > 0:
        view[:, :, :dy] = 0
    elif dy < 0:
        view[:, :, dy:] = 0
    if dx > 0:
        view[:, :, :, :dx] = 0
    elif dx < 0:
        view[:, :, :, dx:] = 0
    return view
