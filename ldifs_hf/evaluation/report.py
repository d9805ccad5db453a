"""Concept-forgetting reports: checkpoints x benchmarks -> results.json, a CSV, a Markdown table shaped
like the paper's Table 3, PNG plots of Δ_ZS and Δ_LP and of the distances over training, and the
trade-off figure (A_FT against mean Δ on the other tasks, across seeds).

A *record* is one evaluated checkpoint, the same shape the callback logs:
    {"method", "finetune_task", "checkpoint", "step", "percent",
     "eval": {bench: {"zs_acc", "lp_acc", "delta_zs", "delta_lp", "feature_distance"}},
     "a_ft", "param_distance", "feature_distance", "status", "error"}
A record of a checkpoint scored at a WiSE-FT weight also carries its "alpha": tables and plots then
show it as its own method, "method@α=0.5" (`method_label`), and the CSV gains an alpha column.
A record whose "status" is "failed" (could not be loaded or scored) or "non_finite" (NaN/inf weights or
scores) has no scores: the tables show it as such, with its error, and the plots leave it out; a
record without a status is scored ("ok").
"""

from __future__ import annotations

import csv
import json
import logging
import os
from typing import Iterable, Mapping, Sequence

import numpy as np


logger = logging.getLogger(__name__)

RESULTS_JSON, RESULTS_CSV, RESULTS_MD = "results.json", "results.csv", "results.md"
DELTAS_PLOT, DISTANCES_PLOT = "deltas_over_training.png", "distances_over_training.png"
CSV_COLUMNS = (
    "method", "finetune_task", "checkpoint", "step", "percent", "eval_task",
    "zs_acc", "lp_acc", "delta_zs", "delta_lp", "feature_distance", "a_ft", "param_distance", "status", "error",
)
OK = "ok"
# What a table cell says for a record without scores.
_STATUS_CELL = {"failed": "failed", "non_finite": "non-finite"}


# One colour per method in every figure and run: the built-in methods in the registry's order (then the KL
# anchor's two), fixed here; any other name gets one of `_OTHER_COLOURS` by a stable hash of its name.
METHOD_COLOURS = {
    "zs-init-ce": "#1f77b4", "lp-init-ce": "#17becf", "zs-init-l2sp": "#ff7f0e", "lp-init-l2sp": "#bcbd22",
    "flyp": "#7f7f7f", "flyp-ce": "#8c564b", "zs-init-ldifs": "#d62728", "lp-init-ldifs": "#9467bd",
    "zs-init-kl": "#2ca02c", "lp-init-kl": "#e377c2",
    # A causal LM's SFT (`language`): each regularizer in its CLIP colour.
    "sft": "#1f77b4", "sft+l2sp": "#ff7f0e", "sft+ldifs": "#d62728", "sft+kl": "#2ca02c",
}
_OTHER_COLOURS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363")


def method_colour(method: str) -> str:
    """The colour of `method` (its name before any "@α=…") in every figure: `METHOD_COLOURS`, else a
    stable pick from `_OTHER_COLOURS` (the same in every run and process)."""
    import zlib

    name = str(method).split("@", 1)[0]
    return METHOD_COLOURS.get(name) or _OTHER_COLOURS[zlib.crc32(name.encode()) % len(_OTHER_COLOURS)]


def method_label(record: Mapping) -> str:
    """The method as tables and plots name it: with "@α=A" for a record scored at a WiSE-FT weight A."""
    alpha = record.get("alpha")
    return str(record.get("method")) if alpha is None else f"{record.get('method')}@α={alpha:g}"


def csv_columns(records: Iterable[Mapping]) -> tuple[str, ...]:
    """`CSV_COLUMNS`, with an "alpha" column after "percent" when a record carries a WiSE-FT weight."""
    if not any(record.get("alpha") is not None for record in records):
        return CSV_COLUMNS
    at = CSV_COLUMNS.index("percent") + 1
    return CSV_COLUMNS[:at] + ("alpha",) + CSV_COLUMNS[at:]


def status(record: Mapping) -> str:
    """"ok", "failed" or "non_finite" (a record without a status was scored)."""
    return record.get("status") or OK


