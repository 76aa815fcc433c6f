"""Experiment files → trials: YAML reading, ``--set`` overrides, grid expansion, trial names.

Any setting written as a list is a grid axis; the trials are the cartesian product of
models × datasets × input sizes × every list-valued setting.  A model entry may carry its own
overrides.  The types and defaults live in ``ferbench.config``.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ferbench.config import (
    DataSpec,
    EvalConfig,
    ModelSpec,
    TrainConfig,
    Trial,
    check_keys,
    coerce,
    error,
    flatten,
    parse_data,
    parse_section,
    safe_segment,
    semantic_settings,
    zoom_problem,
)
from ferbench.errors import FerbenchError

TOP_KEYS = frozenset({"name", "description", "data", "models", "train", "eval"})
MODEL_KEYS = frozenset({"name", "input_size", "classes", "merge", "drop", "args", "pretrained"})


@dataclass(frozen=True)
class ModelEntry:
    """One entry of `models:`: a name, its sizes, its class set and its own train overrides."""

    name: str
    input_sizes: tuple[int, ...] | None
    class_set: dict  # classes / merge / drop given on the model
    args: dict
    train: dict  # validated overrides; list values are grid axes
    pretrained: str | None = None  # shipped weights to fine-tune from (full name)
    name_overrides: bool = False  # the same model appears twice: fixed overrides name the folder


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


def apply_overrides(raw: dict, overrides: list[str], file: str) -> dict:
    """Apply ``--set train.epochs=1``-style overrides (values parsed as YAML)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise FerbenchError(f"--set {item}: expected KEY=VALUE, e.g. train.epochs=1")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if parts[0] not in TOP_KEYS:
            raise error(
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


def expand(raw: dict, file: str = "<experiment>", base_dir: Path = Path(".")) -> list[Trial]:
    check_keys(file, "", raw, TOP_KEYS)
    name = safe_segment(file, "name", str(raw.get("name") or Path(file).stem))
    data_raw = raw.get("data", {"kind": "synthetic"})
    many = isinstance(data_raw, list)
    datasets = [
        parse_data(file, f"data[{i}]" if many else "data", d)
        for i, d in enumerate(data_raw if many else [data_raw])
    ]
    models_raw = raw.get("models")
    if not models_raw:
        raise error(file, "models", "at least one model is needed, e.g. models: [cnn3]")
    if not isinstance(models_raw, list):
        models_raw = [models_raw]
    models = [_parse_model(file, i, m) for i, m in enumerate(models_raw)]
    names = [m.name for m in models]
    models = [dataclasses.replace(m, name_overrides=names.count(m.name) > 1) for m in models]
    train = parse_section(TrainConfig, file, "train.", raw.get("train"), axis_ok=True)
    evaluation = EvalConfig(**parse_section(EvalConfig, file, "eval.", raw.get("eval")))
    if zoom_problem(evaluation.scales):
        raise error(file, "eval.scales", zoom_problem(evaluation.scales))
    _check_corruptions(file, evaluation.corruptions, "eval.corruptions")
    augments = train.get("augment")
    for augment in augments if isinstance(augments, list) else [augments]:  # one, or an axis
        if augment is not None:
            families = augment.corrupt_families
            _check_corruptions(file, families, "train.augment.corrupt_families")
    trials = []
    for index, model in enumerate(models):
        for data_index, data in enumerate(datasets):
            trials += _model_trials(
                file,
                index,
                name,
                model,
                data,
                data_index if many else None,
                train,
                evaluation,
                str(base_dir),
            )
    return _unique(trials)


def _check_corruptions(file: str, names, key: str) -> None:
    """Corruption families (names, groups, 'all', 'held-out') must exist: one line naming the
    key and the choices."""
    from ferbench.data.corrupt import resolve_families

    try:
        resolve_families(names)
    except ValueError as exc:
        raise error(file, key, str(exc)) from None


def _parse_model(file: str, index: int, entry: Any) -> ModelEntry:
    from ferbench.models import is_model, unknown_model_error
    from ferbench.models.pretrained import resolve_weights, split_name

    key = f"models[{index}]"
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise error(file, key, "expected a model name or a mapping with 'name'")
    train_keys = frozenset(f.name for f in dataclasses.fields(TrainConfig))
    check_keys(file, f"{key}.", entry, MODEL_KEYS | train_keys)
    name = str(entry["name"])
    if not is_model(name):
        raise error(file, f"{key}.name", str(unknown_model_error(name)))
    name, tag = split_name(name)
    pretrained = entry.get("pretrained", tag)
    if pretrained:
        try:
            pretrained = resolve_weights(name, pretrained).name
        except FerbenchError as exc:
            raise error(file, f"{key}.pretrained", str(exc)) from None
    sizes = entry.get("input_size")
    if sizes is not None:
        sizes = tuple(
            coerce(file, f"{key}.input_size", s, int)
            for s in (sizes if isinstance(sizes, list) else [sizes])
        )
    hints = {"classes": tuple[str, ...], "merge": dict[str, str], "drop": tuple[str, ...]}
    class_set = {k: coerce(file, f"{key}.{k}", entry[k], hints[k]) for k in hints if k in entry}
    args = coerce(file, f"{key}.args", entry.get("args", {}), dict)
    overrides = {k: v for k, v in entry.items() if k in train_keys}
    return ModelEntry(
        name,
        sizes,
        class_set,
        args,
        parse_section(TrainConfig, file, f"{key}.", overrides, axis_ok=True),
        pretrained or None,
    )


def _input_sizes(file: str, index: int, model: ModelEntry, data: DataSpec) -> tuple[int, ...]:
    """The model's sizes, else `data.size`, else the shipped weights' or the model card's; both
    given must agree."""
    from ferbench.models import model_card

    if model.input_sizes and data.size and set(model.input_sizes) != {data.size}:
        raise error(
            file,
            "data.size",
            f"{data.size} disagrees with models[{index}].input_size "
            f"{','.join(map(str, model.input_sizes))}: faces are fed to the model at one size; "
            "set only one of them",
        )
    if model.input_sizes or data.size:
        return model.input_sizes or (data.size,)
    if model.pretrained:  # fine-tuning starts at the size the shipped weights were trained at
        from ferbench.models.pretrained import read_index

        return (read_index()[model.pretrained].input_size,)
    return (model_card(model.name).input_size,)


def _model_trials(
    file: str,
    index: int,
    experiment: str,
    model: ModelEntry,
    data: DataSpec,
    data_index: int | None,
    train: dict,
    evaluation: EvalConfig,
    base_dir: str,
) -> list[Trial]:
    settings = {**train, **model.train}
    sizes = _input_sizes(file, index, model, data)
    axes = {k: v for k, v in settings.items() if isinstance(v, list)}
    fixed_names = [k for k in model.train if k not in axes] if model.name_overrides else []
    trials = []
    for size in sizes:
        for combo in itertools.product(*axes.values()) if axes else [()]:
            chosen = dict(zip(axes, combo))
            resolved = TrainConfig(
                **{**{k: v for k, v in settings.items() if k not in axes}, **chosen}
            )
            spec = data.replace(**model.class_set, size=size)
            labelled: list[tuple[str, str, Any]] = []  # (key for errors, folder key, value)
            if data_index is not None:
                labelled.append((f"data[{data_index}]", "data", _data_label(data, data_index)))
            if len(sizes) > 1 or model.input_sizes:
                labelled.append((f"models[{index}].input_size", "size", size))
            if model.pretrained:
                tag = model.pretrained.split(".", 1)[1]
                labelled.append((f"models[{index}].pretrained", "pretrained", tag))
            labelled += [(f"models[{index}].{k}", k, v) for k, v in model.class_set.items()]
            labelled += [(f"models[{index}].args.{k}", k, v) for k, v in model.args.items()]
            named = [(f"models[{index}].{k}", k, getattr(resolved, k)) for k in fixed_names]
            named += [(f"train.{k}", k, v) for k, v in chosen.items()]
            labelled += [(w, key, v) for w, key, v in named if key != "seed"]  # seed: last folder
            labelled.append(("train.seed", "seed", resolved.seed))
            parts = [
                safe_segment(file, where, f"{key}={_short(value)}")
                for where, key, value in labelled
            ]
            folder = safe_segment(file, f"models[{index}].name", model.name.replace("/", "-"))
            trials.append(
                Trial(
                    experiment=experiment,
                    name="/".join([folder, *parts]),
                    model=ModelSpec(model.name, size, dict(model.args), model.pretrained),
                    data=spec,
                    train=resolved,
                    eval=evaluation,
                    base_dir=base_dir,
                    axes=tuple(chosen.items()),
                )
            )
    return trials


def trial_name_summary(trial: Trial) -> str:
    """The settings a dry run shows next to each trial: the usual six, then every other training
    setting that differs from its default (early_stopping, ema, augment.mixup, distill.teacher...),
    so that a run is never shown as plainer than it is."""
    keys = ("epochs", "batch_size", "optimizer", "lr", "scheduler", "seed")
    shown = {k: getattr(trial.train, k) for k in keys}
    changed = flatten(semantic_settings(trial.to_dict())["train"])
    shown.update({k: v for k, v in changed.items() if k not in shown})
    return " ".join(f"{k}={_short(v)}" for k, v in shown.items())


def _data_label(data: DataSpec, index: int) -> str:
    if data.path:
        return Path(data.path).name.split(".")[0] or f"d{index}"
    return f"{data.kind}{index}"


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        joined = "+".join(map(str, value))
        return joined if len(joined) <= 24 else f"{len(value)}-values"
    if isinstance(value, dict):
        return "+".join(f"{k}-{v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    if dataclasses.is_dataclass(value):
        return "+".join(f"{k}-{_short(v)}" for k, v in dataclasses.asdict(value).items() if v)
    return str(value)


def _unique(trials: list[Trial]) -> list[Trial]:
    """Two trials that would share a folder but differ get the config hash appended."""
    seen: dict[str, Trial] = {}
    out = []
    for trial in trials:
        if trial.name in seen and seen[trial.name].config_hash() != trial.config_hash():
            trial = dataclasses.replace(trial, name=f"{trial.name}-{trial.config_hash()[:6]}")
        seen[trial.name] = trial
        out.append(trial)
    return out


def select_trials(trials: list[Trial], patterns: list[str], file: str | Path) -> list[Trial]:
    """The trials named by `patterns` (`--only`: a shell glob on the trial name, or its leading
    folders: `vggfer_s/size=56` is `vggfer_s/size=56/*`), in grid order; all without patterns."""
    if not patterns:
        return trials
    chosen = [
        t for t in trials
        if any(fnmatch.fnmatchcase(t.name, p) or t.name.startswith(p.rstrip("/") + "/")
               for p in patterns)
    ]  # fmt: skip
    if not chosen:
        names = ", ".join(t.name for t in trials)
        raise FerbenchError(
            f"--only {' '.join(patterns)}: none of the {len(trials)} trials of {file} matches "
            f"({names})"
        )
    return chosen


def check_data_paths(trials: list[Trial]) -> None:
    """Fail before anything runs when a dataset path does not exist (the error says where to get
    FER2013 and how to point the experiment at it)."""
    from ferbench.data.loader import resolve_source

    checked = set()
    for trial in trials:
        for value in (trial.data.path, trial.data.labels):
            if value and (value, trial.base_dir) not in checked:
                resolve_source(value, Path(trial.base_dir))
                checked.add((value, trial.base_dir))


def check_teachers(trials: list[Trial]) -> None:
    """Fail before anything runs when a distillation teacher cannot be found (one line naming
    train.distill.teacher)."""
    from ferbench.train.distill import resolve_teacher

    for spec, base in {(t.train.distill.teacher, t.base_dir) for t in trials if t.train.distill}:
        resolve_teacher(spec, Path(base))
