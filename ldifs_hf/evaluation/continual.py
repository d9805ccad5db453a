"""Forgetting along a sequence of fine-tuning tasks D1 -> ... -> Dk (paper eq. 5).

After the k-th task, Δ(D) = A(f_k, D) − max_{i<k} A(f_i, D): the drop from the best accuracy any
earlier model in the sequence (the pretrained one, f_0, included) had on D.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from .evaluator import ConceptForgettingEvaluator

Accuracies = Mapping[str, Mapping[str, float]]  # benchmark -> {"zs": A_ZS, "lp": A_LP}


def sequence_deltas(accuracies: Sequence[Accuracies]) -> list[dict[str, dict[str, float]]]:
    """Eq. 5 after each task. `accuracies[0]` is the pretrained model f_0, `accuracies[k]` the model
    after the k-th task; returns one {benchmark: {kind: Δ}} per k >= 1, for the benchmarks and
    kinds that every earlier model was scored on."""
    if len(accuracies) < 2:
        raise ValueError(f"a sequence needs the pretrained model and at least one fine-tuned model, got {len(accuracies)} entries")
    deltas = []
    for k in range(1, len(accuracies)):
        current, earlier = accuracies[k], accuracies[:k]
        step = {}
        for name, by_kind in current.items():
            if all(name in previous for previous in earlier):
                step[name] = {
                    kind: value - max(previous[name][kind] for previous in earlier)
                    for kind, value in by_kind.items()
                    if all(kind in previous[name] for previous in earlier)
                }
        deltas.append(step)
    return deltas


def evaluate_sequence(
    evaluator: ConceptForgettingEvaluator, checkpoints: Sequence, benchmarks: Sequence[str], *, tasks: Sequence[str | None] | None = None
) -> list[dict]:
    """Score the pretrained model and each checkpoint of a task sequence; one record per checkpoint
    with its accuracies, eq. 2 deltas (vs pretrained), eq. 5 sequence deltas and A_FT on its task."""
    if tasks is not None and len(tasks) != len(checkpoints):
        raise ValueError(f"got {len(tasks)} tasks for {len(checkpoints)} checkpoints; give one task per checkpoint")
    history = [evaluator.pretrained_accuracies(benchmarks)]
    records = []
    for index, checkpoint in enumerate(checkpoints):
        task = tasks[index] if tasks is not None else None
        record = evaluator.evaluate(checkpoint, benchmarks, finetune_benchmark=task, distances=False)
        history.append({name: {"zs": v["zs_acc"], "lp": v["lp_acc"]} for name, v in record["eval"].items()})
        for name, delta in sequence_deltas(history)[-1].items():
            record["eval"][name]["sequence_delta_zs"] = delta["zs"]
            record["eval"][name]["sequence_delta_lp"] = delta["lp"]
        evaluator.clear_cache()
        records.append({"task_index": index + 1, "finetune_task": task, **record})
    return records
