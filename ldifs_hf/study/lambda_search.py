"""λ of a regularized method (L2SP, LDIFS, KL or a plug-in's weight) chosen on the validation split (paper
appendix C), through the Trainer's own `hyperparameter_search`: optuna with a `GridSampler` over the grid, one
trial per λ. The searched parameter is the regularizer's `weight_field` (e.g. `kl_lambda`).

    result = search_lambda(method="lp-init-ldifs", dataset="eurosat", output_dir="runs/eurosat-lambda")
    result.best_lambda   # then, with final_run=True, a full run with it in <output_dir>/final

Every trial starts from the same initial model (the method's ZS or LP head on the pretrained CLIP,
built once and copied by `model_init`), trains with `training_args` and that λ, and is scored by the
accuracy of its classifier on the validation split (the benchmark's `validation_fraction` of train,
never the test split). Ties go to the smaller λ (the weaker constraint). Written into `output_dir`:
lambda_search.md / .csv (every λ and its score), lambda_search.png (score against λ, log axis) and
lambda_search.json (the chosen λ and the grid).

Only classifier methods (CE objective) with a weighted regularizer can be searched: FLYP's objectives have no
class logits to score, and without a regularizer's weight there is no λ.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..benchmarks import image_transform, load_benchmark
from ..run_folder import FolderLock, RunRecord
from ..training.arguments import DataArguments, LDIFSTrainingArguments, ModelArguments
from ..training.build import build_collator, build_model
from ..training.preflight import preflight
from ..training.distributed import fill_zero_buckets, full_weights_loading
from ..training.run import check_model_and_taps, finetune_arguments, load_clip, run_finetune, run_settings, with_benchmark_epochs
from ..training.terms import get_regularizer
from ..training.trainer import LDIFSTrainer

logger = logging.getLogger(__name__)


class _InterruptedTrialFilter(logging.Filter):
    """Drops optuna's report of a trial that Ctrl-C or SIGTERM stopped: a "failed" warning carrying the
    interruption's traceback, then "failed with value None". The interruption itself still reaches the
    command, which ends with its one line."""

    def __init__(self):
        super().__init__()
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self.interrupted = True
            return False
        return not (self.interrupted and "failed with value" in record.getMessage())


@contextlib.contextmanager
def quiet_interrupted_trials():
    """While optuna runs the trials, an interrupted trial is not logged as a failure with a traceback."""
    optimize_logger, trial_filter = logging.getLogger("optuna.study._optimize"), _InterruptedTrialFilter()
    optimize_logger.addFilter(trial_filter)
    try:
        yield
    finally:
        optimize_logger.removeFilter(trial_filter)

DEFAULT_LAMBDA_GRID = (0.01, 0.05, 0.1, 0.5, 1.0, 10.0, 100.0)
SEARCH_MD, SEARCH_CSV, SEARCH_PLOT, SEARCH_JSON = "lambda_search.md", "lambda_search.csv", "lambda_search.png", "lambda_search.json"
SEARCH_FILES = {"markdown": SEARCH_MD, "csv": SEARCH_CSV, "plot": SEARCH_PLOT, "json": SEARCH_JSON}
FINAL_FOLDER = "final"


@dataclass
class LambdaSearchArguments:
    """The `ldifs-hf lambda-search` options beyond a fine-tuning run's."""

    lambda_grid: str = field(
        default=",".join(f"{v:g}" for v in DEFAULT_LAMBDA_GRID),
        metadata={"help": "Comma-separated λ values to try (default: the paper's grid)."},
    )
    final_run: bool = field(default=False, metadata={"help": "Then train the method with the chosen λ in <output_dir>/final."})

    def grid(self) -> list[float]:
        try:
            values = [float(v) for v in self.lambda_grid.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"lambda_grid must be comma-separated numbers, got {self.lambda_grid!r}") from None
        return check_lambda_grid(values)


def check_lambda_grid(grid: Sequence[float]) -> list[float]:
    """The grid as distinct floats in increasing order; empty, non-positive or non-finite values are refused."""
    values = [float(v) for v in grid]
    if not values:
        raise ValueError(f"the λ grid is empty; give positive values such as {list(DEFAULT_LAMBDA_GRID)}")
    bad = [v for v in values if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"the λ grid must hold finite values > 0, got {bad[0]!r} in {list(grid)}")
    if len(set(values)) != len(values):
        raise ValueError(f"the λ grid repeats a value: {list(grid)}")
    return sorted(values)


@dataclass
class LambdaSearchResult:
    """The chosen λ, every λ's validation accuracy, the files written and, with `final_run`, the final run."""

    parameter: str
    best_lambda: float
    scores: dict[float, float]
    paths: dict[str, str] = field(default_factory=dict)
    final: RunRecord | None = None


def _accuracy(eval_prediction) -> dict[str, float]:
    predictions, labels = eval_prediction
    return {"accuracy": float(np.mean(np.asarray(predictions) == np.asarray(labels)))}


