"""The paper's study as one call: a grid of methods x fine-tune tasks (or sequences) x seeds, each cell
fine-tuned and scored on the eval tasks, assembled into Table 3 / Table 2 and figures.

    result = run_study(StudyArguments(output_dir="runs/study", methods="all", finetune_tasks="all",
                                      eval_tasks="all", seeds="0,1,2"))

A cell is one fine-tuning run (`training.run.run_finetune`) or one sequence (`training.sequences`)
followed by its evaluation (`evaluation.run.run_evaluation` or `evaluate_sequence_run`), in its own
folder `<output_dir>/cells/<method>/<task or a_then_b>/seed-<k>/`:

    run/            the fine-tuning run(s) (checkpoints every `checkpoint_every_percent`, export, record)
    evaluation/     results.json/.csv/.md and plots (or sequence_results.json / sequence_table.md);
                    wise/ with the final model's WiSE-FT scores under `frontier="cross"`
    cell.json       written last, atomically: the cell's settings, its records and timings (wall seconds of its
                    fine-tuning and evaluation, and its CPU seconds). Its presence is "done".

Restarting is safe: a cell is done only when cell.json is there, its runs' records say completed and
its evaluation files exist; a done cell is skipped. Any other cell is run again: the fine-tuning
continues from its last checkpoint (or returns a finished run as recorded, `run_finetune`'s rule), and
the evaluation is written into a fresh temporary folder and moved into place. A cell whose cell.json
records other settings than the study now asks for is refused, never silently mixed
(`overwrite_output_dir`: every cell is run again, replacing its run and evaluation). `study.json`
(the manifest) lists every cell and whether it is done; `--plan` prints it with a cost estimate.

The frontier: `lambdas` (REGULARIZER=weights, e.g. ldifs=1,10 kl=0.1,1) repeats the cells of the regularised
methods (those of `lambda_sweep_methods`) once per λ of their regularizer, and `wise_alphas` scores checkpoints at WiSE-FT weights. With
`frontier="full"` every cell is scored at every checkpoint and α; with `frontier="cross"` the two sweeps
cross at the main λ (the fine-tuning arguments' own): a cell at another λ keeps no checkpoint and is
scored at its end, and only the main cells' final models are scored at the other α.

A preset is a study with its own report: `run_study(args, report=...)` calls the report with the
`StudyRun` instead of writing Table 3 (the demo, `study.demo`, is one).

Cells run one after another in this process (`launcher="local"`; with `workers` > 1, that many at once
in worker processes, `multiprocessing`), or are submitted through submitit
(`launcher="submitit"`: SLURM when available, or `submitit_cluster="local"`); each job runs
`run_cell`, so the same rules hold, and the manifest is updated as jobs finish.

Defaults are the paper's (appendix A): the fine-tuning arguments' defaults (AdamW 1e-5, batch 128,
cosine, 500 warm-up steps, the benchmark's epochs), checkpoints every 20 %, the official linear probe.
The evaluation seed is 0 for every cell (`eval_seed`; -1: each cell's own), so every cell scores the
same pretrained model identically and seeds vary the fine-tuning only.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from ..benchmarks import get_benchmark
from ..console import LOG_FILE, finished, phase_bar, run_output
from ..run_folder import FolderLock, RunRecord, check_output_dir
from ..training.arguments import DEFAULT_MODEL
from ..training import get_method
from ..training.sequences import _write_json, evaluate_sequence_run, sequence
from ..utils import torch_threads
from .arguments import Cell, StudyArguments, cell_config, eval_task_names, study_cells
from .tables import StudyTables, assemble_tables

logger = logging.getLogger(__name__)
T = TypeVar("T")

MANIFEST_FILE, CELL_FILE = "study.json", "cell.json"
RUN_FOLDER, EVALUATION_FOLDER = "run", "evaluation"
# Inside a cell's evaluation: the cross frontier's scores of the final model at the other WiSE-FT weights.
WISE_FOLDER = "wise"
# The study-wide cache of the pretrained model's features and accuracies (evaluation/cache.py).
FEATURE_CACHE_FOLDER = "feature_cache"


# -- the world ------------------------------------------------------------------------------------


def prepare_study(args: StudyArguments, *, progress: bool = False) -> tuple[StudyArguments, object]:
    """The study's arguments as its cells use them, and its world (a `PreparedWorld`, or None).

    The resolved arguments are a copy of `args`, which stay as given: their folders are absolute (a
    submitit job may start in another working directory) and, with `world`, the model is the world's
    CLIP, pre-trained (or loaded) here with its tasks registered as benchmarks (`progress`: a bar while
    it pre-trains)."""
    resolved = copy.copy(args)
    resolved.output_dir = os.path.abspath(args.output_dir)
    if args.world_cache_dir is not None:
        resolved.world_cache_dir = os.path.abspath(args.world_cache_dir)
    if args.is_language:
        from .language import prepare_language_world

        return resolved, prepare_language_world(args, resolved, progress=progress)
    if args.world == "none":
        return resolved, None
    from ..world import prepare_world, world_settings

    world = prepare_world(world_settings(args.world, args.world_seed), resolved.world_cache_dir, progress=progress)
    if args.model_name_or_path not in (DEFAULT_MODEL, str(world.model_dir)):
        raise ValueError(f"a world study fine-tunes the world's pre-trained CLIP, not model_name_or_path={args.model_name_or_path!r}; leave it unset")
    resolved.model_name_or_path = str(world.model_dir)
    return resolved, world


# -- one cell -------------------------------------------------------------------------------------


def cell_status(cell_dir: str, config: dict) -> str:
    """"done", "partial" (started, not finished: it will be run again) or "pending" (not started).
    A done cell that recorded other settings is refused with the settings that differ."""
    marker = os.path.join(cell_dir, CELL_FILE)
    if not os.path.isfile(marker):
        return "partial" if os.path.isdir(cell_dir) else "pending"
    try:
        with open(marker) as f:
            saved = json.load(f)
        missing = [key for key in ("config", "run_dirs", "evaluation_files") if key not in saved]
        if missing:
            raise KeyError(f"no {', '.join(missing)}")
    except (OSError, ValueError, KeyError, TypeError) as err:  # written last and atomically: damaged since
        logger.warning("%s is damaged (%s: %s): the cell is run again (a finished run in it is reused)", marker, type(err).__name__, err)
        return "partial"
    if saved["config"] != config:
        parts = ("finetune", "evaluation")
        # Every setting that differs, also one the saved cell has and these settings lack (e.g. its wise_evaluation).
        differ = sorted(
            f"{part}.{key}" for part in parts for key in set(saved["config"][part]) | set(config[part])
            if saved["config"][part].get(key) != config[part].get(key)
        ) + sorted(k for k in set(saved["config"]) | set(config) if k not in parts and saved["config"].get(k) != config.get(k))
        raise ValueError(
            f"cell {cell_dir!r} was run with other settings ({', '.join(differ)}); use another output_dir for these "
            "settings, --overwrite_output_dir to redo every cell with them, or remove that cell to redo it"
        )
    for run_dir in saved["run_dirs"]:
        if not os.path.isfile(os.path.join(run_dir, "ldifs_run.json")) or not RunRecord.load(run_dir).completed:
            return "partial"
    if not all(os.path.isfile(path) for path in saved["evaluation_files"]):
        return "partial"
    return "done"


def run_cell(args: StudyArguments, cell: Cell) -> dict:
    """Fine-tune and evaluate one cell (skipped when done, unless `overwrite_output_dir`); returns its
    cell.json content, whose "timings" are the seconds its fine-tuning and evaluation took. This is
    what a submitit job runs, so it prepares the world itself."""
    from ..evaluation.run import EvaluationArguments, run_evaluation
    from ..training.run import finetune

    args, world = prepare_study(args)
    eval_tasks = eval_task_names(args, world)
    config = cell_config(args, cell, eval_tasks)
    cell_dir = os.path.join(args.output_dir, cell.folder)
    marker = os.path.join(cell_dir, CELL_FILE)
    if args.overwrite_output_dir:
        if os.path.isfile(marker):
            os.remove(marker)  # the cell is not done until it is redone
    elif cell_status(cell_dir, config) == "done":
        with open(marker) as f:
            return json.load(f)
    os.makedirs(cell_dir, exist_ok=True)
    run_dir = os.path.join(cell_dir, RUN_FOLDER)
    staging = os.path.join(cell_dir, f".{EVALUATION_FOLDER}.tmp")
    if os.path.isdir(staging):
        shutil.rmtree(staging)
    if args.is_language:
        from .language import run_language_cell

        ran = run_language_cell(args, cell, config, run_dir, staging)
        return _finish_cell(args, cell, config, cell_dir, staging, ran)
    # Every cell scores the same pretrained model on the same eval tasks: its features and accuracies
    # are computed once for the study and read back by the other cells (keyed by the weights and the
    # settings, checked on read; writes are atomic, so concurrent submitit jobs may share it).
    evaluation = EvaluationArguments(
        checkpoint=[f"{cell.method}={run_dir}"], output_dir=staging,
        feature_cache_dir=os.path.join(args.output_dir, FEATURE_CACHE_FOLDER), **config["evaluation"],
    )

    logger.info("cell %s: fine-tuning", cell.folder)
    finetune_kwargs = {**config["finetune"], **({"overwrite_output_dir": True} if args.overwrite_output_dir else {})}
    start, cpu_start = time.perf_counter(), time.process_time()
    if cell.is_sequence:
        result = sequence(reference=config["reference"], dataset=",".join(cell.tasks), output_dir=run_dir, **finetune_kwargs)
        run_dirs, run_record = [r.output_dir for r in result.records], result.records[0]
        timings = {"finetune_s": time.perf_counter() - start}
        logger.info("cell %s: evaluating the sequence", cell.folder)
        records = evaluate_sequence_run(result, evaluation)
        with open(os.path.join(staging, "sequence_results.json")) as f:
            pretrained_accuracy = json.load(f)["pretrained_accuracy"]
        files = ["sequence_results.json", "sequence_table.md"]
    else:
        record = finetune(dataset=cell.tasks[0], output_dir=run_dir, **finetune_kwargs)
        run_dirs, run_record = [record.output_dir], record
        timings = {"finetune_s": time.perf_counter() - start}
        logger.info("cell %s: evaluating", cell.folder)
        scored = run_evaluation(evaluation, log_paths=False)  # they are logged where they end up, below
        records, pretrained_accuracy = scored.records, scored.pretrained_accuracy
        files = ["results.json", "results.csv", "results.md"]
        if "wise_evaluation" in config:  # the cross frontier: the final model at the other WiSE-FT weights
            wise = run_evaluation(EvaluationArguments(
                checkpoint=[f"{cell.method}={run_dir}"], output_dir=os.path.join(staging, WISE_FOLDER),
                feature_cache_dir=evaluation.feature_cache_dir, **config["wise_evaluation"]), log_paths=False)
            records = records + wise.records
            files += [os.path.join(WISE_FOLDER, name) for name in ("results.json", "results.csv", "results.md")]
    timings["evaluate_s"] = time.perf_counter() - start - timings["finetune_s"]
    timings["cpu_s"] = time.process_time() - cpu_start  # this process's CPU time: the cell's cost on a busy machine
    ran = {"records": records, "pretrained_accuracy": pretrained_accuracy, "files": files, "run_dirs": run_dirs, "run_record": run_record,
           "timings": timings}
    return _finish_cell(args, cell, config, cell_dir, staging, ran)


def _finish_cell(args: StudyArguments, cell: Cell, config: dict, cell_dir: str, staging: str, ran: dict) -> dict:
    """The evaluation in `staging` moved into place, then cell.json written: the cell is done. `ran`: its
    "records", "pretrained_accuracy", "files" (in the evaluation folder), "run_dirs", "run_record", "timings"."""
    records, run_record, timings = ran["records"], ran["run_record"], ran["timings"]
    # The evaluation appears whole or not at all, then cell.json says the cell is done.
    final = os.path.join(cell_dir, EVALUATION_FOLDER)
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.replace(staging, final)
    logger.info("cell %s: wrote the evaluation to %s (%s)", cell.folder, final, ", ".join(sorted(os.listdir(final))))
    # The regularizer's weight the run used (the sweep's, or the fine-tuning arguments'): the frontier's λ.
    lam = run_record.regularizer_weight
    for record in records:
        record["seed"], record["lambda"] = cell.seed, lam
        if record.get("checkpoint"):
            record["checkpoint"] = os.path.relpath(record["checkpoint"], args.output_dir)
    done = {
        "config": config, "cell": dataclasses.asdict(cell), "run_dirs": ran["run_dirs"],
        "evaluation_files": [os.path.join(final, name) for name in ran["files"]],
        "pretrained_accuracy": ran["pretrained_accuracy"], "records": records, "timings": timings,
    }
    _write_json(os.path.join(cell_dir, CELL_FILE), done)
    return done


# -- the study --------------------------------------------------------------------------------------


@dataclass
class StudyPlan:
    cells: list[Cell]
    status: dict[Cell, str]
    eval_tasks: list[str]

    @property
    def todo(self) -> list[Cell]:
        return [c for c in self.cells if self.status[c] != "done"]


@dataclass
class StudyResult:
    """A finished study: its plan, the tables and figures written, and Table 3 / Table 2 as text."""

    plan: StudyPlan
    tables: StudyTables


def plan_study(args: StudyArguments, world=None) -> StudyPlan:
    cells = study_cells(args, world)
    eval_tasks = eval_task_names(args, world)
    if args.overwrite_output_dir:
        status = {cell: "redo" for cell in cells}
    else:
        status = {cell: cell_status(os.path.join(args.output_dir, cell.folder), cell_config(args, cell, eval_tasks)) for cell in cells}
    return StudyPlan(cells=cells, status=status, eval_tasks=eval_tasks)


def write_manifest(args: StudyArguments, plan: StudyPlan) -> str:
    """study.json: the study's arguments and every cell with its folder and status (atomically)."""
    cells = [
        {"method": c.method, "tasks": list(c.tasks), "seed": c.seed, "folder": c.folder, "status": plan.status[c], **({"lambda": c.lam} if c.lam is not None else {})}
        for c in plan.cells
    ]
    study = {k: v for k, v in dataclasses.asdict(args).items() if k not in ("plan", "verbose", "overwrite_output_dir", "workers", "threads")}  # how it ran, not what
    return _write_json(os.path.join(args.output_dir, MANIFEST_FILE), {"study": study, "eval_tasks": plan.eval_tasks, "cells": cells})


