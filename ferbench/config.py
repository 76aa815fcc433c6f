"""Typed, frozen configuration: what an experiment file may say, checked against the field types.

Every section is a frozen dataclass; its fields, their types and their defaults are the schema.
Validation is derived from the types (``int``, ``float``, ``bool``, ``str``, ``Literal`` choices,
``tuple[str, ...]``, ``dict``, nested sections), and every error is one line naming the file, the
key and, for an unknown key, the closest valid one.  No torch here: reading a config is instant.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from ferbench.errors import FerbenchError

DataKind = Literal[
    "auto",
    "fer2013",
    "ferplus",
    "folder",
    "synthetic",
    "rafdb",
    "affectnet",
    "expw",
    "ckplus",
    "jaffe",
]
DATA_KINDS: tuple[str, ...] = typing.get_args(DataKind)

# Settings that change where or how fast a trial runs, or what is reported about it, not what
# it learns.  Used by the config hash (a finished trial is skipped whatever these say) and by
# compare (runs that differ only here share a leaderboard row).  The data's identity is its content
# fingerprint, not its path.  `deterministic` picks deterministic kernels (the same numbers on a
# CPU); `target_acc` only names the validation accuracy whose first epoch compare reports.
RUNTIME_KEYS = frozenset(
    {
        "train.amp",
        "train.channels_last",
        "train.compile",
        "train.data_on_device",
        "train.deterministic",
        "eval.speed",
        "eval.corruptions",
        "eval.batch_size",
        "eval.target_acc",
        "data.cache",
        "data.path",
        "data.labels",
    }
)


class ConfigError(FerbenchError):
    pass


@dataclass(frozen=True)
class AugmentConfig:
    """Batched train-time augmentation (see data/augment.py)."""

    crop_padding: int = 4
    flip: bool = True
    rotate: float = 10.0
    scale: float = 0.1
    erase: float = 0.0
    # mirror each face in every other epoch (a random half in the first), instead of a fresh
    # coin each time: every face is seen both ways within any two epochs (airbench)
    alternate_flip: bool = False
    # mix each batch with a shuffled copy of itself, targets by the same share (mixup: Zhang et
    # al. 2018, the whole image; cutmix: Yun et al. 2019, a box); the value is alpha of the
    # Beta(alpha, alpha) share, 0 off; with both on, each batch takes one of them at random
    mixup: float = 0.0
    cutmix: float = 0.0
    # common corruptions (data/corrupt.py): this share of the faces gets one of
    # `corrupt_families` (empty: the robust default's trained families) at a severity drawn
    # from 1..`corrupt_severity`, after the geometric augmentation
    corrupt: float = 0.0
    corrupt_families: tuple[str, ...] = ()
    corrupt_severity: int = 5
    BATCH_MIXING = ("mixup", "cutmix")  # not fields: the settings applied to a batch as a whole
    CORRUPTION = ("corrupt", "corrupt_families", "corrupt_severity")

    @classmethod
    def none(cls) -> "AugmentConfig":
        return cls(crop_padding=0, flip=False, rotate=0.0, scale=0.0, erase=0.0)

    @property
    def active(self) -> bool:
        return any(self.per_image().values()) or self.mixing or self.corrupt > 0

    @property
    def mixing(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def per_image(self) -> dict:
        """The settings `augment_batch` applies to each face (the batch mixing and the
        corruptions are separate)."""
        skip = self.BATCH_MIXING + self.CORRUPTION
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


@dataclass(frozen=True)
class DistillConfig:
    """Learn from a teacher's probabilities as well as the labels (see train/distill.py)."""

    teacher: str = ""  # a run folder, an ensemble folder, a .pt file or a shipped tag
    alpha: float = 0.5  # weight of the teacher's term; 1 - alpha stays on the labels
    temperature: float = 1.0
    # test: the teacher's own test-time views of each clean training face, computed once and
    # cached; student: the teacher sees each augmented (and mixed) batch the student trains on,
    # one forward pass per member a step ("consistent teaching"; slower, no cache); clean: as
    # student, but the teacher sees the face before `augment.corrupt` and the student after it
    # (the clean face's answer taught for the corrupted face)
    views: Literal["test", "student", "clean"] = "test"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    scheduler: Literal["none", "step", "cosine", "plateau", "onecycle"] = "none"
    warmup_epochs: float = 0.0
    step_size: int = 10
    gamma: float = 0.1
    min_lr: float = 0.0
    plateau_patience: int = 3
    label_smoothing: float = 0.0
    # votes: cross-entropy against each face's normalised annotator votes (FER+; the FER+
    # paper's best scheme) instead of its one label; label_smoothing then does not apply
    targets: Literal["labels", "votes"] = "labels"
    class_weights: Literal["none", "balanced"] = "none"
    grad_clip: float = 0.0
    early_stopping: int = 0
    # efficiency levers (airbench for CIFAR-10, measured on FER2013 in experiments/speedrun*.yaml)
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: off); the
    #                   averaged weights are what is validated, checkpointed and shipped
    norm_bias_lr: float = 1.0  # learning-rate multiple for the biases of normalisation layers
    dirac_init: bool = False  # convolutions start as identity maps on their first channels
    distill: DistillConfig | None = None
    augment: AugmentConfig = AugmentConfig()
    seed: int = 0
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: bool = False
    deterministic: bool = False
    data_on_device: Literal["auto", "on", "off"] = "auto"