def _predicted_class(logits, labels):
    # The eval outputs also carry hidden states (LDIFS asks for them); keep only the class logits' argmax.
    return (logits[0] if isinstance(logits, (tuple, list)) else logits).argmax(-1)


def run_lambda_search(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: LDIFSTrainingArguments,
    grid: Sequence[float] = DEFAULT_LAMBDA_GRID,
    *,
    final_run: bool = False,
) -> LambdaSearchResult:
    """Search λ over `grid`; see the module docstring. `training_args.output_dir` receives the tables,
    the plot and (with `final_run`) the final run in `final/`, trained with the chosen λ."""
    grid = check_lambda_grid(grid)
    spec = training_args.method_spec
    if spec is None:
        raise ValueError("a λ search needs a method (method=...); choose a CE method with a regularizer, e.g. lp-init-ldifs")
    parameter = get_regularizer(training_args.regularizer).weight_field
    if parameter is None:
        raise ValueError(
            f"method {spec.name!r} has regularizer {training_args.regularizer!r}: there is no λ to search; choose a method "
            "whose regularizer has a weight (e.g. lp-init-ldifs, lp-init-kl)"
        )
    if spec.objective != "ce":
        raise ValueError(f"method {spec.name!r} trains with objective {spec.objective!r}, which has no class logits to score on the validation split; choose a CE method")
    if data_args.validation_fraction <= 0:
        raise ValueError(f"a λ search scores the validation split, but validation_fraction is {data_args.validation_fraction}; give a fraction in (0, 1)")
    output_dir = training_args.output_dir
    # The checks a fine-tuning run makes before loading anything: steps, dtypes, the output directory,
    # the model's config and taps.
    preflight(model_args, training_args)
    check_model_and_taps(model_args, training_args)
    training_args = with_benchmark_epochs(data_args, training_args)  # as the final run will: the settings it records
    # What decides the scores: the run's settings (the searched λ aside), the method and the grid.
    run = {k: v for k, v in run_settings(model_args, data_args, training_args).items() if k != parameter}
    settings = {"method": spec.name, "dataset": data_args.dataset, "parameter": parameter, "grid": grid, **run}
    # One writer per folder (the final run also holds its own): the main process holds it.
    with FolderLock(output_dir) if training_args.process_index == 0 else contextlib.nullcontext():
        result = _earlier_search(output_dir, settings, overwrite=training_args.overwrite_output_dir)
        if result is not None:
            logger.info("λ search already done in %s (%s = %g): reused; pass --overwrite_output_dir to search again", output_dir, parameter, result.best_lambda)
        else:
            result = _search(model_args, data_args, training_args, spec, grid, parameter, settings)
        if final_run:
            final_args = copy.deepcopy(training_args).with_weight(result.best_lambda)
            final_args.output_dir = os.path.join(output_dir, FINAL_FOLDER)
            result.final = run_finetune(model_args, data_args, final_args)
        return result


def _earlier_search(output_dir: str, settings: dict, *, overwrite: bool) -> LambdaSearchResult | None:
    """The search already written in `output_dir` with the same method, dataset and grid (a rerun
    reuses it, so an interrupted final run does not redo the trials), or None. A different search there
    is refused unless `overwrite`: its tables would be replaced."""
    path = os.path.join(output_dir, SEARCH_JSON)
    if not os.path.exists(path) or overwrite:
        return None
    with open(path) as f:
        earlier = json.load(f)
    found = earlier.get("settings") or {}
    if found != settings:
        differ = sorted(k for k in settings if found.get(k) != settings[k])
        raise ValueError(
            f"{output_dir} already holds a λ search for {earlier.get('method')} on {earlier.get('dataset')} with other settings "
            f"({', '.join(differ)}); choose another --output_dir, or pass --overwrite_output_dir to replace it"
        )
    result = LambdaSearchResult(
        parameter=earlier["parameter"], best_lambda=earlier["best_lambda"],
        scores=dict(zip(earlier["grid"], earlier["validation_accuracy"])),
    )
    result.paths = search_paths(output_dir)
    return result


