"""Checkpoint → preprocessing → probabilities, batched; shared by live, predict, bench and eval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ferbench.data.images import resize_square, to_gray
from ferbench.device import cpu_has_native_bf16, resolve_runtime, select_device
from ferbench.errors import FerbenchError
from ferbench.faces.align import FER2013_TEMPLATE
from ferbench.infer.batched import measure_speed, predict_logits
from ferbench.models.checkpoint import load_checkpoint, test_views, test_zooms
from ferbench.models.factory import model_from_checkpoint
from ferbench.models.preprocess import Preprocess
from ferbench.models.pretrained import DEFAULT_TAG, read_index
from ferbench.runs import checkpoint_path, choose_run


def resolve_source(
    model: str | None,
    checkpoint: str | None,
    results: str | Path,
    default: bool = True,
    data: str | Path | None = None,
    announce=None,
) -> Path:
    """--checkpoint PATH, --model with a shipped tag (``vggfer_s.fer2013``: the file inside the
    package) or a model name (the finished run `runs.choose_run` picks under `results`, the
    runs on `data` first; `announce` hears the one line naming it), or, given neither, the
    shipped default model when `default`."""
    if model and checkpoint:
        raise FerbenchError("give one of --model NAME or --checkpoint PATH, not both")
    if checkpoint:
        return Path(checkpoint)
    if not model:
        if default and DEFAULT_TAG in read_index():
            return read_index()[DEFAULT_TAG].verified_path()
        raise FerbenchError("give --model NAME or --checkpoint PATH")
    if model in read_index():
        return read_index()[model].verified_path()
    try:
        choice = choose_run(model, results, data)
    except FerbenchError as exc:
        shipped = ", ".join(read_index())
        hint = f"; shipped models work without training: {shipped}" if shipped else ""
        raise FerbenchError(f"{exc}{hint} (plain `ferbench live` uses {DEFAULT_TAG})") from None
    if announce is not None:
        announce(choice.line)
    return choice.run.best_checkpoint


def default_model_note(model: str | None, checkpoint: str | None) -> str | None:
    """The one line that says the shipped default model is in use (None when one was chosen)."""
    if model or checkpoint or DEFAULT_TAG not in read_index():
        return None
    weights = read_index()[DEFAULT_TAG]
    return (
        f"using the shipped model {weights.name} ({weights.metrics.get('test_acc', 0):.1%} on "
        f"{weights.dataset} test); --model or --checkpoint chooses another"
    )


class Predictor:
    """Classifies batches of face crops (any size, gray or BGR) exactly as the model was trained."""

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "cpu",
        quantize: bool = False,
        amp: str = "auto",
    ):
        """`amp`: auto (bf16 where the device runs it natively), bf16, fp16, off, or
        `checkpoint`: the precision the run was evaluated in, to reproduce its numbers (fp32
        where that was bf16 and this CPU would only emulate it)."""
        path = checkpoint_path(checkpoint)
        self.path = path
        self.backend = "onnxruntime" if path.suffix == ".onnx" else "torch"
        if self.backend == "onnxruntime":
            from ferbench.infer.onnx import OnnxModule, read_metadata

            payload = read_metadata(path)
            if quantize or amp not in ("auto", "off", "checkpoint") or str(device) != "cpu":
                raise FerbenchError(
                    f"{path.name}: an ONNX model runs on the CPU as exported (no --device, "
                    "--backend or precision choice); export with --int8 for int8"
                )
            amp, quantize = "off", payload.get("quantization", "none") != "none"
            model = OnnxModule(path)
        else:
            payload = load_checkpoint(path)
            model = None
        self.model_name = payload["model"]
        self.class_names: list[str] = list(payload["class_names"])
        if amp == "checkpoint":
            # the run's precision where this device runs it natively, else fp32: fp16 needs
            # CUDA, and bf16 without bf16 instructions is emulated (15.6x slower than fp32 on 2
            # Zen 3 cores for vggfer_s's ten-crop, for a face of 3,589: 71.36% against 71.38%)
            kind = select_device(device).type
            native = {"fp16": kind == "cuda", "bf16": kind != "cpu" or cpu_has_native_bf16()}
            amp = payload.get("amp", "off")
            amp = amp if native.get(amp, True) else "off"
        if quantize:  # dynamic int8 layers compute in fp32 around their int8 weights
            amp = "off"
        self.runtime = resolve_runtime(device, amp, channels_last="off", data_on_device="on")
        self.device = self.runtime.device
        self.preprocess = Preprocess.from_dict(payload["preprocess"])
        self.tta_shift = int(payload.get("tta_shift", 0))  # what the run's test accuracy used
        self.tta = test_views(payload)
        self.scales = test_zooms(payload)  # zooms of the run's test pass (.pt or .onnx)
        # where a detected face's landmarks go in the crop (faces/align.py): the checkpoint's
        # own, else FER2013's, whose crops every shipped model trained on
        self.face_template = tuple(map(tuple, payload.get("face_template") or FER2013_TEMPLATE))
        if model is None:
            model = model_from_checkpoint(payload, path)
            if quantize:
                if self.device.type != "cpu":
                    raise FerbenchError("int8 (torch-int8) is for CPU inference; use --device cpu")
                model = quantize_linear_int8(model)
        self.model = model.to(self.device).eval()
        self.val_acc = payload.get("val_acc")
        self.payload = {k: v for k, v in payload.items() if k != "state_dict"}

    @classmethod
    def from_cli(
        cls,
        model: str | None,
        checkpoint: str | None,
        results: str | Path = "results",
        device: str = "cpu",
        quantize: bool = False,
        amp: str = "auto",
        data: str | Path | None = None,
        announce=None,
    ) -> "Predictor":
        source = resolve_source(model, checkpoint, results, data=data, announce=announce)
        return cls(source, device, quantize, amp)

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
        with self.runtime.autocast():  # the one precision path, as predict_arrays takes
            logits = self.model(x)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def predict_arrays(
        self,
        images: np.ndarray,
        tta: bool = True,
        batch_size: int = 512,
        scales: tuple[float, ...] | None = None,
    ):
        """Probabilities for uint8 faces already at the input size (N×H×W), batched, with the
        checkpoint's test views when `tta`: the path a run's own test evaluation took.  Those
        views are taken at each zoom of `scales` (multi-scale test views; None: the zooms the
        run tested with)."""
        logits = predict_logits(
            self.model,
            self.preprocess,
            torch.from_numpy(np.ascontiguousarray(images)),
            self.runtime,
            batch_size,
            self.tta_shift if tta else 0,
            tta and self.tta == "flip",
            self.zooms(tta, scales),
        )
        return torch.softmax(logits, dim=1).numpy()

    def zooms(self, tta: bool = True, scales: tuple[float, ...] | None = None):
        """The zooms a prediction takes: `scales` when given, else the run's own test zooms
        with `tta` (a single zoom without)."""
        if scales is not None:
            return tuple(scales)
        return self.scales if tta else (1.0,)

    def measure_speed(self, *timing) -> dict:
        """`batched.measure_speed` of this model as it predicts (`timing`: batch size, repeats,
        latency runs)."""
        return measure_speed(self.model, self.preprocess, self.runtime, *timing)


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the fully connected layers (most of cnn3/cnn5's weights)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
