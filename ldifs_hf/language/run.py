"""One language-model forgetting evaluation end to end, as a library call that returns a
`LanguageEvaluationResult`; `ldifs_hf.evaluate`'s sibling for causal LMs.

    evaluate_language_model(checkpoint=["sft=runs/sft"], tasks="skills_add,skills_copy,skills_shift",
                            task_dir="tasks/", finetune_task="skills_shift", retain="retain.txt", output_dir="reports/sft")

Scores the base model once (cached under `cache_dir`, keyed by its weights, its tokenizer, the tasks'
configs and data, the retain texts and the settings) and then every checkpoint, one loaded at a time:
each task's score through lm-evaluation-harness, its Δ against the base, A_FT (the fine-tuning task's
score) and the held-out loss on the retain set. Writes results.json, results.csv and results.md
(`language.report`), and, where the runs give frontier points, frontier.csv/.png and claims.json (the
claims paired over the runs' seeds, as for CLIP: `language.report.write_language_evidence`). A checkpoint is a full model folder or a PEFT adapter folder (scored on its base:
the same numbers as its merged model); a run directory's checkpoint-N folders are points along training.

Refused in one line before any model is loaded: no checkpoint, no task, an unknown task name, a missing
task folder, lm_eval not installed, a bad retain set, an existing report (unless `overwrite_report`),
an `output_dir` that is a file or is held by another command. A checkpoint that cannot be loaded or
scored, or whose weights are not finite, is recorded as such and the others are still scored.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
from transformers import HfArgumentParser

from ..evaluation.cache import EvaluationCache, key_digest, model_fingerprint
from ..evaluation.checkpoints import CheckpointError, check_model_path
from ..evaluation.report import unscored
from ..evaluation.run import REPORT_FILES, non_finite_parameter
from ..options import check_field_types
from ..run_folder import FolderLock, check_output_dir
from ..world.settings import cache_root
from .checkpoints import LanguageCheckpoint, load_language_model, load_language_tokenizer, resolve_language_checkpoints
from .harness import TaskScore, TaskSet, load_task_set, score_model
from .report import write_language_evidence, write_language_report
from .retain import RetainLoss, held_out_loss, load_retain_texts, texts_digest

logger = logging.getLogger(__name__)

BASE_CACHE_FORMAT = "ldifs_hf-language-base-v1"


@dataclass
class LanguageEvaluationArguments:
    """What to evaluate, against which base model, on which lm-eval tasks and retain set, and how."""

    checkpoint: list[str] = field(
        default_factory=list,
        metadata={"help": "Checkpoints (model or PEFT adapter folders) or run directories, each 'path' or 'method=path'."},
    )
    tasks: str = field(default="", metadata={"help": "Comma-separated lm-eval task (or group) names: of --task_dir, or lm_eval's own."})
    task_dir: str | None = field(
        default=None, metadata={"help": "A folder of lm-eval task YAMLs (e.g. over local JSONL files: dataset_path: json); lm_eval's --include_path."}
    )
    finetune_task: str | None = field(
        default=None,
        metadata={"help": "The task that scores the fine-tuning skill (A_FT); scored with the others, left out of their mean Δ. "
                  "Default: the task a checkpoint's run recorded."},
    )
    metric: list[str] = field(
        default_factory=list, metadata={"help": "A task's metric, 'task=metric' (e.g. 'hellaswag=acc_norm'); default: the task's first."}
    )
    pretrained: str | None = field(
        default=None, metadata={"help": "The base model (folder or Hub id); default: the base the first checkpoint's run or adapter names."}
    )
    retain: list[str] = field(
        default_factory=list,
        metadata={"help": "Held-out text for the retain loss: a save_to_disk folder, .txt (a text per line), .json/.jsonl/.csv/.parquet files."},
    )
    retain_text_column: str = field(default="text", metadata={"help": "The retain set's text column."})
    retain_split: str | None = field(default=None, metadata={"help": "The retain set's split, when its folder holds several."})
    retain_max_samples: int | None = field(default=None, metadata={"help": "Use only the first N retain texts."})
    retain_max_length: int | None = field(default=None, metadata={"help": "Cut retain texts at N tokens (default: the model's context length)."})
    limit: int | None = field(default=None, metadata={"help": "Score only the first N items of each task (lm_eval's --limit); for quick looks."})
    num_fewshot: int | None = field(default=None, metadata={"help": "Few-shot examples per item (default: each task's own)."})
    batch_size: int = field(default=16, metadata={"help": "Batch size of generation, log-likelihoods and the retain loss."})
    device: str | None = field(default=None, metadata={"help": "Device of the models (default: cuda when available, else cpu)."})
    output_dir: str = field(default="language_forgetting_report", metadata={"help": "Where results.json/.csv/.md are written."})
    overwrite_report: bool = field(default=False, metadata={"help": "Replace a report already in output_dir (default: refuse)."})
    include_intermediate: bool = field(default=True, metadata={"help": "Also score a run directory's checkpoint-N folders."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where the base model's scores are cached (default: $LDIFS_HF_CACHE/language-eval)."}
    )
    base_cache: bool = field(default=True, metadata={"help": "Read and write the base model's cached scores."})
    frontier: bool = field(
        default=True,
        metadata={"help": "Also write the frontier and the claims paired over the runs' seeds (frontier.csv/.png, claims.json) "
                  "where the runs give points."},
    )

    def __post_init__(self):
        for name in ("checkpoint", "metric", "retain"):
            value = getattr(self, name)
            if isinstance(value, (str, os.PathLike)):
                setattr(self, name, [os.fspath(value)])
            elif isinstance(value, tuple):
                setattr(self, name, [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value])
        if isinstance(self.tasks, (list, tuple)) and all(isinstance(t, str) for t in self.tasks):
            self.tasks = ",".join(self.tasks)
        for name in ("task_dir", "pretrained", "output_dir", "cache_dir"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))
        check_field_types(self)
        for name in ("batch_size", "limit", "retain_max_samples", "retain_max_length"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ValueError(f"num_fewshot must be >= 0, got {self.num_fewshot}")
        self.metrics()

    def task_names(self) -> list[str]:
        """The tasks to score: `tasks`, and the fine-tuning task when it is not among them."""
        names = [t.strip() for t in self.tasks.split(",") if t.strip()]
        if self.finetune_task and self.finetune_task not in names:
            names.append(self.finetune_task)
        return names

    def metrics(self) -> dict[str, str]:
        """{task: metric} from the 'task=metric' entries."""
        metrics = {}
        for entry in self.metric:
            task, sep, metric = entry.partition("=")
            if not sep or not task.strip() or not metric.strip():
                raise ValueError(f"metric takes 'task=metric' (e.g. 'hellaswag=acc_norm'), got {entry!r}")
            metrics[task.strip()] = metric.strip()
        return metrics

    def torch_device(self) -> torch.device:
        device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} is not available on this machine (no CUDA); pass --device cpu")
        return device


@dataclass
class LanguageEvaluationResult:
    """What an evaluation measured and wrote: the base model and its scores ({task: TaskScore.to_dict()})
    and retain loss, whether they came from the cache, one record per checkpoint, and the files written."""

    pretrained: str
    tasks: list[str]
    finetune_task: str | None
    base_scores: dict[str, dict]
    base_retain: dict | None
    base_from_cache: bool
    records: list[dict]
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def failures(self) -> list[dict]:
        """The records of checkpoints that could not be scored ("failed") or are not finite ("non_finite")."""
        return unscored(self.records)


def run_language_evaluation(args: LanguageEvaluationArguments) -> LanguageEvaluationResult:
    """Score every checkpoint on every task and on the retain set against the base model; write the report."""
    # 1. Arguments, tasks and retain texts, checked before any model is loaded.
    if not args.checkpoint:
        raise ValueError("checkpoint is required: one or more model, adapter or run directories ('path' or 'method=path')")
    device = args.torch_device()
    task_set = load_task_set(args.task_names(), args.task_dir, args.metrics())
    retain = _retain_texts(args)
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise FileExistsError(f"output_dir {args.output_dir!r} is a file; pass a directory (created if missing) for the report")
    check_output_dir(args.output_dir)
    if args.pretrained:
        check_model_path(args.pretrained, "pretrained model")
    with FolderLock(args.output_dir, "output_dir"):
        existing = [f for f in REPORT_FILES if os.path.isfile(os.path.join(args.output_dir, f))]
        if existing and not args.overwrite_report:
            raise FileExistsError(f"output_dir {args.output_dir!r} already holds a report ({', '.join(existing)}); choose another "
                                  "--output_dir or pass --overwrite_report to replace it")
        for stale in existing:  # a replaced report's files must not outlive it (this one may write no frontier)
            os.remove(os.path.join(args.output_dir, stale))
        return _evaluate_in_folder(args, task_set, retain, device)


def _retain_texts(args: LanguageEvaluationArguments) -> list[str] | None:
    if not args.retain:
        return None
    return load_retain_texts(args.retain, text_column=args.retain_text_column, split=args.retain_split, max_samples=args.retain_max_samples)


def _evaluate_in_folder(args, task_set: TaskSet, retain, device) -> LanguageEvaluationResult:
    # 2. Checkpoints, with their runs' facts, and the base model they are compared with.
    entries = resolve_language_checkpoints(args.checkpoint, include_intermediate=args.include_intermediate)
    pretrained = args.pretrained or next((e.base_model for e in entries if e.base_model), None)
    if pretrained is None:
        raise CheckpointError("no pretrained given and no checkpoint names its base model (a run record's base_model or an "
                              "adapter's base_model_name_or_path); pass pretrained")
    check_model_path(pretrained, "pretrained model")
    logger.info("evaluating %d checkpoint(s) against %s on %s", len(entries), pretrained, ", ".join(task_set.names))

    # 3. The base model, scored once (or read from the cache); then every checkpoint.
    base = _BaseScores.measure(pretrained, task_set, retain, args, device)
    records = [_record(entry, base, task_set, retain, args, device) for entry in entries]

    # 4. The report.
    summary = {"model_type": "causal-lm", "pretrained": pretrained, "tasks": task_set.names, "finetune_task": args.finetune_task,
               "base_scores": base.scores, "base_retain": base.retain, "settings": _scoring_settings(args, device)}
    paths = write_language_report(records, args.output_dir, summary=summary, tasks=task_set.names, base_scores=base.scores,
                                  base_retain=base.retain)
    if args.frontier:  # the frontier and the claims over the runs' seeds
        paths.update(write_language_evidence(records, args.output_dir)[0])
    for name, path in paths.items():
        logger.info("wrote %s: %s", name, path)
    for record in unscored(records):
        logger.error("%s: %s (%s)", record["checkpoint"], record["status"], record.get("error"))
    return LanguageEvaluationResult(pretrained=pretrained, tasks=task_set.names, finetune_task=args.finetune_task, base_scores=base.scores,
                                    base_retain=base.retain, base_from_cache=base.from_cache, records=records, paths=paths)


def evaluate_language_model(**kwargs) -> LanguageEvaluationResult:
    """`run_language_evaluation` from keyword arguments (any field of `LanguageEvaluationArguments`)."""
    return run_language_evaluation(LanguageEvaluationArguments(**kwargs))


def _scoring_settings(args: LanguageEvaluationArguments, device: torch.device) -> dict:
    """The settings that can change a score (part of the base cache's key, and of the report)."""
    return {"limit": args.limit, "num_fewshot": args.num_fewshot, "batch_size": args.batch_size, "device": device.type,
            "retain_max_length": args.retain_max_length}


# -- the base model -------------------------------------------------------------------------------


@dataclass
class _BaseScores:
    scores: dict[str, dict]
    retain: dict | None
    from_cache: bool

    @classmethod
    def measure(cls, pretrained: str, task_set: TaskSet, retain, args, device) -> "_BaseScores":
        """The base model's scores and retain loss, from the cache when an entry has the same key."""
        model = load_language_model(pretrained, device=device)
        bad = non_finite_parameter(model)
        if bad is not None:
            raise CheckpointError(f"the pretrained model {pretrained!r} is not finite (weight {bad}), so no Δ against it means anything")
        tokenizer = load_language_tokenizer(pretrained)
        cache = EvaluationCache(args.cache_dir or cache_root() / "language-eval") if args.base_cache else None
        key = {"format": BASE_CACHE_FORMAT, "model": model_fingerprint(model), "tokenizer": _tokenizer_digest(tokenizer),
               "tasks": task_set.names, "task_digest": task_set.digest, "retain": texts_digest(retain) if retain else None,
               "settings": _scoring_settings(args, device)}
        cached = cache.load_accuracies(key) if cache is not None else None
        if cached is not None:
            logger.info("base model scores read from the cache (%s)", key_digest(key)[:12])
            return cls(scores=cached["scores"], retain=cached["retain"], from_cache=True)
        scores = {name: s.to_dict() for name, s in score_model(model, tokenizer, task_set, batch_size=args.batch_size, limit=args.limit,
                                                                num_fewshot=args.num_fewshot).items()}
        loss = _retain_loss(model, tokenizer, retain, args)
        value = {"scores": scores, "retain": None if loss is None else vars(loss)}
        if cache is not None:
            cache.save_accuracies(key, value)
        return cls(scores=scores, retain=value["retain"], from_cache=False)


def _tokenizer_digest(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return key_digest({"tokenizer": text, "special": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
                       "padding_side": tokenizer.padding_side})


def _retain_loss(model, tokenizer, retain, args) -> RetainLoss | None:
    if retain is None:
        return None
    return held_out_loss(model, tokenizer, retain, batch_size=args.batch_size, max_length=args.retain_max_length)


# -- one checkpoint -------------------------------------------------------------------------------


def _record(entry: LanguageCheckpoint, base: _BaseScores, task_set: TaskSet, retain, args, device) -> dict:
    """A checkpoint's record: its run's facts, then its scores, or why it has none."""
    finetune_task = args.finetune_task or (entry.finetune_task if entry.finetune_task in task_set.names else None)
    record = {"checkpoint": entry.path, "method": entry.method, "kind": entry.kind, "regularizer": entry.facts.get("regularizer"),
              "lambda": entry.facts.get("lambda"), "seed": entry.facts.get("seed"), "step": entry.step, "percent": entry.percent,
              "finetune_task": finetune_task, **({"method_spec": entry.facts["method_spec"]} if entry.facts.get("method_spec") else {})}
    try:
        if entry.problem is not None:
            raise CheckpointError(f"{entry.path!r} is not a usable checkpoint: {entry.problem}")
        base_model = args.pretrained or entry.base_model
        if entry.kind == "adapter" and args.pretrained and entry.base_model and os.path.abspath(entry.base_model) != os.path.abspath(args.pretrained):
            logger.warning("adapter %s was saved on %s; it is applied to pretrained %s, as asked", entry.path, entry.base_model, args.pretrained)
        model = load_language_model(entry, base_model=base_model, device=device)
        bad = non_finite_parameter(model)
        if bad is not None:
            return {**record, "status": "non_finite", "error": f"weight {bad} is not finite", "eval": {}}
        tokenizer = load_language_tokenizer(entry.path, base_model)
        scores = score_model(model, tokenizer, task_set, batch_size=args.batch_size, limit=args.limit, num_fewshot=args.num_fewshot)
        loss = _retain_loss(model, tokenizer, retain, args)
    except Exception as err:  # one bad checkpoint must not lose the others' results
        logger.error("could not score %s: %s", entry.path, err)
        return {**record, "status": "failed", "error": f"{type(err).__name__}: {' '.join(str(err).split())}", "eval": {}}
    record["eval"] = {name: _compared(score, base.scores[name]) for name, score in scores.items()}
    record["a_ft"] = record["eval"][finetune_task]["score"] if finetune_task else None
    record.update(retain_loss=None if loss is None else loss.loss, retain_loss_base=(base.retain or {}).get("loss"),
                  retain_perplexity=None if loss is None else loss.perplexity, retain_perplexity_base=(base.retain or {}).get("perplexity"))
    non_finite = [name for name, v in record["eval"].items() if v["score"] != v["score"] or abs(v["score"]) == float("inf")]
    if non_finite or (loss is not None and loss.loss != loss.loss):
        return {**record, "status": "non_finite", "error": f"{', '.join(non_finite) or 'retain loss'} not finite", "eval": {}}
    return {**record, "status": "ok"}


def _compared(score: TaskScore, base: dict) -> dict:
    """A task's score beside the base model's; Δ signed so that negative is forgetting."""
    delta = score.score - base["score"] if score.higher_is_better else base["score"] - score.score
    return {"score": score.score, "base": base["score"], "delta": delta, "metric": score.metric, "stderr": score.stderr}


def main(argv=None) -> int:
    """Parse `LanguageEvaluationArguments` from `argv` (or one .json file), evaluate, print one summary
    line; 1 when a checkpoint could not be scored (the report is still written), else 0."""
    parser = HfArgumentParser(LanguageEvaluationArguments)
    if argv is not None and len(argv) == 1 and argv[0].endswith(".json"):
        (args,) = parser.parse_json_file(argv[0])
    else:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    result = run_language_evaluation(args)
    print(summary_line(result))
    return 1 if result.failures else 0


def summary_line(result: LanguageEvaluationResult) -> str:
    """What a command prints when the report is written: how many checkpoints were scored on how many tasks, and where."""
    scored = len(result.records) - len(result.failures)
    line = f"scored {scored} checkpoint(s) on {len(result.tasks)} task(s) -> {result.paths.get('markdown')}"
    return line + (f"; {len(result.failures)} could not be scored or are not finite" if result.failures else "")
