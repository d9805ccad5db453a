"""A study's results from its cells: Table 3 and the per-task plots (`evaluation.report`), Table 2
(`training.sequences`), each the mean over seeds, a per-seed CSV and the trade-off figure.

A method whose λ the study sweeps (`--lambdas`) has a column per λ in the tables,
"method@λ=10"; the frontier plots it as one point (or α curve) per λ and a dashed curve over λ.

Written into the study folder:
    results.md / .csv / .json, deltas_over_training.png, distances_over_training.png   single tasks, mean over seeds
    results_by_seed.csv                                                                every seed's rows
    tradeoff.png, tradeoff.csv     per method: A_FT against mean Δ_LP on the other eval tasks, mean ± std over seeds
    frontier.png, frontier.csv     per (method, λ, α): A_FT against mean Δ_ZS and Δ_LP on the other eval tasks, mean and
                                   95 % interval over seeds, Pareto set by the paired test (`evaluation.frontier`)
    claims.json                    the generic claims (`evaluation.claims`), tested and Holm-corrected, also in results.md
    sequence_table.md, sequence_results.json                                          sequences (Table 2), mean over seeds
"""

from __future__ import annotations

import csv
import os
import statistics
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from ..evaluation.claims import build_evidence, evidence_markdown, write_evidence
from ..evaluation.report import csv_columns, csv_rows, final_records, plot_tradeoff, pretrained_start_record, write_report
from ..training.sequences import write_sequence_report

RESULTS_BY_SEED_CSV, TRADEOFF_CSV, TRADEOFF_PLOT = "results_by_seed.csv", "tradeoff.csv", "tradeoff.png"
_TOP_LEVEL_MEANS = ("a_ft", "param_distance", "feature_distance")


@dataclass
class StudyTables:
    """What `assemble_tables` wrote (name -> path) and the two tables as Markdown (None when the study
    has no cell of that kind)."""

    paths: dict[str, str] = field(default_factory=dict)
    table3: str | None = None
    table2: str | None = None


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def mean_over_seeds(records: Sequence[Mapping], key_fields: Sequence[str]) -> list[dict]:
    """One record per `key_fields` value: the per-benchmark scores and A_FT / distances averaged over
    the seeds (a metric missing in a seed is averaged over the seeds that have it); "seeds" lists them."""
    groups: dict[tuple, list[Mapping]] = {}
    for record in records:
        groups.setdefault(tuple(record.get(k) for k in key_fields), []).append(record)
    means = []
    for group in groups.values():
        mean = {k: group[0].get(k) for k in key_fields}
        mean["seeds"] = sorted(r.get("seed") for r in group)
        mean["checkpoint"] = f"mean over seeds {mean['seeds']}"
        for name in _TOP_LEVEL_MEANS:
            if any(name in r for r in group):
                mean[name] = _mean(r.get(name) for r in group)
        benchmarks = sorted({b for r in group for b in r.get("eval", {})})
        mean["eval"] = {}
        for bench in benchmarks:
            metrics = sorted({m for r in group for m in r.get("eval", {}).get(bench, {})})
            mean["eval"][bench] = {m: _mean(r["eval"][bench].get(m) for r in group if bench in r.get("eval", {})) for m in metrics}
        means.append(mean)
    return means


def start_records(cell: Mapping) -> list[dict]:
    """The 0 % point of a single-task cell (`evaluation.report.pretrained_start_record`)."""
    has_distances = any(r.get("param_distance") is not None for r in cell["records"])
    method, task, seed = cell["cell"]["method"], cell["cell"]["tasks"][0], cell["cell"]["seed"]
    return [pretrained_start_record(method, task, "pretrained", cell["pretrained_accuracy"], seed=seed, distances=has_distances)]


def table_label(cell: Mapping, record: Mapping) -> dict:
    """`record` as the tables show it: a cell of a λ sweep under "method@λ=L", so each λ is its own column."""
    lam = cell["cell"].get("lam")
    return dict(record) if lam is None else {**record, "method": f"{record['method']}@λ={lam:g}"}


