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
    cell.json       written last, atomically: the cell's settings, its records and timings. Its presence is "done".

Restarting is safe: a cell is done only when cell.json is there, its runs' records say completed and
its evaluation files exist; a done cell is skipped. Any other cell is run again: the fine-tuning
continues from its last checkpoint (or returns a finished run as recorded, `run_finetune`'s rule), and
the evaluation is written into a fresh temporary folder and moved into place. A cell whose cell.json
records other settings than the study now asks for is refused, never silently mixed
(`overwrite_output_dir`: every cell is run again, replacing its run and evaluation). `study.json`
(the manifest) lists every cell and whether it is done; `--plan` prints it with a cost estimate.

The frontier: `ldifs_lambdas` / `l2sp_lambdas` repeat the cells of the regularised methods (those of
`lambda_sweep_methods`) once per λ, and `wise_alphas` scores checkpoints at WiSE-FT weights. With
`frontier="full"` every cell is scored at every checkpoint and α; with `frontier="cross"` the two sweeps
cross at the main λ (the fine-tuning arguments' own): a cell at another λ keeps no checkpoint and is
scored at its end, and only the main cells' final models are scored at the other α.

A preset is a study with its own report: `run_study(args, report=...)` calls the report with the
`StudyRun` instead of writing Table 3 (the demo, `study.demo`, is one).

Cells run one after another in this process (`launcher="local"`), or are submitted through submitit
(`launcher="submitit"`: SLURM when available, or `submitit_cluster="local"`); each job runs
`run_cell`, so the same rules hold, and the manifest is updated as jobs finish.

Defaults are the paper's (appendix A): the fine-tuning arguments' defaults (AdamW 1e-5, batch 128,
cosine, 500 warm-up steps, the benchmark's epochs), checkpoints every 20 %, the official linear probe.
The evaluation seed is 0 for every cell (`eval_seed`; -1: each cell's own), so every cell scores the
same pretrained model identically and seeds vary the fine-tuning only.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

from ..benchmarks import get_benchmark
from ..benchmarks.catalog import NINE
from ..console import LOG_FILE, finished, phase_bar, run_output
from ..evaluation.settings import EvaluatorSettings, setting_field
from ..options import check_json_options
from ..run_folder import FolderLock, RunRecord, check_output_dir
from ..training import get_method, list_methods
from ..utils import lambda_folder, parse_lambdas, parse_seeds  # noqa: F401  (importable from here, as before)
from ..world.settings import WORLD_SIZES
from ..training.sequences import REFERENCES, SEQUENCE_SEPARATOR, _write_json, evaluate_sequence_run, parse_tasks, sequence
from .tables import StudyTables, assemble_tables

logger = logging.getLogger(__name__)
T = TypeVar("T")

LAUNCHERS = ("local", "submitit")
WORLDS = ("none",) + WORLD_SIZES
# How the frontier's extra points are scored (`StudyArguments.frontier`).
FRONTIERS = ("full", "cross")
MANIFEST_FILE, CELL_FILE = "study.json", "cell.json"
CELLS_FOLDER, RUN_FOLDER, EVALUATION_FOLDER = "cells", "run", "evaluation"
# Inside a cell's evaluation: the cross frontier's scores of the final model at the other WiSE-FT weights.
WISE_FOLDER = "wise"
# The study-wide cache of the pretrained model's features and accuracies (evaluation/cache.py).
FEATURE_CACHE_FOLDER = "feature_cache"
DEFAULT_MODEL = "openai/clip-vit-base-patch32"
# The evaluation settings every cell shares: setting -> the study's argument that holds it.
EVALUATION_SETTINGS = {"lp_iterations": "lp_iterations", "max_train_samples": "eval_max_train_samples",
                       "max_eval_samples": "eval_max_eval_samples", "batch_size": "eval_batch_size", "num_workers": "eval_num_workers"}
# A regularizer with a λ sweep: its name -> (the study's list of weights, the fine-tuning argument it sets).
LAMBDA_SWEEPS = {"ldifs": ("ldifs_lambdas", "ldifs_lambda"), "l2sp": ("l2sp_lambdas", "l2sp_lambda")}


@dataclass
class StudyArguments:
    """The grid, the settings every cell shares, and where and how the cells run."""

    output_dir: str = field(default="runs/study", metadata={"help": "The study's folder: cells/, study.json, the tables and figures."})
    methods: str = field(default="all", metadata={"help": "'all' (the paper's eight) or a comma-separated list of methods."})
    finetune_tasks: str = field(
        default="all",
        metadata={"help": "Comma-separated fine-tune tasks; a sequence is written a>b (e.g. 'eurosat,svhn>cifar10'). "
                  "'all': the nine benchmarks (the world's tasks with --world)."},
    )
    eval_tasks: str = field(default="all", metadata={"help": "'all' or a comma-separated list of the tasks every cell is scored on."})
    seeds: str = field(default="0", metadata={"help": "Comma-separated fine-tuning seeds."})
    model_name_or_path: str = field(default=DEFAULT_MODEL, metadata={"help": "The pretrained CLIP (the world's with --world)."})
    reference: str = field(default="previous", metadata={"help": f"Sequences: the LDIFS/L2SP reference of task k, one of {', '.join(REFERENCES)}."})
    dataset_path: list[str] = field(default_factory=list, metadata={"help": "Local copies of benchmarks, each 'name=path'."})
    max_steps: int = field(default=-1, metadata={"help": "Fine-tuning steps per task (default -1: the benchmark's epochs, as the paper)."})
    checkpoint_every_percent: float = field(
        default=20.0, metadata={"help": "Save and score checkpoints every this many percent of training (paper: 20; 0: only the end)."}
    )
    lp_iterations: int = field(default=1000, metadata={"help": "Linear-probe iterations for LP-init and the evaluation (official: 1000)."})
    finetune_options: str | None = field(
        default=None,
        metadata={"help": "More fine-tuning arguments for every cell, as a JSON object (e.g. '{\"bf16\": true, \"learning_rate\": 1e-5}')."},
    )
    eval_max_train_samples: int | None = setting_field("max_train_samples")
    eval_max_eval_samples: int | None = setting_field("max_eval_samples")
    eval_batch_size: int = setting_field("batch_size")
    eval_num_workers: int = setting_field("num_workers", default=4)
    distances: bool = field(default=True, metadata={"help": "Also measure parameter and feature distances (single-task cells)."})
    eval_seed: int = field(
        default=0,
        metadata={"help": "Seed of every cell's evaluation (linear-probe initialisation and data split, distance samples); "
                  "-1: each cell's own fine-tuning seed. The default scores the pretrained model identically in every cell, "
                  "so seeds vary the fine-tuning only."},
    )
    ldifs_lambdas: str | None = field(
        default=None,
        metadata={"help": "A λ sweep of the LDIFS methods: comma-separated weights, each its own cells (folder lambda-<λ>). "
                  "Default: one cell per task and seed at the fine-tuning arguments' ldifs_lambda, in today's folders."},
    )
    l2sp_lambdas: str | None = field(
        default=None, metadata={"help": "The same for the L2SP methods' l2sp_lambda (e.g. '0.05,0.5,5')."}
    )
    lambda_sweep_methods: str = field(
        default="all",
        metadata={"help": "The methods whose λ is swept: 'all' (every LDIFS and L2SP method the study runs) or a comma-separated "
                  "list of LDIFS or L2SP methods (those of them the study runs); the others run at the fine-tuning arguments' λ."},
    )
    wise_alphas: str | None = field(
        default=None,
        metadata={"help": "Also score every checkpoint at these WiSE-FT weights α (comma-separated, in [0, 1]; "
                  "`ldifs-hf evaluate --wise_alphas`): the frontier then has one curve per method over α."},
    )
    frontier: str = field(
        default="full",
        metadata={"help": "How the frontier's extra points are scored: 'full' (every cell at every checkpoint, and every "
                  "checkpoint at every WiSE-FT α) or 'cross' (the λ sweep and the α sweep cross at the main λ, the "
                  "fine-tuning arguments' own, which must be one of the swept weights: a single-task cell at another λ is "
                  "fine-tuned without checkpoints and scored at its end only, without distances; the main single-task "
                  "cells' final models alone are also scored at each α other than 1; sequences are as under 'full')."},
    )
    world: str = field(default="none", metadata={"help": f"Run on the embedded concept world: one of {', '.join(WORLDS)} ('quick': scaled down, for tests)."})
    world_seed: int = field(default=0, metadata={"help": "With --world: the seed of the world and its pre-training (one foundation model for every cell)."})
    world_cache_dir: str | None = field(default=None, metadata={"help": "Cache of the pre-trained world (default $LDIFS_HF_CACHE or ~/.cache/ldifs_hf)."})
    launcher: str = field(default="local", metadata={"help": f"How cells run: one of {', '.join(LAUNCHERS)} (submitit: SLURM, or its local executor)."})
    submitit_cluster: str | None = field(default=None, metadata={"help": "submitit cluster: 'slurm', 'local' or 'debug' (default: SLURM when available, else local)."})
    slurm_partition: str | None = field(default=None, metadata={"help": "SLURM partition of the cells' jobs."})
    timeout_min: int = field(default=24 * 60, metadata={"help": "Time limit of one cell's job, in minutes."})
    gpus_per_node: int = field(default=1, metadata={"help": "GPUs per cell's job."})
    cpus_per_task: int = field(default=8, metadata={"help": "CPUs per cell's job."})
    plan: bool = field(default=False, metadata={"help": "Only print the cells, which are done, and the cost estimate."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Run every cell again, replacing its run and evaluation, also a cell run with other settings "
                  "(default: done cells are kept, unfinished ones continued, and a cell with other settings refused)."},
    )
    verbose: bool = field(
        default=False, metadata={"help": f"Show every cell's output (the Trainer's log, progress bars) instead of writing it to {LOG_FILE} in the cell's folder."}
    )

    def __post_init__(self):
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS}, got {self.launcher!r}")
        if self.world not in WORLDS:
            raise ValueError(f"world must be one of {WORLDS}, got {self.world!r}")
        if self.frontier not in FRONTIERS:
            raise ValueError(f"frontier must be one of {', '.join(FRONTIERS)}, got {self.frontier!r}")
        if self.eval_seed < -1:
            raise ValueError(f"eval_seed must be >= 0, or -1 for each cell's own seed, got {self.eval_seed}")
        if self.world_seed < 0:  # else refused by numpy deep inside the world's pre-training
            raise ValueError(f"world_seed must be >= 0, got {self.world_seed}")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if not 0 <= self.checkpoint_every_percent < 100:
            raise ValueError(f"checkpoint_every_percent must be in [0, 100) (0: only the end), got {self.checkpoint_every_percent}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be >= 1, or -1 for the benchmark's epochs, got {self.max_steps}")
        # The evaluation's own checks would only run inside the first cell, after its fine-tuning.
        EvaluatorSettings.from_arguments(self, EVALUATION_SETTINGS)
        self.finetune_options = check_json_options(self.finetune_options, _finetune_types(), "finetune_options")
        owned = sorted(set(self.finetune_options) & {"method", "dataset", "dataset_path", "output_dir", "seed", "model_name_or_path", "max_steps"})
        if owned:
            raise ValueError(f"finetune_options may not set {owned}: the study sets them per cell (use the study's own options)")
        self.seed_list()  # a bad seed list fails here, before anything runs
        known = self.method_names(strict=False)
        twice = sorted({m for m in known if known.count(m) > 1})
        if twice:
            raise ValueError(f"methods names {', '.join(map(repr, twice))} more than once; name each method once")
        swept = self.swept_methods()
        for regularizer, (list_name, argument) in LAMBDA_SWEEPS.items():
            if getattr(self, list_name) is None:
                continue
            weights = self.lambda_list(list_name)
            if not any(get_method(m).regularizer == regularizer for m in swept):
                raise ValueError(
                    f"--{list_name} {getattr(self, list_name)!r} sweeps no cell: no {regularizer.upper()} method the study runs "
                    f"({', '.join(known) or 'none'}) is among lambda_sweep_methods {self.lambda_sweep_methods!r}; "
                    f"leave --{list_name} out, or run and name such a method"
                )
            if argument in self.finetune_options:
                # The fine-tuning arguments' λ is the main one: it must be the weight of some cell.
                unswept = [m for m in known if get_method(m).regularizer == regularizer and m not in swept]
                if not unswept and not (self.frontier == "cross" and self.finetune_options[argument] in weights):
                    raise ValueError(
                        f"finetune_options sets {argument}={self.finetune_options[argument]!r}, which no cell uses: --{list_name} sweeps "
                        f"every {regularizer.upper()} method and each cell takes its λ from that list; give the weights in "
                        f"--{list_name} only (with --frontier cross, {argument} names the main weight, one of the list's)"
                    )
            if self.frontier == "cross":
                # The sweeps cross at the main λ: a swept method without a cell there would have no checkpoints and no α.
                main = self.main_lambda(regularizer)
                if main not in weights:
                    raise ValueError(
                        f"--frontier cross crosses the sweeps at the main {argument}={main:g} (the fine-tuning arguments' own), "
                        f"which --{list_name} {getattr(self, list_name)!r} lacks: add it to the list, or set {argument} in "
                        f"finetune_options to one of the weights"
                    )
        if self.wise_alphas is not None:
            from ..interpolation import parse_alphas

            parse_alphas(self.wise_alphas, "wise_alphas")
        self.check_finetune_options()

    def seed_list(self) -> list[int]:
        return parse_seeds(self.seeds)

    def method_names(self, strict: bool = True) -> list[str]:
        """The methods of the grid (`strict=False`: unknown names are left out, for the grid to refuse by name)."""
        names = list_methods() if self.methods.strip() == "all" else [m.strip() for m in self.methods.split(",") if m.strip()]
        if strict:
            return [get_method(m).name for m in names]
        known = []
        for name in names:
            try:
                known.append(get_method(name).name)
            except ValueError:
                pass
        return known

    def swept_methods(self) -> list[str]:
        """The methods whose λ the study sweeps: `lambda_sweep_methods` among those it runs, each with a
        sweep of its regularizer's weights."""
        with_sweep = [r for r, (list_name, _) in LAMBDA_SWEEPS.items() if getattr(self, list_name) is not None]
        return swept_methods(self.method_names(strict=False), self.lambda_sweep_methods, with_sweep)

    def main_lambda(self, regularizer: str) -> float | None:
        """The fine-tuning arguments' weight of `regularizer` (finetune_options', else the default), the
        main λ of `frontier="cross"`; None for a regularizer without a swept weight."""
        if regularizer not in LAMBDA_SWEEPS:
            return None
        argument = LAMBDA_SWEEPS[regularizer][1]
        if argument in self.finetune_options:
            return float(self.finetune_options[argument])
        return float(_finetune_defaults()[argument])

    def end_only(self, cell: "Cell") -> bool:
        """Whether `cell` is a point of the cross frontier away from the main λ: fine-tuned without
        checkpoints and scored at its end only, without distances."""
        if self.frontier != "cross" or cell.lam is None or cell.is_sequence:
            return False
        return cell.lam != self.main_lambda(get_method(cell.method).regularizer)

    def lambda_list(self, list_name: str) -> list[float] | None:
        """The weights of `ldifs_lambdas` or `l2sp_lambdas`, or None (no sweep: the fine-tuning arguments' λ)."""
        value = getattr(self, list_name)
        return None if value is None else parse_lambdas(value, list_name)

    def method_lambdas(self, method: str) -> list[float | None]:
        """The λ of each of `method`'s cells: its regularizer's sweep when the study sweeps it, else [None]
        (one cell at the fine-tuning arguments' λ, today's folder)."""
        if get_method(method).name not in self.swept_methods():
            return [None]
        return self.lambda_list(LAMBDA_SWEEPS[get_method(method).regularizer][0])

    def check_finetune_options(self) -> None:
        """Refuse finetune_options that are not fine-tuning arguments, or whose values are not of the
        field's type or are refused by the arguments themselves, before anything runs. The arguments
        are built as the cells will build them (one set per method), with an output_dir that is not
        created: constructing them writes nothing (TrainingArguments only sets up its device)."""
        options = self.finetune_options
        if not options:
            return
        from ..training.run import finetune_parser

        parser = finetune_parser()
        # The cells' own arguments, without the options (a copy: `dataclasses.replace` would check them again,
        # and without the options' λ a cross frontier's main λ may be none of the sweep's weights).
        plain = copy.copy(self)
        plain.finetune_options = {}
        methods = self.method_names(strict=False)  # an unknown method is refused by name with the grid (study_cells)
        tasks = [t.strip() for t in self.finetune_tasks.replace(SEQUENCE_SEPARATOR, ",").split(",") if t.strip()]
        task = tasks[0] if tasks and tasks[0] != "all" else "eurosat"  # a name only: nothing is loaded
        output_dir = os.path.join(tempfile.gettempdir(), "ldifs-hf-study-options-check", "not-created")
        for method in methods:
            cell = Cell(method, (task,), self.seed_list()[0])
            base = dict(cell_config(plain, cell, [])["finetune"], dataset=task, output_dir=output_dir)
            base.pop("dataset_path", None)  # the data is not looked at here
            # The cells may run elsewhere (submitit): this host's lack of a GPU must not refuse --bf16.
            base["use_cpu"] = True
            error = _refusal(parser, {**base, **options})
            if error is not None:
                # Name the option that is refused on its own, if one is; else all of them.
                culprit = next((k for k in options if _refusal(parser, {**base, k: options[k]}) is not None), None)
                what = f"{culprit}={options[culprit]!r}" if culprit else json.dumps(options)
                raise ValueError(f"finetune_options {what} is refused by the fine-tuning arguments (method {cell.method}): {error}")
            # Under the cross frontier a cell away from the main λ keeps no checkpoint (save_strategy "no"):
            # the options must suit those cells too.
            sides = [Cell(method, (task,), cell.seed, lam) for lam in self.method_lambdas(method) if lam is not None]
            side = next((c for c in sides if self.end_only(c)), None)
            if side is not None:
                kwargs = dict(cell_config(self, side, [])["finetune"], dataset=task, output_dir=output_dir, use_cpu=True)
                kwargs.pop("dataset_path", None)
                error = _refusal(parser, kwargs)
                if error is not None:
                    raise ValueError(
                        f"finetune_options {json.dumps(options)} is refused for the cells scored at their end only (method "
                        f"{method}, λ = {side.lam:g}: --frontier cross saves no checkpoint there, save_strategy 'no'): {error}"
                    )


def swept_methods(methods: Sequence[str], lambda_sweep_methods: str, regularizers: Sequence[str]) -> list[str]:
    """Of `methods`, those whose λ is swept: each named by `lambda_sweep_methods` (or 'all') whose
    regularizer is among `regularizers` (those given a λ list). A named method without an LDIFS or L2SP
    weight is refused; one the study does not run is left out."""
    if lambda_sweep_methods.strip() == "all":
        named = None
    else:
        named = [get_method(m.strip()).name for m in lambda_sweep_methods.split(",") if m.strip()]
        plain = [m for m in named if get_method(m).regularizer not in LAMBDA_SWEEPS]
        if plain:
            raise ValueError(f"lambda_sweep_methods {plain} have no LDIFS or L2SP weight to sweep; name LDIFS or L2SP methods, or 'all'")
    return [m for m in methods if get_method(m).regularizer in regularizers and (named is None or m in named)]


@functools.lru_cache(maxsize=None)
def _finetune_defaults() -> dict:
    """The fine-tuning arguments' defaults, field name -> value (read once: every cell asks for its main λ)."""
    return {f.name: f.default for t in _finetune_types() for f in dataclasses.fields(t)}


def _finetune_types() -> tuple[type, ...]:
    """The fine-tuning arguments' dataclasses (ModelArguments, DataArguments, LDIFSTrainingArguments)."""
    from ..training.run import finetune_parser

    return tuple(finetune_parser().dataclass_types)


def _refusal(parser, kwargs: dict) -> str | None:
    """The one-line error building the fine-tuning arguments from `kwargs` gives, or None."""
    try:
        parser.parse_dict(kwargs)
    except (ValueError, TypeError, KeyError, AttributeError, OSError) as err:
        return " ".join(str(err).split()) or type(err).__name__
    return None

@dataclass(frozen=True)
class Cell:
    """One fine-tuning run (one task) or sequence (several) of one method with one seed."""

    method: str
    tasks: tuple[str, ...]
    seed: int
    lam: float | None = None  # the regularizer's weight when the study sweeps it (None: the fine-tuning arguments')

    @property
    def label(self) -> str:
        return SEQUENCE_SEPARATOR.join(self.tasks)

    @property
    def method_label(self) -> str:
        return self.method if self.lam is None else f"{self.method} λ={self.lam:g}"

    @property
    def folder(self) -> str:
        method = self.method if self.lam is None else os.path.join(self.method, lambda_folder(self.lam))
        return os.path.join(CELLS_FOLDER, method, "_then_".join(self.tasks), f"seed-{self.seed}")

    @property
    def is_sequence(self) -> bool:
        return len(self.tasks) > 1


# -- the grid -------------------------------------------------------------------------------------


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
    if args.world == "none":
        return resolved, None
    from ..world import prepare_world, world_settings

    world = prepare_world(world_settings(args.world, args.world_seed), resolved.world_cache_dir, progress=progress)
    if args.model_name_or_path not in (DEFAULT_MODEL, str(world.model_dir)):
        raise ValueError(f"a world study fine-tunes the world's pre-trained CLIP, not model_name_or_path={args.model_name_or_path!r}; leave it unset")
    resolved.model_name_or_path = str(world.model_dir)
    return resolved, world


def _all_tasks(args: StudyArguments, world) -> list[str]:
    """'all': the world's tasks in a world study, else the paper's nine (not whatever else is registered)."""
    return list(world.benchmarks) if world is not None else sorted(spec.name for spec in NINE)


def study_cells(args: StudyArguments, world=None) -> list[Cell]:
    """The grid in a fixed order: method, then λ (the regularized methods' sweep, if any), then fine-tune
    task (or sequence), then seed."""
    methods = args.method_names()
    if args.finetune_tasks.strip() == "all":
        entries = [(t,) for t in _all_tasks(args, world)]
    else:
        entries = [tuple(parse_tasks(e, SEQUENCE_SEPARATOR)) for e in args.finetune_tasks.split(",") if e.strip()]
    for tasks in entries:
        for task in tasks:
            get_benchmark(task)  # an unknown name: the registry's error, before anything runs
    return [Cell(method, tasks, seed, lam) for method in methods for lam in args.method_lambdas(method) for tasks in entries for seed in args.seed_list()]


def eval_task_names(args: StudyArguments, world=None) -> list[str]:
    from ..benchmarks.loading import parse_benchmark_list

    return _all_tasks(args, world) if args.eval_tasks.strip() == "all" else parse_benchmark_list(args.eval_tasks)


def cell_config(args: StudyArguments, cell: Cell, eval_tasks: Sequence[str]) -> dict:
    """What determines a cell's result: its fine-tuning and evaluation arguments (output folders aside)."""
    from ..benchmarks.loading import parse_dataset_paths

    paths = parse_dataset_paths(args.dataset_path)
    kwargs = dict(
        method=cell.method, model_name_or_path=args.model_name_or_path, seed=cell.seed, lp_iterations=args.lp_iterations,
        report_to="none", disable_tqdm=True,
    )
    if args.max_steps > 0:
        kwargs["max_steps"] = args.max_steps
    end_only = args.end_only(cell)
    if args.checkpoint_every_percent > 0 and not end_only:
        # A ratio below 1 is a fraction of the total steps (TrainingArguments.save_steps).
        kwargs.update(save_strategy="steps", save_steps=args.checkpoint_every_percent / 100)
    else:
        kwargs["save_strategy"] = "no"
    kwargs.update(args.finetune_options)
    if end_only:  # the finetune_options' saving settings are about the checkpoints this cell does not keep
        kwargs["save_strategy"] = "no"
        kwargs.pop("save_steps", None)
    if cell.lam is not None:
        kwargs[LAMBDA_SWEEPS[get_method(cell.method).regularizer][1]] = cell.lam
    task_paths = [f"{t}={paths[t]}" for t in cell.tasks if t in paths]
    if task_paths:
        kwargs["dataset_path"] = ",".join(task_paths) if cell.is_sequence else paths[cell.tasks[0]]
    evaluation = dict(
        datasets=",".join(eval_tasks), dataset_path=list(args.dataset_path), pretrained=args.model_name_or_path,
        include_intermediate=not end_only, **{setting: getattr(args, name) for setting, name in EVALUATION_SETTINGS.items()},
        distances=args.distances and not cell.is_sequence and not end_only, seed=cell.seed if args.eval_seed == -1 else args.eval_seed,
    )
    if end_only:  # one point, no curve: nothing to plot (the study draws the frontier)
        evaluation["plots"] = False
    wise_evaluation = None
    if args.wise_alphas is not None and not cell.is_sequence and not end_only:  # set only when asked: earlier studies' cells still match
        if args.frontier == "full":
            evaluation["wise_alphas"] = args.wise_alphas
        else:  # cross: the final model alone at each α other than 1 (α = 1 is the run itself, scored above)
            from ..interpolation import parse_alphas

            alphas = [a for a in parse_alphas(args.wise_alphas, "wise_alphas") if a != 1.0]
            if alphas:
                wise_evaluation = dict(evaluation, include_intermediate=False, distances=False, wise_alphas=",".join(map(repr, alphas)), plots=False)
    config = {"method": cell.method, "tasks": list(cell.tasks), "seed": cell.seed, "finetune": kwargs, "evaluation": evaluation}
    if wise_evaluation is not None:
        config["wise_evaluation"] = wise_evaluation
    if end_only or wise_evaluation is not None:  # only cells the cross frontier changes say so
        config["frontier"] = args.frontier
    if cell.lam is not None:
        config["lambda"] = cell.lam
    if cell.is_sequence:
        config["reference"] = args.reference
    return json.loads(json.dumps(config))  # the form cell.json stores, so a comparison is exact


# -- one cell -------------------------------------------------------------------------------------


def cell_status(cell_dir: str, config: dict) -> str:
    """"done", "partial" (started, not finished: it will be run again) or "pending" (not started).
    A done cell that recorded other settings is refused with the settings that differ."""
    marker = os.path.join(cell_dir, CELL_FILE)
    if not os.path.isfile(marker):
        return "partial" if os.path.isdir(cell_dir) else "pending"
    with open(marker) as f:
        saved = json.load(f)
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
    # Every cell scores the same pretrained model on the same eval tasks: its features and accuracies
    # are computed once for the study and read back by the other cells (keyed by the weights and the
    # settings, checked on read; writes are atomic, so concurrent submitit jobs may share it).
    evaluation = EvaluationArguments(
        checkpoint=[f"{cell.method}={run_dir}"], output_dir=staging,
        feature_cache_dir=os.path.join(args.output_dir, FEATURE_CACHE_FOLDER), **config["evaluation"],
    )

    logger.info("cell %s: fine-tuning", cell.folder)
    finetune_kwargs = {**config["finetune"], **({"overwrite_output_dir": True} if args.overwrite_output_dir else {})}
    start = time.perf_counter()
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

    # The evaluation appears whole or not at all, then cell.json says the cell is done.
    final = os.path.join(cell_dir, EVALUATION_FOLDER)
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.replace(staging, final)
    logger.info("cell %s: wrote the evaluation to %s (%s)", cell.folder, final, ", ".join(sorted(os.listdir(final))))
    # The regularizer's weight the run used (the sweep's, or the fine-tuning arguments'): the frontier's λ.
    lam = {"ldifs": run_record.ldifs_lambda, "l2sp": run_record.l2sp_lambda}.get(run_record.regularizer)
    for record in records:
        record["seed"], record["lambda"] = cell.seed, lam
        if record.get("checkpoint"):
            record["checkpoint"] = os.path.relpath(record["checkpoint"], args.output_dir)
    done = {
        "config": config, "cell": dataclasses.asdict(cell), "run_dirs": run_dirs,
        "evaluation_files": [os.path.join(final, name) for name in files],
        "pretrained_accuracy": pretrained_accuracy, "records": records, "timings": timings,
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
    study = {k: v for k, v in dataclasses.asdict(args).items() if k not in ("plan", "verbose", "overwrite_output_dir")}  # how it ran, not what
    return _write_json(os.path.join(args.output_dir, MANIFEST_FILE), {"study": study, "eval_tasks": plan.eval_tasks, "cells": cells})


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


def run_study(args: StudyArguments, *, report: Callable[[StudyRun], T] | None = None) -> StudyResult | StudyPlan | T:
    """Run every cell that is not done (locally or through submitit), then assemble the tables and
    figures. With `args.plan`, only print and return the plan. Locally, the console shows one line per
    finished cell under one progress bar; each cell's own output goes to output.log in its folder
    (`args.verbose`: everything on the console).

    `report` replaces the study's tables with a preset's own (the demo's): it is called with the
    `StudyRun` while the study folder is still held, and its result is returned."""
    check_study_dir(args)
    if args.plan:  # writes nothing, so takes no lock
        args, world = prepare_study(args)
        plan = plan_study(args, world)
        print(describe_plan(args, plan))
        return plan
    with FolderLock(args.output_dir):  # one study per folder; each run and evaluation also holds its own
        start = time.perf_counter()
        if args.world != "none":
            print(f"preparing the concept world ({args.world}; pre-trained on the first run, then read from the cache)")
        with run_output(args.output_dir, verbose=args.verbose):  # third-party warnings of the preparation: to its log
            args, world = prepare_study(args, progress=True)
        timings = {"prepare_s": time.perf_counter() - start}
        plan = plan_study(args, world)
        os.makedirs(args.output_dir, exist_ok=True)
        write_manifest(args, plan)
        todo = plan.todo
        print(f"{len(plan.cells)} cells, {len(plan.cells) - len(todo)} done, {len(todo)} to run ({args.launcher})"
              + ("" if args.verbose or args.launcher != "local" else f"; each cell's log: {LOG_FILE} in its folder"))
        start, ran = time.perf_counter(), {}
        if args.launcher == "local":
            with phase_bar(len(todo), "cells", verbose=args.verbose) as bar:
                for cell in todo:
                    cell_start = time.perf_counter()
                    with run_output(os.path.join(args.output_dir, cell.folder), verbose=args.verbose):
                        done = run_cell(args, cell)
                    plan.status[cell], ran[cell] = "done", done.get("timings", {})
                    write_manifest(args, plan)
                    finished(bar, f"{cell.method_label}, {cell.label}, seed {cell.seed}: {cell_outcome(done)} "
                                  f"({time.perf_counter() - cell_start:.0f} s) -> {cell.folder}")
        else:
            ran = _submit(args, plan)
        timings["cells_s"] = time.perf_counter() - start
        if report is not None:
            return report(StudyRun(args=args, plan=plan, world=world, timings=timings, ran=ran))
        tables = assemble_study(args, plan)
    for table in (tables.table3, tables.table2):
        if table:
            print(f"\n{table}")
    return StudyResult(plan=plan, tables=tables)


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
    the done cells' cell.json files."""
    return assemble_tables(done_cells(args, plan), args.output_dir, with_start_points=args.checkpoint_every_percent > 0)


def done_cells(args: StudyArguments, plan: StudyPlan) -> list[dict]:
    """The cell.json contents of the plan's done cells, in the plan's order."""
    done = []
    for cell in plan.cells:
        if plan.status[cell] == "done":
            with open(os.path.join(args.output_dir, cell.folder, CELL_FILE)) as f:
                done.append(json.load(f))
    return done
