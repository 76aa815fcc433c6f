"""Experiment files: schema, validation with one-line messages, grid expansion, trial names.

Any setting written as a list is a grid axis; the trials are the cartesian product of
models × datasets × every list-valued setting.  A model entry may carry its own overrides.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ferbench.data.loader import DATA_KINDS, DataSpec
from ferbench.errors import FerbenchError

# key: (type or tuple of choices, default).  Types: int, float, bool, str, dict.
TRAIN_SCHEMA: dict[str, tuple[Any, Any]] = {
    "epochs": (int, 10),
    "batch_size": (int, 128),
    "optimizer": (("sgd", "adam", "adamw"), "sgd"),
    "lr": (float, 0.01),
    "momentum": (float, 0.9),
    "nesterov": (bool, False),
    "weight_decay": (float, 5e-4),
    "scheduler": (("none", "step", "cosine", "plateau", "onecycle"), "none"),
    "warmup_epochs": (float, 0.0),
    "step_size": (int, 10),
    "gamma": (float, 0.1),
    "min_lr": (float, 0.0),
    "plateau_patience": (int, 3),
    "label_smoothing": (float, 0.0),
    "class_weights": (("none", "balanced"), "none"),
    "grad_clip": (float, 0.0),
    "early_stopping": (int, 0),
    "augment": (dict, None),
    "seed": (int, 0),
    "amp": (("auto", "bf16", "fp16", "off"), "auto"),
    "channels_last": (("auto", "on", "off"), "auto"),
    "compile": (bool, False),
    "deterministic": (bool, False),
    "data_on_device": (("auto", "on", "off"), "auto"),
}
AUGMENT_SCHEMA: dict[str, tuple[Any, Any]] = {
    "crop_padding": (int, 4),
    "flip": (bool, True),
    "rotate": (float, 10.0),
    "scale": (float, 0.1),
    "erase": (float, 0.0),
}
NO_AUGMENT = {"crop_padding": 0, "flip": False, "rotate": 0.0, "scale": 0.0, "erase": 0.0}
EVAL_SCHEMA: dict[str, tuple[Any, Any]] = {
    "tta": (("none", "tencrop"), "none"),
    "batch_size": (int, 512),
    "target_acc": (float, 0.65),
    "speed": (bool, True),
}


def defaults(schema: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """The default value of every key of a schema: a fresh dict the caller may change."""
    return {key: default for key, (_, default) in schema.items()}


MODEL_KEYS = {"name", "input_size", "classes", "merge", "drop", "args"}
DATA_SCHEMA: dict[str, tuple[Any, Any]] = {
    "kind": (DATA_KINDS, "synthetic"),
    "path": (str, None),
    "labels": (str, None),
    "contempt": (bool, True),
    "classes": (list, None),
    "merge": (dict, None),
    "drop": (list, None),
    "size": (int, None),
    "val_fraction": (float, 0.1),
    "fraction": (float, 1.0),
    "seed": (int, 0),
    "n_per_class": (int, 300),
    "cache": (bool, True),
}
TOP_KEYS = {"name", "description", "data", "models", "train", "eval"}


@dataclass
class Trial:
    """One fully resolved training run."""

    experiment: str
    model: dict  # name, input_size, args
    data: dict  # a DataSpec as a dict
    train: dict
    eval: dict
    name: str = ""  # relative run directory, e.g. cnn3/lr=0.1/seed=0
    base_dir: str = "."  # where relative data paths are resolved
    axes: dict = field(default_factory=dict)

    def resolved(self) -> dict:
        return {
            "experiment": self.experiment,
            "trial": self.name,
            "model": self.model,
            "data": self.data,
            "train": self.train,
            "eval": self.eval,
        }

    def config_hash(self) -> str:
        """Hash of everything that changes the result (not where or how fast it runs)."""
        semantic = copy.deepcopy(self.resolved())
        for key in ("amp", "channels_last", "compile", "data_on_device"):
            semantic["train"].pop(key, None)
        semantic["eval"].pop("speed", None)
        semantic["data"].pop("cache", None)
        return hashlib.sha256(json.dumps(semantic, sort_keys=True).encode()).hexdigest()[:16]


class ExperimentError(FerbenchError):
    pass


def _err(file: str, key: str, message: str) -> ExperimentError:
    return ExperimentError(f"{file}: {key}: {message}")


def _check_keys(file: str, where: str, given: dict, known: set[str]) -> None:
    for key in given:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.5)
            hint = (
                f"; did you mean '{close[0]}'?"
                if close
                else f"; known keys: {', '.join(sorted(known))}"
            )
            raise _err(file, f"{where}{key}", f"unknown key{hint}")


def _coerce(file: str, key: str, value: Any, kind: Any) -> Any:
    if value is None:
        return None
    if isinstance(kind, tuple):
        if str(value).lower() not in kind:
            raise _err(file, key, f"'{value}' is not one of {', '.join(kind)}")
        return str(value).lower()
    if kind is bool:
        if not isinstance(value, bool):
            raise _err(file, key, f"expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _err(file, key, f"expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                return float(str(value))  # YAML reads 5e-4 as a string
            except ValueError:
                raise _err(file, key, f"expected a number, got {value!r}") from None
        return float(value)
    if kind is str:
        return str(value)
    if kind is list:
        if not isinstance(value, list):
            raise _err(file, key, f"expected a list, got {value!r}")
        return value
    if kind is dict:
        if not isinstance(value, dict):
            raise _err(file, key, f"expected a mapping, got {value!r}")
        return value
    return value


def _validate_section(file: str, where: str, section: dict, schema: dict, axis_ok: bool) -> dict:
    """Check keys and types; list values (grid axes) are checked element by element."""
    _check_keys(file, where, section, set(schema))
    out = {}
    for key, value in section.items():
        kind = schema[key][0]
        if key == "augment":
            out[key] = _validate_augment(file, f"{where}{key}", value)
        elif isinstance(value, list) and kind is not list:
            if not axis_ok or not value:
                raise _err(file, f"{where}{key}", "a list (grid axis) is not allowed here")
            out[key] = [_coerce(file, f"{where}{key}", v, kind) for v in value]
        else:
            out[key] = _coerce(file, f"{where}{key}", value, kind)
    return out


def _validate_augment(file: str, key: str, value: Any) -> dict:
    if value in (None, "default", True):
        return defaults(AUGMENT_SCHEMA)
    if value in ("none", False):
        return dict(NO_AUGMENT)
    if not isinstance(value, dict):
        raise _err(file, key, f"expected none, default or a mapping of {', '.join(AUGMENT_SCHEMA)}")
    checked = _validate_section(file, f"{key}.", value, AUGMENT_SCHEMA, axis_ok=False)
    return {**dict(NO_AUGMENT), **checked}


def _validate_data(file: str, key: str, value: Any) -> dict:
    if isinstance(value, str):
        value = {"kind": "synthetic"} if value == "synthetic" else {"kind": "auto", "path": value}
    if not isinstance(value, dict):
        raise _err(file, key, "expected a mapping like {kind: fer2013, path: data/fer2013.csv}")
    checked = _validate_section(file, f"{key}.", value, DATA_SCHEMA, axis_ok=False)
    if checked.get("kind", "synthetic") != "synthetic" and not checked.get("path"):
        raise _err(file, f"{key}.path", f"required for kind {checked.get('kind')}")
    return checked


def _validate_model(file: str, index: int, entry: Any) -> dict:
    from ferbench.models import is_model
    from ferbench.models._registry import unknown_model_error

    key = f"models[{index}]"
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise _err(file, key, "expected a model name or a mapping with 'name'")
    _check_keys(file, f"{key}.", entry, MODEL_KEYS | set(TRAIN_SCHEMA))
    if not is_model(str(entry["name"])):
        raise _err(file, f"{key}.name", str(unknown_model_error(str(entry["name"]))))
    model = {"name": str(entry["name"])}
    sizes = entry.get("input_size")
    if sizes is not None:
        for size in sizes if isinstance(sizes, list) else [sizes]:
            _coerce(file, f"{key}.input_size", size, int)
        model["input_size"] = sizes
    for opt, kind in (("classes", list), ("merge", dict), ("drop", list), ("args", dict)):
        if opt in entry:
            model[opt] = _coerce(file, f"{key}.{opt}", entry[opt], kind)
    overrides = {k: v for k, v in entry.items() if k in TRAIN_SCHEMA}
    model["train"] = _validate_section(file, f"{key}.", overrides, TRAIN_SCHEMA, axis_ok=True)
    return model


def apply_overrides(raw: dict, overrides: list[str], file: str) -> dict:
    """Apply ``--set train.epochs=1``-style overrides (values parsed as YAML)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise FerbenchError(f"--set {item}: expected KEY=VALUE, e.g. train.epochs=1")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if parts[0] not in TOP_KEYS:
            raise _err(
                file,
                key,
                f"unknown section '{parts[0]}' in --set; use one of {', '.join(sorted(TOP_KEYS))}",
            )
        node = raw
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = yaml.safe_load(text)
    return raw


