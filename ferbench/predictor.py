"""Checkpoint → preprocessing → probabilities, batched; shared by live, predict, bench and eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ferbench.checkpoint import load_checkpoint, model_from_checkpoint
from ferbench.data.images import resize_square, to_gray
from ferbench.engine import Preprocess, select_device
from ferbench.errors import FerbenchError


def find_best_run(model_name: str, results: Path) -> Path:
    """The finished run of `model_name` under `results` with the best validation accuracy."""
    candidates, available = [], set()
    for status_file in Path(results).rglob("status.json"):
        run_dir = status_file.parent
        try:
            status = json.loads(status_file.read_text())
            metrics = json.loads((run_dir / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        if status.get("status") != "done" or not (run_dir / "best.pt").exists():
            continue
        parts = run_dir.relative_to(results).parts  # <experiment>/<model>/<settings...>
        name = parts[1] if len(parts) > 1 else ""
        available.add(name)
        if name == model_name.replace("/", "-"):
            candidates.append((metrics.get("best_val_acc", 0.0), str(run_dir)))
    if not candidates:
        have = ", ".join(sorted(available)) or "none"
        raise FerbenchError(
            f"no finished run of '{model_name}' under {results} (finished models: "
            f"{have}); train one with `ferbench run experiments/quickstart.yaml` "
            "or pass --checkpoint PATH"
        )
    return Path(max(candidates)[1])


class Predictor:
    """Classifies batches of face crops (any size, gray or BGR) exactly as the model was trained."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu", quantize: bool = False):
        path = Path(checkpoint)
        if path.is_dir():
            path = path / "best.pt"
        payload = load_checkpoint(path)
        self.path = path
        self.model_name = payload["model"]
        self.class_names: list[str] = list(payload["class_names"])
        pre = payload["preprocess"]
        self.device = select_device(device)
        self.preprocess = Preprocess(
            int(pre["input_size"]), int(pre["in_chans"]), tuple(pre["mean"]), tuple(pre["std"])
        )
        model = model_from_checkpoint(payload, path)
        if quantize:
            if self.device.type != "cpu":
                raise FerbenchError("--quantize is for CPU inference; drop it or use --device cpu")
            model = quantize_linear_int8(model)
        self.model = model.to(self.device).eval()
        self.quantized = quantize
        self.val_acc = payload.get("val_acc")

    @classmethod
    def from_cli(
        cls,
        model: str | None,
        checkpoint: str | None,
        results: str | Path = "results",
        device: str = "cpu",
        quantize: bool = False,
    ) -> "Predictor":
        if bool(model) == bool(checkpoint):
            raise FerbenchError("give exactly one of --model NAME or --checkpoint PATH")
        source = Path(checkpoint) if checkpoint else find_best_run(model, Path(results))
        return cls(source, device=device, quantize=quantize)

    @property
    def input_size(self) -> int:
        return self.preprocess.input_size

    def prepare(self, crops: list[np.ndarray]) -> torch.Tensor:
        size = self.input_size
        return torch.from_numpy(np.stack([resize_square(to_gray(c), size) for c in crops]))

    @torch.inference_mode()
    def predict(self, crops: list[np.ndarray]) -> np.ndarray:
        """Probabilities, one row per crop, in one forward pass."""
        if not crops:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        x = self.preprocess(self.prepare(crops).to(self.device))
        return torch.softmax(self.model(x).float(), dim=1).cpu().numpy()


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the fully connected layers (most of cnn3/cnn5's weights)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
