"""Common corruptions of face crops, batched on tensors: what a webcam, a film or a face detector
does to a face that FER2013 never showed the model.

Sixteen families in five groups (light, noise, blur, digital, framing), each at severities 1-5,
after ImageNet-C (Hendrycks & Dietterich, 2019) with parameters set for 48×48 grey faces
(spatial parameters scale with the face's side).  The same functions serve three jobs:

- the robustness benchmark (`corrupt_faces`: uint8 faces in, uint8 faces out, deterministic
  for a seed, so every model is scored on the very same corrupted faces);
- `ferbench data corrupt`, which writes those faces as class folders for other tools;
- training-time augmentation (`random_corruptions`: a share of each batch, a family and a
  severity drawn per face, on float faces in [0, 1] after the geometric augmentation).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIDE = 48  # spatial parameters are given for this face side and scaled to the face's


@dataclass(frozen=True)
class Family:
    name: str
    group: str
    levels: tuple[float, ...]  # the parameter at severities 1-5
    unit: str  # what the parameter means, for the README table and --help
    apply: Callable  # (x N×1×H×W in [0, 1], parameter per face (N,), generator) -> x
    spatial: bool = False  # the parameter is in pixels of a 48-pixel face


def _rand(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(n, generator=generator).to(device)


def _per_face(p: torch.Tensor) -> torch.Tensor:
    return p.view(-1, 1, 1, 1)


# -- light ------------------------------------------------------------------------------------
def _gamma(x, p, gen):
    return x.clamp(1e-6, 1).pow(_per_face(p))


def _bright(x, p, gen):
    return 1 - (1 - x).clamp(1e-6, 1).pow(_per_face(p))  # over-exposure: gamma on the negative


def _contrast(x, p, gen):
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * _per_face(p) + mean


# -- noise ------------------------------------------------------------------------------------
def _gaussian_noise(x, p, gen):
    noise = torch.randn(x.shape, generator=gen).to(x.device)
    return x + noise * _per_face(p) / 255.0


def _shot_noise(x, p, gen):
    photons = _per_face(p)  # photons at full white: fewer, noisier
    counts = torch.poisson((x.clamp(0, 1) * photons).cpu(), generator=gen).to(x.device)
    return counts / photons


def _salt_pepper(x, p, gen):
    u = torch.rand(x.shape, generator=gen).to(x.device)
    share = _per_face(p)
    return torch.where(u < share / 2, 0.0, torch.where(u > 1 - share / 2, 1.0, x))


# -- blur -------------------------------------------------------------------------------------
def _filter(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Each face convolved with its own kernel (N×k×k), edges reflected."""
    n, c, h, w = x.shape
    k = kernels.shape[-1]
    pad = k // 2
    if pad >= min(h, w):
        raise ValueError(f"a blur kernel of {k} px does not fit a {h}×{w} face")
    padded = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    weight = kernels.to(x.dtype).repeat_interleave(c, 0).unsqueeze(1)
    return F.conv2d(padded, weight, groups=n * c).view(n, c, h, w)