def tradeoff_points(records: Sequence[Mapping]) -> dict[str, dict[str, list[float]]]:
    """Per method, one value per seed of A_FT and of the mean Δ_ZS / Δ_LP over the eval tasks other than
    the fine-tune task, of the final checkpoints, averaged over fine-tune tasks within a seed. Fine-tune
    tasks without A_FT or without other eval tasks are left out."""
    per_seed: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for seed in sorted({r.get("seed") for r in records}):
        finals = final_records(r for r in records if r.get("seed") == seed)
        for (task, method), record in finals.items():
            others = [v for name, v in record.get("eval", {}).items() if name != task]
            if record.get("a_ft") is None or not others:
                continue
            point = (record["a_ft"], _mean(v["delta_zs"] for v in others), _mean(v["delta_lp"] for v in others))
            per_seed.setdefault((method, seed), []).append(point)
    points: dict[str, dict[str, list[float]]] = {}
    for (method, _), seed_points in sorted(per_seed.items()):
        entry = points.setdefault(method, {"a_ft": [], "delta_zs": [], "delta_lp": []})
        for i, name in enumerate(("a_ft", "delta_zs", "delta_lp")):
            entry[name].append(_mean(p[i] for p in seed_points))
    return points


def tradeoff_rows(records: Sequence[Mapping]) -> list[dict]:
    """`tradeoff_points` as table rows: per method, mean and (sample) std over seeds."""
    rows = []
    for method, values in sorted(tradeoff_points(records).items()):
        row = {"method": method, "seeds": len(values["a_ft"])}
        for key, name in (("a_ft", "a_ft"), ("delta_zs", "delta_zs_other"), ("delta_lp", "delta_lp_other")):
            row[f"{name}_mean"] = statistics.fmean(values[key])
            row[f"{name}_std"] = statistics.stdev(values[key]) if len(values[key]) > 1 else 0.0
        rows.append(row)
    return rows


def _write_csv(path: str, rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def assemble_tables(cells: Sequence[Mapping], output_dir: str, *, with_start_points: bool = True, evidence: Mapping | None = None) -> StudyTables:
    """Everything in the module docstring, from the done cells' cell.json contents; `evidence`: how the
    claims are made (`claims.build_evidence`'s options: the main λ, the noise sources)."""
    os.makedirs(output_dir, exist_ok=True)
    tables = StudyTables()
    single = [c for c in cells if len(c["cell"]["tasks"]) == 1]
    sequences = [c for c in cells if len(c["cell"]["tasks"]) > 1]
    if single:
        scored = [r for c in single for r in c["records"]]  # the frontier's: method and "lambda" as recorded
        records = [table_label(c, r) for c in single for r in c["records"]]
        if with_start_points:
            records = [table_label(c, r) for c in single for r in start_records(c)] + records
        pretrained_accuracy = single[0]["pretrained_accuracy"]
        keys = ("method", "finetune_task", "step", "percent") + (("alpha",) if any(r.get("alpha") is not None for r in records) else ())
        means = mean_over_seeds(records, keys)
        tables.paths.update(write_report(means, output_dir, pretrained=single[0]["config"]["evaluation"]["pretrained"],
                                         pretrained_accuracies=pretrained_accuracy, benchmarks=sorted(pretrained_accuracy)))
        with open(tables.paths["markdown"]) as f:
            tables.table3 = f.read()
        rows = []
        for record in records:
            for row in csv_rows([record]):
                rows.append({**row, "seed": record.get("seed")})
        tables.paths["by_seed_csv"] = _write_csv(os.path.join(output_dir, RESULTS_BY_SEED_CSV), rows, ("seed",) + csv_columns(records))
        tradeoff = tradeoff_rows([r for r in records if r.get("checkpoint") != "pretrained"])
        if tradeoff:
            tables.paths["tradeoff_csv"] = _write_csv(os.path.join(output_dir, TRADEOFF_CSV), tradeoff, list(tradeoff[0]))
            points = tradeoff_points([r for r in records if r.get("checkpoint") != "pretrained"])
            tables.paths["tradeoff_plot"] = plot_tradeoff(points, os.path.join(output_dir, TRADEOFF_PLOT))
        found = build_evidence(scored, **(evidence or {}))
        written = write_evidence(found, output_dir)
        if written:
            tables.paths.update(written)
            tables.table3 += "\n" + evidence_markdown(found) + "\n"
            with open(tables.paths["markdown"], "w") as f:
                f.write(tables.table3)
    if sequences:
        records = [r for c in sequences for r in c["records"]]
        means = mean_over_seeds(records, ("sequence", "method", "task_index", "finetune_task"))
        tables.paths.update(write_sequence_report(means, output_dir, pretrained_accuracies=sequences[0]["pretrained_accuracy"]))
        with open(tables.paths["sequence_markdown"]) as f:
            tables.table2 = f.read()
    return tables
