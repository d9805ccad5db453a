"""One concept-forgetting evaluation end to end, as a library call that returns an `EvaluationResult`.

    result = evaluate(checkpoint=["lp-ldifs=runs/eurosat-lp-ldifs"], datasets="cifar10,mnist", output_dir="reports/eurosat")

Resolves the checkpoints (a run directory's `checkpoint-N` folders are its points along training),
scores the pretrained model once and then every checkpoint (`evaluate_checkpoints`, one loaded at a
time), and writes results.json, results.csv, results.md (the paper's Table 3 layout) and PNG plots.
A_FT is measured on the task each run recorded; a run on its own data ("custom") is scored on that
data, read from the path and columns its record holds. Local datasets whose columns are not
image/label take `image_column` / `label_column` ('name=column'), as `finetune` does.

With `wise_alphas` each checkpoint is scored at every WiSE-FT weight α, in memory (`interpolate.wise_sweep`
towards its run's starting point), one record per checkpoint and α. Records carry the run's "lambda" and
"seed" (and "alpha"), and the report adds the frontier and its claims (`claims.write_evidence`:
frontier.csv, frontier.png, claims.json, and the claims in results.md) whenever a run's final checkpoint
has A_FT and another evaluated task. With `validation`, every model is also scored on each task's
validation split (the runs' own hold-out, checked first: `check_validation_splits`).

A checkpoint that cannot be loaded or scored, or whose weights are not finite, is recorded as such
(`EvaluationResult.failures`; `ldifs-hf evaluate` then exits with code 1) and the others are still
scored and written. An existing report in `output_dir` is refused before anything is loaded, unless
`overwrite_report`; so are an `output_dir` that is a file or not writable, a `device` this machine
lacks, counts out of range, a `pretrained` path that does not exist, and an
`output_dir` that another command is writing (`run_folder.FolderLock`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from ..benchmarks import BenchmarkError, get_benchmark, parse_benchmark_list, parse_dataset_paths
from ..benchmarks.catalog import CUSTOM
from ..benchmarks.registry import VALIDATION_FRACTION, VALIDATION_SEED
from ..options import OptionTypeError, check_field_types, check_numbers
from ..run_folder import CHECKPOINT_DIR, FolderLock, RunRecordError, check_output_dir, write_failures_explained
from ..modeling import named_encoder_parameters
from ..interpolation import check_alpha, load_start_model, parse_alphas, run_directory, start_problem, wise_sweep
from ..model_folder import CLIP_MODEL_TYPE, ModelFolderError, check_model_type, read_model_config
from .cache import check_cache_dir
from .checkpoints import CheckpointEntry, CheckpointError, check_model_path, resolve_checkpoints, run_record_of
from .evaluator import PRETRAINED_KEY, ConceptForgettingEvaluator, ForgettingRecord
from .claims import CLAIMS_JSON, build_evidence, evidence_markdown, write_evidence
from .frontier import FRONTIER_CSV, FRONTIER_PLOT
from .report import RESULTS_CSV, RESULTS_JSON, RESULTS_MD, unscored, write_report
from .settings import EvaluatorSettings, setting_field

logger = logging.getLogger(__name__)

# The files an evaluation writes that make a report: one already in output_dir is refused unless overwrite_report.
REPORT_FILES = (RESULTS_JSON, RESULTS_CSV, RESULTS_MD, FRONTIER_CSV, FRONTIER_PLOT, CLAIMS_JSON)
# Present while the report is written: a report beside it was cut short, and the same command replaces it.
REPORT_UNFINISHED = ".report_unfinished"

# The settings `ldifs-hf evaluate` exposes, under their own names (the rest are the library's defaults).
_SETTINGS = ("max_train_samples", "max_eval_samples", "batch_size", "num_workers", "device", "lp_solver", "lp_iterations",
             "text_tower", "feature_distance_samples", "seed", "cache_dir", "feature_cache_dir", "validation")


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
                  "adds a local dataset (class names from its ClassLabel, prompts from --templates; columns other than "
                  "image/label from --image_column / --label_column)."},
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
    image_column: list[str] = field(
        default_factory=list,
        metadata={"help": "Image column of local data whose column is not 'image': 'name=column' per dataset, or a bare "
                  "column for every 'name=path' dataset (as finetune's --image_column)."},
    )
    label_column: list[str] = field(
        default_factory=list,
        metadata={"help": "Label column of local data whose column is not 'label': 'name=column' per dataset, or a bare "
                  "column for every 'name=path' dataset (as finetune's --label_column)."},
    )
    text_tower: str = setting_field("text_tower")
    lp_solver: str = setting_field("lp_solver")
    lp_iterations: int = setting_field("lp_iterations")
    distances: bool = field(default=True, metadata={"help": "Also compute parameter and feature distances to the pretrained model."})
    wise_alphas: str | None = field(
        default=None,
        metadata={"help": "Also score every checkpoint at these WiSE-FT weights α (comma-separated, each in [0, 1]): its "
                  "weights moved to (1 − α)·start + α·checkpoint, in memory, the start being its run's starting point; "
                  "records carry 'alpha'. Default: each checkpoint as it is."},
    )
    plots: bool = field(
        default=True,
        metadata={"help": "Draw the PNG plots (Δ and distances over training, the frontier); the tables and CSV files are written either way."},
    )
    feature_distance_samples: int = setting_field("feature_distance_samples")
    max_train_samples: int | None = setting_field("max_train_samples")
    max_eval_samples: int | None = setting_field("max_eval_samples")
    batch_size: int = setting_field("batch_size")
    num_workers: int = setting_field("num_workers", default=4)
    device: str | None = setting_field("device")
    seed: int = setting_field("seed")
    validation: bool = setting_field("validation")
    cache_dir: str | None = setting_field("cache_dir")
    feature_cache_dir: str | None = setting_field("feature_cache_dir")

    def __post_init__(self):
        # The Python API takes what a user naturally writes: one checkpoint as a string, benchmarks as a
        # list, paths as Path objects; then every field must be of its type (one line naming it).
        for name in ("checkpoint", "dataset_path", "templates", "image_column", "label_column"):
            setattr(self, name, _string_list(getattr(self, name)))
        if isinstance(self.datasets, (list, tuple)) and all(isinstance(d, str) for d in self.datasets):
            self.datasets = ",".join(self.datasets)
        elif not isinstance(self.datasets, str):
            raise OptionTypeError(f"datasets must be 'all', a comma-separated string or a list of benchmark names, got {self.datasets!r}")
        for name in ("output_dir", "pretrained", "cache_dir", "feature_cache_dir"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        if self.wise_alphas is not None:  # a list of numbers from the API, kept as the command line writes it
            self.wise_alphas = ",".join(f"{a!r}" for a in parse_alphas(self.wise_alphas, "wise_alphas"))
        check_field_types(self)
        check_numbers(self)
        self.settings()  # every setting's own check, before anything is loaded

    def alphas(self) -> list[float] | None:
        """The WiSE-FT weights to score each checkpoint at, or None (each checkpoint as it is)."""
        return None if self.wise_alphas is None else parse_alphas(self.wise_alphas, "wise_alphas")

    def local_datasets(self) -> list[str]:
        """The names of the 'name=path' entries of `datasets`."""
        return [entry.partition("=")[0].strip() for entry in self.datasets.split(",") if "=" in entry]

    def settings(self) -> EvaluatorSettings:
        """The evaluator's settings; raises ValueError on a bad value before anything is loaded."""
        return EvaluatorSettings.from_arguments(
            self, {name: name for name in _SETTINGS},
            dataset_paths=parse_dataset_paths(self.dataset_path),
            image_columns=_columns("image_column", self.image_column, self.local_datasets()),
            label_columns=_columns("label_column", self.label_column, self.local_datasets()),
        )