def _grid(radius: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    return r.view(1, -1, 1), r.view(1, 1, -1)  # rows (y), columns (x), broadcast over faces


def _gaussian_blur(x, p, gen):
    sigma = p.clamp_min(1e-3).view(-1, 1, 1)
    yy, xx = _grid(max(1, math.ceil(3 * float(p.max()))), x.device)
    kernels = torch.exp(-(yy**2 + xx**2) / (2 * sigma**2))
    return _filter(x, kernels / kernels.sum((1, 2), keepdim=True))


def _defocus_blur(x, p, gen):
    radius = p.view(-1, 1, 1)
    yy, xx = _grid(max(1, math.ceil(float(p.max()))), x.device)
    disk = (radius + 0.5 - torch.sqrt(yy**2 + xx**2)).clamp(0, 1)  # anti-aliased disk
    return _filter(x, disk / disk.sum((1, 2), keepdim=True))


def _motion_blur(x, p, gen):
    """A line of the given length through the centre, at a random angle per face."""
    n = len(p)
    angle = _rand(n, gen, x.device) * math.pi
    half = (p / 2).view(-1, 1, 1)
    yy, xx = _grid(max(1, math.ceil(float(p.max()) / 2)), x.device)
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    along = (xx * cos + yy * sin).clamp(-half, half)  # nearest point on the segment
    dist = torch.sqrt((xx - along * cos) ** 2 + (yy - along * sin) ** 2)
    line = (1 - dist).clamp(0, 1)
    return _filter(x, line / line.sum((1, 2), keepdim=True))


# -- digital ----------------------------------------------------------------------------------
def _jpeg(x, p, gen):
    import cv2

    faces = (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    out = np.empty_like(faces)
    for i, (face, quality) in enumerate(zip(faces, p.tolist())):
        ok, buf = cv2.imencode(".jpg", face[0], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        out[i, 0] = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return torch.from_numpy(out).to(x.device, x.dtype) / 255.0


def _low_resolution(x, p, gen):
    """Down to a share of the side (area averaging), then back up (bilinear): a distant or
    low-resolution camera."""
    h, w = x.shape[-2:]
    out = x.clone()
    for factor in p.unique().tolist():
        chosen = p == factor
        small = (max(2, round(h * factor)), max(2, round(w * factor)))
        down = F.interpolate(x[chosen], size=small, mode="area")
        out[chosen] = F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False)
    return out


def _occlusion(x, p, gen):
    """A box of the given share of the face's area, of a random grey, somewhere on the face:
    a hand, a cup, a microphone."""
    n, _, h, w = x.shape
    dev = x.device
    aspect = torch.exp((_rand(n, gen, dev) * 2 - 1) * math.log(2))
    bh = torch.sqrt(p * h * w * aspect).clamp(1, h)
    bw = torch.sqrt(p * h * w / aspect).clamp(1, w)
    top, left = _rand(n, gen, dev) * (h - bh), _rand(n, gen, dev) * (w - bw)
    grey = _rand(n, gen, dev)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    inside = (
        (rows >= top.view(n, 1, 1))
        & (rows < (top + bh).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1))
        & (cols < (left + bw).view(n, 1, 1))
    ).unsqueeze(1)
    return torch.where(inside, grey.view(n, 1, 1, 1), x)


# -- framing (what a face detector's box does) -------------------------------------------------
def _affine(x, zoom, angle, shift_x, shift_y):
    """Resample each face with its own zoom (>1: the face fills more), rotation (radians) and
    shift (a share of the side); the edge pixels extend beyond the crop as the nearest
    background would."""
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x * 2], 1), torch.stack([sin, cos, shift_y * 2], 1)], 1
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _tighter(x, p, gen):
    zero = torch.zeros_like(p)
    return _affine(x, p, zero, zero, zero)


def _looser(x, p, gen):
    zero = torch.zeros_like(p)
    return _affine(x, 1 / p, zero, zero, zero)


def _shift(x, p, gen):
    direction = _rand(len(p), gen, x.device) * 2 * math.pi
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    return _affine(x, one, zero, p * torch.cos(direction), p * torch.sin(direction))


def _rotate(x, p, gen):
    sign = torch.where(_rand(len(p), gen, x.device) < 0.5, -1.0, 1.0)
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    return _affine(x, one, torch.deg2rad(p) * sign, zero, zero)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("dark", "light", (1.4, 1.8, 2.2, 2.8, 3.5), "gamma (x^g)", _gamma),
        Family("bright", "light", (1.4, 1.8, 2.2, 2.8, 3.5), "gamma of the negative", _bright),
        Family("contrast", "light", (0.75, 0.6, 0.45, 0.3, 0.2), "contrast factor", _contrast),
        Family("gaussian_noise", "noise", (6, 12, 18, 26, 36), "σ (grey levels)", _gaussian_noise),
        Family("shot_noise", "noise", (120, 60, 30, 15, 8), "photons at white", _shot_noise),
        Family("salt_pepper", "noise", (0.01, 0.02, 0.04, 0.07, 0.1), "share", _salt_pepper),
        Family("gaussian_blur", "blur", (0.6, 0.9, 1.2, 1.6, 2.0), "σ (px)", _gaussian_blur, True),
        Family("defocus_blur", "blur", (1, 1.5, 2, 2.5, 3), "radius (px)", _defocus_blur, True),
        Family("motion_blur", "blur", (3, 5, 7, 9, 11), "length (px)", _motion_blur, True),
        Family("jpeg", "digital", (40, 25, 15, 10, 6), "JPEG quality", _jpeg),
        Family("low_resolution", "digital", (0.75, 0.6, 0.45, 0.35, 0.25), "side", _low_resolution),
        Family("occlusion", "digital", (0.05, 0.1, 0.15, 0.22, 0.3), "area covered", _occlusion),
        Family("tighter", "framing", (1.06, 1.12, 1.18, 1.25, 1.33), "zoom in", _tighter),
        Family("looser", "framing", (1.06, 1.12, 1.18, 1.25, 1.33), "zoom out", _looser),
        Family("shift", "framing", (0.04, 0.08, 0.12, 0.16, 0.2), "shift (share of side)", _shift),
        Family("rotate", "framing", (5, 10, 15, 20, 30), "degrees", _rotate),
    )
}