def check_dropped_cells(args: StudyArguments, plan: StudyPlan) -> None:
    """A rerun whose grid leaves out cells the folder's manifest lists as done is refused (unless
    `overwrite_output_dir`): its tables would silently lose their rows (a demo rerun with fewer methods)."""
    if args.overwrite_output_dir:
        return
    try:
        with open(os.path.join(args.output_dir, MANIFEST_FILE)) as f:
            earlier = json.load(f)["cells"]
        dropped = [cell["folder"] for cell in earlier if cell.get("status") == "done"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # no manifest, or a damaged one: this run writes it anew
    dropped = [folder for folder in dropped if folder not in {cell.folder for cell in plan.cells}]
    if dropped:
        raise ValueError(
            f"output_dir {args.output_dir!r} holds {len(dropped)} done cell(s) these options leave out ({', '.join(dropped[:3])}"
            f"{', ...' if len(dropped) > 3 else ''}), whose rows the tables would lose; rerun with the options the folder was made with "
            f"(its {MANIFEST_FILE} lists them), choose another --output_dir, or pass --overwrite_output_dir"
        )


def check_study_data(args: StudyArguments, plan: StudyPlan) -> None:
    """Before the first cell runs: every `dataset_path` entry names a task of the study, and the data of
    every task the cells left to do read (fine-tuned or scored) is found, so that missing data is not met
    only after earlier cells trained (`check_benchmark_data`, which reads no image)."""
    from ..benchmarks import parse_dataset_paths
    from ..benchmarks.loading import check_benchmark_data

    if args.is_language:
        from .language import check_language_data

        return check_language_data(args, plan)
    paths = parse_dataset_paths(args.dataset_path)
    tasks = list(dict.fromkeys([t for cell in plan.cells for t in cell.tasks] + list(plan.eval_tasks)))
    stray = sorted(set(paths) - set(tasks))
    if stray:
        raise ValueError(f"dataset_path names {', '.join(map(repr, stray))}, which no cell fine-tunes or scores ({', '.join(tasks)})")
    if plan.todo:
        for task in tasks:
            check_benchmark_data(task, data_path=paths.get(task))


def describe_plan(args: StudyArguments, plan: StudyPlan) -> str:
    """The cells, their status and a cost estimate (fine-tuning steps or epochs, checkpoint evaluations)."""
    lines = [f"{'method':<22} {'fine-tune task(s)':<34} {'seed':>4}  status", "-" * 72]
    for cell in plan.cells:
        lines.append(f"{cell.method_label:<22} {cell.label:<34} {cell.seed:>4}  {plan.status[cell]}")
    todo = plan.todo
    runs = sum(len(c.tasks) for c in todo)
    # A save every p % of the steps, and the end: ceil(100 / p) points (30 %: 30, 60, 90 and 100).
    points = math.ceil(100 / args.checkpoint_every_percent) if args.checkpoint_every_percent > 0 else 1
    if args.max_steps > 0:
        training = f"{runs} fine-tuning runs x {args.max_steps} steps = {runs * args.max_steps} steps"
    elif args.is_language:
        training = f"{runs} SFT runs of the SFT arguments' epochs"
    else:
        epochs = sum(get_benchmark(t).epochs for c in todo for t in c.tasks)
        training = f"{runs} fine-tuning runs, {epochs} epochs in all (each benchmark's paper epochs)"
    evaluations = sum(_scored_models(args, c, points) for c in todo) * len(plan.eval_tasks)
    lines += [
        "-" * 72,
        f"{len(plan.cells)} cells: {len(plan.cells) - len(todo)} done, {len(todo)} to run",
        f"cost of what is left: {training}; {evaluations} evaluations (checkpoint x eval task, ZS + LP) on {len(plan.eval_tasks)} eval tasks",
    ]
    return "\n".join(lines)


def _scored_models(args: StudyArguments, cell: Cell, points: int) -> int:
    """How many models a cell's evaluation scores: a sequence's tasks; else its checkpoints (`points`),
    each at every WiSE-FT α under the full frontier; under the cross one, a cell away from the main λ
    only at its end, a main cell's final model also at each α other than 1."""
    if cell.is_sequence:
        return len(cell.tasks)
    if args.end_only(cell):
        return 1
    if args.wise_alphas is None:
        return points
    from ..interpolation import parse_alphas

    alphas = parse_alphas(args.wise_alphas, "wise_alphas")
    return points * len(alphas) if args.frontier == "full" else points + sum(a != 1.0 for a in alphas)


def check_study_dir(args: StudyArguments) -> None:
    """Before the world is prepared or anything is written: output_dir is (or can be made) a directory,
    and, unless only planning (which writes nothing), one that accepts files."""
    output_dir = os.path.abspath(args.output_dir)
    existing = output_dir
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if existing == output_dir and not os.path.isdir(existing):
        raise ValueError(
            f"output_dir {args.output_dir!r} is a file, not a directory; the study needs a directory "
            "(a new one, or an earlier study's to resume it): choose another --output_dir"
        )
    if not args.plan or not os.path.isdir(existing):
        check_output_dir(args.output_dir)  # under a file, or not writable (a probe file, removed)


@dataclass
class StudyRun:
    """What a study's report is made from (`run_study`'s `report`): the resolved arguments, the plan (every
    cell done), the world (a `PreparedWorld`, or None), the seconds spent preparing ("prepare_s") and running
    cells ("cells_s"), and the timings of the cells this call ran (cell -> "finetune_s", "evaluate_s")."""

    args: StudyArguments
    plan: StudyPlan
    world: object
    timings: dict[str, float]
    ran: dict[Cell, dict[str, float]]

    def cells(self) -> list[dict]:
        """The done cells' cell.json contents, in the plan's order."""
        return done_cells(self.args, self.plan)


def run_study(args: StudyArguments, *, report: Callable[[StudyRun], T] | None = None, pool=None) -> StudyResult | StudyPlan | T:
    """Run every cell that is not done (locally or through submitit), then assemble the tables and
    figures. With `args.plan`, only print and return the plan. Locally, the console shows one line per
    finished cell under one progress bar; each cell's own output goes to output.log in its folder
    (`args.verbose`: everything on the console). With `args.workers` > 1 the local cells run in that
    many worker processes (`worker_pool`; `pool`: one the caller made, kept open for its next study).

    `report` replaces the study's tables with a preset's own (the demo's): it is called with the
    `StudyRun` while the study folder is held, and its result is returned."""
    check_study_dir(args)
    if args.plan:  # writes nothing, so takes no lock
        args, world = prepare_study(args)
        plan = plan_study(args, world)
        print(describe_plan(args, plan))
        return plan
    # One study per folder (each run and evaluation also holds its own); `threads` torch threads here and in the workers.
    with torch_threads(args.threads), FolderLock(args.output_dir):
        start = time.perf_counter()
        if args.world != "none":
            what = "skills world" if args.is_language else "concept world"
            print(f"preparing the {what} ({args.world}; pre-trained on the first run, then read from the cache)")
        with run_output(args.output_dir, verbose=args.verbose):  # third-party warnings of the preparation: to its log
            args, world = prepare_study(args, progress=True)
        timings = {"prepare_s": time.perf_counter() - start}
        plan = plan_study(args, world)
        check_dropped_cells(args, plan)
        check_study_data(args, plan)
        os.makedirs(args.output_dir, exist_ok=True)
        write_manifest(args, plan)
        todo = plan.todo
        how = args.launcher + (f", {args.workers} worker processes" if args.launcher == "local" and args.workers > 1 else "")
        print(f"{len(plan.cells)} cells, {len(plan.cells) - len(todo)} done, {len(todo)} to run ({how})"
              + ("" if args.verbose or args.launcher != "local" else f"; each cell's log: {LOG_FILE} in its folder"))
        start = time.perf_counter()
        ran = _run_local(args, plan, pool) if args.launcher == "local" else _submit(args, plan)
        timings["cells_s"] = time.perf_counter() - start
        if report is not None:
            return report(StudyRun(args=args, plan=plan, world=world, timings=timings, ran=ran))
        tables = assemble_study(args, plan)
    for table in (tables.table3, tables.table2):
        if table:
            print(f"\n{table}")
    return StudyResult(plan=plan, tables=tables)


@contextlib.contextmanager
def worker_pool(workers: int):
    """A `multiprocessing` pool of `workers` processes for cells, started fresh rather than forked (torch's
    threads do not survive a fork), each with this process's number of torch threads. As a context
    manager it ends its workers on leaving: on an error or an interruption at once, otherwise by letting
    them finish, so that what a worker holds (joblib's semaphores) is released rather than reported leaked."""
    import multiprocessing

    import torch

    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_start_worker, initargs=(torch.get_num_threads(),))
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    pool.close()
    pool.join()


