"""User models: files added with `ferbench register` (kept in ``registry/``) and entry points.

``registry/index.yaml`` records, per model, the file it came from, its sha256, parameter count
and date.  Files are imported in isolation, so a broken file never half-registers anything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import os
import shutil
import sys
import warnings
from importlib import metadata
from pathlib import Path

from ferbench.errors import FerbenchError
from ferbench.models import cnn as _cnn  # noqa: F401  built-ins first: user names are checked
from ferbench.models import registry as _registry
from ferbench.models import timm_zoo as _timm_zoo  # noqa: F401  against them
from ferbench.models.registry import ENTRY_POINT_GROUP, read_index, registry_dir
from ferbench.utils.fileio import write_yaml

_loaded = False


def import_isolated(path: Path, source: str) -> _registry._Registry:
    """Import a model file and return what it registered, leaving the global registry alone."""
    if not path.is_file():
        raise FerbenchError(f"no such model file: {path}")
    module_name = f"ferbench_user_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise FerbenchError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    with _registry.capture_registrations(source) as captured:
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            raise FerbenchError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from exc
        except FerbenchError as exc:
            raise FerbenchError(f"{path}: {exc}") from exc
        except Exception as exc:  # the user's code may raise anything on import
            raise FerbenchError(f"{path}: import failed: {type(exc).__name__}: {exc}") from exc
    sys.modules[module_name] = module
    return captured


def check_builder(name: str, captured: _registry._Registry, num_classes: int = 7) -> int:
    """Build a captured model and check its output shape; return its parameter count."""
    import torch

    card = captured.cards[name]
    try:
        model = captured.builders[name](num_classes=num_classes, in_chans=card.in_chans)
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(1, card.in_chans, card.input_size, card.input_size))
    except Exception as exc:
        raise FerbenchError(
            f"model '{name}' failed to build or run: {type(exc).__name__}: {exc}"
        ) from exc
    if tuple(out.shape) != (1, num_classes):
        raise FerbenchError(
            f"model '{name}' returns shape {tuple(out.shape)} for a "
            f"1x{card.in_chans}x{card.input_size}x{card.input_size} input; "
            f"expected (1, {num_classes})"
        )
    return sum(p.numel() for p in model.parameters())


def register_file(path: Path, force: bool = False) -> list[dict]:
    """Validate a user's model file, copy it into the registry and record it in the index."""
    root = registry_dir()
    path = Path(path)
    captured = import_isolated(path, source=f"registry:{path.name}")
    if not captured.builders:
        raise FerbenchError(
            f"{path} registers no model: decorate a builder with "
            "@register_model (from ferbench.models import register_model)"
        )
    index = read_index(root)
    load_all()
    for name in captured.builders:
        card = _registry.registered_card(name)
        if card is not None and not card.source.startswith("registry:"):
            raise FerbenchError(
                f"model '{name}' is already registered as a {card.source} model "
                "and cannot be replaced"
            )
        if card is not None and not force:
            raise FerbenchError(f"model '{name}' is already registered; use --force to replace it")
    target = root / path.name
    owners = {e["file"] for n, e in index.items() if n not in captured.builders}
    if target.exists() and path.name in owners and target.resolve() != path.resolve():
        raise FerbenchError(f"{target} already holds other registered models; rename your file")
    entries = []
    for name in captured.builders:
        params = check_builder(name, captured)
        entries.append(
            {
                "name": name,
                "file": path.name,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "parameters": params,
                "date": dt.datetime.now().isoformat(timespec="seconds"),
            }
        )
    root.mkdir(parents=True, exist_ok=True)
    if target.resolve() != path.resolve():
        shutil.copyfile(path, root / f".{path.name}.tmp")
        os.replace(root / f".{path.name}.tmp", target)
    for entry in entries:
        index[entry["name"]] = {k: v for k, v in entry.items() if k != "name"}
    write_yaml(root / "index.yaml", index)
    for name in captured.builders:
        _registry.remove_model(name)
    _registry.merge_registrations(captured, replace=True)
    return entries


def unregister(name: str) -> str:
    """Remove a registered model; delete its file once no other model uses it."""
    root = registry_dir()
    index = read_index(root)
    if name not in index:
        known = ", ".join(sorted(index)) or "none"
        raise FerbenchError(f"'{name}' is not a registered user model (registered: {known})")
    entry = index.pop(name)
    write_yaml(root / "index.yaml", index)
    if not any(e["file"] == entry["file"] for e in index.values()):
        (root / entry["file"]).unlink(missing_ok=True)
    _registry.remove_model(name)
    return entry["file"]


def load_all() -> None:
    """Import the registered files and entry-point plugins once per process."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    root = registry_dir()
    files = sorted({e["file"] for e in read_index(root).values() if isinstance(e, dict)})
    for file in files:
        try:
            captured = import_isolated(root / file, source=f"registry:{file}")
            _registry.merge_registrations(captured)
        except FerbenchError as exc:
            warnings.warn(f"skipping registered model file: {exc}", stacklevel=2)
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            with _registry.capture_registrations(f"plugin:{entry_point.value}") as captured:
                entry_point.load()
            _registry.merge_registrations(captured)
        except Exception as exc:
            warnings.warn(f"skipping plugin {entry_point.name}: {exc}", stacklevel=2)


def reset() -> None:
    """Forget user models so the next lookup reloads them (tests, registry changes)."""
    global _loaded
    for name in _registry.registered_names():
        if _registry.registered_card(name).source != "builtin":
            _registry.remove_model(name)
    _loaded = False
