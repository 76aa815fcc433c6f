"""Shipped weights: timm-style tags (``vggfer_s.fer2013``) for checkpoints inside the package.

Each tag is a ferbench checkpoint with fp16 tensors in ``weights/``, its sha256, its measured
metrics and a model card (Markdown) beside it.  ``weights/index.json`` lists them; it is written
by ``python -m ferbench.models.pack`` from a finished run, never typed.  Reading the index imports
no torch, so ``ferbench models`` stays instant.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from ferbench.errors import FerbenchError
from ferbench.utils.fileio import sha256_file

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
INDEX = WEIGHTS_DIR / "index.json"
DEFAULT_TAG = "vggfer_s.fer2013_robust"  # what `live`, `predict` and `eval` use given no model


@dataclass(frozen=True)
class PretrainedWeights:
    """One shipped weight file and what was measured with it (torchvision's ``Weights.meta``)."""

    name: str  # model.tag, e.g. vggfer_s.fer2013
    model: str
    file: str
    sha256: str
    class_names: tuple[str, ...]
    input_size: int
    dataset: str
    data_fingerprint: str = ""  # the content of the faces it was trained and measured on
    model_args: dict = field(default_factory=dict)  # how the model was built (widths, size)
    metrics: dict = field(default_factory=dict)
    recipe: str = ""
    card: str = ""
    license: str = ""

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file

    @property
    def card_path(self) -> Path:
        return WEIGHTS_DIR / self.card

    def verified_path(self) -> Path:
        """The file, after checking its sha256 (once per process)."""
        _check_sha256(self.path, self.sha256)
        return self.path


@functools.lru_cache(maxsize=1)
def read_index() -> dict[str, PretrainedWeights]:
    if not INDEX.is_file():
        return {}
    rows = json.loads(INDEX.read_text())
    return {
        name: PretrainedWeights(name=name, **{**row, "class_names": tuple(row["class_names"])})
        for name, row in rows.items()
    }


def split_name(name: str) -> tuple[str, str | None]:
    """``vggfer_s.fer2013`` → ``("vggfer_s", "fer2013")``; a plain model name has no tag."""
    if name in read_index():
        weights = read_index()[name]
        return weights.model, weights.tag
    return name, None


def resolve_weights(model: str, pretrained: bool | str) -> PretrainedWeights:
    """The weights ``pretrained`` names for `model`: True (the default weights where they are
    this model's, else its first tag), a tag (``fer2013``) or a full name (``vggfer_s.fer2013``)."""
    index = read_index()
    if pretrained is True:
        if DEFAULT_TAG in index and index[DEFAULT_TAG].model == model:
            return index[DEFAULT_TAG]
        tags = [w for w in index.values() if w.model == model]
        if not tags:
            raise FerbenchError(f"no shipped weights for '{model}'; shipped: {_shipped()}")
        return tags[0]
    name = str(pretrained)
    name = name if name in index else f"{model}.{name}"
    if name not in index or index[name].model != model:
        raise FerbenchError(
            f"no shipped weights '{pretrained}' for model '{model}'; shipped: {_shipped()}"
        )
    return index[name]


def trained_on_tag(name: str):
    """A shipped model's data as its index records it (data/identity.py's TrainedOn)."""
    from ferbench.data.identity import TrainedOn

    weights = read_index()[name]
    return TrainedOn(name, weights.data_fingerprint or None, weights.input_size, None,
                     weights.dataset)  # fmt: skip


def check_start(name: str, spec, data, base_dir: Path | None = None) -> str:
    """A fine-tuning start checked against the run's splits (data/identity.py): shipped weights
    that trained on the run's validation or test faces are refused in one line (they would
    bring those faces into training, and validation chooses the checkpoint)."""
    from ferbench.data.identity import refuse_seen

    return refuse_seen(trained_on_tag(name), "model.pretrained", spec, data, base_dir)


def _shipped() -> str:
    return ", ".join(read_index()) or "none in this install"


@functools.lru_cache(maxsize=None)
def _check_sha256(path: Path, expected: str) -> None:
    if not path.is_file():
        raise FerbenchError(f"shipped weights missing: {path} (reinstall ferbench)")
    digest = sha256_file(path)
    if digest != expected:
        raise FerbenchError(
            f"{path.name}: sha256 {digest[:12]}… differs from the recorded {expected[:12]}… "
            "(damaged or replaced file; reinstall ferbench)"
        )
