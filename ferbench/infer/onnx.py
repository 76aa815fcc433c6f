"""ONNX: export a checkpoint with everything a predictor needs in its metadata, quantize it to
int8 with ONNX Runtime, and run it behind the same interface as a torch model.

An exported file carries the model name and arguments, class names, preprocessing, the test
views its accuracy used (ten-crop or flip, at each of its zooms), its data fingerprint, the source
checkpoint's sha256, the ferbench version and, once measured, its parity figures; so a ``.onnx``
file works wherever a checkpoint does, with the same figures (live, predict, eval,
bench).  onnx and onnxruntime come with the optional extra ``ferbench[onnx]``.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ferbench import __version__
from ferbench.errors import FerbenchError
from ferbench.models.checkpoint import test_views, test_zooms
from ferbench.models.preprocess import Preprocess
from ferbench.utils.fileio import atomic_path

FORMAT = "ferbench-onnx-v1"
# stored as JSON strings
JSON_KEYS = ("model_args", "class_names", "preprocess", "parity", "tta_scales")
INPUT, OUTPUT = "input", "logits"


def require(module: str):
    """Import onnx or onnxruntime, or say in one line which extra brings it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise FerbenchError(
            f"ONNX support needs {module}, which comes with the optional extra: "
            "pip install 'ferbench[onnx]'"
        ) from None


def export_onnx(payload: dict, out: Path, source_sha256: str = "", opset: int = 17) -> Path:
    """Write the checkpoint's model as fp32 ONNX with a dynamic batch axis and ferbench
    metadata; `onnx.checker` must accept it."""
    from ferbench.models.factory import model_from_checkpoint

    onnx = require("onnx")
    model = model_from_checkpoint(payload).float().eval()
    pre = Preprocess.from_dict(payload["preprocess"])
    dummy = torch.zeros(1, pre.in_chans, pre.input_size, pre.input_size)
    with tempfile.TemporaryDirectory(prefix="ferbench-onnx-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                model,
                (dummy,),
                str(raw),
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
        proto = onnx.load(str(raw))
    write_metadata(
        proto,
        {
            "format": FORMAT,
            "model": payload["model"],
            "model_args": payload["model_args"],
            "class_names": payload["class_names"],
            "preprocess": payload["preprocess"],
            "tta_shift": int(payload.get("tta_shift", 0)),
            "tta": test_views(payload),
            # every test view the run's accuracy used: the zooms too (eval.scales), so `eval` of
            # the file takes the passes its checkpoint takes
            "tta_scales": list(test_zooms(payload)),
            # the faces it was trained on: eval's leak figures and teacher checks need them
            "data_fingerprint": str(payload.get("data_fingerprint") or ""),
            "source_sha256": source_sha256,
            "ferbench_version": __version__,
            "quantization": "none",
        },
    )
    onnx.checker.check_model(proto)
    save_proto(proto, out)
    return out


def write_metadata(proto, meta: dict) -> None:
    """Set ferbench's keys in the model's metadata_props (JSON for structured values)."""
    kept = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = json.dumps(value) if key in JSON_KEYS else str(value)


def read_metadata(path: Path) -> dict:
    """ferbench's metadata of an ONNX file; a foreign or corrupt file is a one-line error."""
    session = session_for(path)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if meta.get("format") != FORMAT:
        raise FerbenchError(
            f"{path}: an ONNX model, but not exported by ferbench (no class names or "
            "preprocessing in its metadata); export it with `ferbench export`"
        )
    out = {k: json.loads(v) if k in JSON_KEYS else v for k, v in meta.items()}
    out["tta_shift"] = int(out.get("tta_shift", 0))
    return out


def save_proto(proto, out: Path) -> None:
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())


def session_for(path: Path, threads: int | None = None):
    ort = require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise FerbenchError(f"ONNX model not found: {path}")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # No busy-waiting between runs: in the live loop ONNX Runtime's spinning workers took the
    # cores from the face detector (30.6 → 20.1 frames/s on 2 cores) for 1-2 faces per frame.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FerbenchError(f"{path}: not a loadable ONNX model ({reason[:160]})") from None


class OnnxModule(torch.nn.Module):
    """An ONNX Runtime session behind the torch module interface (float32 N×C×H×W in, logits
    out), so batched inference, TTA, live and bench run it unchanged."""

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__()
        self.path = Path(path)
        self.threads = threads
        self.session = session_for(self.path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def use_threads(self, threads: int | None) -> int | None:
        """Rebuild the session with `threads` intra-op threads (None: ONNX Runtime's choice);
        returns the previous setting."""
        previous = self.threads
        if threads != previous:
            self.threads, self.session = threads, session_for(self.path, threads)
        return previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().float().contiguous().cpu().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray | None, preprocess) -> str:
    """int8 with ONNX Runtime: static (QDQ, per-channel weights, activations calibrated on
    `calibration` uint8 faces) when faces are given, dynamic otherwise.  Returns which."""
    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    metadata = list(onnx.load(str(fp32)).metadata_props)  # the quantizers drop it
    with tempfile.TemporaryDirectory(prefix="ferbench-int8-") as tmp:
        prepared, quantized = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            if calibration is not None and len(calibration):

                class Faces(CalibrationDataReader):
                    def __init__(self):
                        self.batches = iter(
                            preprocess(torch.from_numpy(calibration[i : i + 64])).numpy()
                            for i in range(0, len(calibration), 64)
                        )

                    def get_next(self):
                        batch = next(self.batches, None)
                        return None if batch is None else {INPUT: batch}

                quantize_static(
                    str(prepared),
                    str(quantized),
                    Faces(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                )
                kind = "static"
            else:
                quantize_dynamic(str(prepared), str(quantized), weight_type=QuantType.QInt8)
                kind = "dynamic"
        proto = onnx.load(str(quantized))
    del proto.metadata_props[:]
    proto.metadata_props.extend(metadata)
    write_metadata(proto, {"quantization": kind})
    save_proto(proto, out)
    return kind