def unscored(records: Iterable[Mapping]) -> list[Mapping]:
    """The records that failed or are not finite."""
    return [r for r in records if status(r) != OK]


# -- tables ---------------------------------------------------------------------------------------


def pretrained_start_record(method, finetune_task, checkpoint, pretrained_accuracies, *, seed=None, distances: bool = True) -> dict:
    """A run's 0 % point: every run starts from the pretrained encoder, so Δ = 0 there and (with
    `distances`) the distances are 0 exactly. It lets the plots start where training starts."""
    scores = {}
    for bench, accuracy in pretrained_accuracies.items():
        scores[bench] = {"zs_acc": accuracy["zs"], "lp_acc": accuracy["lp"], "delta_zs": 0.0, "delta_lp": 0.0}
        if distances:
            scores[bench]["feature_distance"] = 0.0
    record = {"method": method, "finetune_task": finetune_task, "checkpoint": checkpoint, "step": 0, "percent": 0.0}
    if seed is not None:
        record["seed"] = seed
    record.update(eval=scores, a_ft=None)
    if distances:
        record.update(param_distance=0.0, feature_distance=0.0)
    return record



def csv_rows(records: Iterable[Mapping]) -> list[dict]:
    """One row per (record, evaluated benchmark), with the columns `csv_columns` gives."""
    records = list(records)
    columns = csv_columns(records)
    rows = []
    for record in records:
        if status(record) != OK:  # one row saying why it has no scores
            rows.append({**{column: record.get(column) for column in columns}, "status": status(record)})
            continue
        for eval_task, values in record.get("eval", {}).items():
            row = {column: record.get(column) for column in columns}
            row.update(eval_task=eval_task, status=OK, **{k: v for k, v in values.items() if k in columns})
            rows.append(row)
    return rows


def final_records(records: Iterable[Mapping]) -> dict[tuple[str | None, str], Mapping]:
    """(fine-tune task, method label) -> the run's last record (highest percent, then step), failed or
    not: a run whose final model failed shows as failed, not as an earlier checkpoint. Each WiSE-FT
    weight of a run is its own entry (`method_label`)."""
    final: dict = {}
    for record in records:
        key = (record.get("finetune_task"), method_label(record))
        order = (record.get("percent") if record.get("percent") is not None else -1, record.get("step") if record.get("step") is not None else -1)
        if key not in final or order >= final[key][0]:
            final[key] = (order, record)
    return {key: record for key, (_, record) in final.items()}


