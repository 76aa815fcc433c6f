"""Model registry in the style of timm: importing a module registers its builders.

A leaf: it imports nothing else of ferbench's models; ``factory`` resolves names on top of it.

A builder is a function ``name(num_classes=7, in_chans=1, **kwargs) -> nn.Module``; its name is
the model name.  Each model carries a :class:`ModelCard` (default input size, channels,
normalisation, one-line summary) so that training, prediction and export agree on preprocessing.
"""

from __future__ import annotations

import inspect
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:  # the registry stores builders; it never needs torch itself
    import torch.nn as nn

from ferbench.errors import FerbenchError
from ferbench.utils.fileio import read_yaml

ENTRY_POINT_GROUP = "ferbench.models"


def registry_dir() -> Path:
    """``$FERBENCH_REGISTRY``, else ``registry/`` of this checkout, else
    ``~/.ferbench/registry``."""
    if os.environ.get("FERBENCH_REGISTRY"):
        return Path(os.environ["FERBENCH_REGISTRY"])
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").exists() and (checkout / "registry").is_dir():
        return checkout / "registry"
    return Path.home() / ".ferbench" / "registry"


def read_index(root: Path | None = None) -> dict:
    index = (root or registry_dir()) / "index.yaml"
    data = read_yaml(index) if index.exists() else None
    return data if isinstance(data, dict) else {}


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


def registered(name: str) -> tuple[Callable[..., nn.Module], ModelCard] | None:
    """The builder and card registered under `name`, or None."""
    if name not in _REGISTRY.builders:
        return None
    return _REGISTRY.builders[name], _REGISTRY.cards[name]


def registered_names() -> list[str]:
    return sorted(_REGISTRY.builders)


def registered_card(name: str) -> ModelCard | None:
    return _REGISTRY.cards.get(name)
