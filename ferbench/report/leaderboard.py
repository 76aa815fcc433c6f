"""`compare`: run directories → leaderboards (terminal, CSV, Markdown, HTML) and plots.

Only run-directory files are read, so runs from any launcher or machine compare the same.  Trials
differing only in seed are grouped (mean ± std, n); leaderboards are per dataset and class set,
never averaged across them.
"""

from __future__ import annotations

import base64
import fnmatch
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ferbench.config import RUNTIME_KEYS, default_settings, is_default, with_zooms
from ferbench.errors import FerbenchError
from ferbench.report.metrics import class_shares
from ferbench.runs import RunDir, iter_runs

# Every metric a run reports, and which way is better (the leaderboard sorts by it).
METRICS = {
    "accuracy": "higher",
    "accuracy_clean": "higher",  # without the test faces also trained on (data/leaks.py)
    "balanced_accuracy": "higher",
    "macro_f1": "higher",
    "ece": "lower",
    # mean accuracy over the robustness suite's corruptions (infer/robustness.py), one view
    "accuracy_corrupt": "higher",
    "worst_class_recall": "higher",
    "best_val_acc": "higher",
    "parameters": "lower",
    "flops": "lower",
    "train_time_s": "lower",
    "train_cpu_s": "lower",
    "trial_s": "lower",
    "time_to_target_s": "lower",
    "inference_images_per_s": "higher",
    "latency_batch1_ms": "lower",
    "train_images_per_s": "higher",
    "best_epoch": "lower",
}


@dataclass
class Run:
    path: Path  # relative to the compare root
    status: str
    config: dict
    metrics: dict = field(default_factory=dict)
    history: pd.DataFrame | None = None
    error: str = ""
    directory: Path | None = None  # where its files are


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value


def _cell(value):
    """A setting as a leaderboard shows it: a list as ``0.9,1,1.1``."""
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return value


def collect_runs(roots: list[Path]) -> list[Run]:
    """Every run directory under the given paths, read through RunDir."""
    runs = []
    for root in roots:
        for run_dir in iter_runs(root):
            runs.append(_read_run(run_dir, Path(root)))
    return runs


def _read_run(run_dir: RunDir, root: Path) -> Run:
    path = run_dir.path
    relative = Path(root.name) / path.relative_to(root) if path != root else Path(root.name)
    state = run_dir.state
    if state in ("running", "stopped", "interrupted"):
        error = run_dir.progress()
    else:
        error = run_dir.status().get("error", "")
    run = Run(relative, state, run_dir.config(), error=error, directory=path)
    if run.status == "done":
        run.metrics = run_dir.metrics()
        try:
            run.history = run_dir.history()
        except (OSError, ValueError) as exc:
            run.status, run.error = "incomplete", f"unreadable outputs: {exc}"
        if not run.metrics:
            run.status, run.error = "incomplete", "unreadable outputs: metrics.json"
    return run


def _data_label(config: dict) -> str:
    """Runs share a leaderboard when their data is the same faces, labels and class set, wherever
    the file lived and whatever size the model resized them to: the label is the kind, the class
    set and the data identity (labels, splits, class names)."""
    data = config.get("data", {})
    kind = data.get("kind", "?")
    if kind == "auto" and config.get("data_source"):  # "fer2013 csv /path/...": the kind read
        kind = str(config["data_source"]).split()[0]
    classes = config.get("class_names") or []
    fingerprint = str(config.get("data_identity") or config.get("data_fingerprint", ""))[:8]
    short = ",".join(c[:3] for c in classes)
    return f"{kind} ({len(classes)} classes: {short})" + (f" #{fingerprint}" if fingerprint else "")


