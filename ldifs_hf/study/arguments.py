"""What a study runs: `StudyArguments` (the grid, the settings every cell shares, where and how the
cells run) with their checks, and the cells they define: `study_cells` (the grid in its fixed order)
and `cell_config` (what determines a cell's result). Running the cells is `study.runner`'s. A causal-LM
study (`model_type="causal-lm"`, or `world="skills"`) has its cells from `study.language`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Sequence

from ..benchmarks import get_benchmark
from ..benchmarks.catalog import NINE
from ..benchmarks.registry import VALIDATION_FRACTION, VALIDATION_SEED
from ..console import LOG_FILE
from ..evaluation.settings import EvaluatorSettings, setting_field
from ..options import check_json_options, check_numbers
from ..training import get_method
from ..training.arguments import DEFAULT_MODEL, FINETUNE_ARGUMENTS, weight_arguments, weight_of
from ..training.methods import method_names
from ..training.terms import get_regularizer
from ..training.sequences import REFERENCES, SEQUENCE_SEPARATOR, parse_tasks
from ..utils import lambda_folder, parse_lambdas, parse_seeds
from ..world.settings import WORLD_SIZES

LAUNCHERS = ("local", "submitit")
# The skills world (a tiny causal LM, `language.skills`) of each size: its world name in a study.
SKILLS_WORLDS = {"skills": "default", "skills-quick": "quick"}
WORLDS = ("none",) + WORLD_SIZES + tuple(SKILLS_WORLDS)
MODEL_TYPES = ("clip", "causal-lm")
# How the frontier's extra points are scored (`StudyArguments.frontier`).
FRONTIERS = ("full", "cross")
CELLS_FOLDER = "cells"
# The evaluation settings every cell shares: setting -> the study's argument that holds it.
EVALUATION_SETTINGS = {"lp_iterations": "lp_iterations", "max_train_samples": "eval_max_train_samples",
                       "max_eval_samples": "eval_max_eval_samples", "batch_size": "eval_batch_size", "num_workers": "eval_num_workers"}
# The earlier flags of the λ sweeps, each the same as one entry of `lambdas`: flag -> regularizer.
LAMBDA_ALIASES = {"ldifs_lambdas": "ldifs", "l2sp_lambdas": "l2sp"}


@dataclass
class StudyArguments:
    """The grid, the settings every cell shares, and where and how the cells run."""

    output_dir: str = field(default="runs/study", metadata={"help": "The study's folder: cells/, study.json, the tables and figures."})
    methods: str = field(
        default="all", metadata={"help": "A comma-separated list of methods; 'all' stands for the paper's eight (e.g. 'all,lp-init-kl')."}
    )
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
    lp_iterations: int = setting_field("lp_iterations", help="Linear-probe iterations for LP-init and the evaluation (official: 1000).")
    finetune_options: str | None = field(
        default=None,
        metadata={"help": "More fine-tuning arguments for every cell, as a JSON object (e.g. '{\"bf16\": true, \"learning_rate\": 1e-5}')."},
    )
    eval_max_train_samples: int | None = setting_field("max_train_samples")
    eval_max_eval_samples: int | None = setting_field("max_eval_samples")
    eval_batch_size: int = setting_field("batch_size")
    eval_num_workers: int = setting_field("num_workers", default=4)
    eval_validation: bool = setting_field("validation")
    distances: bool = field(default=True, metadata={"help": "Also measure parameter and feature distances (single-task cells)."})
    eval_seed: int = field(
        default=0,
        metadata={"help": "Seed of every cell's evaluation (linear-probe initialisation and data split, distance samples); "
                  "-1: each cell's own fine-tuning seed. The default scores the pretrained model identically in every cell, "
                  "so seeds vary the fine-tuning only."},
    )
    lambdas: list[str] = field(
        default_factory=list,
        metadata={"help": "λ sweeps, one entry per regularizer after one --lambdas: REGULARIZER=w1,w2,... (e.g. --lambdas "
                  "ldifs=1,10,100 kl=0.1,1); each weight is its own cells of that regularizer's methods (folder lambda-<λ>). "
                  "Default: none, one cell per task and seed at the fine-tuning arguments' λ, in today's folders."},
    )
    ldifs_lambdas: str | None = field(default=None, metadata={"help": "The same as --lambdas ldifs=WEIGHTS (e.g. '1,10,100')."})
    l2sp_lambdas: str | None = field(default=None, metadata={"help": "The same as --lambdas l2sp=WEIGHTS (e.g. '0.05,0.5,5')."})
    lambda_sweep_methods: str = field(
        default="all",
        metadata={"help": "The methods whose λ is swept: 'all' (every method the study runs whose regularizer --lambdas sweeps) "
                  "or a comma-separated list of regularized methods (those of them the study runs); the others run at the "
                  "fine-tuning arguments' λ."},
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
    world: str = field(
        default="none",
        metadata={"help": f"Run on an embedded world: one of {', '.join(WORLDS)} (default, quick: the concept world's tiny CLIP; "
                  "skills: the skills world's tiny causal LM; '...quick': scaled down, for tests)."},
    )
    model_type: str | None = field(
        default=None,
        metadata={"help": f"The model the cells fine-tune: one of {', '.join(MODEL_TYPES)} (causal-lm: SFT with trl under each "
                  "regularizer, scored by lm-eval tasks). Default: causal-lm with --world skills, else clip."},
    )
    task_dir: str | None = field(default=None, metadata={"help": "causal-lm: a folder of lm-eval task YAMLs the tasks are read from (lm_eval's --include_path)."})
    retain: list[str] = field(default_factory=list, metadata={"help": "causal-lm: held-out text for the retain loss (files or a save_to_disk folder)."})
    world_seed: int = field(default=0, metadata={"help": "With --world: the seed of the world and its pre-training (one foundation model for every cell)."})
    world_cache_dir: str | None = field(default=None, metadata={"help": "Cache of the pre-trained world (default $LDIFS_HF_CACHE or ~/.cache/ldifs_hf)."})
    launcher: str = field(default="local", metadata={"help": f"How cells run: one of {', '.join(LAUNCHERS)} (submitit: SLURM, or its local executor)."})
    workers: int = field(
        default=1,
        metadata={"help": "With the local launcher: run cells in this many worker processes at once (each with this process's "
                  "torch threads); 1 runs them here, one after another."},
    )
    threads: int | None = field(
        default=None,
        metadata={"help": "CPU threads for torch in this process and in each worker process (default: torch's own; on a shared CPU "
                  "with --workers, 1 is fastest for tiny models)."},
    )
    cell_plots: bool = field(default=True, metadata={"help": "Draw each cell's own evaluation plots (the study's tables and figures are drawn either way)."})
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
        check_numbers(self)
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {LAUNCHERS}, got {self.launcher!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (CPU threads for torch), got {self.threads}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1 (worker processes of the local launcher), got {self.workers}")
        if self.world not in WORLDS:
            raise ValueError(f"world must be one of {WORLDS}, got {self.world!r}")
        if self.model_type not in (None, *MODEL_TYPES):
            raise ValueError(f"model_type must be one of {', '.join(MODEL_TYPES)}, got {self.model_type!r}")
        if self.is_language:
            from .language import check_language_study

            check_language_study(self)
            return
        if self.world in SKILLS_WORLDS:
            raise ValueError(f"world {self.world!r} is the skills world of causal-LM studies; leave --model_type out or pass causal-lm")
        given = [name for name in ("task_dir", "retain") if getattr(self, name)]
        if given:
            raise ValueError(f"{', '.join('--' + g for g in given)} belong to causal-LM studies; pass --model_type causal-lm, or leave them out")
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
        EvaluatorSettings.from_arguments(self, {**EVALUATION_SETTINGS, "validation": "eval_validation"})
        self.finetune_options = check_json_options(self.finetune_options, FINETUNE_ARGUMENTS, "finetune_options")
        held_out = {k: self.finetune_options[k] for k in ("validation_fraction", "validation_seed") if k in self.finetune_options}
        if self.eval_validation and held_out != {k: v for k, v in (("validation_fraction", VALIDATION_FRACTION), ("validation_seed", VALIDATION_SEED))
                                                 if k in held_out}:
            raise ValueError(f"--eval_validation scores the validation split the runs hold out by default ({VALIDATION_FRACTION:g} of train, "
                             f"seed {VALIDATION_SEED}); finetune_options {held_out} would hold out another, whose rows may be training rows")
        owned = sorted(set(self.finetune_options) & {"method", "dataset", "dataset_path", "output_dir", "seed", "model_name_or_path", "max_steps"})
        if owned:
            raise ValueError(f"finetune_options may not set {owned}: the study sets them per cell (use the study's own options)")
        self.seed_list()  # a bad seed list fails here, before anything runs
        known = self.method_names(strict=False)
        twice = sorted({m for m in known if known.count(m) > 1})
        if twice:
            raise ValueError(f"methods names {', '.join(map(repr, twice))} more than once; name each method once")
        self._check_lambda_sweeps(known)
        if self.wise_alphas is not None:
            from ..interpolation import parse_alphas

            parse_alphas(self.wise_alphas, "wise_alphas")
        self.check_finetune_options()

    def _check_lambda_sweeps(self, known: list[str]) -> None:
        """Each λ list sweeps some cell of the methods the study runs (`known`); the fine-tuning arguments'
        λ is some cell's; under the cross frontier the sweeps cross at the main λ."""
        swept = self.swept_methods()
        for regularizer, weights in self.lambda_sweeps().items():
            flag = self._sweep_flag(regularizer)
            if not any(self.regularizer_of(m) == regularizer for m in swept):
                raise ValueError(
                    f"{flag} sweeps no cell: no {regularizer.upper()} method the study runs ({', '.join(known) or 'none'}) is among "
                    f"lambda_sweep_methods {self.lambda_sweep_methods!r}; leave it out, or run and name such a method"
                )
            argument, given = get_regularizer(regularizer).weight_field, self._main_weight_given(regularizer)
            if given is not None:
                # The fine-tuning arguments' λ is the main one: it must be the weight of some cell.
                unswept = [m for m in known if self.regularizer_of(m) == regularizer and m not in swept]
                if not unswept and not (self.frontier == "cross" and self.main_lambda(regularizer) in weights):
                    raise ValueError(
                        f"finetune_options sets {argument}={given!r}, which no cell uses: {flag} sweeps every {regularizer.upper()} "
                        f"method and each cell takes its λ from that list; give the weights in --lambdas only (with "
                        f"--frontier cross, {argument} names the main weight, one of the list's)"
                    )
            if self.frontier == "cross":
                # The sweeps cross at the main λ: a swept method without a cell there would have no checkpoints and no α.
                main = self.main_lambda(regularizer)
                if main not in weights:
                    raise ValueError(
                        f"--frontier cross crosses the sweeps at the main {argument}={main:g} (the fine-tuning arguments' own), "
                        f"which {flag} lacks: add it to the list, or set {argument} in finetune_options to one of the weights"
                    )

    @property
    def is_language(self) -> bool:
        """A causal-LM study (`study.language`): `model_type` causal-lm, or the skills world."""
        return self.model_type == "causal-lm" or (self.model_type is None and self.world in SKILLS_WORLDS)

    def regularizer_of(self, method: str) -> str:
        """The regularizer of one of the study's methods (a causal-LM study's "sft+<regularizer>" too)."""
        if self.is_language:
            from ..language.finetune import regularizer_of

            return regularizer_of(method)
        return get_method(method).regularizer

    def lambda_sweeps(self) -> dict[str, list[float]]:
        """Regularizer -> the weights its methods are swept over: `lambdas`' entries and the earlier flags'
        (`ldifs_lambdas`, `l2sp_lambdas`); {} without a sweep."""
        entries = [(entry, "--lambdas") for entry in self.lambdas]
        entries += [(f"{regularizer}={getattr(self, flag)}", f"--{flag}") for flag, regularizer in LAMBDA_ALIASES.items()
                    if getattr(self, flag) is not None]
        return parse_lambda_sweeps(entries)

    def _sweep_flag(self, regularizer: str) -> str:
        """The option that gave `regularizer`'s sweep, as the user wrote it (for errors)."""
        alias = next((f for f, r in LAMBDA_ALIASES.items() if r == regularizer and getattr(self, f) is not None), None)
        if alias is not None:
            return f"--{alias} {getattr(self, alias)!r}"
        return "--lambdas " + next(e for e in self.lambdas if e.partition("=")[0].strip() == regularizer)

    def _main_weight_given(self, regularizer: str):
        """The weight of `regularizer` that finetune_options set (its flag, or its entry of regularizer_options), or None."""
        name = get_regularizer(regularizer).weight_field
        options = self.finetune_options.get("regularizer_options") or {}
        return self.finetune_options.get(name, options.get(name) if isinstance(options, dict) else None)

    def seed_list(self) -> list[int]:
        return parse_seeds(self.seeds)

    def method_names(self, strict: bool = True) -> list[str]:
        """The methods of the grid (`strict=False`: unknown names are left out, for the grid to refuse by name)."""
        if self.is_language:
            from .language import language_methods

            return language_methods(self)
        if strict:
            return method_names(self.methods)
        known = []
        for item in self.methods.split(","):
            try:
                known += method_names(item)
            except ValueError:
                pass
        return known

    def swept_methods(self) -> list[str]:
        """The methods whose λ the study sweeps: `lambda_sweep_methods` among those it runs, each with a
        sweep of its regularizer's weights."""
        if self.is_language:
            return [m for m in self.method_names() if self.regularizer_of(m) in self.lambda_sweeps()]
        return swept_methods(self.method_names(strict=False), self.lambda_sweep_methods, list(self.lambda_sweeps()))

    def main_lambda(self, regularizer: str) -> float | None:
        """The fine-tuning arguments' weight of `regularizer` (finetune_options', else its default), the main λ of
        `frontier="cross"`; None for a regularizer without a weight to sweep."""
        if get_regularizer(regularizer).weight_field is None:
            return None
        return float(weight_of(regularizer, self.finetune_options))

    def end_only(self, cell: "Cell") -> bool:
        """Whether `cell` is a point of the cross frontier away from the main λ: fine-tuned without
        checkpoints and scored at its end only, without distances."""
        if self.frontier != "cross" or cell.lam is None or cell.is_sequence:
            return False
        return cell.lam != self.main_lambda(self.regularizer_of(cell.method))

    def method_lambdas(self, method: str) -> list[float | None]:
        """The λ of each of `method`'s cells: its regularizer's sweep when the study sweeps it, else [None]
        (one cell at the fine-tuning arguments' λ, today's folder)."""
        if self.is_language:
            return self.lambda_sweeps().get(self.regularizer_of(method)) or [None]
        if get_method(method).name not in self.swept_methods():
            return [None]
        return self.lambda_sweeps()[get_method(method).regularizer]

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