def _start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _cell_in_folder(task: tuple[StudyArguments, Cell]) -> tuple[Cell, dict, float]:
    """A cell run with its output in its folder (`run_output`): the cell, its cell.json content and its seconds."""
    args, cell = task
    start = time.perf_counter()
    with run_output(os.path.join(args.output_dir, cell.folder), verbose=args.verbose):
        done = run_cell(args, cell)
    return cell, done, time.perf_counter() - start


def _run_local(args: StudyArguments, plan: StudyPlan, pool=None) -> dict[Cell, dict[str, float]]:
    """The cells left to do, here one after another, or in `args.workers` processes (`pool`, else a pool made
    for them), in the order they finish; the manifest follows each finished cell. A failed cell stops the
    study: its error is raised and the workers are ended."""
    todo, ran = plan.todo, {}
    with phase_bar(len(todo), "cells", verbose=args.verbose) as bar:
        def done_with(cell: Cell, done: dict, seconds: float) -> None:
            plan.status[cell], ran[cell] = "done", done.get("timings", {})
            write_manifest(args, plan)
            finished(bar, f"{cell.method_label}, {cell.label}, seed {cell.seed}: {cell_outcome(done)} ({seconds:.0f} s) -> {cell.folder}")

        tasks = [(args, cell) for cell in todo]
        if args.workers == 1 and pool is None:
            for task in tasks:
                done_with(*_cell_in_folder(task))
        elif pool is not None:
            try:
                for result in pool.imap_unordered(_cell_in_folder, tasks):
                    done_with(*result)
            except BaseException:
                pool.terminate()  # the caller's pool is of no more use: its cells would run on unwatched
                raise
        else:
            with worker_pool(args.workers) as own:
                for result in own.imap_unordered(_cell_in_folder, tasks):
                    done_with(*result)
    return ran