def load(path: str | Path, overrides: list[str] | None = None) -> list[Trial]:
    """Read, validate and expand an experiment file into trials."""
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise FerbenchError(f"experiment file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise FerbenchError(
            f"{file}:{where} not valid YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(raw, dict):
        raise FerbenchError(f"{file}: expected a mapping with name, data, models, train")
    raw = apply_overrides(raw, overrides or [], file)
    return expand(raw, file, base_dir=path.parent)


def expand(raw: dict, file: str = "<experiment>", base_dir: Path = Path(".")) -> list[Trial]:
    _check_keys(file, "", raw, TOP_KEYS)
    name = str(raw.get("name") or Path(file).stem)
    data_raw = raw.get("data", {"kind": "synthetic"})
    datasets = [
        _validate_data(file, f"data[{i}]" if isinstance(data_raw, list) else "data", d)
        for i, d in enumerate(data_raw if isinstance(data_raw, list) else [data_raw])
    ]
    models_raw = raw.get("models")
    if not models_raw:
        raise _err(file, "models", "at least one model is needed, e.g. models: [cnn3]")
    if not isinstance(models_raw, list):
        models_raw = [models_raw]
    models = [_validate_model(file, i, m) for i, m in enumerate(models_raw)]
    names = [m["name"] for m in models]
    for model in models:  # name fixed per-model overrides only where a model appears twice
        model["name_overrides"] = names.count(model["name"]) > 1
    train = _validate_section(file, "train.", raw.get("train") or {}, TRAIN_SCHEMA, axis_ok=True)
    evaluation = _validate_section(file, "eval.", raw.get("eval") or {}, EVAL_SCHEMA, axis_ok=False)
    evaluation = {**defaults(EVAL_SCHEMA), **evaluation}
    trials = []
    for model in models:
        for data_index, data in enumerate(datasets):
            trials += _model_trials(
                name,
                model,
                data,
                data_index if len(datasets) > 1 else None,
                train,
                evaluation,
                str(base_dir),
            )
    _check_unique(file, trials)
    return trials


def _model_trials(
    experiment: str,
    model: dict,
    data: dict,
    data_index: int | None,
    train: dict,
    evaluation: dict,
    base_dir: str,
) -> list[Trial]:
    from ferbench.models import model_card

    settings = {**train, **model["train"]}
    sizes = model.get("input_size") or model_card(model["name"]).input_size
    sizes = sizes if isinstance(sizes, list) else [sizes]
    axes = {k: v for k, v in settings.items() if isinstance(v, list)}
    fixed_names = [k for k in model["train"] if k not in axes] if model["name_overrides"] else []
    trials = []
    for size in sizes:
        for combo in itertools.product(*axes.values()) if axes else [()]:
            chosen = dict(zip(axes, combo))
            resolved = defaults(TRAIN_SCHEMA)
            resolved.update({k: v for k, v in settings.items() if k not in axes})
            resolved.update(chosen)
            if resolved["augment"] is None:
                resolved["augment"] = defaults(AUGMENT_SCHEMA)
            spec = DataSpec(**data)
            for key in ("classes", "merge", "drop"):
                if model.get(key) is not None:
                    setattr(spec, key, model[key])
            spec.size = size
            data_dict = spec.to_dict()
            parts = []
            if data_index is not None:
                parts.append(f"data={_data_label(data, data_index)}")
            if len(sizes) > 1 or "input_size" in model:
                parts.append(f"size={size}")
            for key in ("classes", "merge", "drop"):
                if model.get(key) is not None:
                    parts.append(f"{key}={_short(model[key])}")
            parts += [f"{k}={_short(v)}" for k, v in model.get("args", {}).items()]
            parts += [f"{k}={_short(resolved[k])}" for k in fixed_names]
            parts += [f"{k}={_short(v)}" for k, v in chosen.items() if k != "seed"]
            parts.append(f"seed={resolved['seed']}")
            trial_name = "/".join([model["name"].replace("/", "-")] + parts)
            trials.append(
                Trial(
                    experiment=experiment,
                    model={
                        "name": model["name"],
                        "input_size": size,
                        "args": model.get("args", {}),
                    },
                    data=data_dict,
                    train=resolved,
                    eval=dict(evaluation),
                    name=trial_name,
                    base_dir=base_dir,
                    axes=chosen,
                )
            )
    return trials


def _data_label(data: dict, index: int) -> str:
    if data.get("path"):
        return Path(data["path"]).name.split(".")[0] or f"d{index}"
    return f"{data.get('kind', 'data')}{index}"


def _short(value: Any) -> str:
    if isinstance(value, list):
        return str(len(value)) if len(value) > 3 else "+".join(map(str, value))
    if isinstance(value, dict):
        return "+".join(f"{k}-{v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _check_unique(file: str, trials: list[Trial]) -> None:
    seen: dict[str, Trial] = {}
    for trial in trials:
        if trial.name in seen and seen[trial.name].config_hash() != trial.config_hash():
            trial.name = f"{trial.name}-{trial.config_hash()[:6]}"
        seen[trial.name] = trial


def check_data_paths(trials: list[Trial]) -> None:
    """Fail before anything runs when a dataset path does not exist (the error says where to get
    FER2013 and how to point the experiment at it)."""
    from ferbench.data.loader import resolve_source

    checked = set()
    for trial in trials:
        for key in ("path", "labels"):
            value = trial.data.get(key)
            if value and (value, trial.base_dir) not in checked:
                resolve_source(value, Path(trial.base_dir))
                checked.add((value, trial.base_dir))