@dataclass(frozen=True)
class EvalConfig:
    tta: Literal["none", "flip", "tencrop"] = "none"  # flip: the face and its mirror
    # the test pass's views again at each zoom (multi-scale TTA; validation stays at zoom 1)
    scales: tuple[float, ...] = (1.0,)
    # the robustness suite on the test split once trained (data/corrupt.py): 'all', groups or
    # families; its figures go to metrics.json, compare and the card (README: Robustness)
    corruptions: tuple[str, ...] = ()
    batch_size: int = 512
    target_acc: float = 0.65
    speed: bool = True


@dataclass(frozen=True)
class DataSpec:
    """Where the faces come from and how to shape them."""

    kind: DataKind = "synthetic"
    path: str | None = None
    labels: str | None = None  # FER+ vote file (fer2013new.csv)
    contempt: bool = True  # FER+: keep the 8th class
    classes: tuple[str, ...] | None = None  # select and order classes
    merge: dict[str, str] | None = None
    drop: tuple[str, ...] | None = None
    size: int | None = None  # faces resized to size×size; the model's input size
    val_fraction: float = 0.1  # carved from train when the source has no validation split
    fraction: float = 1.0  # stratified subsample of every split, for quick checks
    seed: int = 0  # data seed: synthetic faces, carved splits, subsamples
    folds: int | None = None  # CK+ / JAFFE: subject-independent folds (test: fold, val: next)
    fold: int = 0
    neutral: Literal["none", "first"] = "none"  # CK+: `first` adds each sequence's first frame
    n_per_class: int = 300  # synthetic only
    cache: bool = True

    def to_dict(self) -> dict:
        return {k: v for k, v in to_plain(self).items() if v is not None}

    def replace(self, **changes) -> "DataSpec":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_size: int
    args: dict = field(default_factory=dict)
    pretrained: str | None = None  # shipped weights to start from, e.g. vggfer_s.fer2013


@dataclass(frozen=True)
class Trial:
    """One fully resolved training run; its run directory is ``<experiment>/<name>``."""

    experiment: str
    name: str  # e.g. cnn3/lr=0.1/seed=0
    model: ModelSpec
    data: DataSpec
    train: TrainConfig
    eval: EvalConfig
    base_dir: str = "."  # where relative data paths are resolved
    axes: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict:
        """The resolved configuration, as written to config.yaml."""
        return {
            "experiment": self.experiment,
            "trial": self.name,
            "model": {k: v for k, v in to_plain(self.model).items() if v is not None},
            "data": self.data.to_dict(),
            "train": to_plain(self.train),
            "eval": to_plain(self.eval),
        }

    def config_hash(self) -> str:
        return config_hash(self.to_dict())

    @property
    def tta_shift(self) -> int:
        """Pixels the ten-crop test views are shifted by (the training crop padding, at least 2);
        0 without TTA."""
        return max(self.train.augment.crop_padding, 2) if self.eval.tta == "tencrop" else 0

    @property
    def tta_flip(self) -> bool:
        """Mirror-only test views: two forward passes instead of ten-crop's ten."""
        return self.eval.tta == "flip"


def semantic_settings(resolved: dict) -> dict:
    """The settings of a resolved config that change the result: RUNTIME_KEYS left out, and
    every value equal to its default left out too, so a new option (added with a default that
    keeps the old behaviour) leaves the hash of every earlier run unchanged."""
    defaults = _section_defaults()
    out = {}
    for section in ("model", "data", "train", "eval"):
        given = resolved.get(section) or {}
        kept = {
            key: value for key, value in given.items() if f"{section}.{key}" not in RUNTIME_KEYS
        }
        out[section] = _without_defaults(kept, defaults.get(section, {}))
    return out


