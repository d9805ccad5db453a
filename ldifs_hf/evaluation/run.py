"""One concept-forgetting evaluation end to end, as a library call that returns an `EvaluationResult`.

    result = evaluate(checkpoint=["lp-ldifs=runs/eurosat-lp-ldifs"], datasets="cifar10,mnist", output_dir="reports/eurosat")

Resolves the checkpoints (a run directory's `checkpoint-N` folders are its points along training),
scores the pretrained model once and then every checkpoint, and writes results.json, results.csv,
results.md (the paper's Table 3 layout) and PNG plots.

A checkpoint that cannot be loaded or scored, or whose weights are not finite, is recorded as such
(`EvaluationResult.failures`; `ldifs-hf evaluate` then exits with code 1) and the others are still
scored and written. An existing report in `output_dir` is refused before anything is loaded, unless
`overwrite_report`; so are an `output_dir` that is a file or not writable, a `device` this machine
lacks, counts out of range, a `pretrained` path that does not exist, and an
`output_dir` that another command is writing (`run_folder.FolderLock`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from ..benchmarks import parse_benchmark_list, parse_dataset_paths
from ..heads import LP_SOLVERS
from ..run_folder import FolderLock, check_output_dir
from .checkpoints import CheckpointError, check_model_path, resolve_checkpoints
from .evaluator import (
    TEXT_TOWERS, ConceptForgettingEvaluator, EvaluatorSettings, ForgettingRecord, check_device, evaluate_checkpoints, non_finite_parameter,
)
from .report import RESULTS_CSV, RESULTS_JSON, RESULTS_MD, unscored, write_report

logger = logging.getLogger(__name__)


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type: a TypeError to the Python API, and, like every bad value, a
    ValueError, so that a wrong type in a `.json` config is one `error:` line of the command (exit 2)."""


