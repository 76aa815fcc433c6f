"""Model registry in the style of timm: importing a module registers its builders.

A builder is a function ``name(num_classes=7, in_chans=1, **kwargs) -> nn.Module``; its name is
the model name.  Each model carries a :class:`ModelCard` (default input size, channels,
normalisation, one-line summary) so that training, prediction and export agree on preprocessing.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import torch.nn as nn

from ferbench.errors import FerbenchError

# FER2013 pixel statistics (0..1 scale), the default normalisation for models trained from scratch.
FER_MEAN = (0.5077,)
FER_STD = (0.2550,)


@dataclass
class ModelCard:
    name: str
    summary: str = ""
    family: str = "custom"
    input_size: int = 48
    in_chans: int = 1
    mean: tuple[float, ...] = FER_MEAN
    std: tuple[float, ...] = FER_STD
    source: str = "builtin"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Registry:
    builders: dict[str, Callable[..., nn.Module]] = field(default_factory=dict)
    cards: dict[str, ModelCard] = field(default_factory=dict)


_REGISTRY = _Registry()
_active = (
    _REGISTRY  # where @register_model writes; swapped while `ferbench register` inspects a file
)
_current_source = "builtin"


def register_model(
    fn: Callable | None = None,
    *,
    input_size: int = 48,
    in_chans: int = 1,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    summary: str | None = None,
    family: str | None = None,
):
    """Register a model builder; usable bare (``@register_model``) or with card fields."""

    def decorate(builder: Callable) -> Callable:
        name = builder.__name__
        if name in _active.builders:
            raise FerbenchError(f"model '{name}' is already registered")
        doc = inspect.getdoc(builder) or ""
        _active.builders[name] = builder
        _active.cards[name] = ModelCard(
            name=name,
            summary=summary if summary is not None else (doc.splitlines()[0] if doc else ""),
            family=family or ("custom" if _current_source != "builtin" else name),
            input_size=input_size,
            in_chans=in_chans,
            mean=tuple(mean) if mean is not None else FER_MEAN * in_chans,
            std=tuple(std) if std is not None else FER_STD * in_chans,
            source=_current_source,
        )
        return builder

    return decorate(fn) if fn is not None else decorate


@contextmanager
def capture_registrations(source: str) -> Iterator[_Registry]:
    """Collect what a module registers in a private registry instead of the global one."""
    global _active, _current_source
    previous, previous_source = _active, _current_source
    _active, _current_source = _Registry(), source
    try:
        yield _active
    finally:
        _active, _current_source = previous, previous_source


def merge_registrations(captured: _Registry, replace: bool = False) -> None:
    """Add builders captured from a user file to the global registry."""
    for name, builder in captured.builders.items():
        if name in _REGISTRY.builders and not replace:
            raise FerbenchError(f"model '{name}' is already registered")
        _REGISTRY.builders[name] = builder
        _REGISTRY.cards[name] = captured.cards[name]


def remove_model(name: str) -> None:
    _REGISTRY.builders.pop(name, None)
    _REGISTRY.cards.pop(name, None)


def _ensure_loaded() -> None:
    from ferbench.models import plugins

    plugins.load_all()


def list_models(pattern: str = "*") -> list[str]:
    """Names of registered models matching a shell-style pattern (``'resnet*'``)."""
    _ensure_loaded()
    return sorted(n for n in _REGISTRY.builders if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    _ensure_loaded()
    return name in _REGISTRY.builders or name.startswith("timm/")


def unknown_model_error(name: str) -> FerbenchError:
    close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `ferbench models`"
    return FerbenchError(f"unknown model '{name}'{hint} (any timm model works as timm/<name>)")


def model_card(name: str) -> ModelCard:
    _ensure_loaded()
    if name in _REGISTRY.cards:
        return _REGISTRY.cards[name]
    if name.startswith("timm/"):
        from ferbench.models.timm_zoo import timm_card

        return timm_card(name)
    raise unknown_model_error(name)


def create_model(
    name: str, num_classes: int = 7, in_chans: int = 1, input_size: int | None = None, **overrides
) -> nn.Module:
    """Build a model by name; ``None`` overrides are dropped so builders keep their defaults."""
    card = model_card(name)
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    kwargs["input_size"] = input_size or card.input_size
    if name.startswith("timm/"):
        from ferbench.models.timm_zoo import create_timm

        return create_timm(name[5:], num_classes=num_classes, in_chans=in_chans, **kwargs)
    builder = _REGISTRY.builders[name]
    if not _accepts(builder, "input_size"):
        kwargs.pop("input_size")
    return builder(num_classes=num_classes, in_chans=in_chans, **kwargs)


def _accepts(fn: Callable, arg: str) -> bool:
    params = inspect.signature(fn).parameters
    return arg in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