def _string_list(value):
    """One string or path as a one-element list, a tuple as a list, None as []; paths as strings.
    Anything else is left for the type check, which names the field."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    if isinstance(value, (list, tuple)):
        return [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
    return value


def _columns(flag: str, entries: Sequence[str], local_datasets: Sequence[str]) -> dict[str, str]:
    """`--image_column`/`--label_column` entries ('name=column', or a bare column for every local
    'name=path' dataset) as {benchmark: column}."""
    columns = {}
    for entry in entries:
        name, sep, column = entry.partition("=")
        if not sep:
            if not local_datasets:
                raise ValueError(f"{flag} {entry!r} names no dataset and --datasets has no 'name=path' entry; write it 'name={entry}'")
            columns.update({dataset: entry.strip() for dataset in local_datasets if dataset not in columns})
        elif not name.strip() or not column.strip():
            raise ValueError(f"{flag} takes 'name=column' (or a bare column for every 'name=path' dataset), got {entry!r}")
        else:
            columns[name.strip()] = column.strip()
    return columns


@dataclass
class EvaluationResult:
    """What an evaluation measured and wrote.

    Attributes:
        pretrained: the reference model (directory or Hub id).
        benchmarks: the benchmarks every checkpoint was scored on.
        pretrained_accuracy: {benchmark: {"zs": A_ZS, "lp": A_LP}} of the pretrained model.
        records: one `ForgettingRecord` per checkpoint (failed and non-finite ones included).
        paths: the files written ({"json", "csv", "markdown", "deltas_plot", ..., "frontier_csv", "frontier_plot", "claims_json"}).
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
    for flag, columns in (("image_column", settings.image_columns), ("label_column", settings.label_columns)):
        stray = sorted(set(columns) - set(benchmarks))
        if stray:
            raise ValueError(f"--{flag} names {', '.join(map(repr, stray))}, which --datasets does not evaluate ({', '.join(benchmarks)})")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise FileExistsError(f"output_dir {args.output_dir!r} is a file; pass a directory (created if missing) for the report")
    check_output_dir(args.output_dir)  # writable (a probe file, removed), or its nearest existing parent is
    if settings.feature_cache_dir:
        check_cache_dir(settings.feature_cache_dir)
    if args.pretrained:
        check_pretrained_path(args.pretrained)
    with FolderLock(args.output_dir, "output_dir"):  # one writer per report folder, from here to the last file
        return _evaluate_in_folder(args, settings, benchmarks, log_paths)