def cell_outcome(done: dict) -> str:
    """A done cell in a few words: its final model's accuracy on its task (A_FT), else "done"."""
    finals = [r for r in done["records"] if r.get("alpha") is None and r.get("a_ft") is not None and r.get("percent") == 100.0]
    return f"A_FT {100 * finals[-1]['a_ft']:.1f}%" if finals else "done"


def _submit(args: StudyArguments, plan: StudyPlan) -> dict[Cell, dict[str, float]]:
    """One submitit job per cell left to do; the manifest follows the jobs as they finish."""
    import submitit

    executor = submitit.AutoExecutor(folder=os.path.join(args.output_dir, "submitit", "%j"), cluster=args.submitit_cluster)
    parameters = dict(timeout_min=args.timeout_min, gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task, name="ldifs-study")
    if args.slurm_partition:
        parameters["slurm_partition"] = args.slurm_partition
    executor.update_parameters(**parameters)
    todo = plan.todo
    jobs = executor.map_array(run_cell, [args] * len(todo), todo)
    cells = {job.job_id: cell for job, cell in zip(jobs, todo)}
    failed, ran = [], {}
    for job in submitit.helpers.as_completed(jobs, poll_frequency=1):
        cell = cells[job.job_id]
        try:
            ran[cell] = job.result().get("timings", {})
            plan.status[cell] = "done"
        except Exception as err:  # a failed job: the others still finish; all failures are reported below
            failed.append(f"{cell.folder} (job {job.job_id}: {' '.join(str(err).split())[-300:]})")
        write_manifest(args, plan)
    if failed:
        raise RuntimeError(f"{len(failed)} cell(s) failed; rerun the study to retry them: " + "; ".join(failed))
    return ran


