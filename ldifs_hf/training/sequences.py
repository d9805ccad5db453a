"""Continual fine-tuning on a sequence of tasks D1 -> ... -> Dk (paper section 5), and its Table 2.

    result = sequence(dataset="svhn,cifar10", method="lp-init-ldifs", output_dir="runs/svhn-cifar10")
    records = evaluate_sequence_run(result, EvaluationArguments(datasets="svhn,cifar10,mnist", output_dir=...))

Task k is one `run_finetune` call in `<output_dir>/<k>-<task>`: it gets its own head (ZS or LP init as
the method says, built on task k's classes) and starts from task k-1's exported encoder
(`<k-1>-<task>/clip`); task 1 starts from the pretrained model. The LDIFS teacher and the L2SP anchor
are the encoder the task starts from, i.e. the previous task's (`reference="previous"`, the official
behaviour), or the pretrained encoder for every task (`reference="pretrained"`). Every task's model,
export and run record stay in its folder; `sequence.json` records the sequence. Rerunning continues:
finished tasks are returned as recorded (`run_finetune`'s own rule).

The evaluation scores the pretrained model and each task's model on every eval task and applies
eq. 5 (`evaluation.continual`); `sequence_table` writes Table 2: one row per sequence and method,
A_FT on each task of the sequence, then Δ_ZS / Δ_LP (eq. 5) of the final model on each eval task
and their mean over the eval tasks other than the last fine-tuned one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from ..benchmarks import get_benchmark
from ..benchmarks.loading import check_benchmark_data
from ..run_folder import EXPORT_FOLDER, RUN_RECORD_FILE, SAVED_BESIDE, SEQUENCE_FILE, FolderLock, RunRecord, remove_earlier_run
from ..run_folder.lock import HOLDER_FILE, LOCK_FILE
from .arguments import DataArguments, LDIFSTrainingArguments, ModelArguments

if TYPE_CHECKING:
    from ..evaluation.run import EvaluationArguments

# The trainer, the evaluator and `datasets` are imported by the functions that use them, so that the
# `finetune` and `study` commands can read `SequenceArguments` (and show --help) without them.

logger = logging.getLogger(__name__)

REFERENCES = ("previous", "pretrained")
SEQUENCE_RESULTS_JSON, SEQUENCE_TABLE_MD = "sequence_results.json", "sequence_table.md"
# How the study and its folders write a sequence: "svhn>cifar10" (a comma separates cells there).
SEQUENCE_SEPARATOR = ">"
# A task's run folder in a sequence: `<k>-<task>`.
_TASK_FOLDER = re.compile(r"^\d+-.+$")


@dataclass
class SequenceArguments:
    """How a sequence of tasks anchors its regularizer."""

    reference: str = field(
        default="previous",
        metadata={"help": f"LDIFS teacher / L2SP anchor of task k in a sequence (--dataset a,b): one of {', '.join(REFERENCES)} "
                  "('previous': task k-1's encoder, the official behaviour; 'pretrained': the starting model's)."},
    )

    def __post_init__(self):
        check_reference(self.reference)


def check_reference(reference: str) -> None:
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {REFERENCES}, got {reference!r}")


def parse_tasks(value: str | Sequence[str], separator: str = ",") -> list[str]:
    """'a,b' (or a list) -> ['a', 'b']; a task may not repeat or be empty."""
    tasks = [t.strip() for t in value.split(separator)] if isinstance(value, str) else [str(t).strip() for t in value]
    if not tasks or any(not t for t in tasks):
        raise ValueError(f"a sequence of tasks needs names separated by {separator!r}, got {value!r}")
    repeated = sorted({t for t in tasks if tasks.count(t) > 1})
    if repeated:
        raise ValueError(f"task {repeated[0]!r} appears twice in the sequence {value!r}; each task's folder holds one run")
    return tasks


def sequence_label(tasks: Sequence[str]) -> str:
    return SEQUENCE_SEPARATOR.join(tasks)


def task_dirs(output_dir: str, tasks: Sequence[str]) -> list[str]:
    """Task k's run folder: `<output_dir>/<k>-<task>` (k from 1)."""
    return [os.path.join(output_dir, f"{k}-{task}") for k, task in enumerate(tasks, start=1)]


