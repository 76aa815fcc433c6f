"""Knowledge distillation: a teacher's probabilities on the training faces, computed once.

The teacher is a finished run (its best.pt), an ensemble run (its members, with their weights
and temperatures), a checkpoint file or a shipped tag.  Each member sees the training faces as
its own test did (its input size, preprocessing and test-time views, at zoom 1 even where the
ensemble was evaluated with `--scales`: three times the passes for what measured no better),
so the student learns from the teacher's best guess of each face; the student's augmentation
still applies on top.  The probabilities are kept in the cache folder, keyed by the teacher's
checkpoints (sha256) and the faces' fingerprint, so a second student, seed or setting reuses
them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferbench.config import DataSpec, DistillConfig
from ferbench.data import FaceArrays, load_dataset
from ferbench.errors import FerbenchError
from ferbench.models.preprocess import Preprocess
from ferbench.utils.fileio import atomic_path, cache_dir, sha256_file

KEY = "train.distill.teacher"


@dataclass(frozen=True)
class Teacher:
    spec: str  # as the experiment names it
    # checkpoints, their weights (summing to 1) and the temperatures that temper their
    # probabilities (an ensemble built with --calibrate; 1 otherwise)
    members: tuple[tuple[Path, float, float], ...]

    @property
    def identity(self) -> str:
        """sha256 of the member checkpoints, weights and temperatures: what the cached
        probabilities depend on (an untempered member's part as before temperatures existed)."""
        digest = hashlib.sha256()
        for path, weight, temperature in self.members:
            scaled = "" if temperature == 1.0 else f"/T{temperature:.4f}"
            digest.update(f"{sha256_file(path)}:{weight:.6f}{scaled};".encode())
        return digest.hexdigest()

    def describe(self) -> dict:
        """What config.yaml, cards and benchmark rows say the teacher was."""
        return {
            "teacher": self.spec,
            "members": [
                {"checkpoint": str(p), "weight": round(w, 4), "temperature": round(t, 4)}
                for p, w, t in self.members
            ],
        }


def resolve_teacher(spec: str, base_dir: Path = Path(".")) -> Teacher:
    """A shipped tag, a run folder, an ensemble folder or a checkpoint file; a one-line error
    naming the key otherwise."""
    from ferbench.models.pretrained import read_index

    if not spec:
        raise FerbenchError(f"{KEY}: name a run folder, an ensemble folder, a .pt or a shipped tag")
    if spec in read_index():
        return Teacher(spec, ((read_index()[spec].verified_path(), 1.0, 1.0),))
    path = Path(spec).expanduser()
    if not path.is_absolute() and not path.exists():
        path = Path(base_dir) / path
    if path.is_file():
        return Teacher(spec, ((path, 1.0, 1.0),))
    members = _ensemble_members(path)
    if members:
        return Teacher(spec, members)
    if (path / "best.pt").is_file():
        return Teacher(spec, ((path / "best.pt", 1.0, 1.0),))
    raise FerbenchError(
        f"{KEY}: '{spec}' is not a finished run folder (best.pt), an ensemble folder, a "
        f"checkpoint file or a shipped tag ({', '.join(read_index()) or 'none shipped'})"
    )


def check_teacher(
    teacher: Teacher, spec: DataSpec, data: FaceArrays, base_dir: Path = Path(".")
) -> list[str]:
    """Each member checked against the student's splits (data/identity.py): a teacher that
    trained on the student's validation or test faces is refused in one line, since it would
    teach them; one line per member says what was found."""
    from ferbench.data.identity import refuse_seen
    from ferbench.models.pretrained import read_index, trained_on_tag

    tags = {w.path.resolve(): name for name, w in read_index().items()}
    lines = []
    for checkpoint, _, _ in dict.fromkeys(teacher.members):
        tag = tags.get(Path(checkpoint).resolve())
        if tag:
            model = trained_on_tag(tag)
        else:
            name = checkpoint.parent if checkpoint.name == "best.pt" else checkpoint
            model = trained_on_checkpoint(str(name), checkpoint)
        lines.append(refuse_seen(model, KEY, spec, data, base_dir))
    return lines


def _ensemble_members(path: Path) -> tuple[tuple[Path, float, float], ...]:
    try:
        metrics = json.loads((path / "metrics.json").read_text())
    except (OSError, ValueError):
        return ()
    from ferbench.models.pretrained import read_index

    shipped = read_index()  # a member may be a shipped model that joined by its tag
    members = []
    for member in metrics.get("members") or []:
        name = member["run"]
        checkpoint = shipped[name].verified_path() if name in shipped else Path(name) / "best.pt"
        if not checkpoint.is_file():
            raise FerbenchError(f"{KEY}: ensemble member {checkpoint} of {path} is not here")
        temperature = float(member.get("temperature", 1.0))  # 1: built without --calibrate
        members.append((checkpoint, float(member["weight"]), temperature))
    return tuple(members)


def teacher_probabilities(
    teacher: Teacher,
    data: FaceArrays,
    spec: DataSpec,
    base_dir: Path = Path("."),
    progress=lambda text: None,
) -> np.ndarray:
    """The teacher's probabilities (N_train × classes, float32) for the training faces of
    `data`, in their order; from the cache when this teacher has seen these faces.  Computing
    them costs each member one pass over the training faces with its test views (minutes for a
    ten-crop ensemble on a CPU), so `progress` hears of each member as it finishes."""
    from ferbench.infer.calibration import tempered
    from ferbench.infer.predictor import Predictor

    key = hashlib.sha256(f"{teacher.identity}:{data.fingerprint()}".encode()).hexdigest()[:24]
    file = cache_dir() / f"teacher-{key}.npy"
    try:
        probs = np.load(file)
        progress(f"the teacher's probabilities from the cache ({file.name})")
        return probs
    except (OSError, ValueError):
        pass
    started = time.perf_counter()
    train_labels = data.split("train")[1]
    total = None
    for index, (checkpoint, weight, temperature) in enumerate(teacher.members, 1):
        predictor = Predictor(checkpoint, amp="checkpoint")
        _check_classes(teacher, predictor.class_names, data.class_names)
        faces = data
        if predictor.input_size != data.size:
            faces = load_dataset(spec.replace(size=predictor.input_size), base_dir=base_dir)
        images, labels = faces.split("train")
        if not np.array_equal(labels, train_labels):
            raise FerbenchError(f"{KEY}: the faces at {predictor.input_size} px do not line up")
        probs = tempered(predictor.predict_arrays(images).astype(np.float32), temperature)
        probs = probs * weight
        total = probs if total is None else total + probs
        progress(
            f"teacher member {index}/{len(teacher.members)} ({checkpoint.parent}, "
            f"{predictor.input_size} px, {predictor.tta} views) done at "
            f"{time.perf_counter() - started:.0f} s"
        )
    total = total / sum(w for _, w, _ in teacher.members)
    try:
        with atomic_path(file) as tmp, open(tmp, "wb") as handle:
            np.save(handle, total)
    except OSError:  # a read-only cache folder: distil anyway
        pass
    return total


class OnlineTeacher:
    """The teacher's members in memory, shown each batch exactly as the student sees it
    (`views: student`): the same crop, flip, erasing and mixup, so the teacher's target always
    describes the image the student is asked about ("consistent teaching", Beyer et al., 2022).
    Costs each member one forward pass a step; a member listed twice runs once.  A tempered
    member's logits are divided by its temperature: on one view, the same p^(1/T)."""

    def __init__(self, teacher: Teacher, class_names, runtime, student: Preprocess):
        from ferbench.infer.predictor import Predictor

        weights: dict[tuple[Path, float], float] = {}
        for checkpoint, weight, temperature in teacher.members:
            weights[checkpoint, temperature] = weights.get((checkpoint, temperature), 0.0) + weight
        total = sum(weights.values())
        self.student, self.runtime = student, runtime
        self.members = []
        for (checkpoint, temperature), weight in weights.items():
            predictor = Predictor(checkpoint, device=str(runtime.device), amp=runtime.amp)
            _check_classes(teacher, predictor.class_names, class_names)
            model = _fold_batchnorm(predictor.model).to(memory_format=runtime.memory_format)
            preprocess = dataclasses.replace(
                predictor.preprocess, channels_last=runtime.channels_last
            )
            self.members.append((model, preprocess, weight / total, temperature))

    def __call__(self, x):
        """The teacher's probabilities (float32, N × classes) for the student's input batch."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            gray = self.student.unnormalize(x)
            total = 0.0
            for model, preprocess, weight, temperature in self.members:
                size = preprocess.input_size
                view = gray
                if gray.shape[-1] != size:
                    view = F.interpolate(gray, size=(size, size), mode="bilinear", antialias=True)
                with self.runtime.autocast():
                    logits = model(preprocess.normalize(view))
                total = total + weight * torch.softmax(logits.float() / temperature, 1)
        return total.clone()  # an ordinary tensor: inference tensors cannot enter autograd


def _fold_batchnorm(model):
    """The eval-mode model with each BatchNorm folded into the convolution before it (torch.fx):
    the same function, 7-15% faster a forward pass on 2 Zen 4 cores; a model that torch.fx
    cannot trace (data-dependent control flow) runs as it is."""
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(model.eval())
    except Exception:  # tracing errors have no common type; the unfused model is as correct
        return model


def _check_classes(teacher: Teacher, teacher_classes, data_classes) -> None:
    if list(teacher_classes) != list(data_classes):
        raise FerbenchError(
            f"{KEY}: {teacher.spec} predicts {', '.join(teacher_classes)}; the data "
            f"has {', '.join(data_classes)}"
        )


def distillation_loss(logits, label_loss, teacher_probs, cfg: DistillConfig, mix=None):
    """(1 − α)·`label_loss` + α·T²·KL(teacher ‖ student), the student softened by the
    temperature T and the teacher's probabilities sharpened or softened as p^(1/T),
    renormalised.  `label_loss` is the cross-entropy against the labels (or the votes).  For
    a mixed batch (`mix`), the two faces' softened targets are mixed by its share."""
    import torch.nn.functional as F

    t = cfg.temperature
    soft = teacher_probs.clamp_min(1e-8).pow(1.0 / t)
    soft = soft / soft.sum(1, keepdim=True)
    if mix is not None:
        soft = mix.targets(soft)
    kd = F.kl_div(F.log_softmax(logits / t, 1), soft, reduction="batchmean") * t * t
    return (1 - cfg.alpha) * label_loss + cfg.alpha * kd


def soft_cross_entropy(logits, target_probs, class_weights=None):
    """Cross-entropy against a distribution per face (FER+'s normalised votes), optionally
    weighted per class as the one-label loss is."""
    import torch.nn.functional as F

    log_probs = F.log_softmax(logits, 1)
    if class_weights is not None:
        log_probs = log_probs * class_weights
    return -(target_probs * log_probs).sum(1).mean()


def vote_targets(data: FaceArrays) -> np.ndarray:
    """Each training face's annotator votes, normalised (N_train × classes, float32)."""
    votes = data.extras.get("votes")
    if votes is None:
        raise FerbenchError(
            f"train.targets: votes needs annotator votes (data.kind: ferplus); "
            f"{data.dataset} has none"
        )
    train = votes[data.splits == 0].astype(np.float32)
    return train / np.maximum(train.sum(1, keepdims=True), 1e-8)


def trained_on_checkpoint(name: str, path: Path):
    """A .pt or .onnx file's data as it records it (its run folder beside it, when it is one):
    data/identity.py's TrainedOn."""
    from ferbench.data.identity import trained_on

    path = Path(path)
    if path.suffix == ".onnx":
        from ferbench.infer.onnx import read_metadata

        return trained_on(name, read_metadata(path), path)
    from ferbench.models.checkpoint import load_checkpoint

    return trained_on(name, load_checkpoint(path), path)
