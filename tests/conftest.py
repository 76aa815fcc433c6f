from __future__ import annotations

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


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A real ferbench checkpoint of a (randomly initialised) cnn5."""
    from ferbench.data.classes import FER2013_CLASSES
    from ferbench.models import Preprocess, create_model, model_card
    from ferbench.models.checkpoint import checkpoint_meta, save_checkpoint

    args = {"num_classes": 7, "in_chans": 1, "input_size": 32}
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    meta = checkpoint_meta(
        "cnn5", args, FER2013_CLASSES, Preprocess.for_model(model_card("cnn5"), 32), val_acc=0.5
    )
    save_checkpoint(path, create_model("cnn5", **args), {**meta, "epoch": 1})
    return path


@pytest.fixture(scope="session")
def astronaut_video(tmp_path_factory) -> tuple[Path, int]:
    """A 640x360 clip of scikit-image's public-domain astronaut face moving and scaling."""
    import cv2
    import numpy as np
    from skimage import data

    face = cv2.cvtColor(data.astronaut()[20:220, 120:300], cv2.COLOR_RGB2BGR)
    path = tmp_path_factory.mktemp("video") / "astronaut.mp4"
    frames = 24
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, (640, 360))
    for i in range(frames):
        frame = np.full((360, 640, 3), 90, np.uint8)
        scale = 0.8 + 0.4 * i / frames
        resized = cv2.resize(face, None, fx=scale, fy=scale)
        x, y = 40 + i * 14, 40 + (i % 6) * 8
        h, w = resized.shape[:2]
        frame[y : y + h, x : x + w] = resized[: 360 - y, : 640 - x]
        writer.write(frame)
    writer.release()
    return path, frames


@pytest.fixture
def shared_data_optional() -> Path | None:
    """The shared data folder, or None where it is absent (the test decides what to skip)."""
    return SHARED if SHARED.is_dir() else None


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