@dataclass
class SequenceResult:
    """A finished sequence: the tasks in order, the pretrained model, the reference rule and one
    `RunRecord` per task (its `output_dir` holds the classifier, its `export_dir` the stock CLIP)."""

    tasks: list[str]
    pretrained: str
    reference: str
    method: str
    records: list[RunRecord]
    output_dir: str

    @property
    def label(self) -> str:
        return sequence_label(self.tasks)

    def to_dict(self) -> dict:
        return {
            "tasks": self.tasks, "pretrained": self.pretrained, "reference": self.reference, "method": self.method,
            "output_dir": self.output_dir, "task_dirs": [r.output_dir for r in self.records],
        }


def run_sequence(
    model_args: ModelArguments, data_args: DataArguments, training_args: LDIFSTrainingArguments, reference: str = "previous"
) -> SequenceResult:
    """Fine-tune on `data_args.dataset` = "a,b,..." task after task; see the module docstring.

    `data_args.dataset_path` is for one task; a sequence takes its local copies as
    "a=PATH,b=PATH" there. `training_args.output_dir` is the sequence's folder."""
    from .run import run_finetune

    check_reference(reference)
    tasks = parse_tasks(data_args.dataset)
    for task in tasks:  # every name, before the first task trains
        get_benchmark(task)
    if model_args.reference_model_name_or_path is not None:
        raise ValueError(
            f"a sequence sets each task's reference itself, got reference_model_name_or_path={model_args.reference_model_name_or_path!r}; "
            f"choose it with reference= one of {REFERENCES}"
        )
    paths = _sequence_paths(data_args.dataset_path, tasks)
    for task in tasks:  # every task's data, before the first task trains
        check_benchmark_data(
            task, data_path=paths.get(task), image_column=data_args.image_column, label_column=data_args.label_column,
            cache_dir=model_args.cache_dir,
        )
    pretrained = model_args.model_name_or_path
    output_dir = training_args.output_dir
    dirs = task_dirs(output_dir, tasks)
    # One writer per folder (each task's run also holds its own): the main process holds it.
    with FolderLock(output_dir) if training_args.process_index == 0 else contextlib.nullcontext():
        if training_args.process_index == 0:
            _check_earlier_sequence(output_dir, tasks, overwrite=training_args.overwrite_output_dir)
        records: list[RunRecord] = []
        start = pretrained
        for k, (task, run_dir) in enumerate(zip(tasks, dirs), start=1):
            task_model_args, task_data_args, task_training_args = copy.deepcopy((model_args, data_args, training_args))
            task_model_args.model_name_or_path = start
            # Task 1 starts from the pretrained model, so its default anchor already is the pretrained one;
            # without a regularizer there is no anchor to set.
            if reference == "pretrained" and k > 1 and training_args.regularizer != "none":
                task_model_args.reference_model_name_or_path = pretrained
            task_data_args.dataset = task
            task_data_args.dataset_path = paths.get(task)
            task_training_args.output_dir = run_dir
            logger.info("sequence %s: task %d/%d %s from %s", sequence_label(tasks), k, len(tasks), task, start)
            record = run_finetune(task_model_args, task_data_args, task_training_args)
            # Under several processes only the main one exports; the others wait for it before loading the export.
            with task_training_args.main_process_first(desc=f"export of {task}"):
                pass
            records.append(record)
            start = record.export_dir or os.path.join(run_dir, EXPORT_FOLDER)
        result = SequenceResult(tasks=tasks, pretrained=pretrained, reference=reference, method=records[0].method, records=records, output_dir=output_dir)
        if training_args.process_index == 0:
            _write_json(os.path.join(output_dir, SEQUENCE_FILE), result.to_dict())
        return result


