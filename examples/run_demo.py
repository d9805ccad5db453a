#!/usr/bin/env python
"""The embedded default: concept forgetting on a laptop CPU, with no downloads.

    python examples/run_demo.py --output_dir runs/demo

1. Pre-trains a tiny CLIP on the toolkit's synthetic "concept world" (digit, colour, background
   texture and position of a handwritten digit; cached, so only the first run pays for it).
2. Fine-tunes it on one concept task with each of the paper's eight methods, through
   `examples/run_finetune.py` (the code path a real user's run takes).
3. Scores every fine-tuned model on every concept task through `examples/run_evaluation.py`: zero-shot
   and linear-probe accuracy, Δ against the pretrained model, A_FT, distances.
4. Prints the Table-3-shaped Markdown table and writes results.json/.csv/.md and PNG plots.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field

from transformers import HfArgumentParser

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run_evaluation  # noqa: E402
import run_finetune  # noqa: E402

from ldifs_hf.config import check_output_dir  # noqa: E402
from ldifs_hf.methods import get_method, list_methods  # noqa: E402
from ldifs_hf.report import write_report  # noqa: E402
from ldifs_hf.utils import torch_threads  # noqa: E402

logger = logging.getLogger(__name__)


@dataclass
class DemoArguments:
    output_dir: str = field(default="runs/demo", metadata={"help": "Where the runs, tables and plots go."})
    finetune_task: str = field(default="world-digit", metadata={"help": "The concept task every method fine-tunes on."})
    methods: str = field(default="all", metadata={"help": "'all' (the paper's eight) or a comma-separated list."})
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
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Replace the runs already in output_dir."})


def world_settings(args: DemoArguments):
    from ldifs_hf.world import WorldSettings

    if not args.quick:
        return WorldSettings(seed=args.seed)
    return WorldSettings(seed=args.seed, pretrain_images=256, pretrain_steps=10, batch_size=32, task_train_size=64, task_test_size=32)


def main(argv=None):
    parser = HfArgumentParser(DemoArguments)
    (args,) = parser.parse_args_into_dataclasses(args=sys.argv[1:] if argv is None else argv)
    with torch_threads(args.threads):
        return run(args)


def run(args: DemoArguments):
    # 1. Arguments, checked before the world is built.
    methods = list_methods() if args.methods.strip() == "all" else [get_method(m.strip()).name for m in args.methods.split(",")]
    from ldifs_hf.world import prepare_world, world_task_names

    if args.finetune_task not in world_task_names():
        raise ValueError(f"--finetune_task {args.finetune_task!r} is not a world task; choose one of {', '.join(world_task_names())}")
    check_output_dir(os.path.join(args.output_dir, "runs", methods[0]), args.overwrite_output_dir)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    timings = {}

    # 2. The foundation model: pre-trained on the world, or loaded from the cache.
    start = time.perf_counter()
    world = prepare_world(world_settings(args), args.cache_dir)
    timings["pretrain_or_load_s"] = time.perf_counter() - start
    logger.info("world model %s, tasks %s", world.model_dir, ", ".join(world.benchmarks))

    # 3. Fine-tune with every method through the headline script.
    start = time.perf_counter()
    run_dirs = {}
    save_every = round(args.max_steps * args.checkpoint_every_percent / 100)
    save_args = ["--save_strategy", "steps", "--save_steps", str(save_every), "--save_only_model"] if save_every > 0 else ["--save_strategy", "no"]
    for method in methods:
        run_dirs[method] = os.path.join(args.output_dir, "runs", method)
        finetune_argv = [
            "--method", method, "--dataset", args.finetune_task, "--model_name_or_path", str(world.model_dir),
            "--output_dir", run_dirs[method], "--max_steps", str(args.max_steps), "--learning_rate", str(args.learning_rate),
            "--per_device_train_batch_size", str(args.batch_size), "--warmup_steps", "0", "--seed", str(args.seed),
            "--ldifs_lambda", str(args.ldifs_lambda), "--l2sp_lambda", str(args.l2sp_lambda),
            "--lp_iterations", str(args.lp_iterations), "--report_to", "none", *save_args,
            "--logging_steps", str(max(1, args.max_steps // 5)), "--disable_tqdm", "true",
        ]
        if args.overwrite_output_dir:
            finetune_argv.append("--overwrite_output_dir")
        run_finetune.main(finetune_argv)
    timings["finetune_s"] = time.perf_counter() - start

    # 4. Concept forgetting of every run on every task.
    start = time.perf_counter()
    evaluation = run_evaluation.main(
        [
            "--checkpoint", *[f"{m}={d}" for m, d in run_dirs.items()], "--datasets", ",".join(world.benchmarks),
            "--pretrained", str(world.model_dir), "--output_dir", args.output_dir, "--num_workers", "0",
            "--lp_iterations", str(args.lp_iterations), "--seed", str(args.seed),
            "--max_train_samples", str(args.lp_train_samples),
        ]
    )
    # Every run starts from the pretrained image encoder, so its 0 % point is the pretrained model:
    # Δ = 0 and distances = 0 exactly. Adding it lets the plots show the way from there.
    pretrained = evaluation["pretrained_accuracy"]
    start_rows = [
        {
            "method": method, "finetune_task": args.finetune_task, "checkpoint": str(world.model_dir), "step": 0, "percent": 0.0,
            "eval": {t: {"zs_acc": a["zs"], "lp_acc": a["lp"], "delta_zs": 0.0, "delta_lp": 0.0, "feature_distance": 0.0} for t, a in pretrained.items()},
            "a_ft": None, "param_distance": 0.0, "feature_distance": 0.0,
        }
        for method in methods
    ]
    write_report(start_rows + evaluation["records"], args.output_dir, pretrained=str(world.model_dir),
                 pretrained_accuracies=pretrained, benchmarks=list(world.benchmarks))
    timings["evaluate_s"] = time.perf_counter() - start

    # 5. Show it.
    lines = ["| task | classes | chance | pretrained ZS | pretrained LP |", "|---|---|---|---|---|"]
    from ldifs_hf.benchmarks import get_benchmark

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
    return {"pretrained_accuracy": pretrained, "records": evaluation["records"], "timings": timings}


if __name__ == "__main__":
    main()
