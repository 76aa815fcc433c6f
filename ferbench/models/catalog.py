"""The zoo at a glance, cached: name, card, parameters and MFLOPs of every model.

Building every model and counting its FLOPs takes seconds (and importing torch alone about two),
so the figures are cached per ferbench version, model source files, user registry, plugins and
timm version.  A warm `ferbench models` reads one JSON file and never imports torch.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from importlib import metadata
from pathlib import Path

from ferbench import __version__
from ferbench.models.registry import ENTRY_POINT_GROUP, registry_dir
from ferbench.utils.fileio import cache_dir, write_json


def _signature(paths: list[Path]) -> list:
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in paths if p.is_file()]


def catalog_key(num_classes: int) -> str:
    """Everything that can change the list or its figures."""
    package = Path(__file__).resolve().parent
    registry = registry_dir()
    try:
        timm_version = metadata.version("timm")
    except metadata.PackageNotFoundError:
        timm_version = ""
    payload = [
        __version__,
        timm_version,
        num_classes,
        _signature(sorted(package.glob("*.py"))),
        _signature(sorted(registry.glob("*.py")) + [registry / "index.yaml"]),
        sorted(str(e) for e in metadata.entry_points(group=ENTRY_POINT_GROUP)),
    ]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:20]


def _cache_file(num_classes: int) -> Path:
    return cache_dir() / f"models-{catalog_key(num_classes)}.json"


def _build(num_classes: int) -> list[dict]:
    from ferbench.models.factory import create_model, list_models, model_card
    from ferbench.models.profile import count_flops, count_parameters

    rows = []
    for name in list_models():
        card = model_card(name)
        model = create_model(name, num_classes=num_classes, in_chans=card.in_chans)
        rows.append(
            {
                **card.to_dict(),
                "parameters": count_parameters(model),
                "flops": count_flops(model, card.in_chans, card.input_size),
            }
        )
    return rows


def catalog(pattern: str = "*", num_classes: int = 7) -> list[dict]:
    """One row per model matching `pattern`: its card plus parameters and forward FLOPs."""
    file = _cache_file(num_classes)
    try:
        rows = json.loads(file.read_text())
    except (OSError, ValueError):
        rows = _build(num_classes)
        write_json(file, rows)
    return [r for r in rows if fnmatch.fnmatch(r["name"], pattern)]
