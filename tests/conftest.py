from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path_factory, monkeypatch):
    """Every test gets its own cache and registry, so nothing leaks into the checkout."""
    cache = tmp_path_factory.getbasetemp() / "cache"  # shared cache: synthetic sets decode once
    monkeypatch.setenv("FERBENCH_CACHE_DIR", str(cache))
    registry = tmp_path_factory.mktemp("registry")
    monkeypatch.setenv("FERBENCH_REGISTRY", str(registry))
    from ferbench.models import plugins

    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
    os.environ.setdefault("FERBENCH_NO_WINDOW", "1")