def _evaluate_in_folder(args: EvaluationArguments, settings: EvaluatorSettings, benchmarks: list[str], log_paths: bool) -> EvaluationResult:
    """`run_evaluation` once its arguments are checked and its report folder is held."""
    existing = [f for f in REPORT_FILES if os.path.isfile(os.path.join(args.output_dir, f))]
    unfinished = os.path.isfile(os.path.join(args.output_dir, REPORT_UNFINISHED))
    if existing and unfinished:
        logger.warning("%s holds a report whose writing was interrupted (%s): it is replaced", args.output_dir, ", ".join(existing))
    elif existing and not args.overwrite_report:  # checked while held: no other writer can add one meanwhile
        raise FileExistsError(
            f"output_dir {args.output_dir!r} already holds a report ({', '.join(existing)}); choose another --output_dir "
            "or pass --overwrite_report to replace it"
        )

    # 2. Checkpoints, with the method, fine-tuning task and base model their runs recorded.
    entries = resolve_checkpoints(args.checkpoint, include_intermediate=args.include_intermediate)
    alphas = args.alphas()
    if alphas is not None:
        check_startable(entries)
    if args.validation:
        check_validation_splits(entries)
    pretrained = args.pretrained or next((e.base_model for e in entries if e.base_model), None)
    if pretrained is None:
        raise CheckpointError("no --pretrained given and no checkpoint records its base model (its run record's base_model); pass --pretrained")
    if not args.pretrained:
        try:
            check_pretrained_path(pretrained)
        except CheckpointError as err:
            raise CheckpointError(f"{err}; it is the base model the checkpoint's run recorded: pass --pretrained") from None
    logger.info("evaluating %d checkpoint(s) against %s on %s", len(entries), pretrained, ", ".join(benchmarks))

    # 3. The pretrained model (text tower, reference of Δ and distances), scored once; then every checkpoint.
    evaluator = ConceptForgettingEvaluator.from_pretrained(pretrained, settings)
    bad = non_finite_parameter(evaluator.pretrained)
    if bad is not None:
        raise CheckpointError(f"the pretrained model {pretrained!r} is not finite (weight {bad}), so no Δ against it means anything")
    pretrained_accuracy = evaluator.pretrained_accuracies(benchmarks)
    records = evaluate_checkpoints(evaluator, entries, benchmarks, distances=args.distances, wise_alphas=alphas)

    # 4. Results: JSON, CSV, Markdown table and plots; marked unfinished until the last is written, so that
    # the same command replaces a report cut short (a kill, a full disk) rather than refusing it.
    rerun = "it scores the checkpoints again and replaces the unfinished report"
    with write_failures_explained(args.output_dir, files="the report", rerun=rerun):
        os.makedirs(args.output_dir, exist_ok=True)
        open(os.path.join(args.output_dir, REPORT_UNFINISHED), "w").close()
        paths = write_report(records, args.output_dir, pretrained=pretrained, pretrained_accuracies=pretrained_accuracy,
                             benchmarks=benchmarks, plots=args.plots)
        for stale in (FRONTIER_CSV, FRONTIER_PLOT, CLAIMS_JSON):  # a replaced report's frontier must not outlive it when this one has none
            if os.path.isfile(os.path.join(args.output_dir, stale)):
                os.remove(os.path.join(args.output_dir, stale))
        paths.update(_write_claims(records, args.output_dir, plot=args.plots))
        os.remove(os.path.join(args.output_dir, REPORT_UNFINISHED))
    if log_paths:
        for name, path in paths.items():
            logger.info("wrote %s: %s", name, path)
    for record in unscored(records):
        logger.error("%s: %s (%s)", record["checkpoint"], record["status"], record.get("error"))
    return EvaluationResult(pretrained=pretrained, benchmarks=benchmarks, pretrained_accuracy=pretrained_accuracy, records=records, paths=paths)


