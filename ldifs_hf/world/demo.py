"""The embedded default: concept forgetting on a laptop CPU, with no downloads (`ldifs-hf demo`).

1. Pre-trains a tiny CLIP on the concept world (digit, colour, background texture and position of a
   handwritten digit; cached, so only the first run pays for it).
2. Fine-tunes it on one concept task with each of the paper's eight methods (`training.finetune`), once
   per seed, saving a checkpoint every 20 % of training; and, for the λ sweep, each LDIFS and L2SP
   method again at the other weights of `ldifs_lambdas` / `l2sp_lambdas` (final model only).
3. Scores every checkpoint on every concept task (`evaluation.run_evaluation`): zero-shot and
   linear-probe accuracy, Δ against the pretrained model, A_FT, distances. Each seed's report goes to
   `seed-N/`; the λ-sweep runs' to `seed-N/lambda-sweep/`, and the WiSE-FT sweep (each run's final
   model interpolated with its starting point at the weights `wise_alphas`) to `seed-N/wise-sweep/`.
4. Writes the mean ± std over seeds (results.md, summary.json), the Δ_ZS/Δ_LP-over-training and
   distance plots (means over seeds), the trade-off figure, the frontier (frontier.png/.csv: A_FT
   against forgetting per method, λ and α, `evaluation.frontier`), the claims, each paired over seeds
   and said to exceed the seed-to-seed spread or to be inside the noise, and timings.json; returns a
   `DemoResult`.
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
from ..evaluation.frontier import FrontierPoint, PairedClaim, frontier_points, paired_claim, write_frontier
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
    ldifs_lambda: float = field(default=10.0, metadata={"help": "LDIFS weight of the main runs (paper default)."})
    l2sp_lambda: float = field(default=0.5, metadata={"help": "L2SP weight of the main runs (official default)."})
    ldifs_lambdas: str = field(
        default="1,10,100",
        metadata={"help": "The λ sweep of the LDIFS methods: each weight other than ldifs_lambda is one more run per seed, "
                  "scored at its end ('' for none)."},
    )
    l2sp_lambdas: str = field(default="0.05,0.5,5", metadata={"help": "The same for the L2SP methods ('' for none)."})
    lambda_sweep_methods: str = field(
        default="lp-init-ldifs,lp-init-l2sp",
        metadata={"help": "The methods whose λ is swept, those of them the demo runs ('all': every LDIFS and L2SP method); "
                  "the default keeps the demo within its time budget."},
    )
    wise_alphas: str = field(
        default="0,0.5,1",
        metadata={"help": "The WiSE-FT sweep: every run's final model is also scored interpolated with its starting point at "
                  "these weights (1: the run itself, already scored; '' for none)."},
    )
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
        self.sweep_lambdas()
        self.alpha_list()
        self.swept_methods()

    def sweep_lambdas(self) -> dict[str, list[float]]:
        """Regularizer -> the λ sweep's weights (with the main runs' own weight first)."""
        from ..utils import parse_lambdas

        sweeps = {}
        for regularizer, value, main in (("ldifs", self.ldifs_lambdas, self.ldifs_lambda), ("l2sp", self.l2sp_lambdas, self.l2sp_lambda)):
            sweeps[regularizer] = [main] + [lam for lam in (parse_lambdas(value, f"{regularizer}_lambdas") if value.strip() else []) if lam != main]
        return sweeps

    def swept_methods(self) -> list[str]:
        """The methods the λ sweep covers: `lambda_sweep_methods` among those the demo runs."""
        regularised = [m for m in self.method_names() if get_method(m).regularizer in ("ldifs", "l2sp")]
        if self.lambda_sweep_methods.strip() == "all":
            return regularised
        named = [get_method(m.strip()).name for m in self.lambda_sweep_methods.split(",") if m.strip()]
        plain = [m for m in named if get_method(m).regularizer not in ("ldifs", "l2sp")]
        if plain:
            raise ValueError(f"lambda_sweep_methods {plain} have no LDIFS or L2SP weight to sweep; name LDIFS or L2SP methods, or 'all'")
        return [m for m in regularised if m in named]

    def alpha_list(self) -> list[float]:
        """The WiSE-FT weights, 1 (the run itself) always among them."""
        if not self.wise_alphas.strip():
            return [1.0]
        from ..interpolation import parse_alphas

        return sorted(set(parse_alphas(self.wise_alphas, "wise_alphas")) | {1.0})

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
    record of the main runs (each with its "seed" and "lambda"), the mean ± std summary, timings, the
    printed tables, the sweeps' records, the frontier's points and the claims."""

    pretrained_accuracy: dict[int, dict[str, dict[str, float]]]
    records: list[dict]
    summary: dict
    timings: dict[str, float]
    pretrained_table: str
    table: str
    sweep_records: list[dict] = field(default_factory=list)  # the λ and WiSE-FT sweeps' records (final models)
    frontier: list[FrontierPoint] = field(default_factory=list)
    claims: list[PairedClaim] = field(default_factory=list)
    claims_text: str = ""


