"""Checkpoints: a state_dict plus what rebuilds the model and its preprocessing.

Never a pickled module (those break across library versions); always loaded with
``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ferbench.errors import FerbenchError
from ferbench.fileio import atomic_path

FORMAT = "ferbench-checkpoint-v1"


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
    for key in ("model", "model_args", "class_names", "preprocess", "state_dict"):
        if key not in payload:
            raise FerbenchError(f"{path}: ferbench checkpoint is missing '{key}'")
    return payload


def model_from_checkpoint(payload: dict, path: Path | str = "checkpoint") -> torch.nn.Module:
    from ferbench.models import create_model

    args = dict(payload["model_args"])
    model = create_model(payload["model"], **args)
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