def config_hash(resolved: dict) -> str:
    """Hash of every setting that changes the result (see :func:`semantic_settings`)."""
    semantic = semantic_settings(resolved)
    return hashlib.sha256(json.dumps(semantic, sort_keys=True).encode()).hexdigest()[:16]


def changed_settings(before: dict, after: dict) -> list[str]:
    """What differs between two resolved configs' result-changing settings, as
    ``train.epochs 1 -> 2`` lines (nested keys flattened)."""
    old, new = flatten(semantic_settings(before)), flatten(semantic_settings(after))
    return [
        f"{key} {old.get(key, 'default')} -> {new.get(key, 'default')}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


_MISSING = object()


def _section_defaults() -> dict:
    return {
        "data": to_plain(DataSpec()),
        "train": to_plain(TrainConfig()),
        "eval": to_plain(EvalConfig()),
        "model": {"args": {}, "pretrained": None},
    }


def _without_defaults(given: dict, defaults: dict) -> dict:
    out = {}
    for key, value in given.items():
        default = defaults.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(default, dict):
            value = _without_defaults(value, default)
            if not value:
                continue
        elif _same(value, default):
            continue
        out[key] = value
    return out


@functools.cache
def default_settings() -> MappingProxyType:
    """Every setting's default, flattened (``data.fold`` → 0), built once and read-only; settings
    added later have their default in configs written before they existed."""
    return MappingProxyType(flatten(_section_defaults()))


def is_default(key: str, value: Any, defaults: dict) -> bool:
    """Whether a flattened setting holds its default (None where an older config lacks it)."""
    default = defaults.get(key, _MISSING)
    return _same(value, default) or (value is None and default is not _MISSING)


def _same(value: Any, default: Any) -> bool:
    if default is _MISSING:
        return False
    if isinstance(value, bool) or isinstance(default, bool):
        return value is default
    if isinstance(value, (int, float)) and isinstance(default, (int, float)):
        return value == default
    return to_plain(value) == to_plain(default)


def flatten(settings: dict, prefix: str = "") -> dict:
    """Nested settings as one level of dotted keys: {'augment': {'mixup': 0.4}} → augment.mixup."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def to_plain(value: Any) -> Any:
    """Dataclasses and tuples → dicts and lists (YAML/JSON friendly)."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


# --- validation derived from the field types --------------------------------------------------


def error(file: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{file}: {key}: {message}")


def check_keys(file: str, where: str, given: dict, known: set[str] | frozenset[str]) -> None:
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.5)
            hint = (
                f"; did you mean '{close[0]}'?"
                if close
                else f"; known keys: {', '.join(sorted(known))}"
            )
            raise error(file, f"{where}{key}", f"unknown key{hint}")


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(file: str, key: str, value: Any, hint: Any) -> Any:
    """Check one value against a type hint and return it in canonical form."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(file, key, value, inner)
    if origin is Literal:
        if str(value).lower() not in args:
            raise error(file, key, f"'{value}' is not one of {', '.join(args)}")
        return str(value).lower()
    if hint is AugmentConfig:
        return parse_augment(file, key, value)
    if hint is DistillConfig:
        return parse_distill(file, key, value)
    if hint is bool:
        if not isinstance(value, bool):
            raise error(file, key, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise error(file, key, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                return float(str(value))  # YAML 1.1 reads 5e-4 as a string
            except ValueError:
                raise error(file, key, f"expected a number, got {value!r}") from None
        return float(value)
    if hint is str:
        if isinstance(value, (dict, list)):
            raise error(file, key, f"expected a string, got {value!r}")
        return str(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise error(file, key, f"expected a list, got {value!r}")
        return tuple(coerce(file, key, v, args[0]) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise error(file, key, f"expected a mapping, got {value!r}")
        if args:
            return {str(k): coerce(file, f"{key}.{k}", v, args[1]) for k, v in value.items()}
        return dict(value)
    return value


def parse_section(
    cls: type,
    file: str,
    where: str,
    raw: Any,
    axis_ok: bool = False,
    allow: frozenset = frozenset(),
) -> dict:
    """Validate a mapping against `cls`'s fields.  With `axis_ok`, a list given for a scalar field
    is a grid axis: every element is checked and the list is kept.  Keys in `allow` pass
    through unchecked (the caller owns them)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise error(file, where.rstrip(".") or "<top>", f"expected a mapping, got {raw!r}")
    hints = field_types(cls)
    check_keys(file, where, raw, set(hints) | allow)
    out = {}
    for key, value in raw.items():
        if key in allow:
            continue
        hint = hints[key]
        takes_list = typing.get_origin(hint) in (tuple, list) or _optional_list(hint)
        if isinstance(value, list) and not takes_list:
            if not axis_ok or not value:
                raise error(file, f"{where}{key}", "a list (grid axis) is not allowed here")
            out[key] = [coerce(file, f"{where}{key}", v, hint) for v in value]
        else:
            out[key] = coerce(file, f"{where}{key}", value, hint)
    return out


def _optional_list(hint: Any) -> bool:
    return any(typing.get_origin(a) in (tuple, list) for a in typing.get_args(hint))


def parse_augment(file: str, key: str, value: Any) -> AugmentConfig:
    """`default`/true, `none`/false, or a mapping (unset keys off, as the reference transforms)."""
    if isinstance(value, AugmentConfig):
        return value
    if value in (None, "default", True):
        return AugmentConfig()
    if value in ("none", False):
        return AugmentConfig.none()
    if not isinstance(value, dict):
        raise error(
            file,
            key,
            "expected none, default or a mapping of " + ", ".join(field_types(AugmentConfig)),
        )
    checked = parse_section(AugmentConfig, file, f"{key}.", value)
    for name in AugmentConfig.BATCH_MIXING:
        if checked.get(name, 0) < 0:
            raise error(file, f"{key}.{name}", f"{checked[name]} is below 0 (0 is off)")
    if not 0 <= checked.get("corrupt", 0) <= 1:
        raise error(file, f"{key}.corrupt", f"{checked['corrupt']} is not a share in [0, 1]")
    if not 1 <= checked.get("corrupt_severity", 5) <= 5:
        raise error(file, f"{key}.corrupt_severity", "a severity from 1 to 5")
    return dataclasses.replace(AugmentConfig.none(), **checked)


def parse_distill(file: str, key: str, value: Any) -> DistillConfig:
    """A mapping {teacher, alpha, temperature}, or just the teacher."""
    if isinstance(value, DistillConfig):
        return value
    if isinstance(value, str):
        value = {"teacher": value}
    if not isinstance(value, dict):
        raise error(
            file, key, "expected {teacher: RUN_DIR | ENSEMBLE_DIR | TAG, alpha, temperature}"
        )
    config = DistillConfig(**parse_section(DistillConfig, file, f"{key}.", value))
    if not config.teacher:
        raise error(file, f"{key}.teacher", "required: a run folder, an ensemble folder or a tag")
    if not 0 <= config.alpha <= 1:
        raise error(file, f"{key}.alpha", f"{config.alpha} is not between 0 and 1")
    if config.temperature <= 0:
        raise error(file, f"{key}.temperature", "must be above 0")
    return config


def zoom_label(scales, sep: str = "/") -> str:
    """(0.9, 1.0, 1.1) -> "0.9/1/1.1": how reports and file names spell multi-scale zooms."""
    return sep.join(f"{s:g}" for s in scales)


def with_zooms(views: str, scales) -> str:
    """A description of test views, with its zooms when there are other than 1."""
    return views if list(scales) == [1.0] else f"{views} at zooms {zoom_label(scales)}"


def zoom_problem(scales: tuple[float, ...]) -> str | None:
    """Why a list of test zooms is unusable (None when it is fine): each from 0.5 to 2, none
    twice, at least one."""
    if not scales or len(set(scales)) < len(scales) or not all(0.5 <= s <= 2 for s in scales):
        return "expected distinct zooms from 0.5 to 2, e.g. [0.9, 1, 1.1]"
    return None


def parse_data(file: str, key: str, value: Any) -> DataSpec:
    """A data spec: a mapping, ``synthetic`` or a bare path."""
    if isinstance(value, str):
        value = {"kind": "synthetic"} if value == "synthetic" else {"kind": "auto", "path": value}
    if not isinstance(value, dict):
        raise error(file, key, "expected a mapping like {kind: fer2013, path: data/fer2013.csv}")
    spec = DataSpec(**parse_section(DataSpec, file, f"{key}.", value))
    if spec.kind != "synthetic" and not spec.path:
        raise error(file, f"{key}.path", f"required for kind {spec.kind}")
    return spec


SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9_.,+=@%-]+$")


def safe_segment(file: str, key: str, text: str) -> str:
    """A value that becomes one folder name: no separators, no '..', nothing hidden."""
    if not SAFE_SEGMENT.match(text) or text.startswith(".") or len(text) > 120:
        raise error(
            file,
            key,
            f"'{text}' cannot name a run folder (use letters, digits and _ . , + = @ % -, "
            "not starting with '.')",
        )
    return text