def _search(model_args, data_args, training_args, spec, grid, parameter, settings) -> LambdaSearchResult:
    output_dir = training_args.output_dir

    # The data and the initial model, as a fine-tuning run builds them (`run_finetune` steps 2-4).
    benchmark = load_benchmark(
        data_args.dataset, data_path=data_args.dataset_path, image_column=data_args.image_column, label_column=data_args.label_column,
        max_train_samples=data_args.max_train_samples, max_eval_samples=data_args.max_eval_samples,
        validation_fraction=data_args.validation_fraction, seed=data_args.validation_seed, cache_dir=model_args.cache_dir,
    )
    clip_model, processor = load_clip(model_args.model_name_or_path, model_args.cache_dir)
    transform = image_transform(processor.image_processor)
    for split in benchmark.splits.values():
        split.set_transform(transform)
    with full_weights_loading():  # under ZeRO-3 too: the head is built from whole weights
        initial = build_model(
            spec, clip_model, processor.tokenizer, benchmark.class_names, benchmark.templates, benchmark.splits["train"],
            lp_solver=model_args.lp_solver, lp_iterations=model_args.lp_iterations, seed=training_args.seed,
        )
    reference = load_clip(model_args.reference_model_name_or_path, model_args.cache_dir)[0] if model_args.reference_model_name_or_path else None

    search_args = copy.deepcopy(training_args)
    search_args.output_dir = os.path.join(output_dir, "trials")
    search_args.save_strategy = "no"  # a trial is scored once, at its end; nothing to resume
    search_args.eval_strategy = "no"
    search_args.push_to_hub = False
    trainer = LDIFSTrainer(
        model_init=lambda: copy.deepcopy(initial),
        args=search_args,
        train_dataset=benchmark.splits["train"],
        eval_dataset=benchmark.splits["validation"],
        data_collator=build_collator(spec, processor.tokenizer, benchmark.class_names, benchmark.templates, seed=training_args.seed),
        processing_class=processor,
        compute_metrics=_accuracy,
        preprocess_logits_for_metrics=_predicted_class,
        teacher_model=reference,
    )
    fill_zero_buckets(trainer, max(clip_model.config.vision_config.hidden_size, clip_model.config.text_config.hidden_size))

    import optuna

    storage = optuna.storages.InMemoryStorage()
    study_name = f"{parameter}-{spec.name}-{benchmark.spec.name}"
    with quiet_interrupted_trials():
        trainer.hyperparameter_search(
            hp_space=lambda trial: {parameter: trial.suggest_categorical(parameter, grid)},
            compute_objective=lambda metrics: metrics["eval_accuracy"],
            n_trials=len(grid),
            direction="maximize",
            backend="optuna",
            sampler=optuna.samplers.GridSampler({parameter: grid}, seed=training_args.seed),
            storage=storage,
            study_name=study_name,
        )
    trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    scores = {float(t.params[parameter]): float(t.value) for t in trials}
    missing = [v for v in grid if v not in scores]
    if missing:
        raise RuntimeError(f"λ search trials for {missing} did not complete; see the log above")
    best = max(grid, key=lambda v: (scores[v], -v))  # ties: the smaller λ
    result = LambdaSearchResult(parameter=parameter, best_lambda=best, scores={v: scores[v] for v in grid})
    result.paths = write_lambda_search(result, output_dir, method=spec.name, dataset=benchmark.spec.name, settings=settings)
    logger.info("λ search on %s: %s = %g (validation accuracy %.4f)", benchmark.spec.name, parameter, best, scores[best])
    return result


def search_lambda(grid: Sequence[float] = DEFAULT_LAMBDA_GRID, final_run: bool = False, **kwargs) -> LambdaSearchResult:
    """`run_lambda_search` from keyword arguments (any field of `ModelArguments`, `DataArguments` or
    `LDIFSTrainingArguments`, as `finetune(**kwargs)`)."""
    return run_lambda_search(*finetune_arguments(kwargs), grid, final_run=final_run)


def search_paths(output_dir: str) -> dict[str, str]:
    """Where a λ search's tables, plot and JSON are written in `output_dir`."""
    return {name: os.path.join(output_dir, file) for name, file in SEARCH_FILES.items()}


def write_lambda_search(result: LambdaSearchResult, output_dir: str, *, method: str, dataset: str, settings: dict | None = None) -> dict[str, str]:
    """lambda_search.md / .csv / .png / .json (with `settings`, what a rerun compares); returns their paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = search_paths(output_dir)
    rows = [(value, score) for value, score in result.scores.items()]
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([result.parameter, "validation_accuracy", "chosen"])
        writer.writerows([value, score, value == result.best_lambda] for value, score in rows)
    lines = [
        f"λ search for {method} on {dataset}: validation accuracy (%) of each {result.parameter}; chosen {result.best_lambda:g}.",
        "", f"| {result.parameter} | validation accuracy | chosen |", "|---|---|---|",
    ]
    lines += [f"| {value:g} | {100 * score:.2f} | {'✓' if value == result.best_lambda else ''} |" for value, score in rows]
    with open(paths["markdown"], "w") as f:
        f.write("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([v for v, _ in rows], [100 * s for _, s in rows], marker="o")
    ax.plot([result.best_lambda], [100 * result.scores[result.best_lambda]], marker="*", markersize=14, linestyle="none", label="chosen")
    ax.set_xscale("log")
    ax.set_xlabel(result.parameter)
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{method} on {dataset}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(paths["plot"], dpi=100)
    plt.close(fig)
    # Last, through a temporary file: its presence says the search is complete (a rerun reuses it).
    tmp = paths["json"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"method": method, "dataset": dataset, "settings": settings, "parameter": result.parameter, "best_lambda": result.best_lambda,
                   "grid": [value for value, _ in rows], "validation_accuracy": [score for _, score in rows]}, f, indent=2)
    os.replace(tmp, paths["json"])
    return paths
