"""The frontier: the score on the fine-tuning task (A_FT) against forgetting on the other tasks, one point
per (method, λ, α) over paired units, with the Pareto set decided by the paired test.

A point is the final checkpoint of a run (or an interpolation of it, WiSE-FT's α): x = A_FT, y = the mean
of a forgetting axis (CLIP: Δ_ZS and Δ_LP; a language model: Δ) over the evaluated tasks other than the
fine-tune task. Which keys a record holds is the axes' description (`FrontierAxes`), so CLIP and
language-model records go through the same code. Records carry "alpha" (absent = 1, the fine-tuned
model), "lambda" (absent = no regularizer), "seed" and, in a study of several worlds, "world": a unit is
(world, seed), and every method of a unit shares its world, data order, initial head and evaluation
sample. A record may also carry its scores on the tasks' validation splits (`"validation": {"a_ft",
"eval"}`): `frontier_points(..., split="validation")` reads those, and nothing else, for choosing λ and α.

A point is on the Pareto set unless another point beats it by the paired test (`evidence.better_by_test`,
over the units both have) on one axis and is not worse by the test on the other: float noise never
moves a point off the set, and points without two shared units never dominate each other.

Written: frontier.csv (one row per point: mean, 95 % interval and sample std over units per axis, the
Pareto flags, whether it was chosen on validation) and frontier.png (a panel per forgetting axis).
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from ..evidence import better_by_test, natural_key, t_interval
from .report import method_colour

FRONTIER_CSV, FRONTIER_PLOT = "frontier.csv", "frontier.png"
SPLITS = ("test", "validation")
# What makes a unit: every method run on the same (world, seed) is paired with the others of that unit.
UNIT_FIELDS = ("world", "seed")


@dataclass(frozen=True)
class Axis:
    """A forgetting axis: each task's `record["eval"][task][key]`, shown as `label` (e.g. "Δ_LP")."""

    key: str
    label: str