def parse_lambda_sweeps(entries: Sequence[tuple[str, str]]) -> dict[str, list[float]]:
    """(entry, the flag that gave it) pairs, each REGULARIZER=w1,w2,..., as regularizer -> weights. Each regularizer is
    registered, has a weight to sweep and is named once (one-line errors naming the entry otherwise)."""
    sweeps: dict[str, list[float]] = {}
    for entry, flag in entries:
        regularizer, sep, weights = entry.partition("=")
        regularizer = regularizer.strip()
        if not sep:
            raise ValueError(f"{flag} entries are REGULARIZER=weights (e.g. ldifs=1,10,100), got {entry!r}")
        if get_regularizer(regularizer).weight_field is None:
            raise ValueError(f"{flag} {entry!r}: regularizer {regularizer!r} has no weight to sweep (no weight_field)")
        if regularizer in sweeps:
            raise ValueError(f"{flag} {entry!r}: the weights of {regularizer} are given twice; give them once")
        sweeps[regularizer] = parse_lambdas(weights, flag if flag != "--lambdas" else f"--lambdas {regularizer}=")
    return sweeps


def swept_methods(methods: Sequence[str], lambda_sweep_methods: str, regularizers: Sequence[str]) -> list[str]:
    """Of `methods`, those whose λ is swept: each named by `lambda_sweep_methods` (or 'all') whose
    regularizer is among `regularizers` (those given a λ list). A named method whose regularizer has no
    weight is refused; one the study does not run is left out."""
    if lambda_sweep_methods.strip() == "all":
        named = None
    else:
        named = [get_method(m.strip()).name for m in lambda_sweep_methods.split(",") if m.strip()]
        plain = [m for m in named if get_regularizer(get_method(m).regularizer).weight_field is None]
        if plain:
            raise ValueError(f"lambda_sweep_methods {plain} have no regularizer weight to sweep; name regularized methods, or 'all'")
    return [m for m in methods if get_method(m).regularizer in regularizers and (named is None or m in named)]


