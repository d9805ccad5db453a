"""The frontier: accuracy on the fine-tuning task (A_FT) against forgetting on the other tasks, one point
per (method, λ, α), mean ± std over seeds, with the Pareto set marked; and paired claims over seeds.

A point is the final checkpoint of a run (or an interpolation of it, WiSE-FT's α): x = A_FT, y = the
mean Δ_ZS (or Δ_LP) over the evaluated tasks other than the fine-tune task. Records carry "alpha" (the
interpolation weight; absent = 1, the fine-tuned model) and "lambda" (the regularizer's weight; absent =
no regularizer). A point is on the Pareto set when no other point is at least as good on both axes and
better on one (higher A_FT, higher Δ = less forgetting).

Written: frontier.csv (one row per point) and frontier.png (two panels, Δ_ZS and Δ_LP, one curve per
method and λ over α, one dashed curve per method over λ at α = 1, Pareto points ringed).
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

FRONTIER_CSV, FRONTIER_PLOT = "frontier.csv", "frontier.png"
AXES = ("delta_zs", "delta_lp")
# How a claim's sentence names each metric.
METRIC_NAMES = {"a_ft": "A_FT", "delta_zs": "mean Δ_ZS on the other tasks", "delta_lp": "mean Δ_LP on the other tasks"}
FRONTIER_COLUMNS = (
    "method", "lambda", "alpha", "seeds", "a_ft_mean", "a_ft_std",
    "delta_zs_mean", "delta_zs_std", "delta_lp_mean", "delta_lp_std", "pareto_zs", "pareto_lp",
)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def point_key(record: Mapping) -> tuple[str, float | None, float]:
    """(method, λ, α) of a record: α defaults to 1 (the fine-tuned model itself)."""
    alpha = record.get("alpha")
    return record.get("method"), record.get("lambda"), 1.0 if alpha is None else float(alpha)


def _final_per_run(records: Iterable[Mapping]) -> dict[tuple, Mapping]:
    """(method, λ, α, fine-tune task, seed) -> the record of the run's last checkpoint (highest percent, then step)."""
    final: dict[tuple, tuple[tuple, Mapping]] = {}
    for record in records:
        if (record.get("status") or "ok") != "ok" or record.get("checkpoint") == "pretrained":
            continue
        key = point_key(record) + (record.get("finetune_task"), record.get("seed"))
        order = (record.get("percent") if record.get("percent") is not None else -1,
                 record.get("step") if record.get("step") is not None else -1)
        if key not in final or order >= final[key][0]:
            final[key] = (order, record)
    return {key: record for key, (_, record) in final.items()}


def run_scores(record: Mapping) -> dict[str, float] | None:
    """A_FT and the mean Δ_ZS / Δ_LP over the evaluated tasks other than the fine-tune task; None when the
    record has no A_FT or no other task."""
    task = record.get("finetune_task")
    others = [v for name, v in (record.get("eval") or {}).items() if name != task]
    if record.get("a_ft") is None or not others:
        return None
    scores = {"a_ft": float(record["a_ft"])}
    for axis in AXES:
        values = [v[axis] for v in others if v.get(axis) is not None]
        if not values:
            return None
        scores[axis] = statistics.fmean(values)
    return scores


@dataclass
class FrontierPoint:
    """One (method, λ, α): per-seed values (averaged over fine-tune tasks within a seed), mean ± std."""

    method: str
    lam: float | None
    alpha: float
    per_seed: dict[int | None, dict[str, float]] = field(default_factory=dict)
    pareto: dict[str, bool] = field(default_factory=dict)

    def values(self, name: str) -> list[float]:
        return [scores[name] for _, scores in sorted(self.per_seed.items(), key=lambda kv: (kv[0] is None, kv[0]))]

    def mean_std(self, name: str) -> tuple[float, float]:
        return _mean_std(self.values(name))

    def row(self) -> dict:
        row = {"method": self.method, "lambda": self.lam, "alpha": self.alpha, "seeds": len(self.per_seed)}
        for name in ("a_ft",) + AXES:
            row[f"{name}_mean"], row[f"{name}_std"] = self.mean_std(name)
        row["pareto_zs"], row["pareto_lp"] = self.pareto.get("delta_zs", False), self.pareto.get("delta_lp", False)
        return row


