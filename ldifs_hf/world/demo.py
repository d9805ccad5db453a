"""The embedded default: concept forgetting on a laptop CPU, with no downloads (`ldifs-hf demo`).

1. Pre-trains a tiny CLIP on the concept world (digit, colour, background texture and position of a
   handwritten digit; cached, so only the first run pays for it).
2. Fine-tunes it on one concept task with each of the paper's eight methods (`training.finetune`), once
   per seed, saving a checkpoint every 20 % of training.
3. Scores every checkpoint on every concept task (`evaluation.run_evaluation`): zero-shot and
   linear-probe accuracy, Δ against the pretrained model, A_FT, distances. Each seed's report goes to
   `seed-N/`.
4. Writes the mean ± std over seeds (results.md, summary.json), the Δ_ZS/Δ_LP-over-training and
   distance plots (means over seeds), the trade-off figure and timings.json; returns a `DemoResult`.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from dataclasses import dataclass, field

from ..benchmarks import get_benchmark
from ..console import LOG_FILE, finished, phase_bar, run_output
from ..evaluation.report import final_records, plot_deltas, plot_distances, plot_tradeoff, pretrained_start_record
from ..training.methods import get_method, list_methods
from ..utils import parse_seeds, torch_threads
from . import WorldSettings, prepare_world, world_task_names

logger = logging.getLogger(__name__)


@dataclass
class DemoArguments:
    output_dir: str = field(default="runs/demo", metadata={"help": "Where the runs, tables and plots go."})
    finetune_task: str = field(default="world-digit", metadata={"help": "The concept task every method fine-tunes on: " + ", ".join(world_task_names()) + "."})
    methods: str = field(default="all", metadata={"help": "'all' (the paper's eight) or a comma-separated list of: " + ", ".join(list_methods()) + "."})
    seeds: str = field(default="0,1,2", metadata={"help": "Comma-separated seeds of the fine-tuning runs and their evaluation; the tables give mean ± std over them."})
    world_seed: int = field(default=0, metadata={"help": "Seed of the world and its pre-training (one foundation model for every seed)."})
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
        default=20.0, metadata={"help": "Save and score a checkpoint every this many percent of training (0: only the end)."}
    )
    quick: bool = field(default=False, metadata={"help": "A scaled-down world and run, for tests (not for numbers)."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Redo the runs already in output_dir (default: finished runs are reused)."})
    verbose: bool = field(
        default=False,
        metadata={"help": f"Show every run's output (the Trainer's log, progress bars) instead of writing it to {LOG_FILE} in the run's folder."},
    )

    def __post_init__(self):
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1 (CPU threads for torch), got {self.threads}")
        if not 0 <= self.checkpoint_every_percent <= 100:
            raise ValueError(f"checkpoint_every_percent must be in [0, 100], got {self.checkpoint_every_percent}")
        if self.finetune_task not in world_task_names():
            raise ValueError(f"finetune_task {self.finetune_task!r} is not a world task; choose one of {', '.join(world_task_names())}")
        self.seed_list()

    def seed_list(self) -> list[int]:
        return parse_seeds(self.seeds)

    def method_names(self) -> list[str]:
        if self.methods.strip() == "all":
            return list_methods()
        return [get_method(m.strip()).name for m in self.methods.split(",")]

    def world_settings(self) -> WorldSettings:
        if not self.quick:
            return WorldSettings(seed=self.world_seed)
        return WorldSettings(seed=self.world_seed, pretrain_images=256, pretrain_steps=10, batch_size=32, task_train_size=64, task_test_size=32)


@dataclass
class DemoResult:
    """The demo's measurements: the pretrained model's accuracies (per seed's evaluation), every scored
    record (each with its "seed"), the mean ± std summary, timings, and the printed tables."""

    pretrained_accuracy: dict[int, dict[str, dict[str, float]]]
    records: list[dict]
    summary: dict
    timings: dict[str, float]
    pretrained_table: str
    table: str


def run_demo(args: DemoArguments) -> DemoResult:
    with torch_threads(args.threads):
        return _run(args)


def _run(args: DemoArguments) -> DemoResult:
    # The training and evaluation code is imported here: `ldifs-hf demo --help` does not need it.
    from ..evaluation.run import EvaluationArguments, run_evaluation
    from ..evaluation.report import write_report
    from ..training.run import finetune

    # 1. Arguments, checked before the world is built.
    methods, seeds = args.method_names(), args.seed_list()
    timings = {}

    # 2. The foundation model: pre-trained on the world, or loaded from the cache.
    print("1/3 the foundation model: a tiny CLIP pre-trained on the concept world (cached after the first run)")
    start = time.perf_counter()
    world = prepare_world(args.world_settings(), args.cache_dir)
    timings["pretrain_or_load_s"] = time.perf_counter() - start
    logger.info("world model %s, tasks %s", world.model_dir, ", ".join(world.benchmarks))

    # 3. Fine-tune with every method and seed (a finished run in output_dir is reused).
    start = time.perf_counter()
    save_every = round(args.max_steps * args.checkpoint_every_percent / 100)
    save_args = dict(save_strategy="steps", save_steps=save_every, save_only_model=True) if save_every > 0 else dict(save_strategy="no")
    run_dirs = {seed: {m: os.path.join(args.output_dir, f"seed-{seed}", "runs", m) for m in methods} for seed in seeds}
    print(f"2/3 fine-tuning on {args.finetune_task}: {len(methods)} methods x {len(seeds)} seeds"
          + ("" if args.verbose else f" (each run's log: {LOG_FILE} in its folder)"))
    with phase_bar(len(seeds) * len(methods), "fine-tuning", verbose=args.verbose) as bar:
        for seed in seeds:
            for method, run_dir in run_dirs[seed].items():
                run_start = time.perf_counter()
                with run_output(run_dir, verbose=args.verbose):
                    record = finetune(
                        method=method, dataset=args.finetune_task, model_name_or_path=str(world.model_dir), output_dir=run_dir,
                        max_steps=args.max_steps, learning_rate=args.learning_rate, per_device_train_batch_size=args.batch_size,
                        warmup_steps=0, seed=seed, ldifs_lambda=args.ldifs_lambda, l2sp_lambda=args.l2sp_lambda,
                        lp_iterations=args.lp_iterations, report_to="none", logging_steps=max(1, args.max_steps // 5),
                        disable_tqdm=True, overwrite_output_dir=args.overwrite_output_dir, **save_args,
                    )
                accuracy = ", ".join(f"{k} {100 * v:.1f}%" for k, v in record.results.items())
                finished(bar, f"{method}, seed {seed}: {accuracy or 'done'} ({time.perf_counter() - run_start:.0f} s) -> {run_dir}")
    timings["finetune_s"] = time.perf_counter() - start

    # 4. Concept forgetting of every checkpoint on every task, one report per seed.
    start = time.perf_counter()
    records, pretrained = [], {}
    print(f"3/3 scoring every checkpoint on the {len(world.benchmarks)} concept tasks (zero-shot and linear probe), one report per seed")
    with phase_bar(len(seeds), "evaluating", verbose=args.verbose) as bar:
        for seed in seeds:
            seed_dir, seed_start = os.path.join(args.output_dir, f"seed-{seed}"), time.perf_counter()
            with run_output(seed_dir, verbose=args.verbose):
                evaluation = run_evaluation(
                    EvaluationArguments(
                        checkpoint=[f"{m}={d}" for m, d in run_dirs[seed].items()], datasets=",".join(world.benchmarks),
                        pretrained=str(world.model_dir), output_dir=seed_dir, num_workers=0,
                        lp_iterations=args.lp_iterations, seed=seed, max_train_samples=args.lp_train_samples,
                        overwrite_report=True,  # the demo's own output folder: a rerun refreshes its report
                    )
                )
                # Every run starts from the pretrained image encoder, so its 0 % point is the pretrained model.
                starts = [pretrained_start_record(m, args.finetune_task, str(world.model_dir), evaluation.pretrained_accuracy) for m in methods]
                seed_records = starts + evaluation.records
                write_report(seed_records, seed_dir, pretrained=str(world.model_dir),
                             pretrained_accuracies=evaluation.pretrained_accuracy, benchmarks=list(world.benchmarks))
            pretrained[seed] = evaluation.pretrained_accuracy
            records += [{**r, "seed": seed} for r in seed_records]
            finished(bar, f"seed {seed}: {len(evaluation.records)} checkpoints scored ({time.perf_counter() - seed_start:.0f} s) -> {seed_dir}")
    timings["evaluate_s"] = time.perf_counter() - start

    # 5. Mean ± std over seeds: table, summary, plots.
    summary = summarise(records, args.finetune_task)
    pretrained_table = _pretrained_table(pretrained, world.benchmarks)
    table = summary_table(summary, seeds)
    _write_outputs(args, summary, records, pretrained_table, table, timings, seeds)
    print(f"\nPretrained world CLIP (world seed {args.world_seed}), accuracy in %, mean ± std over evaluation seeds {seeds}:\n\n{pretrained_table}\n")
    print(f"Fine-tuned on {args.finetune_task}, {args.max_steps} steps, lr {args.learning_rate}, seeds {seeds} (Δ in points, mean ± std):\n\n{table}")
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return DemoResult(pretrained_accuracy=pretrained, records=records, summary=summary, timings=timings, pretrained_table=pretrained_table, table=table)


def summarise(records: list[dict], finetune_task: str) -> dict:
    """method -> {"a_ft": [per seed], eval task -> {"delta_zs": [...], "delta_lp": [...]},
    "mean_other": {"delta_zs": [...], "delta_lp": [...]}} from each run's final record, seeds in order."""
    by_seed = {}
    for record in records:
        by_seed.setdefault(record["seed"], []).append(record)
    summary: dict = {}
    for seed in sorted(by_seed):
        for (_, method), record in sorted(final_records(by_seed[seed]).items(), key=lambda item: str(item[0][1])):
            entry = summary.setdefault(method, {"a_ft": [], "eval": {}, "mean_other": {"delta_zs": [], "delta_lp": []}})
            entry["a_ft"].append(record["a_ft"])
            others = [name for name in record["eval"] if name != finetune_task]
            for name, values in record["eval"].items():
                task = entry["eval"].setdefault(name, {"delta_zs": [], "delta_lp": []})
                for kind in ("delta_zs", "delta_lp"):
                    task[kind].append(values[kind])
            for kind in ("delta_zs", "delta_lp"):
                entry["mean_other"][kind].append(statistics.fmean(record["eval"][n][kind] for n in others))
    return summary


def _mean_std(values, signed: bool = True) -> str:
    values = [100 * v for v in values]
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0  # sample std over seeds
    return f"{mean:+.1f} ± {std:.1f}" if signed else f"{mean:.1f} ± {std:.1f}"


def summary_table(summary: dict, seeds: list[int]) -> str:
    """Rows: A_FT, each eval task, mean over the other tasks; columns: methods; cells "Δ_ZS / Δ_LP"."""
    methods = sorted(summary)
    lines = ["| eval task | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    lines.append("| A_FT (%) | " + " | ".join(_mean_std(summary[m]["a_ft"], signed=False) for m in methods) + " |")
    for name in sorted(next(iter(summary.values()))["eval"]):
        lines.append(f"| {name} | " + " | ".join(
            f"{_mean_std(summary[m]['eval'][name]['delta_zs'])} / {_mean_std(summary[m]['eval'][name]['delta_lp'])}" for m in methods) + " |")
    lines.append("| mean (other tasks) | " + " | ".join(
        f"{_mean_std(summary[m]['mean_other']['delta_zs'])} / {_mean_std(summary[m]['mean_other']['delta_lp'])}" for m in methods) + " |")
    return (
        f"Δ_ZS / Δ_LP in percentage points against the pretrained model (negative = forgetting), mean ± std over seeds "
        f"{', '.join(map(str, seeds))}; A_FT in %.\n\n" + "\n".join(lines) + "\n"
    )


def _pretrained_table(pretrained: dict, benchmarks) -> str:
    lines = ["| task | classes | chance | pretrained ZS | pretrained LP |", "|---|---|---|---|---|"]
    for name in benchmarks:
        n = get_benchmark(name).num_classes
        zs = [pretrained[seed][name]["zs"] for seed in pretrained]
        lp = [pretrained[seed][name]["lp"] for seed in pretrained]
        lines.append(f"| {name} | {n} | {100 / n:.1f} | {_mean_std(zs, signed=False)} | {_mean_std(lp, signed=False)} |")
    return "\n".join(lines)


def _mean_curves(records: list[dict]) -> list[dict]:
    """Records averaged over seeds, per (method, % of training): the curves the plots draw."""
    groups: dict = {}
    for record in records:
        groups.setdefault((record["method"], record["finetune_task"], record["percent"]), []).append(record)
    curves = []
    for (method, task, percent), group in groups.items():
        names = group[0]["eval"]
        curves.append({
            "method": method, "finetune_task": task, "percent": percent,
            "eval": {n: {k: statistics.fmean(r["eval"][n][k] for r in group) for k in ("delta_zs", "delta_lp")} for n in names},
            "param_distance": statistics.fmean(r["param_distance"] for r in group),
            "feature_distance": statistics.fmean(r["feature_distance"] for r in group),
        })
    return curves


def _write_outputs(args, summary, records, pretrained_table, table, timings, seeds) -> None:
    out = args.output_dir
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(f"Pretrained model, accuracy in %:\n\n{pretrained_table}\n\n{table}")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"finetune_task": args.finetune_task, "seeds": seeds, "methods": summary}, f, indent=2)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"seeds": seeds, "records": records}, f, indent=2, default=str)
    with open(os.path.join(out, "timings.json"), "w") as f:
        json.dump(timings, f, indent=2)
    curves = _mean_curves(records)
    plot_deltas(curves, os.path.join(out, "deltas_over_training.png"))
    plot_distances(curves, os.path.join(out, "distances_over_training.png"))
    points = {m: {"a_ft": s["a_ft"], **s["mean_other"]} for m, s in summary.items()}
    plot_tradeoff(points, os.path.join(out, "tradeoff.png"), title=f"fine-tuned on {args.finetune_task}, seeds {', '.join(map(str, seeds))}")
