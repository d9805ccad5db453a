"""Language-model forgetting reports: results.json, a CSV with one row per (checkpoint, task), and a
Markdown table with one row per checkpoint (A_FT, each task's score and Δ, the mean Δ over the tasks
other than the fine-tuning task, the held-out loss against the base model's).

A record (one checkpoint) is parallel to the concept-forgetting records where the keys mean the same:
    {"checkpoint", "method", "kind", "regularizer", "lambda", "seed", "step", "percent", "finetune_task",
     "a_ft", "eval": {task: {"score", "base", "delta", "metric", "stderr"}},
     "retain_loss", "retain_loss_base", "retain_perplexity", "retain_perplexity_base", "status", "error"}
"delta" is signed so that negative is forgetting (score − base when higher is better, base − score for a
metric where lower is better, such as a perplexity). "a_ft" is the fine-tuning task's score. A failed or
non-finite checkpoint has "status" "failed" / "non_finite", its "error", and no scores.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
from typing import Mapping, Sequence

from ..evaluation.report import OK, RESULTS_CSV, RESULTS_JSON, RESULTS_MD, status, unscored

CSV_COLUMNS = (
    "method", "regularizer", "lambda", "seed", "finetune_task", "checkpoint", "kind", "step", "percent", "eval_task", "metric",
    "score", "base", "delta", "stderr", "a_ft", "retain_loss", "retain_loss_base", "status", "error",
)


def mean_delta(record: Mapping) -> float | None:
    """The mean Δ over the evaluated tasks other than the fine-tuning task (the frontier's forgetting axis)."""
    deltas = [v["delta"] for name, v in (record.get("eval") or {}).items() if name != record.get("finetune_task")]
    return statistics.fmean(deltas) if deltas else None


def csv_rows(records: Sequence[Mapping]) -> list[dict]:
    rows = []
    for record in records:
        head = {column: record.get(column) for column in CSV_COLUMNS}
        if status(record) != OK:
            rows.append({**head, "status": status(record)})
            continue
        for task, values in record.get("eval", {}).items():
            rows.append({**head, "eval_task": task, "status": OK, **{k: v for k, v in values.items() if k in CSV_COLUMNS}})
    return rows


def _number(value, points: bool = True, signed: bool = False) -> str:
    if value is None:
        return "–"
    if points:
        return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _label(record: Mapping) -> str:
    parts = [str(record.get("method"))]
    if record.get("lambda") is not None:
        parts.append(f"λ={record['lambda']:g}")
    if record.get("seed") is not None:
        parts.append(f"seed {record['seed']}")
    where = f"step {record['step']}" if record.get("step") is not None else os.path.basename(os.path.normpath(str(record.get("checkpoint"))))
    return f"{' '.join(parts)} ({where})"


def markdown_table(records: Sequence[Mapping], tasks: Sequence[str], base_scores: Mapping[str, Mapping], base_retain: Mapping | None) -> str:
    """One row per scored checkpoint: A_FT, per task "score (Δ)" in points, the mean Δ on the other tasks,
    and the retain loss with its change; then the base model's row and the checkpoints not scored."""
    header = ["checkpoint", "A_FT", *tasks, "mean Δ (other tasks)", "retain loss (Δ)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base_loss = base_retain.get("loss") if base_retain else None
    lines.append("| base model | – | " + " | ".join(_number(base_scores[t]["score"]) for t in tasks) + f" | – | {_number(base_loss, False)} |")
    for record in records:
        if status(record) != OK:
            continue
        cells = [_label(record), _number(record.get("a_ft"))]
        for task in tasks:
            values = record["eval"].get(task)
            cells.append(f"{_number(values['score'])} ({_number(values['delta'], signed=True)})" if values else "–")
        cells.append(_number(mean_delta(record), signed=True))
        loss = record.get("retain_loss")
        cells.append("–" if loss is None else f"{_number(loss, False)} ({_number(loss - record['retain_loss_base'], False, signed=True)})")
        lines.append("| " + " | ".join(cells) + " |")
    text = ("Forgetting in a language model: each task's score and, in brackets, its Δ against the base model, in points "
            "(negative = forgetting); A_FT is the score on the fine-tuning task; the retain loss is the mean token NLL "
            "(nats) on held-out text (higher = more forgotten).\n\n" + "\n".join(lines) + "\n")
    failures = unscored(records)
    if failures:
        text += "\nNot scored (no score or Δ is reported for these):\n\n| checkpoint | method | status | error |\n|---|---|---|---|\n"
        text += "".join(f"| {r.get('checkpoint')} | {r.get('method')} | {status(r)} | {' '.join(str(r.get('error')).split()).replace('|', '/')} |\n"
                        for r in failures)
    return text


def final_per_run(records: Sequence[Mapping]) -> list[Mapping]:
    """The scored record of each run's final model (its highest step), one per (method, λ, seed, checkpoint's run)."""
    final: dict[tuple, Mapping] = {}
    for record in records:
        if status(record) != OK:
            continue
        key = (record.get("method"), record.get("lambda"), record.get("seed"), record.get("finetune_task"))
        if key not in final or (record.get("step") or 0) >= (final[key].get("step") or 0):
            final[key] = record
    return list(final.values())


def _mean_std(values: Sequence[float], signed: bool) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    spread = f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return _number(mean, signed=signed) + spread


def seed_mean_table(records: Sequence[Mapping], tasks: Sequence[str]) -> str:
    """The final models per (method, λ): A_FT and each task's Δ in points, the mean Δ on the other tasks and the
    retain loss's change, each the mean ± sample std over seeds (n: how many)."""
    groups: dict[tuple, list[Mapping]] = {}
    for record in final_per_run(records):
        groups.setdefault((record.get("method"), record.get("lambda")), []).append(record)
    header = ["method", "λ", "n", "A_FT", *(f"Δ {t}" for t in tasks), "mean Δ (other tasks)", "Δ retain loss"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (method, lam), group in groups.items():
        cells = [str(method), "–" if lam is None else f"{lam:g}", str(len(group)), _mean_std([r["a_ft"] for r in group if r.get("a_ft") is not None], False)]
        cells += [_mean_std([r["eval"][t]["delta"] for r in group if t in r["eval"]], True) for t in tasks]
        cells.append(_mean_std([d for d in map(mean_delta, group) if d is not None], True))
        losses = [r["retain_loss"] - r["retain_loss_base"] for r in group if r.get("retain_loss") is not None and r.get("retain_loss_base") is not None]
        cells.append(f"{statistics.fmean(losses):+.4f}" if losses else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return ("Final models, mean ± std over seeds: A_FT (the fine-tuning task's score) and each task's Δ against the base model in "
            "points (negative = forgetting; the fine-tuning task's Δ is its gain), the mean Δ on the other tasks, and the change of the "
            "retain loss (nats; higher = more forgotten).\n\n" + "\n".join(lines) + "\n")


def write_language_report(records: Sequence[Mapping], output_dir: str, *, summary: Mapping, tasks: Sequence[str],
                          base_scores: Mapping[str, Mapping], base_retain: Mapping | None) -> dict[str, str]:
    """results.json ({**summary, "records"}), results.csv and results.md in `output_dir`; their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {name: os.path.join(output_dir, file) for name, file in (("json", RESULTS_JSON), ("csv", RESULTS_CSV), ("markdown", RESULTS_MD))}
    with open(paths["json"], "w") as f:
        json.dump({**summary, "records": list(records)}, f, indent=2, default=str)
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(records))
    with open(paths["markdown"], "w") as f:
        f.write(markdown_table(records, tasks, base_scores, base_retain))
    return paths


# How a language report's claims are made by default: the generic pairs of SFT methods (those that differ only in
# their regularizer) at every λ, each seed a unit.
LANGUAGE_EVIDENCE = {
    "main_lambda": None, "sources": ["training seed (each unit is a seed: data order, the SFT run's sampling)"],
    "not_covered": ["the pretrained model: the same for every unit", "the test sample: every unit is scored on the same task examples"],
}


def write_language_evidence(records: Sequence[Mapping], output_dir: str, *, evidence: Mapping | None = None,
                            title: str = "A_FT against mean Δ of the other tasks (mean and 95 % CI over seeds)") -> tuple[dict[str, str], str]:
    """The frontier and the claims of language records along `LANGUAGE_AXES` (frontier.csv/.png, claims.json in
    `output_dir`; `evidence`: `claims.build_evidence`'s options, default `LANGUAGE_EVIDENCE`), their table and
    sentences appended to results.md; (their paths, that Markdown) or ({}, "") when no record gives a point."""
    from ..evaluation.claims import build_evidence, evidence_markdown, write_evidence
    from ..evaluation.frontier import LANGUAGE_AXES

    found = build_evidence(records, axes=LANGUAGE_AXES, **(evidence if evidence is not None else LANGUAGE_EVIDENCE))
    written = write_evidence(found, output_dir, title=title)
    if not written:
        return {}, ""
    text = evidence_markdown(found)
    with open(os.path.join(output_dir, RESULTS_MD), "a") as f:
        f.write("\n\n## Frontier and claims\n\n" + text + "\n")
    return written, text
