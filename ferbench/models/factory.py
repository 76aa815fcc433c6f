"""Names → models: the built-in families, user files and plugins, and any timm architecture.

The registry is a leaf that only stores builders; this module loads what fills it (the built-in
model modules, ``registry/`` files and entry-point plugins) and resolves the ``timm/`` prefix.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from typing import Callable

import torch.nn as nn

from ferbench.errors import FerbenchError
from ferbench.models import plugins  # built-ins (cnn, timm_zoo), registry/ files, entry points
from ferbench.models import timm_zoo as _timm_zoo
from ferbench.models.registry import ModelCard, registered, registered_card, registered_names


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching a shell-style pattern (``'resnet*'``)."""
    plugins.load_all()
    return [n for n in registered_names() if fnmatch.fnmatch(n, pattern)]


def is_model(name: str) -> bool:
    plugins.load_all()
    return registered(name) is not None or name.startswith("timm/")


def unknown_model_error(name: str) -> FerbenchError:
    close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `ferbench models`"
    return FerbenchError(f"unknown model '{name}'{hint} (any timm model works as timm/<name>)")


def model_card(name: str) -> ModelCard:
    plugins.load_all()
    card = registered_card(name)
    if card is not None:
        return card
    if name.startswith("timm/"):
        return _timm_zoo.timm_card(name)
    raise unknown_model_error(name)


def create_model(
    name: str, num_classes: int = 7, in_chans: int = 1, input_size: int | None = None, **overrides
) -> nn.Module:
    """Build a model by name; ``None`` overrides are dropped so builders keep their defaults."""
    card = model_card(name)
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    kwargs["input_size"] = input_size or card.input_size
    if name.startswith("timm/"):
        return _timm_zoo.create_timm(name[5:], num_classes=num_classes, in_chans=in_chans, **kwargs)
    builder, _ = registered(name)
    if not _accepts(builder, "input_size"):
        kwargs.pop("input_size")
    return builder(num_classes=num_classes, in_chans=in_chans, **kwargs)


def _accepts(fn: Callable, arg: str) -> bool:
    params = inspect.signature(fn).parameters
    return arg in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
