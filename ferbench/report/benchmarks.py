"""The results of record: leaderboards → ``benchmarks/results-<dataset>.csv``, one row per recipe.

Like timm's results files: one CSV per dataset, written by `ferbench compare --export` from run
directories and never typed.  Rows are keyed by dataset, model, recipe and settings, so exporting
a new experiment updates its rows and keeps the others.  A Markdown rendering sits beside each
CSV, and `--readme` copies it into the README between ``<!-- benchmarks:NAME -->`` markers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ferbench.errors import FerbenchError
from ferbench.report.leaderboard import differing_settings, settings_label
from ferbench.report.records import records_folder
from ferbench.report.stats import interval_text
from ferbench.utils.fileio import write_text

KEY = ["dataset", "model", "recipe", "settings"]
# Fractions keep six digits, so the Markdown's one-decimal percentages are rounded once: from
# four, a mean of 0.714496 would be stored as 0.7145 and shown as 71.5 instead of 71.4.
FRACTION_DIGITS = 6
COLUMNS = [
    *KEY,
    "seeds",
    "test_acc_mean",
    "test_acc_std",
    "test_acc_lo",  # a single run's 95% Wilson interval over its test faces (seeds: std)
    "test_acc_hi",
    "test_faces",
    "test_acc_clean",
    "macro_f1_mean",
    "balanced_acc_mean",
    "worst_class",
    "worst_class_recall",
    "ece_mean",
    "test_acc_corrupt",  # mCA: mean accuracy over the robustness suite (one view per face)
    "most_predicted",  # the class predicted most often: its share / its share of the truth
    "val_acc_mean",
    "selection",
    "tta",
    "params_m",
    "mflops",
    "train_cpu_min",
    "wall_min_mean",
    "hardware",
    "bound_img_s",
    "trial_s_max",
    "teacher",
    "ferbench",
    "commit",
    "data_fingerprint",
    "runs",
]


def benchmark_rows(boards: dict[str, pd.DataFrame], frame: pd.DataFrame) -> pd.DataFrame:
    """One row per leaderboard entry, with how and where it was produced."""
    by_run = frame.set_index("run")
    # a row is keyed by its recipe file and model, so its settings are those that vary between
    # that model's runs of that recipe (its grid), not those that tell it apart from the other
    # recipes compared with it, nor another model's arguments
    varying = {
        key: differing_settings(runs) for key, runs in frame.groupby(["experiment", "model"])
    }
    rows = []
    for dataset, board in boards.items():
        for entry in board.itertuples(index=False):
            runs = by_run.loc[entry.runs.split(";")]
            first = runs.iloc[0]
            threads = pd.to_numeric(runs["threads"], errors="coerce").fillna(1)
            rows.append(
                {
                    "dataset": dataset,
                    "model": entry.model,
                    "recipe": "ferbench ensemble"
                    if first["members"]
                    else f"experiments/{first['experiment']}.yaml",
                    "settings": _ensemble_settings(first)
                    if first["members"]
                    else settings_label(
                        first["settings"], varying[first["experiment"], entry.model]
                    ),
                    "seeds": int(entry.n),
                    "test_acc_mean": round(entry.accuracy_mean, FRACTION_DIGITS),
                    "test_acc_std": round(entry.accuracy_std, FRACTION_DIGITS),
                    "test_acc_lo": _rounded(entry.accuracy_lo),
                    "test_acc_hi": _rounded(entry.accuracy_hi),
                    "test_faces": entry.test_faces if entry.test_faces else "",
                    "test_acc_clean": _round_mean(runs.get("accuracy_clean"), FRACTION_DIGITS),
                    "macro_f1_mean": round(entry.macro_f1_mean, FRACTION_DIGITS),
                    "balanced_acc_mean": round(entry.balanced_accuracy_mean, FRACTION_DIGITS),
                    "worst_class": entry.worst_class,
                    "worst_class_recall": round(entry.worst_class_recall_mean, FRACTION_DIGITS),
                    "ece_mean": round(entry.ece_mean, FRACTION_DIGITS),
                    "test_acc_corrupt": _rounded(entry.accuracy_corrupt_mean),
                    "most_predicted": _drift_text(entry),
                    "val_acc_mean": round(entry.best_val_acc_mean, FRACTION_DIGITS),
                    "selection": _selection(first),
                    "tta": first["tta"],
                    "params_m": round(entry.parameters_mean / 1e6, 3),
                    "mflops": round(entry.flops_mean / 1e6, 1),
                    "train_cpu_min": _cpu_minutes(runs, threads),
                    "wall_min_mean": round(
                        float(pd.to_numeric(runs["wall_time_s"]).mean()) / 60, 1
                    ),
                    **_machines(runs),
                    "trial_s_max": _round_max(runs.get("trial_s"), 1),
                    "teacher": first.get("teacher", "") or "",
                    "ferbench": " | ".join(sorted(set(runs["ferbench"]))),
                    "commit": " | ".join(sorted({c for c in runs["commit"] if c})),
                    "data_fingerprint": first["data_fingerprint"],
                    "runs": entry.runs,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


ENSEMBLE_IN_SAMPLE = "validation (ensemble val acc in-sample)"
ENSEMBLE_HELD_OUT = "validation (ensemble val acc held out, 2-fold)"


def _selection(run: pd.Series) -> str:
    """How the row was chosen, and for an ensemble whether its validation accuracy is held out
    (chosen on one half, scored on the other) or in-sample (scored on the faces that chose its
    weights and temperatures, as every ensemble before issue 55 was)."""
    if not run["members"]:
        return "validation"
    return ENSEMBLE_HELD_OUT if run.get("val_acc_method") else ENSEMBLE_IN_SAMPLE


def _drift_text(entry) -> str:
    """``sad 0.192/0.165``: the most predicted class, its share of the predictions and of the
    truth (CSV: plain fractions)."""
    if not entry.most_predicted or pd.isna(entry.most_predicted_share):
        return ""
    share, truth = entry.most_predicted_share, entry.most_predicted_truth
    return f"{entry.most_predicted} {share:.3f}/{truth:.3f}"


def _rounded(value, digits: int = FRACTION_DIGITS):
    return "" if value is None or pd.isna(value) else round(float(value), digits)


def with_intervals(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows (as text) exported before issue 55 brought up to date: an older ensemble's
    validation accuracy named in-sample, and a single run without an interval given the Wilson
    interval of its accuracy over the test faces of its dataset, counted by any row of the same
    data (its runs may no longer be here).  Seed rows keep their std; a row of a dataset no row
    counted the faces of keeps none."""
    from ferbench.report.stats import accuracy_interval

    rows = rows.copy()
    older = (rows["recipe"] == "ferbench ensemble") & (rows["selection"] == "validation")
    rows.loc[older, "selection"] = ENSEMBLE_IN_SAMPLE  # exported before held-out figures
    for column in ("test_acc_lo", "test_acc_hi", "test_faces"):
        if column not in rows:
            rows[column] = ""
    counted = {}
    for dataset, faces in zip(rows["dataset"], rows["test_faces"]):
        if faces not in ("", None):
            counted.setdefault(dataset, int(float(faces)))
    for i in rows.index:
        faces = counted.get(rows.at[i, "dataset"])
        if faces and rows.at[i, "test_faces"] == "":
            rows.at[i, "test_faces"] = str(faces)
        if rows.at[i, "test_acc_lo"] != "" or rows.at[i, "seeds"] != "1" or not faces:
            continue
        low, high = accuracy_interval(float(rows.at[i, "test_acc_mean"]), faces)
        rows.at[i, "test_acc_lo"] = str(round(low, FRACTION_DIGITS))
        rows.at[i, "test_acc_hi"] = str(round(high, FRACTION_DIGITS))
    return rows


