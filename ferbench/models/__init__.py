"""Model zoo: ``register_model``, ``create_model``, ``list_models``, model cards, ``Preprocess``.

Names are resolved lazily (PEP 562), so ``from ferbench.models import register_model`` in a
user's file, or the cached catalog behind ``ferbench models``, does not build the zoo or import
torch until something asks for a model.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "create_model": "factory",
    "is_model": "factory",
    "list_models": "factory",
    "model_card": "factory",
    "unknown_model_error": "factory",
    "Preprocess": "preprocess",
    "ModelCard": "registry",
    "register_model": "registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ferbench.models' has no attribute '{name}'")
    return getattr(importlib.import_module(f"ferbench.models.{_EXPORTS[name]}"), name)