# What an evaluation's intervals cover: each unit is a run's seed; every unit is scored by one evaluator.
_NOT_COVERED = ("the test sample: every unit is scored on the same test images", "the pretrained model: the same for every unit")


def _write_claims(records: Sequence[dict], output_dir: str, plot: bool) -> dict[str, str]:
    """The report's evidence: the frontier files and claims.json (the generic claims, `evaluation.claims`), and
    the frontier table and the claims appended to results.md; {} when no run gives a frontier point."""
    evidence = build_evidence(records, sources=["training seed (each unit is a run's seed: its data order, augmentation and head)"],
                              not_covered=list(_NOT_COVERED))
    paths = write_evidence(evidence, output_dir, plot=plot)
    if paths:
        with open(os.path.join(output_dir, RESULTS_MD), "a") as f:
            f.write("\n" + evidence_markdown(evidence) + "\n")
    return paths


def check_validation_splits(entries: Sequence[CheckpointEntry]) -> None:
    """Refuse, in one line naming them, checkpoints whose run held out another validation split than the one
    validation scoring reads (`VALIDATION_FRACTION` of train, seed `VALIDATION_SEED`): their validation A_FT
    would be measured on rows the run may have trained on."""
    problems = []
    for entry in entries:
        record = run_record_of(entry.path)
        settings = (record.settings or {}) if record is not None else {}
        held_out = (settings.get("validation_fraction"), settings.get("validation_seed"))
        if record is not None and held_out != (VALIDATION_FRACTION, VALIDATION_SEED):
            problems.append(f"{entry.path} (validation_fraction={held_out[0]}, validation_seed={held_out[1]})")
    if problems:
        raise ValueError(f"--validation scores the validation split a run holds out by default ({VALIDATION_FRACTION:g} of train, seed "
                         f"{VALIDATION_SEED}); these runs held out another, so their validation rows may be their training rows: "
                         + "; ".join(problems))