def assemble_study(args: StudyArguments, plan: StudyPlan) -> StudyTables:
    """Table 3 (single-task cells, mean over seeds), Table 2 (sequence cells) and the figures, from
    the done cells' cell.json files (a causal-LM study: its report, `study.language`)."""
    if args.is_language:
        from .language import assemble_language_study

        return assemble_language_study(args, done_cells(args, plan))
    return assemble_tables(done_cells(args, plan), args.output_dir, with_start_points=args.checkpoint_every_percent > 0,
                           evidence=evidence_options(args))


def evidence_options(args: StudyArguments) -> dict:
    """How a study's claims are made: the main λ of each swept method under the cross frontier (else
    every λ is a main point), and what the units (seeds) vary."""
    main = {m: args.main_lambda(get_method(m).regularizer) for m in args.swept_methods()} if args.frontier == "cross" else None
    sampled = args.eval_seed == -1 and args.eval_max_eval_samples is not None
    covered = ["training seed (each unit is a seed: data order, augmentation, initial head)"]
    if sampled:
        covered.append(f"the test sample (each seed scores its own {args.eval_max_eval_samples} test images per task)")
    not_covered = ["the pretrained model: the same for every unit"] + ([] if sampled else ["the test sample: every unit is scored on the same test images"])
    return {"main_lambda": main, "sources": covered, "not_covered": not_covered}


def done_cells(args: StudyArguments, plan: StudyPlan) -> list[dict]:
    """The cell.json contents of the plan's done cells, in the plan's order."""
    done = []
    for cell in plan.cells:
        if plan.status[cell] == "done":
            with open(os.path.join(args.output_dir, cell.folder, CELL_FILE)) as f:
                done.append(json.load(f))
    return done