def _points(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "–"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def markdown_table(records: Iterable[Mapping], pretrained_accuracies: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """Table 3 of the paper: rows fine-tune task x eval task, columns methods, cells "Δ_ZS / Δ_LP"
    (percentage points), an A_FT row per fine-tune task and the mean Δ over the other tasks."""
    records = list(records)
    final = final_records(records)
    methods = sorted({method for _, method in final})
    tasks = sorted({task for task, _ in final}, key=lambda t: (t is None, t or ""))
    lines = [
        "| fine-tune task | eval task | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for task in tasks:
        runs = {method: final.get((task, method)) for method in methods}
        label = task or "(unknown)"
        lines.append(
            f"| {label} | A_FT | "
            + " | ".join(_STATUS_CELL.get(status(r), _points(r.get("a_ft"), signed=False)) if r else "–" for r in runs.values())
            + " |"
        )
        eval_tasks = sorted({name for r in runs.values() if r for name in r.get("eval", {})})
        for eval_task in eval_tasks:
            cells = []
            for record in runs.values():
                values = (record or {}).get("eval", {}).get(eval_task)
                if record and status(record) != OK:
                    cells.append(_STATUS_CELL[status(record)])
                    continue
                cells.append(f"{_points(values['delta_zs'])} / {_points(values['delta_lp'])}" if values else "–")
            lines.append(f"| {label} | {eval_task} | " + " | ".join(cells) + " |")
        others = [name for name in eval_tasks if name != task]
        if len(others) > 1:
            cells = []
            for record in runs.values():
                if record and status(record) != OK:
                    cells.append(_STATUS_CELL[status(record)])
                    continue
                values = [(record or {}).get("eval", {}).get(name) for name in others]
                values = [v for v in values if v]
                cells.append(
                    f"{_points(sum(v['delta_zs'] for v in values) / len(values))} / {_points(sum(v['delta_lp'] for v in values) / len(values))}" if values else "–"
                )
            lines.append(f"| {label} | mean (other tasks) | " + " | ".join(cells) + " |")
    text = (
        "Concept forgetting: Δ_ZS / Δ_LP in percentage points against the pretrained model "
        "(negative = forgetting); A_FT is the fine-tuned model's accuracy on its own task (%).\n\n" + "\n".join(lines) + "\n"
    )
    failures = unscored(records)
    if failures:
        text += "\nNot scored (no accuracy or Δ is reported for these):\n\n| checkpoint | method | status | error |\n|---|---|---|---|\n"
        text += "".join(
            f"| {r.get('checkpoint')} | {method_label(r)} | {_STATUS_CELL[status(r)]} | {' '.join(str(r.get('error')).split()).replace('|', '/')} |\n"
            for r in failures
        )
    if pretrained_accuracies:
        text += "\nPretrained model accuracies (%):\n\n| eval task | A_ZS | A_LP |\n|---|---|---|\n"
        text += "".join(f"| {name} | {_points(a['zs'], False)} | {_points(a['lp'], False)} |\n" for name, a in sorted(pretrained_accuracies.items()))
    return text


# -- plots ----------------------------------------------------------------------------------------


def _run_label(record: Mapping) -> str:
    task = record.get("finetune_task")
    return f"{method_label(record)} ({task})" if task else method_label(record)


def _curves(records: Iterable[Mapping]) -> tuple[dict[str, list[Mapping]], str]:
    """Records grouped by run and sorted along training; the x-axis is % of training when every
    record knows it, else the step, else the order given."""
    records = [r for r in records if status(r) == OK]
    use_percent = all(r.get("percent") is not None for r in records)
    use_step = not use_percent and all(r.get("step") is not None for r in records)
    runs: dict[str, list[Mapping]] = {}
    for index, record in enumerate(records):
        x = record["percent"] if use_percent else record["step"] if use_step else index
        runs.setdefault(_run_label(record), []).append({**record, "_x": x})
    for points in runs.values():
        points.sort(key=lambda r: r["_x"])
    return runs, "training progress (%)" if use_percent else "training step" if use_step else "checkpoint"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str, legend_handles: Sequence | None = None, title: str = "") -> str:
    """Save with the legend (when given) to the right of the panels, outside the data, and the title above."""
    if legend_handles:
        fig.legend(handles=list(legend_handles), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small", frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _run_handles(runs: Mapping[str, list[Mapping]]) -> list:
    """A legend entry per run in its method's colour, named by its method alone when every run has one fine-tuning task."""
    from matplotlib.lines import Line2D

    one_task = len({points[0].get("finetune_task") for points in runs.values()}) == 1
    return [Line2D([], [], color=method_colour(points[0].get("method")), marker="o", markersize=4,
                   label=method_label(points[0]) if one_task else run) for run, points in runs.items()]


def plot_deltas(records: Iterable[Mapping], path: str, *, title: str = "") -> str:
    """Δ_ZS (top row) and Δ_LP (bottom row) along training, in percentage points, one line per run in its
    method's colour: the fine-tuning task's column first, shaded and titled as such, then one column per
    task it may forget; the legend outside the panels."""
    runs, xlabel = _curves(records)
    names = sorted({name for points in runs.values() for r in points for name in r.get("eval", {})})
    if not names:
        raise ValueError("no evaluated benchmarks in the records, nothing to plot")
    tuned = {r.get("finetune_task") for points in runs.values() for r in points}
    names.sort(key=lambda name: name not in tuned)  # the fine-tuning task(s) first, the others in name order
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 6.4), squeeze=False)
    for row, (kind, label) in enumerate((("delta_zs", "Δ_ZS"), ("delta_lp", "Δ_LP"))):
        for ax, name in zip(axes[row], names):
            for points in runs.values():
                xs = [r["_x"] for r in points if name in r.get("eval", {})]
                ys = [100 * r["eval"][name][kind] for r in points if name in r.get("eval", {})]
                if xs:
                    ax.plot(xs, ys, marker="o", markersize=3, color=method_colour(points[0].get("method")))
            ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
            role = "fine-tuning task" if name in tuned else "forgetting"
            if name in tuned:
                ax.set_facecolor("#f2f2f2")
            ax.set_title(f"{label}, {role}: {name}", fontsize="medium")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{label} (points)")
    return _save(plt, fig, path, _run_handles(runs), title or "Δ against the pretrained model along training")


def plot_tradeoff(points: Mapping[str, Mapping[str, Sequence[float]]], path: str, *, title: str = "") -> str:
    """The paper's claim at a glance: per method, accuracy on the fine-tuning task (A_FT) against the
    mean Δ on the other tasks, Δ_ZS and Δ_LP side by side, with error bars of one (sample) standard
    deviation across seeds, each method in its colour, the legend outside the panels.

    `points`: method -> {"a_ft": [per seed], "delta_zs": [per seed], "delta_lp": [per seed]}, in [0, 1].
    """
    if not points:
        raise ValueError("no methods to plot")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.4), squeeze=False)
    handles = []
    for ax, (kind, label) in zip(axes[0], (("delta_zs", "mean Δ_ZS on the other tasks"), ("delta_lp", "mean Δ_LP on the other tasks"))):
        handles = []
        for method, values in sorted(points.items()):
            x, y = 100 * np.asarray(values[kind], dtype=float), 100 * np.asarray(values["a_ft"], dtype=float)
            ddof = 1 if len(x) > 1 else 0
            handles.append(ax.errorbar(x.mean(), y.mean(), xerr=x.std(ddof=ddof), yerr=y.std(ddof=ddof), fmt="o", capsize=4,
                                       color=method_colour(method), label=f"{method} (n={len(x)})"))
        ax.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlabel(f"{label} (points; right = less forgetting)")
        ax.set_ylabel("A_FT (%)")
    return _save(plt, fig, path, handles, title or "fine-tuning accuracy vs forgetting (mean ± std over seeds)")