@dataclass
class EvaluationArguments:
    """What to evaluate, against which pretrained model, on which benchmarks, and how."""

    checkpoint: list[str] = field(
        default_factory=list,
        metadata={"help": "Checkpoints or run directories, each 'path' or 'method=path' (method default: the run's record, else the folder name)."},
    )
    datasets: str = field(
        default="all",
        metadata={"help": "'all' (every registered benchmark) or a comma-separated list of benchmark names; 'name=path' "
                  "adds a local image/label dataset (class names from its ClassLabel, prompts from --templates)."},
    )
    templates: list[str] = field(
        default_factory=list, metadata={"help": "Prompt templates ('{}' = class name) for 'name=path' datasets; default 'a photo of a {}.'."}
    )
    dataset_path: list[str] = field(
        default_factory=list, metadata={"help": "Local copies of benchmarks, each 'name=path' (save_to_disk folder or parquet files)."}
    )
    pretrained: str | None = field(
        default=None, metadata={"help": "Pretrained CLIP (directory or Hub id); default: the base model the first checkpoint records."}
    )
    output_dir: str = field(default="concept_forgetting_report", metadata={"help": "Where results and plots are written."})
    overwrite_report: bool = field(default=False, metadata={"help": "Replace a report already in output_dir (default: refuse)."})
    include_intermediate: bool = field(default=True, metadata={"help": "Also score a run directory's checkpoint-N folders (points along training)."})
    text_tower: str = field(default="pretrained", metadata={"help": f"Zero-shot heads from the text tower: one of {', '.join(TEXT_TOWERS)} ('pretrained' is official, 'checkpoint' is FLYP's)."})
    lp_solver: str = field(default="adamw", metadata={"help": f"Linear-probe solver: one of {', '.join(LP_SOLVERS)} (adamw is the official protocol)."})
    lp_iterations: int = field(default=1000, metadata={"help": "Full-batch iterations of the linear probe."})
    distances: bool = field(default=True, metadata={"help": "Also compute parameter and feature distances to the pretrained model."})
    feature_distance_samples: int = field(default=256, metadata={"help": "Test examples per benchmark for the feature distance."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on each benchmark's linear-probe training set."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on each benchmark's test set."})
    batch_size: int = field(default=256, metadata={"help": "Feature-extraction batch size."})
    num_workers: int = field(default=4, metadata={"help": "DataLoader workers decoding and preprocessing images."})
    device: str | None = field(default=None, metadata={"help": "Device (default: cuda when available)."})
    seed: int = field(default=0, metadata={"help": "Seed of the validation split, subsampling and linear probe."})
    cache_dir: str | None = field(default=None, metadata={"help": "Cache folder for models and datasets."})
    feature_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Folder where the pretrained model's features and accuracies are kept and reused by every evaluation pointed at it."},
    )

    def __post_init__(self):
        # The Python API takes what a user naturally writes: one checkpoint as a string, benchmarks as a
        # list; anything else of the wrong type is named here rather than failing deep inside.
        self.checkpoint = _string_list("checkpoint", self.checkpoint)
        self.dataset_path = _string_list("dataset_path", self.dataset_path)
        self.templates = _string_list("templates", self.templates)
        if isinstance(self.datasets, (list, tuple)) and all(isinstance(d, str) for d in self.datasets):
            self.datasets = ",".join(self.datasets)
        elif not isinstance(self.datasets, str):
            raise ArgumentTypeError(f"datasets takes 'all', a comma-separated string or a list of benchmark names, got {self.datasets!r}")
        for name in ("output_dir", "pretrained", "cache_dir", "feature_cache_dir"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))
            elif not (isinstance(value, str) or (value is None and name != "output_dir")):
                raise ArgumentTypeError(f"{name} takes a path (a string), got {type(value).__name__} {value!r}")
        for name, least in (("lp_iterations", 1), ("feature_distance_samples", 1), ("batch_size", 1), ("num_workers", 0),
                            ("max_train_samples", 1), ("max_eval_samples", 1)):
            value = getattr(self, name)
            if value is None and name.startswith("max_"):
                continue  # no cap
            if not isinstance(value, int) or isinstance(value, bool):
                raise ArgumentTypeError(f"{name} takes an integer, got {type(value).__name__} {value!r}")
            if value < least:
                cap = " (leave it unset for no cap)" if name.startswith("max_") else ""
                raise ValueError(f"{name} must be >= {least}, got {value}{cap}")
        check_device(self.device)

    def settings(self) -> EvaluatorSettings:
        """The evaluator's settings; raises ValueError on a bad value before anything is loaded."""
        return EvaluatorSettings(
            dataset_paths=parse_dataset_paths(self.dataset_path),
            max_train_samples=self.max_train_samples,
            max_eval_samples=self.max_eval_samples,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            device=self.device,
            lp_solver=self.lp_solver,
            lp_iterations=self.lp_iterations,
            text_tower=self.text_tower,
            feature_distance_samples=self.feature_distance_samples,
            seed=self.seed,
            cache_dir=self.cache_dir,
            feature_cache_dir=self.feature_cache_dir,
        )


