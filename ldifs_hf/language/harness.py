"""lm-evaluation-harness (`lm_eval`, an optional extra) as the language-model evaluation uses it: the
tasks found by name in a folder of task YAMLs and in lm_eval's own catalogue, checked and loaded before
any model is, digested for the base model's cache, and an in-memory model scored by `simple_evaluate`
with each task reduced to one number (`TaskScore`).

A task's score is its first listed metric under its first filter (exact_match for the skills world's
tasks, acc for most multiple-choice ones), unless `metrics` names another; a group's is its aggregate.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

logger = logging.getLogger(__name__)

LM_EVAL_EXTRA = 'pip install "ldifs_hf[lm_eval]"'
# Keys of a task's result entry that are not metrics (a metric's key is "metric,filter").
_NOT_METRICS = ("alias", "name", "sample_len", "sample_count", " ")


class LanguageTaskError(ValueError):
    """A task name or task folder that cannot be evaluated; the message says what would be accepted."""


def require_lm_eval():
    """The `lm_eval` module, or one ImportError line naming the extra that installs it."""
    try:
        import lm_eval
        import lm_eval.evaluator  # noqa: F401  (what scoring calls; a broken install fails here, not mid-run)
    except ImportError as err:
        raise ImportError(f"the language-model evaluation scores tasks with lm-evaluation-harness, which is not installed "
                          f"({' '.join(str(err).split())}): {LM_EVAL_EXTRA}") from None
    return lm_eval


@dataclass(frozen=True)
class TaskScore:
    """One task's score: `score` in the metric's own units (exact match and accuracy in [0, 1]),
    `metric` as lm_eval names it ("exact_match,none"), its standard error (None when lm_eval gives
    none), whether higher is better, and the number of items scored."""

    score: float
    metric: str
    stderr: float | None
    higher_is_better: bool
    samples: int | None

    def to_dict(self) -> dict:
        return {"score": self.score, "metric": self.metric, "stderr": self.stderr, "higher_is_better": self.higher_is_better,
                "samples": self.samples}


@dataclass
class TaskSet:
    """Tasks checked and loaded once: their names, the `TaskManager` that finds them, the metric chosen
    for each (None: the task's first), and `digest`, a hash of every task's config and data."""

    names: list[str]
    task_dir: str | None
    manager: object
    digest: str
    metrics: dict[str, str]


def check_task_dir(task_dir: str | None) -> None:
    """A task folder exists, is a folder and holds at least one task YAML (one line otherwise)."""
    if task_dir is None:
        return
    if not os.path.exists(task_dir):
        raise LanguageTaskError(f"task_dir {task_dir!r} does not exist; pass a folder of lm-eval task YAML files")
    if not os.path.isdir(task_dir):
        raise LanguageTaskError(f"task_dir {task_dir!r} is a file; pass the folder that holds the task YAML files")
    if not any(name.endswith((".yaml", ".yml")) for _, _, files in os.walk(task_dir) for name in files):
        raise LanguageTaskError(f"task_dir {task_dir!r} holds no .yaml task file")


def load_task_set(names: Sequence[str], task_dir: str | None = None, metrics: Mapping[str, str] | None = None) -> TaskSet:
    """Find `names` in `task_dir` (lm_eval's own catalogue is indexed only when a name is not there: it
    takes seconds), refuse unknown names in one line, load every task once and digest them."""
    lm_eval = require_lm_eval()
    from lm_eval.tasks import TaskManager

    check_task_dir(task_dir)
    if not names:
        raise LanguageTaskError("no tasks to evaluate: name at least one lm-eval task (or a task of --task_dir)")
    task_dir = os.path.abspath(task_dir) if task_dir else None
    with _quiet_lm_eval():
        manager = TaskManager(include_path=task_dir, include_defaults=False) if task_dir else None
        local = set(manager.all_tasks) if manager is not None else set()
        if manager is None or not set(names) <= local:
            manager = TaskManager(include_path=task_dir)
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        where = f"in task_dir {task_dir!r} (its tasks: {', '.join(sorted(local)) or 'none'}) nor " if task_dir else ""
        raise LanguageTaskError(f"unknown task(s) {', '.join(map(repr, unknown))}: not a task {where}one of lm_eval's "
                                f"{len(manager.all_tasks)} task, group and tag names")
    metrics = dict(metrics or {})
    stray = sorted(set(metrics) - set(names))
    if stray:
        raise LanguageTaskError(f"metric given for {', '.join(map(repr, stray))}, which is not among the tasks ({', '.join(names)})")
    digest = hashlib.sha256(f"lm_eval {lm_eval.__version__ if hasattr(lm_eval, '__version__') else '?'}|{sorted(metrics.items())}".encode())
    for name in names:
        digest.update(_task_digest(name, manager).encode())
    return TaskSet(names=list(names), task_dir=task_dir, manager=manager, digest=digest.hexdigest(), metrics=metrics)


def _task_digest(name: str, manager) -> str:
    """A hash of a task's (or a group's every task's) config and data fingerprints; loading it here also
    makes a task whose data cannot be read fail now, in one line, before any model is loaded."""
    from lm_eval.tasks import get_task_dict

    try:
        with _quiet_lm_eval():
            loaded = get_task_dict([name], manager)
    except Exception as err:  # lm_eval raises what its loaders raise: name the task, keep the reason
        raise LanguageTaskError(f"task {name!r} could not be loaded: {type(err).__name__}: {' '.join(str(err).split())[:300]}") from None
    digest = hashlib.sha256(name.encode())
    for leaf, task in sorted(_leaf_tasks(loaded), key=lambda kv: kv[0]):
        config = task.config.to_dict() if hasattr(task.config, "to_dict") else dict(task.config)
        data = {split: getattr(ds, "_fingerprint", None) for split, ds in (getattr(task, "dataset", None) or {}).items()}
        digest.update(json.dumps({"task": leaf, "config": config, "data": data}, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _leaf_tasks(loaded: dict):
    for key, value in loaded.items():
        if isinstance(value, dict):
            yield from _leaf_tasks(value)
        else:
            yield (key if isinstance(key, str) else getattr(key, "task_name", str(key))), value


@contextlib.contextmanager
def _quiet_lm_eval():
    """lm_eval's INFO lines (every task it indexes, every request it builds) and its warning that a model
    was passed in memory, which is how this module always passes it, kept off the console; and the
    provenance `simple_evaluate` adds to its results, which no score reads: `git describe` in the working
    directory (its "fatal: not a git repository" went straight to the terminal) and torch's environment
    report (pip and the system queried, about 2 s a call)."""
    from lm_eval import evaluator

    loggers = [logging.getLogger(name) for name in ("lm_eval", "lm-eval")]
    levels = [lg.level for lg in loggers]
    provenance = {name: getattr(evaluator, name) for name in ("get_git_commit_hash", "add_env_info") if hasattr(evaluator, name)}
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    stubs = {"get_git_commit_hash": lambda: None, "add_env_info": lambda storage: None}
    for name in provenance:
        setattr(evaluator, name, stubs[name])
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        for name, value in provenance.items():
            setattr(evaluator, name, value)


def score_model(model, tokenizer, task_set: TaskSet, *, batch_size: int = 16, limit: int | None = None, num_fewshot: int | None = None) -> dict[str, TaskScore]:
    """Every task of `task_set` scored for `model` (in memory, on its own device) with lm_eval's
    `simple_evaluate` (its fixed seeds: the same items and few-shot examples for every model)."""
    require_lm_eval()
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    with _quiet_lm_eval():
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        results = simple_evaluate(model=lm, tasks=list(task_set.names), task_manager=task_set.manager, limit=limit,
                                  num_fewshot=num_fewshot, bootstrap_iters=1000, log_samples=False)
    return {name: task_score(results, name, task_set.metrics.get(name)) for name in task_set.names}


def task_score(results: Mapping, name: str, metric: str | None = None) -> TaskScore:
    """One task's `TaskScore` from `simple_evaluate`'s results: `metric` ("acc" or "acc,none"), else the
    task's first listed metric under its first filter, else (a group) its first aggregate metric."""
    entry = (results.get("results") or {}).get(name) or (results.get("groups") or {}).get(name)
    if not entry:
        raise LanguageTaskError(f"lm_eval returned no result for task {name!r}")
    available = [key for key in entry if "," in key and "_stderr," not in key and not key.startswith(_NOT_METRICS)]
    key = _metric_key(results, name, metric, available)
    if key not in entry:
        raise LanguageTaskError(f"task {name!r} has no metric {key!r}; its metrics: {', '.join(available)}")
    value, stderr = entry[key], entry.get(key.replace(",", "_stderr,", 1))
    base_metric = key.split(",")[0]
    higher = (results.get("higher_is_better") or {}).get(name, {}).get(base_metric, True)
    samples = (results.get("n-samples") or {}).get(name, {}).get("effective")
    return TaskScore(score=float(value), metric=key, stderr=float(stderr) if isinstance(stderr, (int, float)) else None,
                     higher_is_better=bool(higher), samples=samples)


def _metric_key(results: Mapping, name: str, metric: str | None, available: list[str]) -> str:
    if metric:
        return metric if "," in metric else next((k for k in available if k.split(",")[0] == metric), f"{metric},none")
    config = (results.get("configs") or {}).get(name) or {}
    listed = [m.get("metric") for m in config.get("metric_list") or [] if isinstance(m.get("metric"), str)]
    filters = [f.get("name") for f in config.get("filter_list") or [] if isinstance(f, dict)]
    if listed:
        return f"{listed[0]},{filters[0] if filters else 'none'}"
    if not available:
        raise LanguageTaskError(f"lm_eval returned no metric for task {name!r}")
    return available[0]