def run_demo(args: DemoArguments) -> DemoResult:
    with torch_threads(args.threads):
        return _run(args)


def _run(args: DemoArguments) -> DemoResult:
    # The training and evaluation code is imported here: `ldifs-hf demo --help` does not need it.
    from ..evaluation.run import EvaluationArguments, run_evaluation
    from ..evaluation.report import write_report
    from ..utils import lambda_folder
    from ..training.run import finetune

    # 1. Arguments, checked before the world is built.
    methods, seeds, alphas = args.method_names(), args.seed_list(), args.alpha_list()
    sweeps = args.sweep_lambdas()
    main_lambda = {m: _lambda_of(m, sweeps) for m in methods}  # the main runs' λ (None: no regularizer)
    # The λ sweep: (method, λ) runs beyond the main ones, each fine-tuned to its end and scored there.
    lambda_runs = [(m, lam) for m in args.swept_methods() for lam in sweeps[get_method(m).regularizer][1:]]
    timings = {}

    # 2. The foundation model: pre-trained on the world, or loaded from the cache.
    print("1/3 the foundation model: a tiny CLIP pre-trained on the concept world (cached after the first run)")
    start = time.perf_counter()
    world = prepare_world(args.world_settings(), args.cache_dir)
    timings["pretrain_or_load_s"] = time.perf_counter() - start
    logger.info("world model %s, tasks %s", world.model_dir, ", ".join(world.benchmarks))

    # 3. Fine-tune with every method and seed, then the λ sweep's runs (a finished run in output_dir is reused).
    start = time.perf_counter()
    save_every = round(args.max_steps * args.checkpoint_every_percent / 100)
    save_args = dict(save_strategy="steps", save_steps=save_every, save_only_model=True) if save_every > 0 else dict(save_strategy="no")
    run_dirs = {seed: {m: os.path.join(args.output_dir, f"seed-{seed}", "runs", m) for m in methods} for seed in seeds}
    sweep_dirs = {seed: {(m, lam): os.path.join(args.output_dir, f"seed-{seed}", "lambda-sweep", m, lambda_folder(lam)) for m, lam in lambda_runs}
                  for seed in seeds}
    jobs = [(seed, m, m, main_lambda[m], d, save_args) for seed in seeds for m, d in run_dirs[seed].items()]
    jobs += [(seed, m, f"{m} λ={lam:g}", lam, d, dict(save_strategy="no")) for seed in seeds for (m, lam), d in sweep_dirs[seed].items()]
    print(f"2/3 fine-tuning on {args.finetune_task}: {len(methods)} methods x {len(seeds)} seeds"
          + (f", and {len(lambda_runs)} more λ per seed for the λ sweep" if lambda_runs else "")
          + ("" if args.verbose else f" (each run's log: {LOG_FILE} in its folder)"))
    with phase_bar(len(jobs), "fine-tuning", verbose=args.verbose) as bar:
        for seed, method, name, lam, run_dir, saving in jobs:
            run_start = time.perf_counter()
            weights = {f"{get_method(method).regularizer}_lambda": lam} if lam is not None else {}
            with run_output(run_dir, verbose=args.verbose):
                record = finetune(
                    method=method, dataset=args.finetune_task, model_name_or_path=str(world.model_dir), output_dir=run_dir,
                    max_steps=args.max_steps, learning_rate=args.learning_rate, per_device_train_batch_size=args.batch_size,
                    warmup_steps=0, seed=seed, **{"ldifs_lambda": args.ldifs_lambda, "l2sp_lambda": args.l2sp_lambda, **weights},
                    lp_iterations=args.lp_iterations, report_to="none", logging_steps=max(1, args.max_steps // 5),
                    disable_tqdm=True, overwrite_output_dir=args.overwrite_output_dir, **saving,
                )
            accuracy = ", ".join(f"{k} {100 * v:.1f}%" for k, v in record.results.items())
            finished(bar, f"{name}, seed {seed}: {accuracy or 'done'} ({time.perf_counter() - run_start:.0f} s) -> {run_dir}")
    timings["finetune_s"] = time.perf_counter() - start

    # 4. Concept forgetting of every checkpoint on every task, one report per seed; the sweeps at the end of training.
    start = time.perf_counter()
    records, sweep_records, pretrained = [], [], {}
    sweep_alphas = [a for a in alphas if a != 1.0]  # α = 1 is the run itself, scored with its checkpoints
    print(f"3/3 scoring every checkpoint on the {len(world.benchmarks)} concept tasks (zero-shot and linear probe), one report per seed"
          + (f"; the final models also at WiSE-FT α = {', '.join(f'{a:g}' for a in sweep_alphas)}" if sweep_alphas else ""))
    with phase_bar(len(seeds), "evaluating", verbose=args.verbose) as bar:
        for seed in seeds:
            seed_dir, seed_start = os.path.join(args.output_dir, f"seed-{seed}"), time.perf_counter()
            with run_output(seed_dir, verbose=args.verbose):
                common = dict(
                    datasets=",".join(world.benchmarks), pretrained=str(world.model_dir), num_workers=0, lp_iterations=args.lp_iterations,
                    seed=seed, max_train_samples=args.lp_train_samples,
                    # The pretrained model's features and accuracies are computed once and read back by the sweeps.
                    feature_cache_dir=os.path.join(args.output_dir, "feature_cache"),
                    overwrite_report=True,  # the demo's own output folder: a rerun refreshes its report
                )
                evaluation = run_evaluation(EvaluationArguments(checkpoint=[f"{m}={d}" for m, d in run_dirs[seed].items()], output_dir=seed_dir, **common))
                # Every run starts from the pretrained image encoder, so its 0 % point is the pretrained model.
                starts = [pretrained_start_record(m, args.finetune_task, str(world.model_dir), evaluation.pretrained_accuracy) for m in methods]
                seed_records = [{**r, "lambda": main_lambda[r["method"]]} for r in starts + evaluation.records]
                write_report(seed_records, seed_dir, pretrained=str(world.model_dir),
                             pretrained_accuracies=evaluation.pretrained_accuracy, benchmarks=list(world.benchmarks))
                # The sweeps are scored at the end of training only, without distances: the frontier needs neither.
                seed_sweeps = []
                if lambda_runs:  # one report for the seed's λ-sweep runs, each its own column ("method@lambda-λ")
                    labels = {f"{m}@lambda-{lam:g}": (m, lam) for m, lam in lambda_runs}
                    scored = run_evaluation(EvaluationArguments(
                        checkpoint=[f"{label}={sweep_dirs[seed][run]}" for label, run in labels.items()],
                        output_dir=os.path.join(seed_dir, "lambda-sweep"), include_intermediate=False, distances=False, **common))
                    seed_sweeps += [{**r, "method": labels[r["method"]][0], "lambda": labels[r["method"]][1]} for r in scored.records]
                if sweep_alphas:
                    scored = run_evaluation(EvaluationArguments(
                        checkpoint=[f"{m}={d}" for m, d in run_dirs[seed].items()], output_dir=os.path.join(seed_dir, "wise-sweep"),
                        include_intermediate=False, distances=False, wise_alphas=",".join(map(repr, sweep_alphas)), **common))
                    seed_sweeps += [{**r, "lambda": main_lambda[r["method"]]} for r in scored.records]
            pretrained[seed] = evaluation.pretrained_accuracy
            records += [{**r, "seed": seed} for r in seed_records]
            sweep_records += [{**r, "seed": seed} for r in seed_sweeps]
            finished(bar, f"seed {seed}: {len(evaluation.records) + len(seed_sweeps)} checkpoints scored ({time.perf_counter() - seed_start:.0f} s) -> {seed_dir}")
    timings["evaluate_s"] = time.perf_counter() - start

    # 5. Mean ± std over seeds: table, summary, plots, the frontier and the claims.
    summary = summarise(records, args.finetune_task)
    pretrained_table = _pretrained_table(pretrained, world.benchmarks)
    table = summary_table(summary, seeds)
    points = frontier_points(records + sweep_records)
    claims = demo_claims(points, main_lambda, alphas)
    claims_text = claims_section(claims, seeds)
    _write_outputs(args, summary, records, sweep_records, points, pretrained_table, table, claims_text, timings, seeds)
    print(f"\nPretrained world CLIP (world seed {args.world_seed}), accuracy in %, mean ± std over evaluation seeds {seeds}:\n\n{pretrained_table}\n")
    print(f"Fine-tuned on {args.finetune_task}, {args.max_steps} steps, lr {args.learning_rate}, seeds {seeds} (Δ in points, mean ± std):\n\n{table}")
    print(f"{frontier_table(points)}\n\n{claims_text}")
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return DemoResult(pretrained_accuracy=pretrained, records=records, summary=summary, timings=timings, pretrained_table=pretrained_table,
                      table=table, sweep_records=sweep_records, frontier=points, claims=claims, claims_text=claims_text)


def _lambda_of(method: str, sweeps: dict[str, list[float]]) -> float | None:
    """The main runs' λ of `method` (the first of its regularizer's sweep), None without one."""
    weights = sweeps.get(get_method(method).regularizer)
    return weights[0] if weights else None


# The claims the demo checks, each (better, worse, metric) with a point named (method, α); λ is the main runs'.
CLAIMS = (
    (("lp-init-ldifs", 1.0), ("lp-init-ce", 1.0), "delta_lp"),
    (("lp-init-ldifs", 1.0), ("lp-init-ce", 1.0), "delta_zs"),
    (("zs-init-ldifs", 1.0), ("zs-init-ce", 1.0), "delta_lp"),
    (("zs-init-ldifs", 1.0), ("zs-init-ce", 1.0), "delta_zs"),
    (("lp-init-ldifs", 1.0), ("lp-init-l2sp", 1.0), "delta_lp"),
    (("lp-init-ldifs", 1.0), ("lp-init-l2sp", 1.0), "a_ft"),
    (("zs-init-ldifs", 1.0), ("zs-init-l2sp", 1.0), "delta_lp"),
    (("zs-init-ldifs", 1.0), ("zs-init-l2sp", 1.0), "a_ft"),
)
# At the middle WiSE-FT weight: each regularised method against its CE counterpart, and LDIFS against
# interpolating CE (does the regularizer buy more than interpolation?).
MIDDLE_ALPHA_CLAIMS = (
    (("lp-init-ldifs", "mid"), ("lp-init-ce", "mid"), "delta_lp"),
    (("lp-init-l2sp", "mid"), ("lp-init-ce", "mid"), "delta_lp"),
    (("zs-init-ldifs", "mid"), ("zs-init-ce", "mid"), "delta_lp"),
    (("zs-init-l2sp", "mid"), ("zs-init-ce", "mid"), "delta_lp"),
    (("lp-init-ldifs", 1.0), ("lp-init-ce", "mid"), "delta_lp"),
    (("lp-init-ldifs", 1.0), ("lp-init-ce", "mid"), "a_ft"),
)


def demo_claims(points: list[FrontierPoint], main_lambda: dict[str, float | None], alphas: list[float]) -> list[PairedClaim]:
    """`CLAIMS`, and with a WiSE-FT sweep `MIDDLE_ALPHA_CLAIMS` at the middle interior α, each paired over
    seeds (`evaluation.frontier.paired_claim`); a claim about a method the demo did not run is left out."""
    interior = [a for a in alphas if 0.0 < a < 1.0]
    middle = interior[len(interior) // 2] if interior else None
    claims = []
    for better, worse, metric in CLAIMS + (MIDDLE_ALPHA_CLAIMS if middle is not None else ()):
        keys = [(m, main_lambda.get(m), middle if a == "mid" else a) for m, a in (better, worse)]
        if all(m in main_lambda for m, _, _ in keys):
            claims.append(paired_claim(points, keys[0], keys[1], metric))
    return claims


def claims_section(claims: list[PairedClaim], seeds: list[int]) -> str:
    """The claims as Markdown: a heading, the rule, one bullet per claim ("" without claims)."""
    if not claims:
        return ""
    lines = [
        "Claims, paired over seeds " + ", ".join(map(str, seeds)) + ": the per-seed difference (first minus second, in points), its mean ± "
        "sample std over seeds; a claim exceeds the noise when |mean| > std, else it is inside the noise.",
        "",
    ]
    lines += [f"- {claim.sentence()}." for claim in claims]
    held = sum(c.holds and c.exceeds_noise for c in claims)
    lines += ["", f"Of {len(claims)} claims: {held} hold beyond the seed-to-seed spread, "
              f"{sum(c.holds and not c.exceeds_noise for c in claims)} inside the noise; {sum(not c.holds for c in claims)} do not hold."]
    return "\n".join(lines)


def frontier_table(points: list[FrontierPoint]) -> str:
    """The frontier as Markdown: per (method, λ, α), A_FT and mean Δ_ZS / Δ_LP on the other tasks, mean ± std
    over seeds, "*" on the Pareto set of that axis."""
    lines = ["The frontier (final models; A_FT in %, mean Δ on the other tasks in points, mean ± std over seeds; * = Pareto set):", "",
             "| method | λ | α | A_FT | Δ_ZS | Δ_LP |", "|---|---|---|---|---|---|"]
    for p in points:
        cells = [_mean_std(p.values("a_ft"), signed=False)] + [
            _mean_std(p.values(axis)) + (" *" if p.pareto.get(axis) else "") for axis in ("delta_zs", "delta_lp")]
        lines.append(f"| {p.method} | {'–' if p.lam is None else f'{p.lam:g}'} | {p.alpha:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def _write_outputs(args, summary, records, sweep_records, points, pretrained_table, table, claims_text, timings, seeds) -> None:
    out = args.output_dir
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(f"Pretrained model, accuracy in %:\n\n{pretrained_table}\n\n{table}")
        f.write(f"\n{frontier_table(points)}\n" + (f"\n{claims_text}\n" if claims_text else ""))
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"finetune_task": args.finetune_task, "seeds": seeds, "methods": summary}, f, indent=2)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"seeds": seeds, "records": records, "sweep_records": sweep_records}, f, indent=2, default=str)
    with open(os.path.join(out, "timings.json"), "w") as f:
        json.dump(timings, f, indent=2)
    curves = _mean_curves(records)
    plot_deltas(curves, os.path.join(out, "deltas_over_training.png"))
    plot_distances(curves, os.path.join(out, "distances_over_training.png"))
    title = f"fine-tuned on {args.finetune_task}, seeds {', '.join(map(str, seeds))}"
    tradeoff = {m: {"a_ft": s["a_ft"], **s["mean_other"]} for m, s in summary.items()}
    plot_tradeoff(tradeoff, os.path.join(out, "tradeoff.png"), title=title)
    write_frontier(records + sweep_records, out, title=title)
