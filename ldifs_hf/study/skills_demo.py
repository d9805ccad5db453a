"""The skills demo: forgetting in a tiny causal LM, offline on a CPU (`ldifs-hf demo --world skills`).

A preset of the causal-LM study (`study.language`): the skills world's tiny Llama (pre-trained on add, copy,
reverse and capital; cached) fine-tuned with SFT on the new skill (shift) under no regularizer, L2SP, LDIFS
and KL at the weights of `SKILLS_LAMBDAS`, once per seed; every final model scored on every skill against the
pre-trained model. Cells run in `workers` processes of `threads` torch threads each. The report (in
`output_dir`): results.md/.json/.csv (every run), summary.md (Δ per skill, A_FT and the retain loss per
regularizer and λ, mean ± std over seeds), the frontier (frontier.csv/.png) and the claims of `SKILLS_CLAIMS`
over seeds (claims.json, and in results.md), and timings.json.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from ..utils import parse_seeds
from .arguments import StudyArguments
from .runner import StudyRun, run_study

# The SFT of every run: enough steps at this rate to learn shift from a model that never saw it.
MAX_STEPS, QUICK_MAX_STEPS, LEARNING_RATE, BATCH_SIZE = 200, 8, 3e-4, 32
# The weights of each regularizer (main weight first), from a sweep on seed 0 at these SFT settings (A_FT / mean Δ of
# the old skills, points): none 98 / -79; L2SP 0.03: 93 / -69, 0.1: 76 / -63, 0.3: 32 / -52; LDIFS 30: 95 / -81,
# 100: 63 / -59, 300: 1 / -8; KL 0.3: 89 / -64, 1: 1 / -16, 3: 0 / 0. The main weight learns shift and keeps some
# of the old skills; the second shows the curve's other side.
SKILLS_LAMBDAS = {"l2sp": (0.1, 0.3), "ldifs": (100.0, 30.0), "kl": (0.3, 1.0)}
# The demo's claims, each side (method, α = 1: the run itself) at its regularizer's main weight: each regularizer
# against plain SFT on the old skills (mean Δ) and on the new one (A_FT); feature space (LDIFS) against parameter
# space (L2SP) and against the output distribution (KL) on the old skills.
SKILLS_CLAIMS = tuple(
    [((f"sft+{r}", 1.0), ("sft", 1.0), metric) for r in SKILLS_LAMBDAS for metric in ("delta", "a_ft")]
    + [(("sft+ldifs", 1.0), ("sft+l2sp", 1.0), "delta"), (("sft+kl", 1.0), ("sft+ldifs", 1.0), "delta")]
)
# Units of the claims: the sign-flip test's smallest p over n seeds is 2 / 2^n; Holm over m claims needs 2 / 2^n <= 0.05 / m
# for the first, so 10 seeds (0.002) decide up to 25 claims (8 here).
SKILLS_SEEDS = "0,1,2,3,4,5,6,7,8,9"
QUICK_SEEDS = "0,1"


@dataclass
class SkillsDemoResult:
    """What the skills demo measured: every run's final records, the summary table and timings."""

    records: list[dict]
    table: str
    timings: dict[str, float]
    paths: dict[str, str] = field(default_factory=dict)


def skills_study_arguments(args) -> StudyArguments:
    """The skills demo as a study (`args`: the demo's `DemoArguments`)."""
    # --quick (for tests, not numbers): each regularizer at its first weight only.
    lambdas = [f"{r}={','.join(f'{w:g}' for w in (weights[:1] if args.quick else weights))}" for r, weights in SKILLS_LAMBDAS.items()]
    # No gradient checkpointing (trl's default): the tiny model needs no memory saved, and its recomputation cost 20 % of a
    # run's CPU time (measured: 200 steps in 12.6 s with it, 9.9 s without; the same gradients).
    options = {"per_device_train_batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE, "logging_steps": 50, "gradient_checkpointing": False}
    return StudyArguments(
        output_dir=args.output_dir, world="skills-quick" if args.quick else "skills", world_cache_dir=args.cache_dir,
        seeds=args.seeds or (QUICK_SEEDS if args.quick else SKILLS_SEEDS), lambdas=lambdas, max_steps=QUICK_MAX_STEPS if args.quick else MAX_STEPS,
        checkpoint_every_percent=0.0, finetune_options=json.dumps(options), eval_batch_size=64, workers=args.workers, threads=args.threads,
        overwrite_output_dir=args.overwrite_output_dir, verbose=args.verbose,
    )


def skills_evidence_options() -> dict:
    """How the skills demo's claims are made (`claims.build_evidence`'s options): `SKILLS_CLAIMS` at each
    regularizer's main weight (the first of `SKILLS_LAMBDAS`), each seed a unit."""
    from ..evaluation.claims import ClaimSpec

    return {"specs": [ClaimSpec(*claim) for claim in SKILLS_CLAIMS], "main_lambda": {f"sft+{r}": w[0] for r, w in SKILLS_LAMBDAS.items()},
            "claim_rule": "the skills demo's list: SKILLS_CLAIMS in study/skills_demo.py",
            "sources": ["training seed (each unit is a seed: the SFT run's data order)"],
            "not_covered": ["the pre-trained model: the same for every unit", "the test sample: every unit is scored on the same examples of each skill"]}


def run_skills_demo(args) -> SkillsDemoResult:
    """Run (or resume) the skills demo's study and write its report."""
    study = skills_study_arguments(args)
    seeds = parse_seeds(study.seeds)
    print(f"The skills demo: SFT on the new skill (shift) with no regularizer and {', '.join(SKILLS_LAMBDAS)} at 2 weights each, "
          f"{len(seeds)} seeds; every run scored on every skill ({study.workers} processes)")
    start, cpu = time.perf_counter(), time.process_time()
    return run_study(study, report=lambda run: _report(run, start, cpu))


def _report(run: StudyRun, start: float, cpu: float) -> SkillsDemoResult:
    from .language import assemble_language_study

    cells = run.cells()
    tables = assemble_language_study(run.args, cells, evidence=skills_evidence_options())
    timings = {"prepare_s": run.timings["prepare_s"], "cells_s": run.timings["cells_s"],
               **{name: sum(t.get(name, 0.0) for t in run.ran.values()) for name in ("finetune_s", "evaluate_s", "cpu_s")},
               "total_s": time.perf_counter() - start, "main_process_cpu_s": time.process_time() - cpu}
    paths = dict(tables.paths, timings=os.path.join(run.args.output_dir, "timings.json"))
    with open(paths["timings"], "w") as f:
        json.dump(timings, f, indent=2)
    print(f"\n{tables.table3}\ntimings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    records = [r for cell in cells for r in cell["records"]]
    return SkillsDemoResult(records=records, table=tables.table3, timings=timings, paths=paths)
