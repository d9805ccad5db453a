"""The embedded default: concept forgetting on a laptop CPU, with no downloads (`ldifs-hf demo`).

The demo is a preset of the study runner (`study.runner.run_study`) plus its own report:

1. The study pre-trains a tiny CLIP on the concept world (digit, colour, background texture and position
   of a handwritten digit; cached, so only the first run pays for it).
2. Its cells fine-tune that CLIP on one concept task with each of the paper's eight methods and LP-init KL,
   once per seed, saving a checkpoint every 20 % of training, and score every checkpoint on every concept task
   (zero-shot and linear-probe accuracy, Δ against the pretrained model, A_FT, distances), each cell's
   evaluation seeded with its own seed. The main runs use each regularizer's default λ. The frontier is a cross
   (`StudyArguments.frontier="cross"`): the λ sweep (each method of `lambda_sweep_methods` at the other weights
   of its regularizer's entry of `lambdas`, fine-tuned and scored at the end only) and the WiSE-FT sweep (each main run's final
   model interpolated with its starting point at the weights `wise_alphas`). Cells live in `cells/`, as
   in any study; a finished cell is reused by a rerun.
3. The report: each seed's Table 3 layout with its 0 % points in `seed-N/`, and the mean ± std over seeds
   (results.md, summary.json), the Δ_ZS/Δ_LP-over-training and distance plots (means over seeds), the
   trade-off figure, the frontier (frontier.png/.csv: A_FT against forgetting per method, λ and α,
   `evaluation.frontier`), the claims, each paired over seeds and said to exceed the seed-to-seed spread
   or to be inside the noise, and timings.json; `run_demo` returns a `DemoResult`.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
from dataclasses import MISSING, dataclass, field

from ..benchmarks import get_benchmark
from ..console import LOG_FILE
from ..evaluation.frontier import FrontierPoint, PairedClaim, frontier_points, paired_claim, write_frontier
from ..evaluation.report import final_records, plot_deltas, plot_distances, plot_tradeoff, pretrained_start_record
from ..options import check_numbers, field_from
from ..training.arguments import weight_of
from ..training.methods import PAPER_METHODS, get_method, list_methods, method_names
from ..training.terms import get_regularizer
from ..utils import parse_seeds, torch_threads
from ..world.tasks import world_task_names
from .arguments import Cell, StudyArguments, parse_lambda_sweeps, swept_methods
from .runner import StudyRun, run_study

logger = logging.getLogger(__name__)
DEMO_WORLDS = ("concepts", "skills")
CONCEPT_SEEDS = "0,1,2"  # the concept demo's seeds (the skills demo's: study.skills_demo)
# The demo's λ sweeps: each regularizer's default weight (its main runs') among the others.
DEMO_LAMBDAS = ("ldifs=1,10,100", "l2sp=0.05,0.5,5", "kl=0.1,1,10")


def _study_field(name: str, *, default=MISSING, help: str | None = None):
    """A demo option that is the study's option `name`: the study's default unless the demo's preset
    gives its own value (`default`), and the study's help unless the demo's differs."""
    return field_from(StudyArguments, name, default=default, help=help)


@dataclass
class DemoArguments:
    """The demo's options: the study's own (the defaults that differ from the study's are the demo's
    preset), the tiny model's fine-tuning settings, and the demo's CPU threads and scale."""

    output_dir: str = _study_field("output_dir", default="runs/demo", help="Where the runs, tables and plots go.")
    finetune_task: str = _study_field(
        "finetune_tasks", default="world-digit", help="The concept task every method fine-tunes on: " + ", ".join(world_task_names()) + "."
    )
    methods: str = _study_field(
        "methods", default="all,lp-init-kl",
        help="A comma-separated list of methods ('all': the paper's eight): " + ", ".join(list_methods()) + ".",
    )
    seeds: str | None = _study_field(
        "seeds", default=None,
        help=f"Comma-separated seeds of the fine-tuning runs and their evaluation; the tables give mean ± std over them "
        f"(default: {CONCEPT_SEEDS}; with --world skills 0,...,7, and 0,1 with --quick).",
    )
    world_seed: int = _study_field("world_seed", help="Seed of the world and its pre-training (one foundation model for every seed).")
    cache_dir: str | None = _study_field("world_cache_dir")
    max_steps: int = _study_field("max_steps", default=100, help="Fine-tuning steps per method (about 2 epochs of world-digit).")
    learning_rate: float = field(default=1e-3, metadata={"help": "Fine-tuning learning rate (the tiny model's analogue of the paper's 1e-5)."})
    threads: int = field(default=1, metadata={"help": "CPU threads for torch; one is fastest for this tiny model on a shared machine."})
    batch_size: int = field(default=32, metadata={"help": "Fine-tuning batch size."})
    lambdas: list[str] = _study_field(
        "lambdas", default=list(DEMO_LAMBDAS),
        help="The λ sweeps, REGULARIZER=w1,w2,... after one --lambdas: the main runs take each regularizer's default λ "
        "(LDIFS 10, L2SP 0.5, KL 1), and each other weight is one more run per seed of the swept methods, scored at its end.",
    )
    lambda_sweep_methods: str = _study_field(
        "lambda_sweep_methods", default="lp-init-ldifs,lp-init-l2sp,lp-init-kl",
        help="The methods whose λ is swept, those of them the demo runs ('all': every regularized method); "
        "the default keeps the demo within its time budget.",
    )
    wise_alphas: str = _study_field(
        "wise_alphas", default="0,0.5,1",
        help="The WiSE-FT sweep: every main run's final model is also scored interpolated with its starting point at "
        "these weights (1: the run itself, already scored; '' for none).",
    )
    lp_iterations: int = _study_field("lp_iterations", help="Linear-probe iterations (official protocol: 1000).")
    lp_train_samples: int = _study_field("eval_max_train_samples", default=500, help="Training images per task for the evaluation's linear probes.")
    checkpoint_every_percent: float = _study_field(
        "checkpoint_every_percent", help="Save and score a checkpoint every this many percent of training (0: only the end)."
    )
    quick: bool = field(default=False, metadata={"help": "A scaled-down world and run, for tests (not for numbers)."})
    world: str = field(
        default="concepts",
        metadata={"help": f"The demo's world: one of {', '.join(DEMO_WORLDS)} (concepts: a tiny CLIP and the paper's methods; skills: a "
                  "tiny causal LM fine-tuned with SFT under no regularizer, L2SP, LDIFS and KL; see study/skills_demo.py)."},
    )
    overwrite_output_dir: bool = _study_field(
        "overwrite_output_dir", help="Redo the runs already in output_dir (default: finished runs are reused)."
    )
    verbose: bool = _study_field(
        "verbose",
        help=f"Show every run's output (the Trainer's log, progress bars) instead of writing it to {LOG_FILE} in the run's folder.",
    )

    def __post_init__(self):
        check_numbers(self)
        if self.world not in DEMO_WORLDS:
            raise ValueError(f"world must be one of {', '.join(DEMO_WORLDS)}, got {self.world!r}")
        if self.world == "skills":
            return self._check_skills()
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1 (CPU threads for torch), got {self.threads}")
        if self.finetune_task not in world_task_names():
            raise ValueError(f"finetune_task {self.finetune_task!r} is not a world task; choose one of {', '.join(world_task_names())}")
        self.method_names()
        self.study_arguments()  # the study's own checks (λ and α lists, swept methods, ...), before anything runs

    def _check_skills(self) -> None:
        """The skills demo reads output_dir, seeds, cache_dir, threads, quick, overwrite_output_dir and verbose: the
        concept demo's other options, changed, are refused rather than ignored."""
        from dataclasses import MISSING, fields

        used = {"output_dir", "seeds", "cache_dir", "threads", "quick", "overwrite_output_dir", "verbose", "world"}
        default = lambda f: f.default_factory() if f.default is MISSING else f.default  # noqa: E731
        changed = [f.name for f in fields(self) if f.name not in used and getattr(self, f.name) != default(f)]
        if changed:
            raise ValueError(f"{', '.join('--' + c for c in changed)} belong to the concept demo; the skills demo does not read them")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1 (CPU threads for torch), got {self.threads}")
        if self.seeds is not None:
            parse_seeds(self.seeds)

    def sweep_lambdas(self) -> dict[str, list[float]]:
        """The regularizer of each method the demo runs that has a weight -> its weights: the main runs' (the
        regularizer's default) first, then the other weights of its entry of `lambdas`."""
        given = parse_lambda_sweeps([(entry, "--lambdas") for entry in self.lambdas])
        sweeps = {}
        for regularizer in dict.fromkeys(get_method(m).regularizer for m in self.method_names()):
            if get_regularizer(regularizer).weight_field is not None:
                main = weight_of(regularizer, {})
                sweeps[regularizer] = [main] + [lam for lam in given.get(regularizer, []) if lam != main]
        return sweeps

    def alpha_list(self) -> list[float]:
        """The WiSE-FT weights, 1 (the run itself) always among them."""
        if not self.wise_alphas.strip():
            return [1.0]
        from ..interpolation import parse_alphas

        return sorted(set(parse_alphas(self.wise_alphas, "wise_alphas")) | {1.0})

    def seed_list(self) -> list[int]:
        return parse_seeds(self.seeds or CONCEPT_SEEDS)

    def method_names(self) -> list[str]:
        return method_names(self.methods)

    def study_arguments(self) -> StudyArguments:
        """The demo as a study: its grid (methods x the fine-tune task x seeds on the world), the fine-tuning
        settings of the tiny model, the evaluation seeded per cell, and the cross frontier."""
        sweeps = self.sweep_lambdas()
        # A λ list only for a regularizer some method of the demo sweeps (the study refuses a list that sweeps no cell).
        swept = {get_method(m).regularizer for m in swept_methods(self.method_names(), self.lambda_sweep_methods, list(sweeps))}
        sweeps = {regularizer: weights if regularizer in swept else weights[:1] for regularizer, weights in sweeps.items()}
        finetune_options = dict(
            learning_rate=self.learning_rate, per_device_train_batch_size=self.batch_size, warmup_steps=0,
            logging_steps=max(1, self.max_steps // 5), save_only_model=True,
        )
        return StudyArguments(
            output_dir=self.output_dir, methods=",".join(self.method_names()), finetune_tasks=self.finetune_task, eval_tasks="all",
            seeds=self.seeds or CONCEPT_SEEDS, world="quick" if self.quick else "default", world_seed=self.world_seed, world_cache_dir=self.cache_dir,
            max_steps=self.max_steps, checkpoint_every_percent=self.checkpoint_every_percent, lp_iterations=self.lp_iterations,
            finetune_options=json.dumps(finetune_options), eval_max_train_samples=self.lp_train_samples, eval_num_workers=0,
            eval_seed=-1, lambdas=[f"{r}={','.join(map(repr, weights))}" for r, weights in sweeps.items() if len(weights) > 1],
            lambda_sweep_methods=self.lambda_sweep_methods, frontier="cross", wise_alphas=self.wise_alphas.strip() or None,
            overwrite_output_dir=self.overwrite_output_dir, verbose=self.verbose,
        )


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
    methods, seeds, study = args.method_names(), args.seed_list(), args.study_arguments()
    swept = study.swept_methods()
    print(f"The demo: {len(methods)} methods x {len(seeds)} seeds fine-tuned on {args.finetune_task} and scored on every concept task"
          + (f", the λ sweep of {', '.join(swept)}" if swept else "")
          + (f", WiSE-FT at α = {', '.join(f'{a:g}' for a in args.alpha_list() if a != 1.0)}" if len(args.alpha_list()) > 1 else ""))
    with torch_threads(args.threads):
        return run_study(study, report=lambda run: _report(args, run))


def _report(args: DemoArguments, run: StudyRun) -> DemoResult:
    """The demo's tables, plots and claims from the study's cells (called while the study folder is held)."""
    from ..evaluation.report import write_report

    seeds, methods, world = args.seed_list(), args.method_names(), run.world
    main_lambda = {m: _lambda_of(m, args.sweep_lambdas()) for m in methods}  # the main runs' λ (None: no regularizer)
    cells = run.cells()
    records, sweep_records, pretrained = [], [], {}
    # The λ sweep's cells away from the main λ, scored at their end only (the study's rule).
    end_only = {id(c): run.args.end_only(Cell(**{**c["cell"], "tasks": tuple(c["cell"]["tasks"])})) for c in cells}
    for seed in seeds:  # seed by seed, each in the demo's method order: the order the means and plots take
        mains = [c for m in methods for c in cells if c["cell"]["seed"] == seed and c["cell"]["method"] == m and not end_only[id(c)]]
        sides = [c for c in cells if c["cell"]["seed"] == seed and end_only[id(c)]]
        pretrained[seed] = mains[0]["pretrained_accuracy"] if mains else sides[0]["pretrained_accuracy"]
        # Every run starts from the pretrained image encoder, so its 0 % point is the pretrained model.
        starts = [pretrained_start_record(c["cell"]["method"], args.finetune_task, str(world.model_dir), pretrained[seed]) for c in mains]
        seed_records = [{**r, "lambda": main_lambda[r["method"]]} for r in starts] + [
            r for c in mains for r in c["records"] if r.get("alpha") is None]
        seed_dir = os.path.join(run.args.output_dir, f"seed-{seed}")
        write_report(seed_records, seed_dir, pretrained=str(world.model_dir), pretrained_accuracies=pretrained[seed],
                     benchmarks=list(world.benchmarks))
        records += [{**r, "seed": seed} for r in seed_records]
        sweep_records += [r for c in sides for r in c["records"]] + [r for c in mains for r in c["records"] if r.get("alpha") is not None]

    timings = {"pretrain_or_load_s": run.timings["prepare_s"]}
    for name in ("finetune_s", "evaluate_s"):  # the cells this call ran (a reused cell costs nothing)
        timings[name] = sum(t.get(name, 0.0) for t in run.ran.values())

    summary = summarise(records, args.finetune_task)
    pretrained_table = _pretrained_table(pretrained, world.benchmarks)
    table = summary_table(summary, seeds)
    points = frontier_points(records + sweep_records)
    claims = demo_claims(points, main_lambda, args.alpha_list())
    claims_text = claims_section(claims, seeds)
    _write_outputs(args, summary, records, sweep_records, points, pretrained_table, table, claims_text, timings, seeds)
    print(f"\nPretrained world CLIP (world seed {args.world_seed}), accuracy in %, {over_seeds(seeds, 'evaluation seeds')}:\n\n{pretrained_table}\n")
    print(f"Fine-tuned on {args.finetune_task}, {args.max_steps} steps, lr {args.learning_rate} (Δ in points, {over_seeds(seeds)}):\n\n{table}")
    print(f"{frontier_table(points, seeds)}\n\n{claims_text}")
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
    (("lp-init-kl", 1.0), ("lp-init-ce", 1.0), "delta_lp"),
    (("lp-init-kl", 1.0), ("lp-init-ce", 1.0), "delta_zs"),
    (("lp-init-kl", 1.0), ("lp-init-ldifs", 1.0), "delta_lp"),
    (("lp-init-kl", 1.0), ("lp-init-ldifs", 1.0), "a_ft"),
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
    (("lp-init-kl", "mid"), ("lp-init-ce", "mid"), "delta_lp"),
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
        (f"Claims, paired over seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"Claims {over_seeds(seeds)}")
        + ": the per-seed difference (first minus second, in points), its mean ± sample std over seeds; a claim exceeds the noise "
        "when |mean| > std, else it is inside the noise.",
        "",
    ]
    lines += [f"- {claim.sentence()}." for claim in claims]
    if len(seeds) < 2:
        lines += ["", f"Of {len(claims)} claims: {sum(c.holds for c in claims)} hold and {sum(not c.holds for c in claims)} do not on the one seed; "
                  "run two seeds or more (--seeds 0,1,2) to tell them from the noise."]
        return "\n".join(lines)
    held = sum(c.holds and c.exceeds_noise for c in claims)
    lines += ["", f"Of {len(claims)} claims: {held} hold beyond the seed-to-seed spread, "
              f"{sum(c.holds and not c.exceeds_noise for c in claims)} inside the noise; {sum(not c.holds for c in claims)} do not hold."]
    return "\n".join(lines)


def over_seeds(seeds: list[int], name: str = "seeds") -> str:
    """'mean ± std over seeds 0, 1, 2', or, with one seed, that it is one (a spread needs two)."""
    if len(seeds) < 2:
        return f"on the one {name[:-1]} {seeds[0]} (no spread)" if seeds else "on no seed"
    return f"mean ± std over {name} {', '.join(map(str, seeds))}"


def frontier_table(points: list[FrontierPoint], seeds: list[int] | None = None) -> str:
    """The frontier as Markdown: per (method, λ, α), A_FT and mean Δ_ZS / Δ_LP on the other tasks, mean ± std
    over seeds, "*" on the Pareto set of that axis."""
    lines = [f"The frontier (final models; A_FT in %, mean Δ on the other tasks in points, {over_seeds(seeds) if seeds else 'mean ± std over seeds'}; "
             "* = Pareto set):", "",
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
    if len(values) < 2:  # one seed has no spread to show
        return f"{mean:+.1f}" if signed else f"{mean:.1f}"
    std = statistics.stdev(values)  # sample std over seeds
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
        f"Δ_ZS / Δ_LP in percentage points against the pretrained model (negative = forgetting), {over_seeds(seeds)}; A_FT in %.\n\n"
        + "\n".join(lines) + "\n"
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
        f.write(f"\n{frontier_table(points, seeds)}\n" + (f"\n{claims_text}\n" if claims_text else ""))
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