def check_pretrained_path(path: str) -> None:
    """The pretrained model exists (`check_model_path`) and, a local folder, is a CLIPModel: it gives the text
    tower, which a classifier has not; refused from its config, before anything loads."""
    check_model_path(path, "pretrained model")
    if os.path.isdir(path):
        try:
            check_model_type(read_model_config(path, what="pretrained model"), path, (CLIP_MODEL_TYPE,), what="pretrained model",
                             purpose="the pretrained model gives the text tower and the reference of every Δ",
                             classifier_hint="pass the base model its run started from (base_model in its ldifs_run.json)")
        except ModelFolderError as err:
            raise CheckpointError(str(err)) from None


def evaluate(**kwargs) -> EvaluationResult:
    """`run_evaluation` from keyword arguments (any field of `EvaluationArguments`)."""
    (args,) = HfArgumentParser(EvaluationArguments).parse_dict(kwargs)
    return run_evaluation(args)


# -- many checkpoints -----------------------------------------------------------------------------


def evaluate_checkpoints(
    evaluator: ConceptForgettingEvaluator,
    entries: Sequence[CheckpointEntry],
    benchmarks: Sequence[str],
    *,
    distances: bool = True,
    wise_alphas: Sequence[float] | None = None,
) -> list[ForgettingRecord]:
    """One record per checkpoint, each loaded once; a checkpoint's features are freed once it is scored.

    With `wise_alphas`, one record per checkpoint and α instead, each carrying its "alpha": the
    checkpoint's weights moved in memory to θ(α) = (1 − α)·θ_start + α·θ_checkpoint (`interpolate.wise_sweep`),
    θ_start being its run's starting point, rebuilt once per run (`check_startable` first).

    Every record has a "status": "ok"; "failed" when the checkpoint could not be loaded or scored (its
    "error" says why, the other checkpoints are still scored); "non_finite" when its weights or scores
    hold NaN or inf (no scores are kept, so a diverged model is never reported as a Δ).
    """
    alphas = None if wise_alphas is None else [check_alpha(a) for a in wise_alphas]
    starts = _StartModels(evaluator)
    records = []
    for entry in tqdm(entries, desc="checkpoints"):
        head = {"method": entry.method, "finetune_task": entry.finetune_task, "checkpoint": entry.path, "step": entry.step, "percent": entry.percent,
                **run_facts(entry.path)}
        # Records still to write. An interpolated folder is the run at its own α, so a sweep of it scales that α.
        pending = [head] if alphas is None else [{**head, "alpha": alpha * head.get("alpha", 1.0)} for alpha in alphas]
        try:
            if entry.problem is not None:
                raise CheckpointError(f"{entry.path!r} is not a usable checkpoint: {entry.problem}")
            finetune = _finetune_benchmark(evaluator, entry, benchmarks)
            model = evaluator.load(entry.path)
            if alphas is None:
                key = PRETRAINED_KEY if model is evaluator.pretrained else os.path.abspath(entry.path)
                records.append(_scored(pending.pop(0), lambda: _score_model(evaluator, model, key, entry, benchmarks, finetune, distances), entry))
            else:
                if model is evaluator.pretrained:  # the sweep moves the model's weights: never the reference's
                    raise CheckpointError(f"{entry.path!r} is the pretrained model itself, which has no run to interpolate")
                for alpha, mixed in wise_sweep(model, starts.of(entry.path), alphas):
                    # Each α its own features; an image encoder bit-identical to the pretrained one (α = 0 of
                    # a run that starts there) has the pretrained features, so they are reused, not recomputed.
                    key = PRETRAINED_KEY if same_image_encoder(mixed, evaluator.pretrained) else f"{os.path.abspath(entry.path)}@alpha={alpha!r}"
                    records.append(_scored(pending.pop(0), lambda: _score_model(evaluator, mixed, key, entry, benchmarks, finetune, distances), entry))
                    evaluator.clear_cache()
        except Exception as err:  # one bad checkpoint must not lose the others' results
            logger.error("could not score %s: %s", entry.path, err)
            records += [{**h, "status": "failed", "error": _error_line(err), "eval": {}} for h in pending]
        finally:
            evaluator.clear_cache()
    return records


