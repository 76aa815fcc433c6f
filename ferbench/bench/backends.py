"""Inference backends side by side: PyTorch fp32, PyTorch dynamic int8 (the fully connected
layers), ONNX Runtime fp32 and ONNX Runtime int8, on the same checkpoint.

Batch-1 latency (the live mode's case: one face) and batch-256 throughput (evaluation), each with
its ratio to PyTorch fp32.  ONNX int8 is calibrated on the validation faces given (static) or,
without them, dynamic.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ferbench.infer.predictor import Predictor


def bench_backends(checkpoint: Path, faces: np.ndarray | None = None, progress=None) -> list[dict]:
    """`faces`: uint8 validation faces of any size, for static int8 calibration."""
    from ferbench.data.images import resize_all
    from ferbench.infer.onnx import export_onnx, quantize_int8
    from ferbench.models.checkpoint import load_checkpoint

    step = progress or (lambda text: None)
    payload = load_checkpoint(checkpoint)
    size = int(payload["preprocess"]["input_size"])
    calibration = resize_all(faces, size) if faces is not None and len(faces) else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="ferbench-backends-") as tmp:
        fp32_path, int8_path = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(payload, fp32_path)
        fp32 = Predictor(fp32_path)
        kind = quantize_int8(fp32_path, int8_path, calibration, fp32.preprocess)
        predictors = {
            "torch fp32": Predictor(checkpoint, amp="off"),
            "torch int8 (dynamic)": Predictor(checkpoint, amp="off", quantize=True),
            "onnxruntime fp32": fp32,
            f"onnxruntime int8 ({kind})": Predictor(int8_path),
        }
        for name, predictor in predictors.items():
            step(f"{payload['model']}: {name}")
            speed = predictor.measure_speed()
            rows.append(
                {
                    "model": payload["model"],
                    "backend": name,
                    "latency_batch1_ms": speed["latency_batch1_ms"],
                    "throughput_batch256_img_s": speed["inference_images_per_s"],
                }
            )
    base = rows[0]
    for row in rows:
        row["latency_vs_torch_fp32"] = row["latency_batch1_ms"] / base["latency_batch1_ms"]
        row["throughput_vs_torch_fp32"] = (
            row["throughput_batch256_img_s"] / base["throughput_batch256_img_s"]
        )
    return rows