def runs_frame(runs: list[Run], target: float | None = None) -> pd.DataFrame:
    rows, defaults = [], default_settings()
    for run in runs:
        if run.status != "done":
            continue
        settings: dict = {}
        for section in ("model", "data", "train", "eval"):
            _flatten(section, run.config.get(section, {}), settings)
        settings = {  # a default, written or not (older configs lack newer options), is left out
            k: _cell(v)
            for k, v in settings.items()
            if k not in RUNTIME_KEYS and k != "train.seed" and not is_default(k, v, defaults)
        }
        row = {
            "run": str(run.path),
            "experiment": run.config.get("experiment", ""),
            "model": run.config.get("model", {}).get("name", "?"),
            "dataset": _data_label(run.config),
            "seed": run.config.get("train", {}).get("seed"),
            "recall": {
                c: v["recall"]
                for c, v in run.metrics.get("per_class", {}).items()
                if v.get("support", 0) > 0
            },
            "settings": settings,
            "tta": _test_views(run.config.get("eval", {})),
            "hardware": _hardware(run.config),
            "threads": run.config.get("device", {}).get("threads"),
            "ferbench": run.config.get("versions", {}).get("ferbench", ""),
            "commit": run.config.get("versions", {}).get("commit", ""),
            "data_fingerprint": run.config.get("data_fingerprint", ""),
            "wall_time_s": run.metrics.get("wall_time_s"),
            "bound_img_s": run.config.get("bound_img_s"),
            "teacher": _teacher(run.config),
            "members": "; ".join(  # an ensemble's, with their weights (and temperatures)
                member_label(m["run"], m) for m in run.metrics.get("members", [])
            ),
        }
        for metric in METRICS:
            row[metric] = run.metrics.get(metric)
        suite = robustness_of_run(run)
        row["accuracy_corrupt"] = suite.get("mca")
        row["pred_shares"], row["truth_shares"] = class_shares(run.metrics)
        row["test_faces"] = test_faces(run.metrics)
        row["val_acc_method"] = run.metrics.get("val_acc_method", "")  # an ensemble's
        # a trained run records its time to eval.target_acc (None: not reached); a run that
        # trained nothing (an ensemble) records none, and has no time to reach it in
        row["target_tracked"] = "time_to_target_s" in run.metrics
        if target is not None and run.history is not None:
            reached = run.history[run.history["val_acc"] >= target]
            row["time_to_target_s"] = float(reached["elapsed_s"].iloc[0]) if len(reached) else None
            row["target_tracked"] = True
        rows.append(row)
    return pd.DataFrame(rows)


def _test_views(evaluation: dict) -> str:
    """The test pass's views as a run's config.yaml records them: tencrop, or tencrop at zooms
    0.9/1/1.1 (an ensemble's label already says its own)."""
    return with_zooms(evaluation.get("tta", "none"), evaluation.get("scales") or [1.0])


def _teacher(config: dict) -> str:
    """A distilled run's teacher and its members, as its config.yaml names them."""
    teacher = config.get("teacher") or {}
    if not teacher:
        return ""
    members = "; ".join(member_label(m["checkpoint"], m) for m in teacher.get("members", []))
    return f"{teacher.get('teacher')} ({members})"


def member_label(name: str, member: dict) -> str:
    """An ensemble member (or a teacher's) with its weight, and its temperature where the
    ensemble tempered it (--calibrate): `run x0.25 T0.85`."""
    temperature = member.get("temperature", 1.0)
    return f"{name} x{member['weight']:.2f}" + (
        "" if temperature == 1.0 else f" T{temperature:.2f}"
    )


def _hardware(config: dict) -> str:
    device = config.get("device", {})
    isa = f" {device['isa']}" if device.get("isa") else ""
    return f"{device.get('name', '?')}{isa} x{device.get('threads', '?')}"


def differing_settings(frame: pd.DataFrame) -> list[str]:
    """Setting keys whose value differs between the given runs (seed and paths excluded)."""
    keys = sorted({k for s in frame["settings"] for k in s})
    return [
        k
        for k in keys
        if k != "model.name"
        and len({json.dumps(s.get(k), default=str) for s in frame["settings"]}) > 1
    ]


def settings_label(settings: dict, keys: list[str]) -> str:
    """`key=value` for the given keys, section prefixes dropped (``train.lr`` → ``lr=0.1``); a
    key the run leaves unset shows its default, or nothing where there is none (another
    model's argument: ``channels=None`` would say what the run is not).  The model's input
    size is left out where it is the data's size, which already says it (``size=44``)."""
    defaults = default_settings()

    def value(key: str):
        return settings[key] if key in settings else _cell(defaults.get(key))

    same_size = "data.size" in keys and value("data.size") == value("model.input_size")
    return " ".join(
        f"{k.split('.', 1)[-1]}={value(k)}"
        for k in keys
        if (k in settings or k in defaults) and not (k == "model.input_size" and same_size)
    )


def _apply_filters(frame: pd.DataFrame, filters: list[str]) -> pd.DataFrame:
    for item in filters:
        if "=" not in item:
            frame = frame[
                frame["run"].map(lambda r, pattern=f"*{item}*": fnmatch.fnmatch(r, pattern))
            ]
            continue
        key, value = item.split("=", 1)

        def matches(row, key=key, value=value):
            actual = row.get(key, row["settings"].get(key, row["settings"].get(f"train.{key}")))
            return fnmatch.fnmatch(str(actual), value)

        frame = frame[frame.apply(matches, axis=1)]
    return frame