def run_facts(checkpoint: str) -> dict:
    """What a checkpoint's run record says that places its scores on the frontier: "lambda", the weight
    of the run's regularizer as it recorded it (`regularizer_weight`; None without a weighted term); "seed"
    when the run recorded its settings; "alpha" for a folder `ldifs-hf interpolate` wrote (the run at
    that α); "method_spec", the method's facts the claims pair methods by, when the run recorded them.
    {} for a checkpoint without a run record (a Hub id, a plain CLIP)."""
    try:
        record = run_record_of(checkpoint)
    except RunRecordError:  # a damaged record: the checkpoint is reported as failed, with the reason
        return {}
    if record is None:
        return {}
    facts = {"lambda": record.regularizer_weight}
    if (record.settings or {}).get("seed") is not None:
        facts["seed"] = record.settings["seed"]
    if record.method_spec:
        facts["method_spec"] = record.method_spec
    if record.alpha is not None:
        facts["alpha"] = record.alpha
    return facts


def _scored(head: dict, score, entry: CheckpointEntry) -> ForgettingRecord:
    """`head` with the scores `score()` returns, or with the reason it has none ("failed", "non_finite")."""
    try:
        record = score()
    except NonFiniteModelError as err:
        logger.error("%s is not finite (%s): recorded without scores", entry.path, err)
        return {**head, "status": "non_finite", "error": str(err), "eval": {}}
    except Exception as err:  # one bad checkpoint must not lose the others' results
        logger.error("could not score %s: %s", entry.path, err)
        return {**head, "status": "failed", "error": _error_line(err), "eval": {}}
    return {**head, "status": "ok", **record}


def _error_line(err: Exception) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


class _StartModels:
    """The starting point of the run a checkpoint belongs to (`interpolate.load_start_model`), rebuilt
    once per run and kept until a checkpoint of another run asks (runs' checkpoints come together)."""

    def __init__(self, evaluator: ConceptForgettingEvaluator):
        self.evaluator = evaluator
        self.run_dir: str | None = None
        self.model: nn.Module | None = None

    def of(self, checkpoint: str) -> nn.Module:
        run_dir = run_directory(checkpoint)
        if run_dir != self.run_dir:
            self.run_dir, self.model = None, None  # the previous run's start is freed before the next is loaded
            self.model = load_start_model(checkpoint, cache_dir=self.evaluator.settings.cache_dir).to(self.evaluator.device)
            self.run_dir = run_dir
        return self.model


def check_startable(entries: Sequence[CheckpointEntry]) -> None:
    """Refuse, in one line naming them, checkpoints whose run's starting point cannot be rebuilt (a plain
    CLIP folder or Hub id, a run made before runs recorded their starting head), without loading any.
    Checkpoints already known to be unusable (`CheckpointEntry.problem`) are left to be reported as failed."""
    problems = [problem for entry in entries if entry.problem is None and (problem := start_problem(entry.path)) is not None]
    if problems:
        raise ValueError(f"--wise_alphas interpolates each checkpoint with its run's starting point, which cannot be rebuilt for {len(problems)} "
                         f"checkpoint(s): {'; '.join(problems)}")