def _string_list(name: str, value) -> list[str]:
    """A list-of-strings field from one string or path, a list or tuple of them, or None (empty)."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, os.PathLike)) for v in value):
        return [os.fspath(v) for v in value]
    raise ArgumentTypeError(f"{name} takes a string or a list of strings, got {type(value).__name__} {value!r}")


@dataclass
class EvaluationResult:
    """What an evaluation measured and wrote.

    Attributes:
        pretrained: the reference model (directory or Hub id).
        benchmarks: the benchmarks every checkpoint was scored on.
        pretrained_accuracy: {benchmark: {"zs": A_ZS, "lp": A_LP}} of the pretrained model.
        records: one `ForgettingRecord` per checkpoint (failed and non-finite ones included).
        paths: the files written ({"json", "csv", "markdown", "deltas_plot", ...}).
    """

    pretrained: str
    benchmarks: list[str]
    pretrained_accuracy: dict[str, dict[str, float]]
    records: list[ForgettingRecord]
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def failures(self) -> list[ForgettingRecord]:
        """The records of checkpoints that could not be scored ("failed") or are not finite ("non_finite")."""
        return unscored(self.records)


def run_evaluation(args: EvaluationArguments, *, log_paths: bool = True) -> EvaluationResult:
    """Score every checkpoint on every benchmark against the pretrained model and write the report.
    `log_paths=False`: the files written are not logged (a caller that moves them logs where they end up)."""
    # 1. Arguments, validated before any model or data is loaded.
    if not args.checkpoint:
        raise ValueError("--checkpoint is required: one or more checkpoint or run directories ('path' or 'method=path')")
    settings = args.settings()
    benchmarks = parse_benchmark_list(args.datasets, args.templates)  # unknown names: the registry's error
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise FileExistsError(f"output_dir {args.output_dir!r} is a file; pass a directory (created if missing) for the report")
    check_output_dir(args.output_dir)  # writable (a probe file, removed), or its nearest existing parent is
    if args.pretrained:
        check_model_path(args.pretrained, "pretrained model")
    with FolderLock(args.output_dir, "output_dir"):  # one writer per report folder, from here to the last file
        return _evaluate_in_folder(args, settings, benchmarks, log_paths)


def _evaluate_in_folder(args: EvaluationArguments, settings: EvaluatorSettings, benchmarks: list[str], log_paths: bool) -> EvaluationResult:
    """`run_evaluation` once its arguments are checked and its report folder is held."""
    existing = [f for f in (RESULTS_JSON, RESULTS_CSV, RESULTS_MD) if os.path.isfile(os.path.join(args.output_dir, f))]
    if existing and not args.overwrite_report:  # checked while held: no other writer can add one meanwhile
        raise FileExistsError(
            f"output_dir {args.output_dir!r} already holds a report ({', '.join(existing)}); choose another --output_dir "
            "or pass --overwrite_report to replace it"
        )

    # 2. Checkpoints, with the method, fine-tuning task and base model their runs recorded.
    entries = resolve_checkpoints(args.checkpoint, include_intermediate=args.include_intermediate)
    pretrained = args.pretrained or next((e.base_model for e in entries if e.base_model), None)
    if pretrained is None:
        raise CheckpointError("no --pretrained given and no checkpoint records its base model (its run record's base_model); pass --pretrained")
    if not args.pretrained:
        try:
            check_model_path(pretrained, "pretrained model")
        except CheckpointError as err:
            raise CheckpointError(f"{err}; it is the base model the checkpoint's run recorded: pass --pretrained") from None
    logger.info("evaluating %d checkpoint(s) against %s on %s", len(entries), pretrained, ", ".join(benchmarks))

    # 3. The pretrained model (text tower, reference of Δ and distances), scored once; then every checkpoint.
    evaluator = ConceptForgettingEvaluator.from_pretrained(pretrained, settings)
    bad = non_finite_parameter(evaluator.pretrained)
    if bad is not None:
        raise CheckpointError(f"the pretrained model {pretrained!r} is not finite (weight {bad}), so no Δ against it means anything")
    pretrained_accuracy = evaluator.pretrained_accuracies(benchmarks)
    records = evaluate_checkpoints(evaluator, entries, benchmarks, distances=args.distances)

    # 4. Results: JSON, CSV, Markdown table and plots.
    paths = write_report(records, args.output_dir, pretrained=pretrained, pretrained_accuracies=pretrained_accuracy, benchmarks=benchmarks)
    if log_paths:
        for name, path in paths.items():
            logger.info("wrote %s: %s", name, path)
    for record in unscored(records):
        logger.error("%s: %s (%s)", record["checkpoint"], record["status"], record.get("error"))
    return EvaluationResult(pretrained=pretrained, benchmarks=benchmarks, pretrained_accuracy=pretrained_accuracy, records=records, paths=paths)


def evaluate(**kwargs) -> EvaluationResult:
    """`run_evaluation` from keyword arguments (any field of `EvaluationArguments`)."""
    (args,) = HfArgumentParser(EvaluationArguments).parse_dict(kwargs)
    return run_evaluation(args)
