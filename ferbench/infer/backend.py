"""Which inference backend `live` uses on a CPU: the fastest measured one whose accuracy stays
within half a point of fp32.

For a checkpoint, the candidates are PyTorch fp32, PyTorch dynamic int8 (fully connected
layers), ONNX Runtime fp32 and ONNX Runtime int8 (static, calibrated on the run's validation
faces).  Each is timed at batch 1 (live classifies a few faces per frame) and scored on the
validation split of the data the run was trained on; without that data only the exact backends
(the two fp32 ones) qualify.  The measurement runs once per checkpoint (a few seconds to a
minute) and is cached with the exported files, keyed by the checkpoint's sha256.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ferbench.errors import FerbenchError
from ferbench.infer.predictor import Predictor
from ferbench.runs import checkpoint_path
from ferbench.utils.fileio import cache_dir, write_json

TOLERANCE = 0.005  # accuracy a faster backend may lose against fp32
CHOICES = ("auto", "torch", "torch-int8", "onnx", "onnx-int8")
CACHE_VERSION = 1


@dataclass
class Measured:
    backend: str  # one of CHOICES but auto
    latency_ms: float
    val_acc: float | None  # None: no labelled data found


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def predictor_for(checkpoint: Path, backend: str, device: str = "cpu", progress=None):
    """A Predictor on the requested backend; `auto` measures (once) and picks.  Returns the
    predictor and a one-line description of the choice."""
    checkpoint = checkpoint_path(checkpoint)
    if backend not in CHOICES:
        raise FerbenchError(f"--backend {backend}: use one of {', '.join(CHOICES)}")
    if checkpoint.suffix == ".onnx" or device != "cpu":
        if backend not in ("auto", "torch", "onnx"):
            raise FerbenchError(f"--backend {backend} needs a .pt checkpoint on the CPU")
        predictor = Predictor(checkpoint, device=device)
        return predictor, f"{predictor.backend} (as given)"
    if backend == "auto" and not onnx_available():
        return Predictor(checkpoint, quantize=True), (
            "torch int8 (dynamic); install ferbench[onnx] to measure the ONNX Runtime backends"
        )
    folder = _folder(checkpoint)  # hashes the checkpoint: once, not per backend
    if backend == "auto":
        measured = measure_backends(checkpoint, folder, progress)
        best = choose(measured)
        return _build(checkpoint, best.backend, folder), describe(best, measured)
    return _build(checkpoint, backend, folder), backend


def choose(measured: list[Measured]) -> Measured:
    """The fastest backend within TOLERANCE of fp32's accuracy; without accuracy figures, the
    fastest exact (fp32) one."""
    reference = next(m for m in measured if m.backend == "torch")
    if reference.val_acc is None:
        allowed = [m for m in measured if m.backend in ("torch", "onnx")]
    else:
        allowed = [
            m
            for m in measured
            if m.val_acc is not None and m.val_acc >= reference.val_acc - TOLERANCE
        ]
    return min(allowed, key=lambda m: m.latency_ms)


def describe(best: Measured, measured: list[Measured]) -> str:
    base = next(m for m in measured if m.backend == "torch")
    text = f"{best.backend}: {best.latency_ms:.2f} ms per face vs {base.latency_ms:.2f} (torch)"
    if best.val_acc is not None and base.val_acc is not None:
        text += f", val acc {best.val_acc:.1%} vs {base.val_acc:.1%}"
    return text


def _folder(checkpoint: Path) -> Path:
    from ferbench.utils.fileio import sha256_file

    return cache_dir() / "backends" / f"v{CACHE_VERSION}-{sha256_file(checkpoint)[:20]}"


def _build(checkpoint: Path, backend: str, folder: Path) -> Predictor:
    if backend in ("torch", "torch-int8"):
        return Predictor(checkpoint, amp="off", quantize=backend == "torch-int8")
    path = folder / ("int8.onnx" if backend == "onnx-int8" else "fp32.onnx")
    if not path.exists():
        _export(checkpoint, folder)
    return Predictor(path)


def _export(checkpoint: Path, folder: Path):
    from ferbench.infer.export import export_checkpoint

    return export_checkpoint(
        checkpoint, folder / "int8.onnx", int8=True, fp32_out=folder / "fp32.onnx"
    )


def measure_backends(checkpoint: Path, folder: Path, progress=None) -> list[Measured]:
    """Latency and validation accuracy of the four backends, cached in `folder`."""
    record = folder / "measured.json"
    if record.exists():
        return [Measured(**row) for row in json.loads(record.read_text())]
    step = progress or (lambda text: None)
    step("measuring inference backends (once per checkpoint)")
    report = _export(checkpoint, folder)
    accuracy = (report.accuracy or {}).get("val", {})
    # torch int8 has no export-time figure: score it on the same faces when there are any
    int8_acc = None
    if accuracy:
        from ferbench.infer.export import parity_faces

        torch_int8 = _build(checkpoint, "torch-int8", folder)
        faces, _, _ = parity_faces(checkpoint, torch_int8.class_names, torch_int8.input_size, None)
        probs = torch_int8.predict_arrays(faces["val"].images, tta=False)
        int8_acc = float((probs.argmax(1) == faces["val"].labels).mean())
    scores = {
        "torch": accuracy.get("torch"),
        "torch-int8": int8_acc,
        "onnx": accuracy.get("onnx_fp32"),
        "onnx-int8": accuracy.get("onnx_int8"),
    }
    measured = []
    for backend in ("torch", "torch-int8", "onnx", "onnx-int8"):
        step(f"timing {backend}")
        predictor = _build(checkpoint, backend, folder)
        speed = predictor.measure_speed(8, 2, 50)
        measured.append(Measured(backend, speed["latency_batch1_ms"], scores[backend]))
    write_json(record, [asdict(m) for m in measured])
    return measured


def concrete_backend(source: Path, predictor, requested: str) -> str:
    """The backend `auto` chose, named so that workers build it without measuring again."""
    if requested != "auto" or Path(source).suffix == ".onnx":
        return requested
    if predictor.backend == "onnxruntime":
        return "onnx-int8" if predictor.path.name == "int8.onnx" else "onnx"
    import torch.ao.nn.quantized.dynamic as qd

    quantized = any(isinstance(m, qd.Linear) for m in predictor.model.modules())
    return "torch-int8" if quantized else "torch"