class NonFiniteModelError(ValueError):
    """A model whose weights or scores hold NaN or inf: it has no meaningful accuracy or Δ."""


def _along_training(entry: CheckpointEntry) -> bool:
    """A run's `checkpoint-N` folder before the end of its training (not its final model)."""
    return CHECKPOINT_DIR.match(os.path.basename(os.path.normpath(entry.path))) is not None and (entry.percent or 0) < 100


def _score_model(
    evaluator: ConceptForgettingEvaluator, model: nn.Module, key: str, entry: CheckpointEntry, benchmarks: Sequence[str], finetune, distances: bool
) -> ForgettingRecord:
    bad = non_finite_parameter(model)
    if bad is not None:  # NaN weights give an arbitrary argmax accuracy and a Δ that means nothing
        raise NonFiniteModelError(f"weight {bad} is not finite")
    record = evaluator.evaluate(
        model, benchmarks, key=key, finetune_benchmark=finetune, distances=distances,
        ldifs_layers=entry.ldifs_layers, ldifs_normalization=entry.ldifs_normalization or "token",
        validation=not _along_training(entry),  # λ and α are chosen among final models only
    )
    values = {k: v for k, v in record.items() if k != "eval"}
    values.update({f"{bench}/{k}": v for bench, scores in record["eval"].items() for k, v in scores.items()})
    bad_values = [name for name, v in values.items() if isinstance(v, float) and not np.isfinite(v)]
    if bad_values:  # finite weights can still overflow in a forward pass
        raise NonFiniteModelError(f"{', '.join(bad_values[:3])} not finite")
    return record


def _finetune_benchmark(evaluator: ConceptForgettingEvaluator, entry: CheckpointEntry, benchmarks: Sequence[str]):
    """What A_FT is measured on: the run's task by name; for a run on its own data ("custom"), or on a
    task that cannot be loaded by name, that data as the run recorded it (its path and columns). None,
    with a warning, when neither loads."""
    task = entry.finetune_task
    if task is None or task in benchmarks:
        return task
    recorded = _recorded_data(entry, task)
    try:
        if task != CUSTOM.name:
            try:
                evaluator.benchmark(task)
                return task
            except BenchmarkError:
                if recorded is None:
                    raise
        if recorded is None:
            raise BenchmarkError("the run recorded no data path")
        return evaluator.benchmark(recorded).spec
    except BenchmarkError as err:
        logger.warning("no A_FT for %s: its fine-tuning task %r cannot be loaded (%s)", entry.path, task, err)
        return None


def _recorded_data(entry: CheckpointEntry, task: str):
    """The fine-tuning data a checkpoint's run recorded (`RunRecord.settings`: dataset_path, image_column,
    label_column) as a benchmark spec, or None. A run's own data is named after its path, so that two
    runs on different data are never confused."""
    record = run_record_of(entry.path)
    settings = (record.settings or {}) if record is not None else {}
    path = settings.get("dataset_path")
    if not path:
        return None
    spec = CUSTOM if task == CUSTOM.name else get_benchmark(task)
    name = f"{CUSTOM.name}:{os.path.abspath(path)}" if task == CUSTOM.name else task
    columns = {k: settings[k] for k in ("image_column", "label_column") if settings.get(k)}
    return dataclasses.replace(spec, name=name, data_path=path, **columns)


@torch.no_grad()
def same_image_encoder(model: nn.Module, reference: nn.Module) -> bool:
    """Whether two models' image encoders and projections (what their image features depend on) hold
    bit-identical weights."""
    ours, theirs = named_encoder_parameters(model), named_encoder_parameters(reference)
    return ours.keys() == theirs.keys() and all(torch.equal(p, theirs[name].to(p.device)) for name, p in ours.items())


def non_finite_parameter(model: nn.Module) -> str | None:
    """The name of the first parameter holding a NaN or inf, or None."""
    return next((name for name, p in model.named_parameters() if not torch.isfinite(p).all()), None)
