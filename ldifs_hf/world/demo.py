"""The embedded default: concept forgetting on a laptop CPU, with no downloads (`ldifs-hf demo`).

1. Pre-trains a tiny CLIP on the concept world (digit, colour, background texture and position of a
   handwritten digit; cached, so only the first run pays for it).
2. Fine-tunes it on one concept task with each of the paper's eight methods (`training.finetune`).
3. Scores every fine-tuned model on every concept task (`evaluation.run_evaluation`): zero-shot and
   linear-probe accuracy, Δ against the pretrained model, A_FT, distances.
4. Writes results.json/.csv/.md, PNG plots and timings.json, and returns a `DemoResult`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field

from ..benchmarks import get_benchmark
from ..evaluation import EvaluationArguments, run_evaluation, write_report
from ..training import finetune, get_method, list_methods
from ..utils import torch_threads
from . import WorldSettings, prepare_world, world_task_names

logger = logging.getLogger(__name__)


@dataclass
class DemoArguments:
    output_dir: str = field(default="runs/demo", metadata={"help": "Where the runs, tables and plots go."})
    finetune_task: str = field(default="world-digit", metadata={"help": "The concept task every method fine-tunes on: " + ", ".join(world_task_names()) + "."})
    methods: str = field(default="all", metadata={"help": "'all' (the paper's eight) or a comma-separated list of: " + ", ".join(list_methods()) + "."})
    seed: int = field(default=0, metadata={"help": "Seed of the world, the pre-training and the fine-tuning."})
    cache_dir: str | None = field(default=None, metadata={"help": "Cache of the pre-trained world (default $LDIFS_HF_CACHE or ~/.cache/ldifs_hf)."})
    max_steps: int = field(default=100, metadata={"help": "Fine-tuning steps per method (about 2 epochs of world-digit)."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Fine-tuning learning rate (the tiny model's analogue of the paper's 1e-5)."})
    threads: int = field(default=1, metadata={"help": "CPU threads for torch; one is fastest for this tiny model on a shared machine."})
    batch_size: int = field(default=32, metadata={"help": "Fine-tuning batch size."})
    ldifs_lambda: float = field(default=10.0, metadata={"help": "LDIFS weight (paper default)."})
    l2sp_lambda: float = field(default=0.5, metadata={"help": "L2SP weight (official default)."})
    lp_iterations: int = field(default=1000, metadata={"help": "Linear-probe iterations (official protocol: 1000)."})
    lp_train_samples: int = field(default=500, metadata={"help": "Training images per task for the evaluation's linear probes."})
    checkpoint_every_percent: float = field(
        default=0.0, metadata={"help": "Also save and score checkpoints every this many % of training (0: only the end)."}
    )
    quick: bool = field(default=False, metadata={"help": "A scaled-down world and run, for tests (not for numbers)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Redo the runs already in output_dir (default: finished runs are reused)."})

    def __post_init__(self):
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if not 0 <= self.checkpoint_every_percent <= 100:
            raise ValueError(f"checkpoint_every_percent must be in [0, 100], got {self.checkpoint_every_percent}")
        if self.finetune_task not in world_task_names():
            raise ValueError(f"finetune_task {self.finetune_task!r} is not a world task; choose one of {', '.join(world_task_names())}")

    def method_names(self) -> list[str]:
        if self.methods.strip() == "all":
            return list_methods()
        return [get_method(m.strip()).name for m in self.methods.split(",")]

    def world_settings(self) -> WorldSettings:
        if not self.quick:
            return WorldSettings(seed=self.seed)
        return WorldSettings(seed=self.seed, pretrain_images=256, pretrain_steps=10, batch_size=32, task_train_size=64, task_test_size=32)


@dataclass
class DemoResult:
    """The demo's measurements: the pretrained model's accuracies, one record per scored model, timings."""

    pretrained_accuracy: dict[str, dict[str, float]]
    records: list[dict]
    timings: dict[str, float]
    summary: str
    table: str


def run_demo(args: DemoArguments) -> DemoResult:
    with torch_threads(args.threads):
        return _run(args)


def _run(args: DemoArguments) -> DemoResult:
    # 1. Arguments, checked before the world is built.
    methods = args.method_names()
    timings = {}

    # 2. The foundation model: pre-trained on the world, or loaded from the cache.
    start = time.perf_counter()
    world = prepare_world(args.world_settings(), args.cache_dir)
    timings["pretrain_or_load_s"] = time.perf_counter() - start
    logger.info("world model %s, tasks %s", world.model_dir, ", ".join(world.benchmarks))

    # 3. Fine-tune with every method (a finished run in output_dir is reused).
    start = time.perf_counter()
    run_dirs = {}
    save_every = round(args.max_steps * args.checkpoint_every_percent / 100)
    save_args = dict(save_strategy="steps", save_steps=save_every, save_only_model=True) if save_every > 0 else dict(save_strategy="no")
    for method in methods:
        run_dirs[method] = os.path.join(args.output_dir, "runs", method)
        finetune(
            method=method, dataset=args.finetune_task, model_name_or_path=str(world.model_dir), output_dir=run_dirs[method],
            max_steps=args.max_steps, learning_rate=args.learning_rate, per_device_train_batch_size=args.batch_size,
            warmup_steps=0, seed=args.seed, ldifs_lambda=args.ldifs_lambda, l2sp_lambda=args.l2sp_lambda,
            lp_iterations=args.lp_iterations, report_to="none", logging_steps=max(1, args.max_steps // 5),
            disable_tqdm=True, overwrite_output_dir=args.overwrite_output_dir, **save_args,
        )
    timings["finetune_s"] = time.perf_counter() - start

    # 4. Concept forgetting of every run on every task.
    start = time.perf_counter()
    evaluation = run_evaluation(
        EvaluationArguments(
            checkpoint=[f"{m}={d}" for m, d in run_dirs.items()], datasets=",".join(world.benchmarks),
            pretrained=str(world.model_dir), output_dir=args.output_dir, num_workers=0,
            lp_iterations=args.lp_iterations, seed=args.seed, max_train_samples=args.lp_train_samples,
            overwrite_report=True,  # the demo's own output folder: a rerun refreshes its report
        )
    )
    # Every run starts from the pretrained image encoder, so its 0 % point is the pretrained model:
    # Δ = 0 and distances = 0 exactly. Adding it lets the plots show the way from there.
    pretrained = evaluation.pretrained_accuracy
    start_rows = [
        {
            "method": method, "finetune_task": args.finetune_task, "checkpoint": str(world.model_dir), "step": 0, "percent": 0.0,
            "eval": {t: {"zs_acc": a["zs"], "lp_acc": a["lp"], "delta_zs": 0.0, "delta_lp": 0.0, "feature_distance": 0.0} for t, a in pretrained.items()},
            "a_ft": None, "param_distance": 0.0, "feature_distance": 0.0,
        }
        for method in methods
    ]
    write_report(start_rows + evaluation.records, args.output_dir, pretrained=str(world.model_dir),
                 pretrained_accuracies=pretrained, benchmarks=list(world.benchmarks))
    timings["evaluate_s"] = time.perf_counter() - start

    # 5. Show it.
    lines = ["| task | classes | chance | pretrained ZS | pretrained LP |", "|---|---|---|---|---|"]
    for name in world.benchmarks:
        n = get_benchmark(name).num_classes
        lines.append(f"| {name} | {n} | {100 / n:.1f} | {100 * pretrained[name]['zs']:.1f} | {100 * pretrained[name]['lp']:.1f} |")
    summary = "\n".join(lines)
    with open(os.path.join(args.output_dir, "results.md")) as f:
        table = f.read()
    with open(os.path.join(args.output_dir, "timings.json"), "w") as f:
        json.dump(timings, f, indent=2)
    print(f"\nPretrained world CLIP (seed {args.seed}), accuracy in %:\n\n{summary}\n")
    print(f"Fine-tuned on {args.finetune_task}, {args.max_steps} steps, lr {args.learning_rate} (Δ in points):\n\n{table}")
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return DemoResult(pretrained_accuracy=pretrained, records=evaluation.records, timings=timings, summary=summary, table=table)