def _cpu_minutes(runs: pd.DataFrame, threads: pd.Series) -> float:
    """Mean training CPU-minutes per run: the process's CPU time where the run measured it
    (pauses excluded), else wall-clock training time × threads (older runs)."""
    wall = pd.to_numeric(runs["train_time_s"], errors="coerce") * threads
    cpu = pd.to_numeric(runs.get("train_cpu_s", pd.Series(index=runs.index)), errors="coerce")
    return round(float(cpu.fillna(wall).mean()) / 60, 1)


def _ensemble_settings(run: pd.Series) -> str:
    """An ensemble's row is keyed by its members and weights, and by its test views when they
    are not the members' own (multi-scale), so that both rows stand side by side."""
    views = "" if run["tta"] == "members" else f" ({run['tta']})"
    return run["members"] + views


def _machines(runs: pd.DataFrame) -> dict:
    """The machines a row's runs trained on and each one's bound (img/s), in the same order,
    "; " between them: seeds trained in sittings on two machines keep both bounds, since their
    mean would describe neither machine."""
    names = sorted(set(runs["hardware"]))
    bounds = runs.get("bound_img_s", pd.Series(index=runs.index))
    per_machine = [_round_mean(bounds[runs["hardware"] == name], 0) for name in names]
    bound = (
        per_machine[0]
        if len(names) == 1
        else "; ".join("-" if b == "" else f"{b:.0f}" for b in per_machine)
    )
    return {"hardware": "; ".join(names), "bound_img_s": bound}