@functools.lru_cache(maxsize=None)
def finetune_defaults() -> dict:
    """The fine-tuning arguments' defaults, field name -> value (read once: every cell asks for its main λ)."""
    return {f.name: f.default for t in FINETUNE_ARGUMENTS for f in dataclasses.fields(t)}


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


def _all_tasks(args: StudyArguments, world) -> list[str]:
    """'all': the world's tasks in a world study, else the paper's nine (not whatever else is registered)."""
    return list(world.benchmarks) if world is not None else sorted(spec.name for spec in NINE)


def study_cells(args: StudyArguments, world=None) -> list[Cell]:
    """The grid in a fixed order: method, then λ (the regularized methods' sweep, if any), then fine-tune
    task (or sequence), then seed."""
    if args.is_language:
        from .language import language_cells

        return language_cells(args, world)
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

    if args.is_language:
        from .language import language_eval_tasks

        return language_eval_tasks(args, world)
    return _all_tasks(args, world) if args.eval_tasks.strip() == "all" else parse_benchmark_list(args.eval_tasks)


def cell_config(args: StudyArguments, cell: Cell, eval_tasks: Sequence[str]) -> dict:
    """What determines a cell's result: its fine-tuning and evaluation arguments (output folders aside)."""
    from ..benchmarks import parse_dataset_paths

    if args.is_language:
        from .language import language_cell_config

        return language_cell_config(args, cell, eval_tasks)
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
        kwargs.update(weight_arguments(get_method(cell.method).regularizer, cell.lam, kwargs))
    task_paths = [f"{t}={paths[t]}" for t in cell.tasks if t in paths]
    if task_paths:
        kwargs["dataset_path"] = ",".join(task_paths) if cell.is_sequence else paths[cell.tasks[0]]
    evaluation = dict(
        datasets=",".join(eval_tasks), dataset_path=list(args.dataset_path), pretrained=args.model_name_or_path,
        include_intermediate=not end_only, **{setting: getattr(args, name) for setting, name in EVALUATION_SETTINGS.items()},
        distances=args.distances and not cell.is_sequence and not end_only, seed=cell.seed if args.eval_seed == -1 else args.eval_seed,
    )
    if end_only or not args.cell_plots:  # one point, no curve, or the study draws its own: nothing to plot here
        evaluation["plots"] = False
    if args.eval_validation:  # set only when asked: earlier studies' cells still match
        evaluation["validation"] = True
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