@dataclass(frozen=True)
class FrontierAxes:
    """What a frontier plots: A_FT (`record["a_ft"]`, the fine-tuning task's score) against the mean of
    each forgetting axis over the other tasks. Higher is better on every axis (Δ < 0 is forgetting)."""

    forgetting: tuple[Axis, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """"a_ft", then each forgetting axis's key: the metrics a point has and a claim compares."""
        return ("a_ft",) + tuple(axis.key for axis in self.forgetting)

    def label(self, name: str) -> str:
        """"A_FT" or the axis's label ("Δ_LP")."""
        return "A_FT" if name == "a_ft" else next(a.label for a in self.forgetting if a.key == name)

    def metric_name(self, name: str) -> str:
        """How a sentence names a metric: "A_FT" or "mean Δ_LP on the other tasks"."""
        return "A_FT" if name == "a_ft" else f"mean {self.label(name)} on the other tasks"


CLIP_AXES = FrontierAxes((Axis("delta_zs", "Δ_ZS"), Axis("delta_lp", "Δ_LP")))
# A language-model record (`ldifs_hf.language`): per task {"score", "base", "delta"}, "a_ft" the task's score.
LANGUAGE_AXES = FrontierAxes((Axis("delta", "Δ"),))


def unit_of(record: Mapping) -> str:
    """A record's unit as text, e.g. "world 1 seed 3" (only the fields it has; "one run" for none)."""
    return " ".join(f"{name} {record[name]}" for name in UNIT_FIELDS if record.get(name) is not None) or "one run"


def point_key(record: Mapping) -> tuple[str, float | None, float]:
    """(method, λ, α) of a record: α defaults to 1 (the fine-tuned model itself)."""
    alpha = record.get("alpha")
    return record.get("method"), record.get("lambda"), 1.0 if alpha is None else float(alpha)


def _final_per_run(records: Iterable[Mapping]) -> dict[tuple, Mapping]:
    """(method, λ, α, fine-tune task, unit) -> the record of the run's last checkpoint (highest percent, then step)."""
    final: dict[tuple, tuple[tuple, Mapping]] = {}
    for record in records:
        if (record.get("status") or "ok") != "ok" or record.get("checkpoint") == "pretrained":
            continue
        key = point_key(record) + (record.get("finetune_task"), unit_of(record))
        order = (record.get("percent") if record.get("percent") is not None else -1,
                 record.get("step") if record.get("step") is not None else -1)
        if key not in final or order >= final[key][0]:
            final[key] = (order, record)
    return {key: record for key, (_, record) in final.items()}


def run_scores(record: Mapping, axes: FrontierAxes = CLIP_AXES, split: str = "test") -> dict[str, float] | None:
    """A_FT and each forgetting axis's mean over the evaluated tasks other than the fine-tune task, on
    `split` ("test": the record's own scores; "validation": its "validation" scores, and only those);
    None when that split has no A_FT or no other task."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    scored = record if split == "test" else (record.get("validation") or {})
    task = record.get("finetune_task")
    others = [v for name, v in (scored.get("eval") or {}).items() if name != task]
    if scored.get("a_ft") is None or not others:
        return None
    scores = {"a_ft": float(scored["a_ft"])}
    for axis in axes.forgetting:
        values = [v[axis.key] for v in others if v.get(axis.key) is not None]
        if not values:
            return None
        scores[axis.key] = statistics.fmean(values)
    return scores


@dataclass
class FrontierPoint:
    """One (method, λ, α): per-unit values (averaged over fine-tune tasks within a unit), their mean, 95 %
    interval and std; `spec` is the method's recorded facts (head init, objective, regularizer, towers);
    `split` the split its scores come from ("test", or "validation" for choosing λ and α)."""

    method: str
    lam: float | None
    alpha: float
    per_unit: dict[str, dict[str, float]] = field(default_factory=dict)
    pareto: dict[str, bool] = field(default_factory=dict)
    spec: dict | None = None
    split: str = "test"

    @property
    def key(self) -> tuple[str, float | None, float]:
        return self.method, self.lam, self.alpha

    @property
    def units(self) -> list[str]:
        return sorted(self.per_unit, key=natural_key)

    def values(self, name: str) -> list[float]:
        return [self.per_unit[unit][name] for unit in self.units]

    def mean(self, name: str) -> float:
        return statistics.fmean(self.values(name))

    def std(self, name: str) -> float:
        """Sample standard deviation over units (0 for one unit)."""
        values = self.values(name)
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def mean_std(self, name: str) -> tuple[float, float]:
        return self.mean(name), self.std(name)

    def interval(self, name: str) -> tuple[float, float]:
        """The t-based 95 % interval of the mean over units ((−inf, inf) for one unit)."""
        return t_interval(self.values(name))

    def paired(self, other: "FrontierPoint", name: str) -> dict[str, tuple[float, float]]:
        """unit -> (this point's value, the other's) over the units both have."""
        return {u: (self.per_unit[u][name], other.per_unit[u][name]) for u in self.per_unit if u in other.per_unit}

    def row(self, axes: FrontierAxes = CLIP_AXES) -> dict:
        row = {"method": self.method, "lambda": self.lam, "alpha": self.alpha, "units": len(self.per_unit)}
        for name in axes.names:
            low, high = self.interval(name)
            row.update({f"{name}_mean": self.mean(name), f"{name}_ci_low": low if math.isfinite(low) else None,
                        f"{name}_ci_high": high if math.isfinite(high) else None, f"{name}_std": self.std(name)})
        row.update({f"pareto_{axis.key}": self.pareto.get(axis.key, False) for axis in axes.forgetting})
        return row


def point_label(method: str, lam: float | None, alpha: float = 1.0) -> str:
    """A point as tables and claims name it: the method, its λ if any, and its α when it is not the run itself."""
    return (method if lam is None else f"{method} (λ = {lam:g})") + ("" if alpha == 1.0 else f" at α = {alpha:g}")


def frontier_points(records: Iterable[Mapping], axes: FrontierAxes = CLIP_AXES, *, split: str = "test") -> list[FrontierPoint]:
    """The frontier's points from evaluation records (any checkpoints: only each run's last is used), scored
    on `split`, sorted by method, λ, α, with the Pareto set of each forgetting axis marked."""
    per_unit_tasks: dict[tuple, dict] = {}
    specs: dict[tuple, dict] = {}
    for (method, lam, alpha, _task, unit), record in _final_per_run(records).items():
        scores = run_scores(record, axes, split)
        if scores is not None:
            per_unit_tasks.setdefault((method, lam, alpha), {}).setdefault(unit, []).append(scores)
            if record.get("method_spec"):
                specs[(method, lam, alpha)] = record["method_spec"]
    points = []
    for key, units in per_unit_tasks.items():
        point = FrontierPoint(*key, spec=specs.get(key), split=split)
        for unit, task_scores in units.items():
            point.per_unit[unit] = {name: statistics.fmean(s[name] for s in task_scores) for name in axes.names}
        points.append(point)
    points.sort(key=lambda p: (p.method, -math.inf if p.lam is None else p.lam, p.alpha))
    mark_pareto(points, axes)
    return points


def dominates(a: FrontierPoint, b: FrontierPoint, axis: str) -> bool:
    """Whether `a` beats `b` by the paired test on A_FT or on `axis`, and is not worse by the test on the other."""
    on_score = better_by_test([x - y for x, y in a.paired(b, "a_ft").values()])
    on_axis = better_by_test([x - y for x, y in a.paired(b, axis).values()])
    return (on_score == 1 and on_axis != -1) or (on_axis == 1 and on_score != -1)


def mark_pareto(points: Sequence[FrontierPoint], axes: FrontierAxes = CLIP_AXES) -> None:
    """Set each point's `pareto[axis]`: no other point dominates it by the test (`dominates`)."""
    for axis in axes.forgetting:
        for point in points:
            point.pareto[axis.key] = not any(dominates(other, point, axis.key) for other in points if other is not point)


