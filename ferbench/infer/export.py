"""`ferbench export`: checkpoint → ONNX (fp32 or int8) with its parity measured on real faces.

The silent failure of deployment is an export that runs but disagrees with the trained model,
or an int8 model whose accuracy loss nobody measured.  So every export is compared with the
PyTorch model on the validation split of the data it was trained on (when that data can be
found): fp32 max |Δ probability| and top-1 agreement; for int8, agreement with fp32 and the
accuracy on validation and test.  The figures go into the file's metadata and the report.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ferbench.config import DataSpec
from ferbench.errors import FerbenchError
from ferbench.infer.cross_eval import MatchedSplit, matched_split
from ferbench.infer.onnx import (
    export_onnx,
    quantize_int8,
    require,
    save_proto,
    write_metadata,
)
from ferbench.infer.predictor import Predictor
from ferbench.models.checkpoint import load_checkpoint
from ferbench.runs import RunDir, checkpoint_path
from ferbench.utils.fileio import sha256_file

CALIBRATION_IMAGES = 1000  # static int8 calibration: this many validation faces


@dataclass
class ExportReport:
    out: str
    model: str
    source_sha256: str
    quantization: str  # none, static or dynamic
    parity_data: str  # what the figures were measured on
    images: int
    fp32_max_abs_prob_diff: float
    fp32_top1_agreement: float
    int8_top1_agreement: float | None = None
    accuracy: dict = field(default_factory=dict)  # split -> {torch, onnx_fp32, onnx_int8}

    def to_dict(self) -> dict:
        return asdict(self)


def parity_faces(
    checkpoint: Path, class_names: list[str], size: int, data: DataSpec | None
) -> tuple[dict[str, MatchedSplit], str, bool]:
    """Validation and test faces for the parity figures: `data`, else the run's own data when
    its config.yaml points at a file that exists here, else synthetic faces (parity only: no
    accuracy).  Returns the splits, a description and whether the labels mean anything."""
    from ferbench.data import load_dataset

    labelled = True
    if data is None:
        own = RunDir(checkpoint.parent).data_spec()
        data = own if own is not None and own.kind != "synthetic" else None
    if data is None or data.kind == "synthetic":
        labelled = data is not None
        data = data or DataSpec(kind="synthetic", n_per_class=60)
    faces = load_dataset(data.replace(size=size))
    splits = {s: matched_split(faces, s, class_names) for s in ("val", "test")}
    return splits, faces.source, labelled


def export_checkpoint(
    checkpoint: Path,
    out: Path,
    int8: bool = False,
    opset: int = 17,
    data: DataSpec | None = None,
    progress=None,
    fp32_out: Path | None = None,
) -> ExportReport:
    """Export, quantize when asked, measure parity, and record the figures in the file.  With
    `int8`, `fp32_out` keeps the intermediate fp32 model too."""
    step = progress or (lambda text: None)
    checkpoint = checkpoint_path(checkpoint)
    if checkpoint.suffix == ".onnx":
        raise FerbenchError(f"{checkpoint} is already ONNX; export from a .pt checkpoint")
    payload = load_checkpoint(checkpoint)
    out = Path(out)
    if out.suffix != ".onnx":
        raise FerbenchError(f"--out {out}: the file name must end in .onnx")
    source_sha256 = sha256_file(checkpoint)
    torch_model = Predictor(checkpoint, amp="off")
    step("reading parity data")
    splits, source, labelled = parity_faces(
        checkpoint, torch_model.class_names, torch_model.input_size, data
    )
    with tempfile.TemporaryDirectory(prefix="ferbench-export-") as tmp:
        fp32_path = (Path(fp32_out) if fp32_out else Path(tmp) / "fp32.onnx") if int8 else out
        step("exporting fp32 ONNX")
        export_onnx(payload, fp32_path, source_sha256, opset)
        fp32 = Predictor(fp32_path)
        val = splits["val"]
        step("measuring fp32 parity")
        p_torch, p_fp32 = (m.predict_arrays(val.images, tta=False) for m in (torch_model, fp32))
        report = ExportReport(
            out=str(out),
            model=payload["model"],
            source_sha256=source_sha256,
            quantization="none",
            parity_data=f"{source} (validation split)",
            images=len(val.labels),
            fp32_max_abs_prob_diff=float(np.abs(p_torch - p_fp32).max()),
            fp32_top1_agreement=_agreement(p_torch, p_fp32),
        )
        int8_model = None
        if int8:
            step("quantizing to int8")
            calibration = val.images[:CALIBRATION_IMAGES] if labelled else None
            report.quantization = quantize_int8(fp32_path, out, calibration, fp32.preprocess)
            int8_model = Predictor(out)
            report.int8_top1_agreement = _agreement(
                p_fp32, int8_model.predict_arrays(val.images, tta=False)
            )
        if labelled:
            step("measuring accuracy")
            models = {"torch": torch_model, "onnx_fp32": fp32, "onnx_int8": int8_model}
            report.accuracy = {
                split: {
                    name: _accuracy(model, faces)
                    for name, model in models.items()
                    if model is not None
                }
                for split, faces in splits.items()
            }
        _record_parity(out, report)
        if int8 and fp32_out:
            _record_parity(Path(fp32_out), report)
    return report


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def _accuracy(model: Predictor, faces: MatchedSplit) -> float:
    """Single-view accuracy (no TTA): the figure that tells backends apart, quickly."""
    return float((model.predict_arrays(faces.images, tta=False).argmax(1) == faces.labels).mean())


def _record_parity(out: Path, report: ExportReport) -> None:
    """Add the figures to the file's metadata; the other keys stay as they are."""
    proto = require("onnx").load(str(out))
    write_metadata(proto, {"parity": {k: v for k, v in report.to_dict().items() if k != "out"}})
    save_proto(proto, out)