def sequence(reference: str = "previous", **kwargs) -> SequenceResult:
    """`run_sequence` from keyword arguments: `dataset="a,b"`, `output_dir=` and any other field of
    `ModelArguments`, `DataArguments` or `LDIFSTrainingArguments` (as `finetune(**kwargs)`)."""
    from .run import finetune_arguments

    return run_sequence(*finetune_arguments(kwargs), reference=reference)


def _check_earlier_sequence(output_dir: str, tasks: Sequence[str], *, overwrite: bool) -> None:
    """A folder that holds a sequence of other tasks, or of these in another order, is refused (its task
    folders would sit beside this sequence's, and `sequence.json` would name only one of them); with
    `overwrite`, that sequence's runs are removed first (their folders too, when nothing else is left in them)."""
    if not os.path.isdir(output_dir):
        return
    if os.path.isfile(os.path.join(output_dir, RUN_RECORD_FILE)):
        raise ValueError(
            f"output_dir {output_dir!r} holds a single fine-tuning run, not a sequence; choose another --output_dir for the sequence "
            f"{sequence_label(tasks)}"
        )
    dirs = {os.path.basename(d) for d in task_dirs(output_dir, tasks)}
    others = sorted(
        name for name in os.listdir(output_dir)
        if _TASK_FOLDER.match(name) and name not in dirs and os.path.isfile(os.path.join(output_dir, name, RUN_RECORD_FILE))
    )
    if not others:
        return
    if not overwrite:
        earlier = _earlier_tasks(output_dir) or [name.split("-", 1)[1] for name in others]
        raise ValueError(
            f"output_dir {output_dir!r} holds a sequence of other tasks or order ({sequence_label(earlier)}; its task folders "
            f"{', '.join(others)}), not {sequence_label(tasks)}; rerun it as --dataset {','.join(earlier)} to continue or reuse it, "
            "choose another --output_dir, or pass --overwrite_output_dir to replace it"
        )
    from ..cards import README, is_our_card

    for name in others:
        folder = os.path.join(output_dir, name)
        remove_earlier_run(folder)
        left = set(os.listdir(folder)) - {LOCK_FILE, HOLDER_FILE, *SAVED_BESIDE}
        if not left or (left == {README} and is_our_card(os.path.join(folder, README))):
            shutil.rmtree(folder)  # only what that run wrote was left


def _earlier_tasks(output_dir: str) -> list[str] | None:
    """The tasks `sequence.json` records, or None (no readable record)."""
    try:
        with open(os.path.join(output_dir, SEQUENCE_FILE)) as f:
            tasks = json.load(f)["tasks"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(t) for t in tasks] if isinstance(tasks, list) else None


def _sequence_paths(dataset_path: str | None, tasks: Sequence[str]) -> dict[str, str]:
    from ..benchmarks import parse_dataset_paths

    if not dataset_path:
        return {}
    paths = parse_dataset_paths([p for p in dataset_path.split(",") if p])
    unknown = sorted(set(paths) - set(tasks))
    if unknown:
        raise ValueError(f"dataset_path names {unknown}, which are not tasks of the sequence {tasks}")
    return paths