def frontier_table(points: Sequence[FrontierPoint], axes: FrontierAxes = CLIP_AXES, chosen: Mapping[str, tuple] | None = None) -> str:
    """The frontier as Markdown: per (method, λ, α), A_FT and each axis's mean on the other tasks, mean and
    95 % interval over units, "*" on the Pareto set of that axis, "chosen" for a method's choice on validation."""
    chosen = chosen or {}
    header = ["method", "λ", "α", "units", *(axes.label(n) for n in axes.names)] + (["chosen on validation"] if chosen else [])
    lines = [f"The frontier (final models; A_FT in %, mean {' / '.join(a.label for a in axes.forgetting)} on the other tasks in points; "
             "mean [95 % CI] over units; * = on the Pareto set by the paired test):", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for p in points:
        cells = [p.method, "–" if p.lam is None else f"{p.lam:g}", f"{p.alpha:g}", str(len(p.per_unit))]
        for name in axes.names:
            cells.append(_mean_interval(p, name, signed=name != "a_ft") + (" *" if p.pareto.get(name) else ""))
        if chosen:
            cells.append("chosen" if chosen.get(p.method) == p.key else ("swept, not chosen" if p.method in chosen else "–"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_interval(point: FrontierPoint, name: str, signed: bool) -> str:
    mean, (low, high) = 100 * point.mean(name), point.interval(name)
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return text + (f" [{100 * low:+.1f}, {100 * high:+.1f}]" if math.isfinite(low) else "")


def write_frontier_csv(points: Sequence[FrontierPoint], path: str, axes: FrontierAxes = CLIP_AXES,
                       chosen: Mapping[str, tuple] | None = None) -> str:
    chosen = chosen or {}
    rows = [{**p.row(axes), "chosen": chosen.get(p.method) == p.key} for p in points]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["method"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_frontier(points: Sequence[FrontierPoint], path: str, *, axes: FrontierAxes = CLIP_AXES, title: str = "",
                  chosen: Mapping[str, tuple] | None = None) -> str:
    """A panel per forgetting axis (its mean on the other tasks, y) against A_FT (x), in points. Each
    method has its colour (`report.method_colour`); circles joined by a solid line are its WiSE-FT α
    sweep, squares joined by a dashed line its λ sweep at α = 1; the Pareto set is ringed in black with
    its 95 % intervals; a method's point chosen on validation is a star, its other points (swept, not
    chosen) are faded. The legend sits outside the panels."""
    if not points:
        raise ValueError("no frontier points to plot: no run has A_FT and another evaluated task")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    chosen = chosen or {}
    fig, panels = plt.subplots(1, len(axes.forgetting), figsize=(5.0 * len(axes.forgetting), 4.6), squeeze=False)
    methods = sorted({p.method for p in points})
    for ax, axis in zip(panels[0], axes.forgetting):
        _draw_sweeps(ax, points, axis.key, chosen)
        _draw_pareto_and_choices(ax, points, axis.key, chosen)
        ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel("A_FT (%)")
        ax.set_ylabel(f"mean {axis.label} on the other tasks (points)")
        ax.set_title(f"{axis.label}: up = less forgetting, right = better on the task", fontsize="medium")
    handles = [Line2D([], [], color=method_colour(m), linewidth=2.5, label=m) for m in methods]
    alphas, lambdas = sweep_kinds(points)  # the legend names only the sweeps the figure draws
    handles += [Line2D([], [], color="black", marker="o", markersize=5, linestyle="-", label="α sweep (WiSE-FT), α = 0 … 1")] * alphas
    handles += [Line2D([], [], color="black", marker="s", markersize=5, linestyle="--", label="λ sweep at α = 1")] * lambdas
    handles += [Line2D([], [], color="black", marker="o", markersize=11, markerfacecolor="none", linestyle="none",
                       label="Pareto set (paired test), 95 % CI")]
    if chosen:
        handles += [Line2D([], [], color="black", marker="*", markersize=12, linestyle="none", label="chosen on validation"),
                    Line2D([], [], color="grey", marker="o", alpha=0.35, linestyle="none", label="swept, not chosen (faded)")]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small", frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def sweep_kinds(points: Sequence[FrontierPoint]) -> tuple[bool, bool]:
    """Which sweeps `points` hold: (some method and λ at more than one α, some method at more than one λ at α = 1)."""
    alphas, lambdas = {}, {}
    for p in points:
        alphas.setdefault((p.method, p.lam), set()).add(p.alpha)
        if p.alpha == 1.0 and p.lam is not None:
            lambdas.setdefault(p.method, set()).add(p.lam)
    return any(len(a) > 1 for a in alphas.values()), any(len(w) > 1 for w in lambdas.values())


def _xy(point: FrontierPoint, name: str) -> tuple[float, float]:
    return 100 * point.mean("a_ft"), 100 * point.mean(name)


def _faded(point: FrontierPoint, chosen: Mapping[str, tuple]) -> bool:
    return point.method in chosen and chosen[point.method] != point.key


def _draw_sweeps(ax, points: Sequence[FrontierPoint], name: str, chosen: Mapping[str, tuple]) -> None:
    """Each (method, λ)'s α curve (circles, solid) and each method's λ sweep at α = 1 (squares, dashed)."""
    curves: dict[tuple, list[FrontierPoint]] = {}
    for p in points:
        curves.setdefault((p.method, p.lam), []).append(p)
    for (method, _), curve in curves.items():
        curve.sort(key=lambda p: p.alpha)
        xs, ys = zip(*(_xy(p, name) for p in curve))
        ax.plot(xs, ys, "-", color=method_colour(method), linewidth=1.2, alpha=0.6)
        for p in curve:
            ax.plot(*_xy(p, name), "o", color=method_colour(method), markersize=5, alpha=0.35 if _faded(p, chosen) else 1.0)
    for method in sorted({p.method for p in points}):
        sweep = sorted((p for p in points if p.method == method and p.lam is not None and p.alpha == 1.0), key=lambda p: p.lam)
        if len(sweep) > 1:
            xs, ys = zip(*(_xy(p, name) for p in sweep))
            ax.plot(xs, ys, "--", color=method_colour(method), linewidth=1.0, alpha=0.6)
            for p in sweep:
                ax.plot(*_xy(p, name), "s", color=method_colour(method), markersize=5, alpha=0.35 if _faded(p, chosen) else 1.0)


def _draw_pareto_and_choices(ax, points: Sequence[FrontierPoint], name: str, chosen: Mapping[str, tuple]) -> None:
    for p in points:
        x, y = _xy(p, name)
        if p.pareto.get(name):
            (xlow, xhigh), (ylow, yhigh) = p.interval("a_ft"), p.interval(name)
            if math.isfinite(xlow):
                ax.errorbar(x, y, xerr=[[x - 100 * xlow], [100 * xhigh - x]], yerr=[[y - 100 * ylow], [100 * yhigh - y]],
                            fmt="none", ecolor="black", elinewidth=0.8, capsize=2, zorder=4)
            ax.plot(x, y, "o", markersize=11, markerfacecolor="none", markeredgecolor="black", markeredgewidth=1.1, zorder=5)
        if chosen.get(p.method) == p.key:
            ax.plot(x, y, "*", markersize=13, color=method_colour(p.method), markeredgecolor="black", markeredgewidth=0.8, zorder=6)


def write_frontier(points: Sequence[FrontierPoint], output_dir: str, *, axes: FrontierAxes = CLIP_AXES, title: str = "",
                   plot: bool = True, chosen: Mapping[str, tuple] | None = None) -> dict[str, str]:
    """frontier.csv and (with `plot`) frontier.png in `output_dir`; {} without points."""
    if not points:
        return {}
    os.makedirs(output_dir, exist_ok=True)
    paths = {"frontier_csv": write_frontier_csv(points, os.path.join(output_dir, FRONTIER_CSV), axes, chosen)}
    if plot:
        paths["frontier_plot"] = plot_frontier(points, os.path.join(output_dir, FRONTIER_PLOT), axes=axes, title=title, chosen=chosen)
    return paths
