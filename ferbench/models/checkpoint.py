"""Checkpoints: a state_dict plus what rebuilds the model, its preprocessing and its evaluation.

Never a pickled module (those break across library versions); always loaded with
``weights_only=True``.  :func:`checkpoint_meta` is the one place that says what a checkpoint
carries.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ferbench.config import with_zooms
from ferbench.errors import FerbenchError
from ferbench.models.preprocess import Preprocess
from ferbench.utils.fileio import atomic_path

FORMAT = "ferbench-checkpoint-v1"
REQUIRED = ("model", "model_args", "class_names", "preprocess", "state_dict")


def checkpoint_meta(
    model: str,
    model_args: dict,
    class_names: list[str],
    preprocess: Preprocess,
    tta_shift: int = 0,
    **extra,
) -> dict:
    """Everything a predictor needs besides the weights: the model to build, its classes, its
    preprocessing and the test-time augmentation its reported accuracy used."""
    return {
        "model": model,
        "model_args": dict(model_args),
        "class_names": list(class_names),
        "preprocess": preprocess.to_dict(),
        "tta_shift": int(tta_shift),
        **extra,
    }


def test_views(meta: dict) -> str:
    """The test-time views behind a checkpoint's reported accuracy: "tencrop", "flip" or "none"
    (checkpoints from before flip TTA only record the ten-crop shift)."""
    return meta.get("tta") or ("tencrop" if meta.get("tta_shift") else "none")


def test_zooms(meta: dict) -> tuple[float, ...]:
    """The zooms those views were taken at (eval.scales; 1 alone where none were recorded):
    with `test_views`, every pass a checkpoint's test accuracy took, which an export keeps."""
    return tuple(float(z) for z in meta.get("tta_scales") or (1.0,))


def describe_views(tta: str, shift: int, scales=(1.0,)) -> str:
    views = {"tencrop": f"ten-crop ±{shift} px", "flip": "face and mirror"}.get(tta, "single view")
    return with_zooms(views, scales)


def save_checkpoint(path: Path, model: torch.nn.Module, meta: dict, **extra) -> None:
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    payload = {"format": FORMAT, **meta, "state_dict": state, **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict:
    """Load and check a ferbench checkpoint; every failure says why in one line."""
    path = Path(path)
    if not path.is_file():
        raise FerbenchError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FerbenchError(f"{path}: not a loadable PyTorch checkpoint ({reason[:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise FerbenchError(
            f"{path}: not a ferbench checkpoint (no '{FORMAT}' header; a bare "
            "state_dict does not say which model or preprocessing it needs)"
        )
    for key in REQUIRED:
        if key not in payload:
            raise FerbenchError(f"{path}: ferbench checkpoint is missing '{key}'")
    return payload


def load_weights(
    model: torch.nn.Module, state: dict, source: Path | str, new_head: bool = False
) -> list[str]:
    """Copy `state` into `model` (fp16 tensors are cast); with `new_head`, tensors whose shape
    differs (the classifier of another class count) are left freshly initialised and named."""
    own = model.state_dict()
    fresh = []
    if new_head:
        fresh = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        state = {k: v for k, v in state.items() if k not in fresh}
        if len(fresh) > 2:  # a classifier is a weight and a bias; more is another architecture
            raise FerbenchError(f"{source}: weights do not fit ({', '.join(fresh[:4])} differ)")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise FerbenchError(
            f"{source}: weights do not fit model {type(model).__name__} "
            f"({first[1].strip() if len(first) > 1 else first[0]})"
        ) from None
    if unexpected or set(missing) != set(fresh):
        odd = sorted(set(missing) - set(fresh)) + sorted(unexpected)
        raise FerbenchError(f"{source}: weights do not fit the model ({', '.join(odd[:4])})")
    return fresh


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile wrapper