def frontier_points(records: Iterable[Mapping]) -> list[FrontierPoint]:
    """The frontier's points from evaluation records (any checkpoints: only each run's last is used),
    sorted by method, λ, α, with the Pareto set of each axis marked."""
    per_seed_tasks: dict[tuple, dict] = {}
    for (method, lam, alpha, _task, seed), record in _final_per_run(records).items():
        scores = run_scores(record)
        if scores is not None:
            per_seed_tasks.setdefault((method, lam, alpha), {}).setdefault(seed, []).append(scores)
    points = []
    for (method, lam, alpha), seeds in per_seed_tasks.items():
        point = FrontierPoint(method, lam, alpha)
        for seed, task_scores in seeds.items():
            point.per_seed[seed] = {name: statistics.fmean(s[name] for s in task_scores) for name in ("a_ft",) + AXES}
        points.append(point)
    points.sort(key=lambda p: (p.method, -math.inf if p.lam is None else p.lam, p.alpha))
    for axis in AXES:
        means = [(p.mean_std("a_ft")[0], p.mean_std(axis)[0]) for p in points]
        for i, point in enumerate(points):
            point.pareto[axis] = not any(_dominates(other, means[i]) for j, other in enumerate(means) if j != i)
    return points


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] >= b[0] and a[1] >= b[1] and (a[0] > b[0] or a[1] > b[1])


def write_frontier_csv(points: Sequence[FrontierPoint], path: str) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(FRONTIER_COLUMNS))
        writer.writeheader()
        writer.writerows(p.row() for p in points)
    return path


def point_label(method: str, lam: float | None) -> str:
    """A point's name in the frontier's legend and the claims: the method (which names its regularizer, e.g.
    "lp-init-kl", "zs-init-ce+l1") and its λ, e.g. "lp-init-kl (λ = 0.1)"."""
    return method if lam is None else f"{method} (λ = {lam:g})"


def plot_frontier(points: Sequence[FrontierPoint], path: str, *, title: str = "") -> str:
    """Two panels (mean Δ_ZS, mean Δ_LP on the other tasks, y) against A_FT (x), in percent; error bars
    are one sample std over seeds; a solid curve per (method, λ) over α, a dashed one per method over λ
    at α = 1; Pareto points ringed in black."""
    if not points:
        raise ValueError("no frontier points to plot: no run has A_FT and another evaluated task")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12.0, 5.0), squeeze=False)
    methods = sorted({p.method for p in points})
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    for ax, axis, name in zip(axes[0], AXES, ("Δ_ZS", "Δ_LP")):
        curves: dict[tuple, list[FrontierPoint]] = {}
        for p in points:
            curves.setdefault((p.method, p.lam), []).append(p)
        for (method, lam), curve in sorted(curves.items(), key=lambda kv: (kv[0][0], -math.inf if kv[0][1] is None else kv[0][1])):
            curve.sort(key=lambda p: p.alpha)
            xs = [100 * p.mean_std("a_ft")[0] for p in curve]
            ys = [100 * p.mean_std(axis)[0] for p in curve]
            ax.errorbar(xs, ys, xerr=[100 * p.mean_std("a_ft")[1] for p in curve], yerr=[100 * p.mean_std(axis)[1] for p in curve],
                        fmt="-o" if len(curve) > 1 else "o", markersize=4, capsize=2, color=colours[method], alpha=0.85,
                        label=point_label(method, lam) + (" over α" if len(curve) > 1 else ""))
        for method in methods:  # the λ sweep of a method, at α = 1
            sweep = sorted((p for p in points if p.method == method and p.lam is not None and p.alpha == 1.0), key=lambda p: p.lam)
            if len(sweep) > 1:
                ax.plot([100 * p.mean_std("a_ft")[0] for p in sweep], [100 * p.mean_std(axis)[0] for p in sweep], "--",
                        color=colours[method], linewidth=1.0, label=f"{method} over λ")
        pareto = [p for p in points if p.pareto.get(axis)]
        ax.scatter([100 * p.mean_std("a_ft")[0] for p in pareto], [100 * p.mean_std(axis)[0] for p in pareto], s=120,
                   facecolors="none", edgecolors="black", linewidths=1.2, label="Pareto set", zorder=5)
        ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel("A_FT (%)")
        ax.set_ylabel(f"mean {name} on the other tasks (points; up = less forgetting)")
        ax.set_title(title or f"frontier: A_FT vs {name}")
    axes[0][1].legend(fontsize="x-small", loc="best")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_frontier(records: Iterable[Mapping], output_dir: str, *, title: str = "", plot: bool = True) -> dict[str, str]:
    """frontier.csv and (with `plot`) frontier.png in `output_dir`; {} when no record gives a point."""
    points = frontier_points(records)
    if not points:
        return {}
    os.makedirs(output_dir, exist_ok=True)
    paths = {"frontier_csv": write_frontier_csv(points, os.path.join(output_dir, FRONTIER_CSV))}
    if plot:
        paths["frontier_plot"] = plot_frontier(points, os.path.join(output_dir, FRONTIER_PLOT), title=title)
    return paths