# What the robust default trains on; the rest stay out of training and are reported apart, so
# the suite measures generalisation to unseen corruptions, not memorised ones.
TRAINED_FAMILIES = (
    "dark", "contrast", "gaussian_noise", "gaussian_blur", "jpeg", "tighter", "looser", "rotate",
)  # fmt: skip
HELD_OUT_FAMILIES = tuple(name for name in FAMILIES if name not in TRAINED_FAMILIES)


def resolve_families(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """'all', a group ('noise'), a family, or a comma-separated list of them → family names."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item == "all":
            chosen = list(FAMILIES)
        elif item == "held-out":
            chosen = list(HELD_OUT_FAMILIES)
        elif item == "trained":
            chosen = list(TRAINED_FAMILIES)
        elif item in FAMILIES:
            chosen = [item]
        else:
            chosen = [f.name for f in FAMILIES.values() if f.group == item]
            if not chosen:
                groups = sorted({f.group for f in FAMILIES.values()})
                raise ValueError(
                    f"unknown corruption {item!r}: choose 'all', 'trained', 'held-out', a group "
                    f"({', '.join(groups)}) or a family ({', '.join(FAMILIES)})"
                )
        names += [n for n in chosen if n not in names]
    return names


def training_families(augment) -> tuple[str, ...]:
    """The families an `AugmentConfig` draws from in training: its `corrupt_families` (names,
    groups, 'all', 'held-out'), or the robust default's trained ones; none when `corrupt` is 0."""
    if augment.corrupt <= 0:
        return ()
    return tuple(resolve_families(augment.corrupt_families)) or TRAINED_FAMILIES


def _parameter(family: Family, severity: torch.Tensor, side: int) -> torch.Tensor:
    levels = torch.tensor(family.levels, dtype=torch.float32)
    p = levels[severity.cpu() - 1]
    return p * (side / REFERENCE_SIDE) if family.spatial else p


def corrupt(
    x: torch.Tensor, family: str, severity: int | torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Float faces N×1×H×W in [0, 1] → the same faces corrupted, clipped to [0, 1].
    `severity`: one for all (1-5) or one per face (a tensor of N)."""
    fam = FAMILIES[family]
    n = len(x)
    sev = severity if torch.is_tensor(severity) else torch.full((n,), int(severity))
    if n == 0:
        return x
    p = _parameter(fam, sev.long(), x.shape[-1]).to(x.device)
    return fam.apply(x, p, generator).clamp_(0, 1)


CHUNK = 512  # faces per seeded chunk: the result does not depend on how a caller batches


def corrupt_faces(images: np.ndarray, family: str, severity: int, seed: int = 0) -> np.ndarray:
    """uint8 faces N×H×W → corrupted uint8 faces, the same for the same seed on any machine
    and in any batch size (each chunk of 512 faces has its own seeded stream)."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1-5, not {severity}")
    out = np.empty_like(images)
    key = zlib.crc32(f"{family}/{severity}/{seed}".encode())
    for start in range(0, len(images), CHUNK):
        gen = torch.Generator().manual_seed(key + start)
        x = torch.from_numpy(images[start : start + CHUNK]).unsqueeze(1).float() / 255.0
        y = corrupt(x, family, severity, gen)
        out[start : start + CHUNK] = (y[:, 0] * 255).round().to(torch.uint8).numpy()
    return out


def random_corruptions(
    x: torch.Tensor,
    families: tuple[str, ...],
    probability: float,
    max_severity: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Training augmentation: each face, with `probability`, gets one of `families` at a severity
    drawn from 1..`max_severity`; the rest stay as they are."""
    n = len(x)
    if not families or probability <= 0 or n == 0:
        return x
    chosen = torch.rand(n, generator=generator) < probability
    which = torch.randint(len(families), (n,), generator=generator)
    severity = torch.randint(1, max_severity + 1, (n,), generator=generator)
    out = x.clone()
    for i, family in enumerate(families):
        rows = (chosen & (which == i)).nonzero().flatten()
        if len(rows):
            idx = rows.to(x.device)
            out[idx] = corrupt(x[idx], family, severity[rows], generator)
    return out


def describe_families() -> list[dict]:
    """One row per family: name, group, the parameter and its five levels, whether the robust
    default trained on it (the README table and `--help`)."""
    return [
        {
            "family": f.name,
            "group": f.group,
            "parameter": f.unit,
            "levels": ", ".join(f"{v:g}" for v in f.levels),
            "trained": f.name in TRAINED_FAMILIES,
        }
        for f in FAMILIES.values()
    ]