def plot_distances(records: Iterable[Mapping], path: str, *, title: str = "") -> str:
    """Two panels: ‖θ−θ0‖² and the feature distance (mean over benchmarks) along training, per run in its
    method's colour, the legend outside the panels."""
    runs, xlabel = _curves(records)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6), squeeze=False)
    panels = (("param_distance", "parameter distance ‖θ−θ0‖²"), ("feature_distance", "feature distance (eq. 3)"))
    for ax, (metric, name) in zip(axes[0], panels):
        for points in runs.values():
            xs = [r["_x"] for r in points if r.get(metric) is not None]
            ys = [r[metric] for r in points if r.get(metric) is not None]
            if xs:
                ax.plot(xs, ys, marker="o", markersize=3, color=method_colour(points[0].get("method")))
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name.split(" (")[0])
    return _save(plt, fig, path, _run_handles(runs), title or "distance from the pretrained model along training")


# -- everything -----------------------------------------------------------------------------------


def write_report(
    records: Sequence[Mapping],
    output_dir: str,
    *,
    pretrained: str | None = None,
    pretrained_accuracies: Mapping[str, Mapping[str, float]] | None = None,
    benchmarks: Sequence[str] | None = None,
    plots: bool = True,
) -> dict[str, str]:
    """Write results.json, results.csv, results.md and (with `plots`) the two PNGs; return their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {name: os.path.join(output_dir, file) for name, file in (("json", RESULTS_JSON), ("csv", RESULTS_CSV), ("markdown", RESULTS_MD))}
    with open(paths["json"], "w") as f:
        json.dump(
            {"pretrained": pretrained, "benchmarks": list(benchmarks or []), "pretrained_accuracy": pretrained_accuracies or {}, "records": list(records)},
            f,
            indent=2,
            default=str,
        )
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=csv_columns(records))
        writer.writeheader()
        writer.writerows(csv_rows(records))
    with open(paths["markdown"], "w") as f:
        f.write(markdown_table(records, pretrained_accuracies))
    if plots and any(status(r) == OK for r in records):
        paths["deltas_plot"] = plot_deltas(records, os.path.join(output_dir, DELTAS_PLOT))
        if any(r.get("param_distance") is not None for r in records):
            paths["distances_plot"] = plot_distances(records, os.path.join(output_dir, DISTANCES_PLOT))
    return paths
