"""The embedded default: concept forgetting on a laptop CPU, with no downloads (`ldifs-hf demo`).

The demo is a preset of the study runner (`study.runner.run_study`), one study per world, plus its own report:

1. Each world (`world_seeds`: its own images, captions and tiny CLIP, pre-trained on the digit, colour,
   background texture and position of a handwritten digit; cached, so only the first run pays) is
   prepared, the worlds at once in the worker processes.
2. Each world's study (in `world-<w>/`) fine-tunes that CLIP on one concept task with each of the
   paper's eight methods and LP-init KL, once per seed, and scores the final models on every concept task (zero-shot
   and linear-probe accuracy, Δ against the pretrained model, A_FT) on test and on validation (the
   runs' own hold-out; the other tasks' too). A unit is (world, seed): every method of a unit shares its
   world, data order, initial head and evaluation sample, which its seed draws from the world's test
   pool. The first world's runs also keep a checkpoint every `checkpoint_every_percent` with distances:
   the over-training plots. The frontier is a cross (`StudyArguments.frontier="cross"`): the λ sweep
   (each method of `lambda_sweep_methods` at the other weights of its regularizer's entry of `lambdas`;
   the main runs take each regularizer's default λ) and
   the WiSE-FT sweep (each main run's final model interpolated with its start at `wise_alphas`). The
   cells run in `workers` processes; a finished cell is reused by a rerun.
3. The report: each unit's Table 3 layout in `world-<w>/seed-<n>/`; the mean ± std over units
   (results.md, summary.json); the over-training and distance plots (the first world, mean over its
   seeds); the trade-off figure; λ and α chosen per method on validation (`evaluation.choice`); the
   frontier with its Pareto set by the paired test (frontier.png/.csv); the claims (`CLAIMS`), each
   paired over units, tested and Holm-corrected (`evaluation.claims`: claims.json, and sentences in
   results.md); and timings.json. `run_demo` returns a `DemoResult`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import time
from dataclasses import MISSING, dataclass, field

from ..benchmarks import get_benchmark
from ..console import LOG_FILE
from ..evaluation.choice import CHOICE_RULES, check_choice_rule
from ..evaluation.claims import ClaimSpec, Evidence, build_evidence, claims_section, write_evidence
from ..evaluation.frontier import FrontierPoint, frontier_table, unit_of
from ..evidence import natural_key
from ..evaluation.report import final_records, plot_deltas, plot_distances, plot_tradeoff, pretrained_start_record
from ..options import check_numbers, field_from
from ..run_folder import FolderLock
from ..training.arguments import weight_of
from ..training.methods import get_method, list_methods, method_names
from ..training.terms import get_regularizer
from ..utils import parse_seeds, torch_threads
from ..world.tasks import world_task_names
from .arguments import Cell, StudyArguments, parse_lambda_sweeps, swept_methods
from .runner import StudyRun, run_study, worker_pool

logger = logging.getLogger(__name__)
DEMO_WORLDS = ("concepts", "skills")
CONCEPT_SEEDS = "0,1,2,3,4"  # the concept demo's seeds (the skills demo's: study.skills_demo)
# The demo's λ sweeps: each regularizer's default weight (its main runs') among the others.
DEMO_LAMBDAS = ("ldifs=1,10,100", "l2sp=0.05,0.5,5", "kl=0.1,1,10")


def _study_field(name: str, *, default=MISSING, help: str | None = None):
    """A demo option that is the study's option `name`: the study's default unless the demo's preset
    gives its own value (`default`), and the study's help unless the demo's differs."""
    return field_from(StudyArguments, name, default=default, help=help)


@dataclass
class DemoArguments:
    """The demo's options: the study's own (the defaults that differ from the study's are the demo's
    preset), the tiny model's fine-tuning settings, the worlds, and the demo's CPU threads and scale."""

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
        help=f"Comma-separated seeds of the fine-tuning runs and their evaluation, in every world; a unit of the claims is (world, seed) "
        f"(default: {CONCEPT_SEEDS}; with --world skills 0,...,9, and 0,1 with --quick).",
    )
    world_seeds: str = field(
        default="0,1",
        metadata={"help": "Comma-separated seeds of the worlds: each its own images, captions and pre-trained tiny CLIP; every seed runs in every world."},
    )
    cache_dir: str | None = _study_field("world_cache_dir")
    max_steps: int = _study_field("max_steps", default=100, help="Fine-tuning steps per method (about 2 epochs of world-digit).")
    learning_rate: float = field(default=1e-3, metadata={"help": "Fine-tuning learning rate (the tiny model's analogue of the paper's 1e-5)."})
    threads: int = field(default=1, metadata={"help": "CPU threads for torch in each process; one is fastest for this tiny model on a shared machine."})
    workers: int = _study_field("workers", default=2, help="Worker processes running the cells (and pre-training the worlds) at once; 1: all in this process.")
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
    choice_rule: str = field(
        default="balanced",
        metadata={"help": "How each method's λ and α are chosen on the validation splits: "
                  + "; ".join(f"'{r.name}': {r.text}" for r in CHOICE_RULES.values()) + "."},
    )
    lp_iterations: int = _study_field("lp_iterations", help="Linear-probe iterations (official protocol: 1000).")
    lp_train_samples: int = _study_field("eval_max_train_samples", default=500, help="Training images per task for the evaluation's linear probes (each unit its own, drawn with its seed).")
    test_samples: int = _study_field(
        "eval_max_eval_samples", default=1000,
        help="Test images per task and unit: each unit draws its own from the world's test pool with its seed, so the claims' intervals cover the test sample.",
    )
    checkpoint_every_percent: float = _study_field(
        "checkpoint_every_percent", default=25.0,
        help="The first world's runs save and score a checkpoint every this many percent of training, with distances: the "
        "over-training plots (0: only the end). The other worlds' runs keep their final model only.",
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
        check_choice_rule(self.choice_rule)
        self.method_names()
        worlds = self.world_seed_list()
        for world in worlds:
            self.study_arguments(world)  # the study's own checks (λ and α lists, swept methods, ...), before anything runs

    def world_seed_list(self) -> list[int]:
        try:
            return parse_seeds(self.world_seeds)
        except ValueError as err:
            raise ValueError(str(err).replace("seeds must", "world_seeds must", 1)) from None

    def _check_skills(self) -> None:
        """The skills demo reads output_dir, seeds, cache_dir, threads, workers, quick, overwrite_output_dir and verbose: the
        concept demo's other options, changed, are refused rather than ignored."""
        from dataclasses import MISSING, fields

        used = {"output_dir", "seeds", "cache_dir", "threads", "workers", "quick", "overwrite_output_dir", "verbose", "world"}
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

    def study_arguments(self, world_seed: int | None = None) -> StudyArguments:
        """One world's part of the demo as a study, in `output_dir/world-<w>` (default: the first world): its
        grid (methods x the fine-tune task x seeds), the fine-tuning settings of the tiny model, the evaluation
        seeded per cell on its own test sample and on validation, the cross frontier; checkpoints and
        distances in the first world only."""
        worlds = self.world_seed_list()
        world = worlds[0] if world_seed is None else world_seed
        first = world == worlds[0]
        sweeps = self.sweep_lambdas()
        # A λ list only for a regularizer some method of the demo sweeps (the study refuses a list that sweeps no cell).
        swept = {get_method(m).regularizer for m in swept_methods(self.method_names(), self.lambda_sweep_methods, list(sweeps))}
        sweeps = {regularizer: weights if regularizer in swept else weights[:1] for regularizer, weights in sweeps.items()}
        finetune_options = dict(
            learning_rate=self.learning_rate, per_device_train_batch_size=self.batch_size, warmup_steps=0,
            logging_steps=max(1, self.max_steps // 5), save_only_model=True,
            max_eval_samples=self.test_samples,  # the run's own A_FT at its end: on a sample of the test pool, not all of it
        )
        return StudyArguments(
            output_dir=os.path.join(self.output_dir, f"world-{world}"), methods=",".join(self.method_names()), finetune_tasks=self.finetune_task,
            eval_tasks="all", seeds=self.seeds or CONCEPT_SEEDS, world="quick" if self.quick else "default", world_seed=world, world_cache_dir=self.cache_dir,
            max_steps=self.max_steps, checkpoint_every_percent=self.checkpoint_every_percent if first else 0.0, distances=first,
            lp_iterations=self.lp_iterations, finetune_options=json.dumps(finetune_options), eval_max_train_samples=self.lp_train_samples,
            eval_max_eval_samples=self.test_samples, eval_num_workers=0, eval_seed=-1, eval_validation=True, cell_plots=False,
            lambdas=[f"{r}={','.join(map(repr, weights))}" for r, weights in sweeps.items() if len(weights) > 1],
            lambda_sweep_methods=self.lambda_sweep_methods,
            frontier="cross", wise_alphas=self.wise_alphas.strip() or None, workers=self.workers,
            overwrite_output_dir=self.overwrite_output_dir, verbose=self.verbose,
        )


@dataclass
class DemoResult:
    """The demo's measurements: the pretrained model's accuracies (per unit's evaluation), every scored
    record of the main runs (each with its "world", "seed" and "lambda"), the mean ± std summary over
    units, timings, the printed tables, the sweeps' records, the frontier's points, the choices on
    validation and the claims (`evidence`)."""

    pretrained_accuracy: dict[str, dict[str, dict[str, float]]]
    records: list[dict]
    summary: dict
    timings: dict[str, float]
    pretrained_table: str
    table: str
    sweep_records: list[dict] = field(default_factory=list)  # the λ and WiSE-FT sweeps' records (final models)
    frontier: list[FrontierPoint] = field(default_factory=list)
    evidence: Evidence | None = None
    claims_text: str = ""

    @property
    def claims(self) -> list:
        return self.evidence.claims if self.evidence else []


def run_demo(args: DemoArguments) -> DemoResult:
    methods, seeds, worlds = args.method_names(), args.seed_list(), args.world_seed_list()
    study = args.study_arguments()
    swept = study.swept_methods()
    print(f"The demo: {len(methods)} methods x {len(seeds)} seeds x {len(worlds)} worlds fine-tuned on {args.finetune_task} and scored on "
          "every concept task" + (f", the λ sweep of {', '.join(swept)}" if swept else "")
          + (f", WiSE-FT at α = {', '.join(f'{a:g}' for a in args.alpha_list() if a != 1.0)}" if len(args.alpha_list()) > 1 else ""))
    start = time.perf_counter()
    with torch_threads(args.threads), FolderLock(args.output_dir):
        with worker_pool(args.workers) if args.workers > 1 else contextlib.nullcontext() as pool:
            if pool is not None:
                _prepare_worlds(args, worlds, pool)
            worlds_s = time.perf_counter() - start
            parts = [run_study(args.study_arguments(w), report=lambda run, w=w: _world_part(args, run, w), pool=pool) for w in worlds]
        return _report(args, parts, {"worlds_s": worlds_s, "start": start})


def _prepare_worlds(args: DemoArguments, worlds: list[int], pool) -> None:
    """Pre-train (or find in the cache) every world at once in the pool, before the studies use them; each
    world's output goes to the log in its study's folder."""
    from ..world import world_settings

    print(f"preparing the concept worlds {', '.join(map(str, worlds))} ({args.workers} processes; pre-trained on the first run, then read from the cache)")
    size = "quick" if args.quick else "default"
    folders = [args.study_arguments(w).output_dir for w in worlds]
    pool.map(_prepare_world, [(world_settings(size, w), args.cache_dir, folder, args.verbose) for w, folder in zip(worlds, folders)])


def _prepare_world(task: tuple) -> None:
    from ..console import run_output
    from ..world import prepare_world

    settings, cache_dir, folder, verbose = task
    with run_output(folder, verbose=verbose):
        prepare_world(settings, cache_dir, progress=False)


def _world_part(args: DemoArguments, run: StudyRun, world: int) -> dict:
    """One world's records from its study's cells (called while its folder is held), each unit's Table 3
    report written in `world-<w>/seed-<n>/`: {"pretrained", "records", "sweep_records", "timings"}."""
    from ..evaluation.report import write_report

    methods = args.method_names()
    main_lambda = {m: _lambda_of(m, args.sweep_lambdas()) for m in methods}  # the main runs' λ (None: no regularizer)
    cells = run.cells()
    part = {"pretrained": {}, "records": [], "sweep_records": [], "timings": {"prepare_s": run.timings["prepare_s"]}}
    # The λ sweep's cells away from the main λ, scored at their end only (the study's rule).
    end_only = {id(c): run.args.end_only(Cell(**{**c["cell"], "tasks": tuple(c["cell"]["tasks"])})) for c in cells}
    for seed in args.seed_list():  # seed by seed, each in the demo's method order: the order the means and plots take
        mains = [c for m in methods for c in cells if c["cell"]["seed"] == seed and c["cell"]["method"] == m and not end_only[id(c)]]
        sides = [c for c in cells if c["cell"]["seed"] == seed and end_only[id(c)]]
        pretrained = mains[0]["pretrained_accuracy"] if mains else sides[0]["pretrained_accuracy"]
        unit = {"world": world, "seed": seed}
        part["pretrained"][unit_of(unit)] = pretrained
        # Every run starts from the pretrained image encoder, so its 0 % point is the pretrained model.
        starts = [pretrained_start_record(c["cell"]["method"], args.finetune_task, str(run.world.model_dir), pretrained) for c in mains]
        unit_records = [{**r, "lambda": main_lambda[r["method"]]} for r in starts] + [r for c in mains for r in c["records"] if r.get("alpha") is None]
        write_report(unit_records, os.path.join(run.args.output_dir, f"seed-{seed}"), pretrained=str(run.world.model_dir),
                     pretrained_accuracies=pretrained, benchmarks=list(run.world.benchmarks))
        part["records"] += [{**r, **unit} for r in unit_records]
        part["sweep_records"] += [{**r, **unit} for c in sides for r in c["records"]] + [
            {**r, **unit} for c in mains for r in c["records"] if r.get("alpha") is not None]
    for name in ("finetune_s", "evaluate_s", "cpu_s"):  # the cells this call ran (a reused cell costs nothing)
        part["timings"][name] = sum(t.get(name, 0.0) for t in run.ran.values())
    part["timings"]["cells_wall_s"] = run.timings["cells_s"]
    return part


def _lambda_of(method: str, sweeps: dict[str, list[float]]) -> float | None:
    """The main runs' λ of `method` (the first of its regularizer's sweep), None without one."""
    weights = sweeps.get(get_method(method).regularizer)
    return weights[0] if weights else None


# The claims the demo checks, each (first, second, metric) with a side named (method, where): where is an α at
# the method's main λ, "mid" (the middle interior WiSE-FT α) or "chosen" (its λ and α chosen on validation).
CLAIMS = (
    # The paper's claim at the default λ: LDIFS forgets less than plain fine-tuning, and pays little for it.
    (("lp-init-ldifs", 1.0), ("lp-init-ce", 1.0), "delta_lp"),
    (("lp-init-ldifs", 1.0), ("lp-init-ce", 1.0), "delta_zs"),
    (("lp-init-ldifs", 1.0), ("lp-init-ce", 1.0), "a_ft"),
    (("zs-init-ldifs", 1.0), ("zs-init-ce", 1.0), "delta_lp"),
    (("zs-init-ldifs", 1.0), ("zs-init-ce", 1.0), "delta_zs"),
    (("zs-init-ldifs", 1.0), ("zs-init-ce", 1.0), "a_ft"),
    # Feature space against parameter space.
    (("lp-init-ldifs", 1.0), ("lp-init-l2sp", 1.0), "delta_lp"),
    (("lp-init-ldifs", 1.0), ("lp-init-l2sp", 1.0), "a_ft"),
    (("zs-init-ldifs", 1.0), ("zs-init-l2sp", 1.0), "delta_lp"),
    (("zs-init-ldifs", 1.0), ("zs-init-l2sp", 1.0), "a_ft"),
    (("lp-init-kl", 1.0), ("lp-init-ce", 1.0), "delta_lp"),
    (("lp-init-kl", 1.0), ("lp-init-ce", 1.0), "delta_zs"),
    (("lp-init-kl", 1.0), ("lp-init-ldifs", 1.0), "delta_lp"),
    (("lp-init-kl", 1.0), ("lp-init-ldifs", 1.0), "a_ft"),
)
# Does the regularizer buy more than interpolating plain fine-tuning (WiSE-FT)?
MIDDLE_ALPHA_CLAIMS = (
    (("lp-init-ldifs", "mid"), ("lp-init-ce", "mid"), "delta_lp"),
    (("lp-init-ldifs", 1.0), ("lp-init-ce", "mid"), "delta_lp"),
    (("lp-init-ldifs", 1.0), ("lp-init-ce", "mid"), "a_ft"),
    (("lp-init-kl", "mid"), ("lp-init-ce", "mid"), "delta_lp"),
)
# Each method at its λ and α chosen on validation, as a practitioner would tune it.
CHOSEN_CLAIMS = (
    (("lp-init-ldifs", "chosen"), ("lp-init-ce", "chosen"), "delta_lp"),
    (("lp-init-ldifs", "chosen"), ("lp-init-ce", "chosen"), "a_ft"),
    (("lp-init-ldifs", "chosen"), ("lp-init-l2sp", "chosen"), "delta_lp"),
    (("lp-init-ldifs", "chosen"), ("lp-init-l2sp", "chosen"), "a_ft"),
)


def demo_claims() -> list[ClaimSpec]:
    """`CLAIMS`, `MIDDLE_ALPHA_CLAIMS` and `CHOSEN_CLAIMS` as specs (a report leaves out those whose sides it lacks)."""
    return [ClaimSpec(*claim) for claim in CLAIMS + MIDDLE_ALPHA_CLAIMS + CHOSEN_CLAIMS]


def noise_sources(args: DemoArguments) -> tuple[list[str], list[str]]:
    """What the claims' intervals cover (the units vary it), and what they do not."""
    from ..world import world_settings

    pool = world_settings("quick" if args.quick else "default").task_test_size
    worlds = args.world_seed_list()
    covered = [
        "the training seed (data order, augmentation, the probe's and the run's initialisation)",
        f"the world ({len(worlds)}: seeds {', '.join(map(str, worlds))}; each its own images and pre-trained tiny CLIP)",
        f"the test sample (each unit scores its own {min(args.test_samples, pool)} of the world's {pool} test images per task, "
        f"drawn with its seed; two units of a world share about {100 * min(args.test_samples, pool) / pool:.0f} % of them)",
        f"the linear probes' training sample (each unit's own {args.lp_train_samples} training images per task)",
    ]
    not_covered = [f"worlds beyond these {len(worlds)}: {len(worlds)} worlds say little about the spread between worlds",
                   "the validation split (the same rows for every unit; it only picks λ and α)"]
    return covered, not_covered


def _report(args: DemoArguments, parts: list[dict], clock: dict) -> DemoResult:
    """The demo's tables, plots, choices and claims from every world's records (`clock`: the seconds the
    worlds' preparation in the pool took, "worlds_s", and when the demo started, "start")."""
    records = [r for part in parts for r in part["records"]]
    sweep_records = [r for part in parts for r in part["sweep_records"]]
    pretrained = {unit: accuracy for part in parts for unit, accuracy in part["pretrained"].items()}
    timings = {f"world-{w}/{name}": value for w, part in zip(args.world_seed_list(), parts) for name, value in part["timings"].items()}
    timings.update({name: sum(p["timings"][name] for p in parts) for name in ("finetune_s", "evaluate_s", "cpu_s")})
    timings["worlds_in_pool_s"] = clock["worlds_s"]

    summary = summarise(records, args.finetune_task)
    pretrained_table = _pretrained_table(parts, args.world_seed_list())
    table = summary_table(summary, summary["units"])
    main_lambda = {m: _lambda_of(m, args.sweep_lambdas()) for m in args.method_names()}
    covered, not_covered = noise_sources(args)
    evidence = build_evidence(records + sweep_records, specs=demo_claims(), main_lambda=main_lambda, choice_rule=args.choice_rule,
                              claim_rule="the demo's list: CLAIMS, MIDDLE_ALPHA_CLAIMS and CHOSEN_CLAIMS in study/demo.py",
                              sources=covered, not_covered=not_covered)
    claims_text = claims_section(evidence)
    timings["total_s"] = time.perf_counter() - clock["start"]  # up to the figures and files below
    _write_outputs(args, summary, records, sweep_records, evidence, pretrained_table, table, claims_text, timings)
    print(f"\nPretrained world CLIPs, accuracy in %, mean ± std over each world's units (their own test samples):\n\n{pretrained_table}\n")
    print(f"Fine-tuned on {args.finetune_task}, {args.max_steps} steps, lr {args.learning_rate} (Δ in points):\n\n{table}")
    print(f"{frontier_table(evidence.points, evidence.axes, evidence.chosen)}\n\n{claims_text}")
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return DemoResult(pretrained_accuracy=pretrained, records=records, summary=summary, timings=timings, pretrained_table=pretrained_table,
                      table=table, sweep_records=sweep_records, frontier=evidence.points, evidence=evidence, claims_text=claims_text)


def summarise(records: list[dict], finetune_task: str) -> dict:
    """{"units": [unit, ...], "methods": method -> {"a_ft": [per unit], "eval": task -> {"delta_zs": [...], "delta_lp": [...]},
    "mean_other": {"delta_zs": [...], "delta_lp": [...]}}}: each main run's final record, units in order."""
    by_unit: dict = {}
    for record in records:
        by_unit.setdefault(unit_of(record), []).append(record)
    units = sorted(by_unit, key=natural_key)
    methods: dict = {}
    for unit in units:
        for (_, method), record in sorted(final_records(by_unit[unit]).items(), key=lambda item: str(item[0][1])):
            entry = methods.setdefault(method, {"a_ft": [], "eval": {}, "mean_other": {"delta_zs": [], "delta_lp": []}})
            entry["a_ft"].append(record["a_ft"])
            others = [name for name in record["eval"] if name != finetune_task]
            for name, values in record["eval"].items():
                task = entry["eval"].setdefault(name, {"delta_zs": [], "delta_lp": []})
                for kind in ("delta_zs", "delta_lp"):
                    task[kind].append(values[kind])
            for kind in ("delta_zs", "delta_lp"):
                entry["mean_other"][kind].append(statistics.fmean(record["eval"][n][kind] for n in others))
    return {"units": units, "methods": methods}


def _mean_std(values, signed: bool = True) -> str:
    values = [100 * v for v in values]
    mean = statistics.fmean(values)
    if len(values) < 2:  # one unit has no spread to show
        return f"{mean:+.1f}" if signed else f"{mean:.1f}"
    std = statistics.stdev(values)  # sample std over units
    return f"{mean:+.1f} ± {std:.1f}" if signed else f"{mean:.1f} ± {std:.1f}"


def summary_table(summary: dict, units: list[str]) -> str:
    """Rows: A_FT, each eval task, mean over the other tasks; columns: methods; cells "Δ_ZS / Δ_LP", mean ± std over units."""
    methods = summary["methods"]
    names = sorted(methods)
    lines = ["| eval task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines.append("| A_FT (%) | " + " | ".join(_mean_std(methods[m]["a_ft"], signed=False) for m in names) + " |")
    for task in sorted(next(iter(methods.values()))["eval"]):
        lines.append(f"| {task} | " + " | ".join(
            f"{_mean_std(methods[m]['eval'][task]['delta_zs'])} / {_mean_std(methods[m]['eval'][task]['delta_lp'])}" for m in names) + " |")
    lines.append("| mean (other tasks) | " + " | ".join(
        f"{_mean_std(methods[m]['mean_other']['delta_zs'])} / {_mean_std(methods[m]['mean_other']['delta_lp'])}" for m in names) + " |")
    return (
        f"Δ_ZS / Δ_LP in percentage points against the pretrained model (negative = forgetting), mean ± sample std over the "
        f"{len(units)} units ({units[0]} … {units[-1]}); A_FT in %. The claims below test the differences.\n\n" + "\n".join(lines) + "\n"
    )


def _pretrained_table(parts: list[dict], worlds: list[int]) -> str:
    """Per task and world, the pretrained model's ZS and LP accuracy, mean ± std over the world's units."""
    benchmarks = list(next(iter(parts[0]["pretrained"].values())))
    header = ["task", "classes", "chance"] + [f"world {w} {kind}" for w in worlds for kind in ("ZS", "LP")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in benchmarks:
        n = get_benchmark(name).num_classes
        cells = [name, str(n), f"{100 / n:.1f}"]
        for part in parts:
            for kind in ("zs", "lp"):
                cells.append(_mean_std([accuracy[name][kind] for accuracy in part["pretrained"].values()], signed=False))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_curves(records: list[dict]) -> list[dict]:
    """Records averaged over units, per (method, % of training): the curves the plots draw."""
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


def _write_outputs(args, summary, records, sweep_records, evidence, pretrained_table, table, claims_text, timings) -> None:
    out, units = args.output_dir, summary["units"]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(f"Pretrained models, accuracy in %:\n\n{pretrained_table}\n\n{table}")
        f.write(f"\n{frontier_table(evidence.points, evidence.axes, evidence.chosen)}\n" + (f"\n{claims_text}\n" if claims_text else ""))
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"what": "Per method, each unit's value (in the order of 'units') of the main run's final model: A_FT, each task's "
                           "Δ_ZS and Δ_LP, and their mean over the other tasks (fractions, not points). The claims are in claims.json.",
                   "finetune_task": args.finetune_task, **summary}, f, indent=2)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"what": "Every scored record: the main runs' checkpoints with their 0 % points ('records') and the λ and WiSE-FT "
                           "sweeps' final models ('sweep_records'), each with its world, seed, test and validation scores.",
                   "units": units, "records": records, "sweep_records": sweep_records}, f, indent=2, default=str)
    with open(os.path.join(out, "timings.json"), "w") as f:
        json.dump(timings, f, indent=2)
    first = args.world_seed_list()[0]
    curves = _mean_curves([r for r in records if r["world"] == first])  # the first world's runs keep their checkpoints
    what = f"world {first}, mean over seeds {', '.join(map(str, args.seed_list()))}"
    plot_deltas(curves, os.path.join(out, "deltas_over_training.png"), title=f"Δ against the pretrained model along training ({what})")
    plot_distances(curves, os.path.join(out, "distances_over_training.png"), title=f"distance from the pretrained model along training ({what})")
    title = f"fine-tuned on {args.finetune_task}, {len(units)} units (worlds x seeds)"
    tradeoff = {m: {"a_ft": s["a_ft"], **s["mean_other"]} for m, s in summary["methods"].items()}
    plot_tradeoff(tradeoff, os.path.join(out, "tradeoff.png"), title=f"{title}: mean ± std over units")
    write_evidence(evidence, out, title=f"frontier, {title}; λ and α chosen on validation")