def _round_mean(values, digits: int):
    """Mean of a column's numbers, rounded; empty where no run recorded it."""
    numbers = pd.to_numeric(values, errors="coerce").dropna() if values is not None else []
    return round(float(numbers.mean()), digits) if len(numbers) else ""


def _round_max(values, digits: int):
    numbers = pd.to_numeric(values, errors="coerce").dropna() if values is not None else []
    return round(float(numbers.max()), digits) if len(numbers) else ""


def merged(
    rows: pd.DataFrame, path: Path, key: list[str], trials: Callable[[str], str] | None = None
) -> pd.DataFrame:
    """`rows` over the CSV at `path` (as text): its rows with the same key are replaced in
    place, the others kept, new keys appended, so each command updates its own rows of a
    committed file without reordering the table.

    With `trials` (a `runs` entry → the trial it is), an old row counting a trial that a new
    row counts is replaced too: the same result under a new label (a recipe's settings label
    grows when its grid gains a trial) must not stay beside itself."""
    rows = rows.astype(object).fillna("").astype(str)  # object: a float column takes ""
    if path.is_file():
        old = pd.read_csv(path, dtype=str, keep_default_na=False)
        old_keys = [tuple(r) for r in old[key].values]
        new_keys = [tuple(r) for r in rows[key].values]

        def counted(frame: pd.DataFrame) -> list[set[str]]:
            if trials is None or "runs" not in frame:
                return [set() for _ in range(len(frame))]
            return [{trials(r) for r in runs.split(";") if r} for runs in frame["runs"]]

        old_trials, new_trials = counted(old), counted(rows)
        # same[j][i]: new row j replaces old row i (same key, or a trial in common)
        same = [
            [o == k or bool(t & u) for o, u in zip(old_keys, old_trials)]
            for k, t in zip(new_keys, new_trials)
        ]
        place = {j: row.index(True) for j, row in enumerate(same) if any(row)}
        kept = [not any(row[i] for row in same) for i in range(len(old_keys))]
        rank = [i for i, keep in enumerate(kept) if keep]
        rank += [place.get(j, len(old_keys) + j) for j in range(len(new_keys))]
        rows = pd.concat([old[kept], rows], ignore_index=True)
        rows = rows.iloc[sorted(range(len(rows)), key=rank.__getitem__)].reset_index(drop=True)
    return rows.fillna("").astype(str)