def leaderboards(
    frame: pd.DataFrame,
    metric: str = "accuracy",
    group_by: list[str] | None = None,
    filters: list[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """One leaderboard per dataset and class set: seeds grouped, sorted by `metric` (mean)."""
    if frame.empty:
        return {}
    frame = _apply_filters(frame, filters or [])
    boards = {}
    for dataset, section in frame.groupby("dataset", sort=True):
        section = section.copy()
        # settings that vary between runs of the same model (input size differs between models
        # by design and says nothing)
        differing = {model: differing_settings(runs) for model, runs in section.groupby("model")}
        if group_by:
            differing = {
                m: [k for k in keys if k in group_by or k.split(".", 1)[-1] in group_by]
                for m, keys in differing.items()
            }
        section["config"] = [
            settings_label(s, differing[m]) for m, s in zip(section["model"], section["settings"])
        ]
        keys = ["model", "config"]
        rows = []
        for key, group in section.groupby(keys, sort=False):
            row = dict(zip(keys, key))
            row["n"] = len(group)
            row["runs"] = ";".join(group["run"])
            for m in METRICS:
                values = pd.to_numeric(group[m], errors="coerce")
                row[f"{m}_mean"] = values.mean()
                row[f"{m}_std"] = values.std(ddof=1) if values.count() > 1 else 0.0
            # a single run's 95% Wilson interval over its test faces; seeds keep mean ± std (n)
            row["accuracy_lo"], row["accuracy_hi"] = _single_interval(group)
            row["test_faces"] = _one_count(group["test_faces"])
            # the mean time-to-target covers only the runs that got there; say how many did
            row["target_reached"] = int(pd.to_numeric(group["time_to_target_s"]).notna().sum())
            row["target_tracked"] = int(group["target_tracked"].sum())
            # the class the model calls most often, against its share of the truth (drift)
            shares = pd.DataFrame(list(group["pred_shares"])).mean()
            truth = pd.DataFrame(list(group["truth_shares"])).mean()
            top = shares.idxmax() if len(shares) else ""
            row["most_predicted"] = top
            row["most_predicted_share"] = shares.max() if len(shares) else float("nan")
            row["most_predicted_truth"] = truth.get(top, float("nan")) if top else float("nan")
            recall = pd.DataFrame(list(group["recall"])).mean()  # per class, over seeds
            row["worst_class"] = recall.idxmin() if len(recall) else ""
            row["worst_class_recall_mean"] = recall.min() if len(recall) else float("nan")
            rows.append(row)
        board = pd.DataFrame(rows)
        if f"{metric}_mean" not in board:
            raise FerbenchError(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")
        ascending = METRICS[metric] == "lower"
        boards[dataset] = board.sort_values(
            f"{metric}_mean", ascending=ascending, na_position="last"
        ).reset_index(drop=True)
    return boards


def robustness_of_run(run: Run) -> dict:
    """The run's robustness suite: from metrics.json (eval.corruptions), or from the eval JSON
    `ferbench eval DATA --corruptions all --out RUN/robustness.json` wrote beside it."""
    suite = run.metrics.get("robustness")
    if suite is None and run.directory is not None:
        path = Path(run.directory) / "robustness.json"
        if path.is_file():
            suite = json.loads(path.read_text()).get("robustness")
    return suite or {}


def test_faces(metrics: dict) -> int | None:
    """How many test faces a run's accuracy counts: recorded since issue 55, else the sum of
    its confusion matrix (or per-class supports), which every run has kept."""
    if metrics.get("faces"):
        return int(metrics["faces"])
    if metrics.get("confusion"):
        return int(sum(map(sum, metrics["confusion"])))
    supports = [c.get("support", 0) for c in (metrics.get("per_class") or {}).values()]
    return int(sum(supports)) or None


def _one_count(values: pd.Series) -> int | None:
    counts = set(pd.to_numeric(values, errors="coerce").dropna().astype(int))
    return counts.pop() if len(counts) == 1 else None


def _single_interval(group: pd.DataFrame) -> tuple[float, float]:
    """A one-run entry's 95% Wilson interval of its test accuracy (NaN for seeds, whose spread
    is their std, and where the count of test faces is unknown)."""
    from ferbench.report.stats import accuracy_interval

    faces = _one_count(group["test_faces"])
    accuracy = pd.to_numeric(group["accuracy"], errors="coerce")
    if len(group) != 1 or not faces or accuracy.isna().all():
        return float("nan"), float("nan")
    return accuracy_interval(float(accuracy.iloc[0]), faces)


def accuracy_cell(mean, std, low, high, n: int) -> str:
    """A test accuracy as tables show it: seeds as mean ± std (n runs beside it), a single run
    with its 95% interval over the test faces, ``73.1 (71.7–74.6)``."""
    from ferbench.report.stats import interval_text

    cell = fmt_pm(mean, std, 100)
    if n == 1 and cell != "-" and interval_text(low, high) != "-":
        cell += f" ({interval_text(low, high)})"
    return cell


def leader_is_uncertain(board: pd.DataFrame, metric: str = "accuracy") -> bool:
    """True when the leader's margin over the runner-up is within one standard deviation."""
    if len(board) < 2:
        return False
    first, second = board.iloc[0], board.iloc[1]
    spread = max(first[f"{metric}_std"] or 0.0, second[f"{metric}_std"] or 0.0)
    return abs(first[f"{metric}_mean"] - second[f"{metric}_mean"]) <= spread


def drift_cell(name, share, truth) -> str:
    """``sad 19% (17%)``: the class predicted most often, its share, and its share of the truth."""
    if not name or pd.isna(share):
        return "-"
    return f"{name} {share:.0%} ({truth:.0%})"


def fmt_pm(mean, std, scale=1.0, digits=1) -> str:
    if mean is None or pd.isna(mean):
        return "-"
    if std and not pd.isna(std) and std > 0:
        return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f}"


def time_to_target_cell(mean, std, reached: int, n: int) -> str:
    """Seconds to the target over the runs that reached it, with the count when some did not
    (n: the runs that track a target; "-" when none does, as an ensemble does not)."""
    if n == 0:
        return "-"
    if reached == 0:
        return "not reached"
    cell = fmt_pm(mean, std, 1, 0)
    return cell if reached == n else f"{cell} ({reached}/{n} runs)"


def display_table(board: pd.DataFrame) -> pd.DataFrame:
    """The human leaderboard: percentages, M params, MFLOPs, seconds, ms."""
    out = pd.DataFrame(
        {
            "model": board["model"],
            "settings": board["config"],
            "n": board["n"],
            "test acc % (95% CI)": [
                accuracy_cell(m, s, lo, hi, n)
                for m, s, lo, hi, n in zip(
                    board["accuracy_mean"],
                    board["accuracy_std"],
                    board["accuracy_lo"],
                    board["accuracy_hi"],
                    board["n"],
                )
            ],
            "w/o leaked %": [
                fmt_pm(m, s, 100) if not pd.isna(m) else "-"
                for m, s in zip(board["accuracy_clean_mean"], board["accuracy_clean_std"])
            ],
            "bal. acc %": [
                fmt_pm(m, s, 100)
                for m, s in zip(board["balanced_accuracy_mean"], board["balanced_accuracy_std"])
            ],
            "macro-F1 %": [
                fmt_pm(m, s, 100) for m, s in zip(board["macro_f1_mean"], board["macro_f1_std"])
            ],
            "ECE %": [fmt_pm(m, s, 100) for m, s in zip(board["ece_mean"], board["ece_std"])],
            "mCA %": [
                fmt_pm(m, s, 100) if not pd.isna(m) else "-"
                for m, s in zip(board["accuracy_corrupt_mean"], board["accuracy_corrupt_std"])
            ],
            "most predicted (truth)": [
                drift_cell(c, s, t)
                for c, s, t in zip(
                    board["most_predicted"],
                    board["most_predicted_share"],
                    board["most_predicted_truth"],
                )
            ],
            "worst class": [
                f"{c} {r * 100:.0f}%" if c and not pd.isna(r) else "-"
                for c, r in zip(board["worst_class"], board["worst_class_recall_mean"])
            ],
            "params M": [f"{p / 1e6:.2f}" for p in board["parameters_mean"]],
            "MFLOPs": [f"{f / 1e6:,.0f}" for f in board["flops_mean"]],
            "train s": [
                fmt_pm(m, s, 1, 0)
                for m, s in zip(board["train_time_s_mean"], board["train_time_s_std"])
            ],
            "to target s": [
                time_to_target_cell(m, s, reached, n)
                for m, s, reached, n in zip(
                    board["time_to_target_s_mean"],
                    board["time_to_target_s_std"],
                    board["target_reached"],
                    board["target_tracked"],
                )
            ],
            "infer img/s": [
                f"{v:,.0f}" if not pd.isna(v) else "-" for v in board["inference_images_per_s_mean"]
            ],
            "latency ms": [
                f"{v:.2f}" if not pd.isna(v) else "-" for v in board["latency_batch1_ms_mean"]
            ],
        }
    )
    return out


def _png_b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_outputs(
    boards: dict[str, pd.DataFrame],
    runs: list[Run],
    frame: pd.DataFrame,
    out: Path,
    metric: str,
    formats: set[str],
    target: float,
) -> list[Path]:
    """comparison.csv / .md, PNG plots and a self-contained report.html under `out`."""
    from ferbench.report import plots

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    combined = (
        pd.concat([b.assign(dataset=d) for d, b in boards.items()], ignore_index=True)
        if boards
        else pd.DataFrame()
    )
    if "csv" in formats:
        (out / "comparison.csv").write_text(combined.to_csv(index=False))
        written.append(out / "comparison.csv")
    unfinished = [r for r in runs if r.status != "done"]
    md = [
        f"# ferbench comparison\n\nSorted by {metric}; mean ± std over seeds (n runs), a single "
        "run's test accuracy with its 95% Wilson interval over the test faces. Test split "
        "evaluated once per run with the checkpoint chosen on validation.\n"
    ]
    html_sections = []
    by_run = {str(r.path): r for r in runs}
    for index, (dataset, board) in enumerate(boards.items()):
        table = display_table(board)
        note = ""
        if leader_is_uncertain(board, metric):
            note = (
                f"Leader's margin over the runner-up is within one standard deviation of "
                f"{metric}: not a clear win."
            )
        md += [f"\n## {dataset}\n", markdown_table(table)]
        if note:
            md.append(f"\n> {note}\n")
        images = (
            plots.section_plots(
                board, by_run, frame[frame["dataset"] == dataset], out, index, target
            )
            if "png" in formats or "html" in formats
            else []
        )
        written += images
        html_sections.append(_html_section(dataset, table, note, images))
    if unfinished:
        md.append("\n## Failed or unfinished runs\n")
        md += [f"- `{r.path}`: {r.status} {r.error}" for r in unfinished]
    if "md" in formats:
        (out / "comparison.md").write_text("\n".join(md) + "\n")
        written.append(out / "comparison.md")
    if "html" in formats:
        (out / "report.html").write_text(_html_page(html_sections, unfinished, metric))
        written.append(out / "report.html")
    return written


def markdown_table(table: pd.DataFrame) -> str:
    cells = lambda values: "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"  # noqa: E731
    lines = [cells(table.columns), "|" + "---|" * len(table.columns)]
    lines += [cells(row) for row in table.itertuples(index=False)]
    return "\n".join(lines)


def _html_section(dataset: str, table: pd.DataFrame, note: str, images: list[Path]) -> str:
    parts = [
        f"<h2>{html.escape(dataset)}</h2>",
        table.to_html(index=False, classes="board", border=0),
    ]
    if note:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    for image in images:
        title = image.stem.rsplit("_", 1)[0].replace("_", " ")
        parts.append(
            f"<figure><img alt='{html.escape(title)}' "
            f"src='data:image/png;base64,{_png_b64(image)}'>"
            f"<figcaption>{html.escape(title)}</figcaption></figure>"
        )
    return "\n".join(parts)


def _html_page(sections: list[str], unfinished: list[Run], metric: str) -> str:
    failed = ""
    if unfinished:
        items = "".join(
            f"<li><code>{html.escape(str(r.path))}</code>: {html.escape(r.status)} "
            f"{html.escape(r.error)}</li>"
            for r in unfinished
        )
        failed = f"<h2>Failed or unfinished runs</h2><ul>{items}</ul>"
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}"
        "table.board{border-collapse:collapse;font-size:13px}"
        "table.board td,table.board th"
        "{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}"
        "table.board tr:first-child td{font-weight:bold;background:#eef6ee}"
        "figure{display:inline-block;margin:1em 1em 0 0}img{max-width:100%}"
        ".note{color:#a60;font-weight:bold}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>ferbench comparison</title>"
        f"<style>{style}</style></head><body><h1>ferbench comparison</h1>"
        f"<p>Sorted by {html.escape(metric)}; mean ± std over seeds. Model selection on "
        f"validation, test evaluated once per run.</p>{''.join(sections)}{failed}</body></html>\n"
    )
