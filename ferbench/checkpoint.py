"""Checkpoints: a state_dict plus what rebuilds the model, its preprocessing and its evaluation.

Never a pickled module (those break across library versions); always loaded with
``weights_only=True``.  :func:`checkpoint_meta` is the one place that says what a checkpoint
carries.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ferbench.errors import FerbenchError
from ferbench.fileio import atomic_path
from ferbench.models.preprocess import Preprocess

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


def model_from_checkpoint(payload: dict, path: Path | str = "checkpoint") -> torch.nn.Module:
    from ferbench.models import create_model

    model = create_model(payload["model"], **dict(payload["model_args"]))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise FerbenchError(
            f"{path}: weights do not fit model '{payload['model']}' "
            f"({first[1].strip() if len(first) > 1 else first[0]})"
        ) from None
    return model.eval()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile wrapper