def export(rows: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Merge `rows` into the CSV at `path` (same key: replaced) and write its Markdown beside."""
    path = Path(path)
    if path.suffix != ".csv":
        raise FerbenchError(f"--export {path}: the file name must end in .csv")
    records = f"{records_folder(path)}/"
    rows = with_intervals(merged(rows, path, KEY, lambda run: run.removeprefix(records)))
    rows = rows[[c for c in COLUMNS if c in rows] + [c for c in rows if c not in COLUMNS]]
    rows["_acc"] = pd.to_numeric(rows["test_acc_mean"], errors="coerce")
    rows = rows.sort_values(["dataset", "_acc"], ascending=[True, False]).drop(columns="_acc")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, rows.to_csv(index=False))
    write_text(path.with_suffix(".md"), markdown(rows))
    return rows


def markdown(rows: pd.DataFrame) -> str:
    """The human table: accuracy mean ± std over n seeds (a single run's with its 95% interval),
    calibration (ECE: how far the confidence shown is from the accuracy delivered), and what
    produced it."""
    header = ["model", "recipe", "settings", "test acc % (95% CI)", "without leaked %"]
    header += ["macro-F1 %"]
    header += ["worst class", "ECE", "mCA %", "most predicted (truth)"]
    header += ["params M", "MFLOPs", "train CPU-min", "trial s (max)", "hardware (bound B)"]
    text_columns = {"model", "recipe", "settings", "worst class", "hardware (bound B)"}
    text_columns.add("most predicted (truth)")
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " if c in text_columns else " ---: " for c in header) + "|",
    ]
    for dataset, group in rows.groupby("dataset", sort=False):
        lines.append(f"| **{dataset}** |" + " |" * (len(header) - 1))
        for r in group.itertuples(index=False):
            acc = f"{float(r.test_acc_mean) * 100:.1f}"
            if int(r.seeds) > 1:
                acc += f" ± {float(r.test_acc_std) * 100:.1f} (n={r.seeds})"
            elif _text(getattr(r, "test_acc_lo", "")) != "-":
                acc += f" ({interval_text(float(r.test_acc_lo), float(r.test_acc_hi))})"
            lines.append(
                f"| {r.model} | `{r.recipe}` | {r.settings or '-'} | {acc} | "
                f"{_percent(getattr(r, 'test_acc_clean', ''))} | "
                f"{float(r.macro_f1_mean) * 100:.1f} | {r.worst_class} "
                f"{float(r.worst_class_recall) * 100:.0f}% | {float(r.ece_mean):.3f} | "
                f"{_percent(getattr(r, 'test_acc_corrupt', ''))} | "
                f"{_drift_markdown(getattr(r, 'most_predicted', ''))} | "
                f"{r.params_m} | {r.mflops} | "
                f"{_text(r.train_cpu_min)} | {_text(getattr(r, 'trial_s_max', ''))} | "
                f"{_hardware_text(r.hardware, getattr(r, 'bound_img_s', ''))} |"
            )
    return "\n".join(lines) + "\n"


def _drift_markdown(value) -> str:
    """``sad 0.192/0.165`` → ``sad 19% (17%)``."""
    if _text(value) == "-":
        return "-"
    name, shares = str(value).rsplit(" ", 1)
    share, truth = (float(v) for v in shares.split("/"))
    return f"{name} {share:.0%} ({truth:.0%})"


def _percent(value) -> str:
    return "-" if _text(value) == "-" else f"{float(value) * 100:.1f}"


def _text(value) -> str:
    return "-" if value in ("", None) or pd.isna(value) else f"{value}"


def _hardware_text(hardware: str, bound_img_s) -> str:
    """Each machine with its bound, ``AMD EPYC avx2 x2 (B 130 img/s); ...``, where the rows
    recorded it."""
    names = str(hardware).split("; ")
    bounds = str(bound_img_s).split("; ") if len(names) > 1 else [bound_img_s]
    return "; ".join(f"{name}{_bound_text(b)}" for name, b in zip(names, bounds, strict=True))


def _bound_text(value) -> str:
    """`` (B 504 img/s)`` for a machine whose bound was recorded."""
    return "" if _text(value) == "-" else f" (B {float(value):,.0f} img/s)"


def matrix_cells(matrix: pd.DataFrame) -> dict[str, dict[str, str]]:
    """The cross-dataset matrix cell by cell, ``{"model (classes)": {dataset: cell}}``: accuracy,
    macro-F1 and ECE, the images left out (classes the model does not know) and, for photos, the
    images where no face was found."""
    table: dict[str, dict[str, str]] = {}
    for r in matrix.itertuples(index=False):
        acc, f1, ece = float(r.accuracy), float(r.macro_f1), float(r.ece)
        cell = f"{acc * 100:.1f}% (F1 {f1 * 100:.1f}, ECE {ece:.3f})"
        if int(r.left_out_images):
            cell += f", {r.left_out_images} {r.left_out_classes} left out"
        if int(getattr(r, "no_face", 0) or 0):
            cell += f", {r.no_face} without a face"
        table.setdefault(f"{r.model} ({r.trained_classes})", {})[r.dataset] = cell
    return table


def matrix_markdown(matrix: pd.DataFrame) -> str:
    """The cross-dataset matrix as a table: a row per model, a column per dataset."""
    datasets = list(dict.fromkeys(matrix["dataset"]))
    lines = [
        "| model (classes) | " + " | ".join(datasets) + " |",
        "| --- |" + " ---: |" * len(datasets),
    ]
    for model, cells in matrix_cells(matrix).items():
        lines.append("| " + " | ".join([model, *(cells.get(d, "-") for d in datasets)]) + " |")
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, csv_path: Path) -> bool:
    """Replace the table between ``<!-- benchmarks:<csv stem> -->`` and
    ``<!-- /benchmarks:<csv stem> -->``; False when the README has no such markers."""
    text = readme.read_text()
    start, end = f"<!-- benchmarks:{csv_path.stem} -->", f"<!-- /benchmarks:{csv_path.stem} -->"
    if start not in text or end not in text:
        return False
    table = Path(csv_path).with_suffix(".md").read_text()
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    write_text(readme, f"{head}{start}\n{table}{end}{tail}")
    return True
