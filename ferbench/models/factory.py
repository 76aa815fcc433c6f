"""Names → models: the built-in families, user files and plugins, and any timm architecture.

The registry is a leaf that only stores builders; this module loads what fills it (the built-in
model modules, ``registry/`` files and entry-point plugins) and resolves the ``timm/`` prefix.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from pathlib import Path
from typing import Callable

import torch.nn as nn

from ferbench.errors import FerbenchError
from ferbench.models import plugins  # built-ins (cnn, timm_zoo), registry/ files, entry points
from ferbench.models import timm_zoo as _timm_zoo
from ferbench.models.pretrained import resolve_weights, split_name
from ferbench.models.registry import ModelCard, registered, registered_card, registered_names


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching a shell-style pattern (``'resnet*'``)."""
    plugins.load_all()
    return [n for n in registered_names() if fnmatch.fnmatch(n, pattern)]


def is_model(name: str) -> bool:
    """A registered name, a shipped tag (``vggfer_s.fer2013``) or ``timm/<name>``."""
    plugins.load_all()
    name = split_name(name)[0]
    return registered(name) is not None or name.startswith("timm/")


def unknown_model_error(name: str) -> FerbenchError:
    close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `ferbench models`"
    return FerbenchError(f"unknown model '{name}'{hint} (any timm model works as timm/<name>)")


def model_card(name: str) -> ModelCard:
    plugins.load_all()
    name = split_name(name)[0]
    card = registered_card(name)
    if card is not None:
        return card
    if name.startswith("timm/"):
        return _timm_zoo.timm_card(name)
    raise unknown_model_error(name)


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int = 1,
    input_size: int | None = None,
    pretrained: bool | str = False,
    **overrides,
) -> nn.Module:
    """Build a model by name; ``None`` overrides are dropped so builders keep their defaults.

    A shipped tag (``vggfer_s.fer2013``) or ``pretrained=True``/a tag loads the shipped weights,
    with their class count unless `num_classes` asks for another (then the head starts fresh).
    """
    name, tag = split_name(name)
    if pretrained or tag:
        return _create_pretrained(
            name, tag or pretrained, num_classes, in_chans, input_size, overrides
        )
    num_classes = 7 if num_classes is None else num_classes
    card = model_card(name)
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    kwargs["input_size"] = input_size or card.input_size
    if name.startswith("timm/"):
        return _timm_zoo.create_timm(name[5:], num_classes=num_classes, in_chans=in_chans, **kwargs)
    builder, _ = registered(name)
    if not _accepts(builder, "input_size"):
        kwargs.pop("input_size")
    return builder(num_classes=num_classes, in_chans=in_chans, **kwargs)


def model_from_checkpoint(payload: dict, path: Path | str = "checkpoint") -> nn.Module:
    """The model a loaded checkpoint describes, with its weights, in eval mode."""
    from ferbench.models.checkpoint import load_weights

    model = create_model(payload["model"], **dict(payload["model_args"]))
    load_weights(model, payload["state_dict"], path)
    return model.eval()


def _create_pretrained(
    name: str,
    pretrained: bool | str,
    num_classes: int | None,
    in_chans: int,
    input_size: int | None,
    overrides: dict,
) -> nn.Module:
    from ferbench.models.checkpoint import load_checkpoint, load_weights

    weights = resolve_weights(name, pretrained)
    payload = load_checkpoint(weights.verified_path())
    args = {**payload["model_args"], **{k: v for k, v in overrides.items() if v is not None}}
    args["num_classes"] = num_classes or len(weights.class_names)
    args["input_size"] = input_size or args.get("input_size")
    if in_chans != args.get("in_chans", 1):
        raise FerbenchError(f"{weights.name} takes {args.get('in_chans', 1)}-channel faces")
    model = create_model(name, **args)
    load_weights(model, payload["state_dict"], weights.name, new_head=True)
    return model


def _accepts(fn: Callable, arg: str) -> bool:
    params = inspect.signature(fn).parameters
    return arg in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