def _write_json(path: str, data) -> str:
    """Write JSON atomically: a reader (or a restarted study) never sees half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=str)
    os.replace(tmp, path)
    return path


# -- evaluation (eq. 5) and Table 2 ----------------------------------------------------------------


def evaluate_sequence_run(result: SequenceResult, args: EvaluationArguments) -> list[dict]:
    """Score the pretrained model and every task's model of a sequence on `args.datasets`, apply eq. 5,
    and write `sequence_results.json` and `sequence_table.md` into `args.output_dir`.

    Returns one record per task (`evaluation.continual.evaluate_sequence`), with "method",
    "sequence", "reference" and "checkpoint" added."""
    from ..benchmarks.loading import parse_benchmark_list
    from ..evaluation.continual import evaluate_sequence
    from ..evaluation.evaluator import ConceptForgettingEvaluator

    benchmarks = parse_benchmark_list(args.datasets)
    evaluator = ConceptForgettingEvaluator.from_pretrained(args.pretrained or result.pretrained, args.settings())
    models = [evaluator.load(record.output_dir) for record in result.records]
    records = evaluate_sequence(evaluator, models, benchmarks, tasks=result.tasks)
    for record, run in zip(records, result.records):
        record.update(method=result.method, sequence=result.label, reference=result.reference, checkpoint=run.output_dir)
    pretrained_accuracy = evaluator.pretrained_accuracies(benchmarks)
    write_sequence_report(records, args.output_dir, pretrained_accuracies=pretrained_accuracy)
    return records


def write_sequence_report(records: Sequence[Mapping], output_dir: str, *, pretrained_accuracies: Mapping | None = None) -> dict[str, str]:
    """sequence_results.json (every record) and sequence_table.md (Table 2); returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"sequence_json": os.path.join(output_dir, SEQUENCE_RESULTS_JSON), "sequence_markdown": os.path.join(output_dir, SEQUENCE_TABLE_MD)}
    _write_json(paths["sequence_json"], {"pretrained_accuracy": pretrained_accuracies or {}, "records": list(records)})
    with open(paths["sequence_markdown"], "w") as f:
        f.write(sequence_table(records))
    return paths


def _points(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "–"
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def sequence_table(records: Iterable[Mapping]) -> str:
    """Table 2: one row per (sequence, method); columns A_FT of each task of the sequence (right after
    that task), then "Δ_ZS / Δ_LP" (eq. 5, percentage points) of the model after the last task on
    each eval task, then their mean over the eval tasks other than the last fine-tuned one.

    `records` are `evaluate_sequence_run`'s: each with "sequence", "method", "task_index",
    "finetune_task", "a_ft" and "eval": {task: {"sequence_delta_zs", "sequence_delta_lp", ...}}."""
    runs: dict[tuple[str, str], dict[int, Mapping]] = {}
    for record in records:
        runs.setdefault((record["sequence"], record["method"]), {})[int(record["task_index"])] = record
    if not runs:
        raise ValueError("no sequence records to tabulate")
    width = max(max(by_index) for by_index in runs.values())
    eval_tasks = sorted({name for by_index in runs.values() for name in by_index[max(by_index)].get("eval", {})})
    header = ["sequence", "method"] + [f"A_FT task {k}" for k in range(1, width + 1)] + eval_tasks + ["mean (other tasks)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (label, method), by_index in sorted(runs.items()):
        missing = sorted(set(range(1, max(by_index) + 1)) - set(by_index))
        if missing:
            raise ValueError(f"sequence {label!r} ({method}) lacks the records of tasks {missing}; Table 2 needs every task")
        final = by_index[max(by_index)]
        cells = [label, method]
        cells += [_points(by_index[k].get("a_ft"), signed=False) if k in by_index else "" for k in range(1, width + 1)]
        values = final.get("eval", {})
        for name in eval_tasks:
            v = values.get(name)
            cells.append(f"{_points(v['sequence_delta_zs'])} / {_points(v['sequence_delta_lp'])}" if v else "–")
        others = [values[n] for n in eval_tasks if n in values and n != final.get("finetune_task")]
        cells.append(
            f"{_points(sum(v['sequence_delta_zs'] for v in others) / len(others))} / {_points(sum(v['sequence_delta_lp'] for v in others) / len(others))}"
            if others else "–"
        )
        lines.append("| " + " | ".join(cells) + " |")
    return (
        "Continual fine-tuning (eq. 5): Δ_ZS / Δ_LP in percentage points of the model after the last task against the best "
        "earlier model of the sequence, pretrained included (negative = forgetting); A_FT task k is the accuracy on task k "
        "right after training on it (%).\n\n" + "\n".join(lines) + "\n"
    )