@dataclass
class PairedClaim:
    """"`better` beats `worse` on `metric`", paired over seeds: the per-seed differences, their mean and
    sample std, and whether the mean exceeds the seed-to-seed spread (|mean| > std, with ≥ 2 seeds)."""

    better: str
    worse: str
    metric: str
    differences: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.differences)

    @property
    def std(self) -> float:
        return statistics.stdev(self.differences) if len(self.differences) > 1 else math.inf

    @property
    def seeds_agreeing(self) -> int:
        return sum(d > 0 for d in self.differences)

    @property
    def holds(self) -> bool:
        return self.mean > 0

    @property
    def exceeds_noise(self) -> bool:
        return len(self.differences) > 1 and abs(self.mean) > self.std

    def sentence(self) -> str:
        verdict = "holds" if self.holds else "does not hold"
        head = f"{self.better} vs {self.worse} on {METRIC_NAMES.get(self.metric, self.metric)}: {verdict}"
        if len(self.differences) < 2:  # one sample has no spread: no ± and no verdict on the noise
            return f"{head} (difference {100 * self.mean:+.1f} points, one seed); one seed cannot tell a difference from the seed-to-seed spread"
        noise = "exceeds its seed-to-seed spread" if self.exceeds_noise else "is inside the noise"
        return (f"{head} (mean difference {100 * self.mean:+.1f} ± {100 * self.std:.1f} points, better in "
                f"{self.seeds_agreeing} of {len(self.differences)} seeds); the difference {noise}")


def paired_claim(points: Sequence[FrontierPoint], better: tuple, worse: tuple, metric: str) -> PairedClaim:
    """Compare two frontier points, each given as (method, λ, α), on `metric` ("a_ft", "delta_zs",
    "delta_lp") over the seeds both have."""
    found = {(p.method, p.lam, p.alpha): p for p in points}
    for key in (better, worse):
        if key not in found:
            raise ValueError(f"no frontier point {key}; points: {sorted(found, key=str)}")
    a, b = found[better], found[worse]
    seeds = sorted(set(a.per_seed) & set(b.per_seed), key=lambda s: (s is None, s))
    if not seeds:
        raise ValueError(f"points {better} and {worse} share no seed")
    differences = [a.per_seed[s][metric] - b.per_seed[s][metric] for s in seeds]
    return PairedClaim(_claim_label(*better), _claim_label(*worse), metric, differences)


def _claim_label(method: str, lam: float | None, alpha: float) -> str:
    """A point as a claim names it: the method, its λ if any, and its α when it is not the run itself."""
    return point_label(method, lam) + ("" if alpha == 1.0 else f" at α = {alpha:g}")
