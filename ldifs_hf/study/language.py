"""A causal-LM study: the study's grid, folders, restart rules, manifest and launchers (`study.runner`), with
cells that fine-tune a causal LM with SFT under a regularizer (`language.finetune_language_model`) and score it
with lm-eval tasks against the base model (`language.evaluate_language_model`).

    ldifs-hf study --world skills --lambdas ldifs=10,100 kl=0.1,1 --seeds 0,1 --output_dir runs/skills-study
    ldifs-hf study --model_type causal-lm --model_name_or_path MODEL --finetune_tasks TASK --dataset_path TASK=SFT_FOLDER \
        --eval_tasks T1,T2 --task_dir TASKS --retain held_out.txt --lambdas ldifs=1,10 --seeds 0,1

Methods are "sft" (no regularizer) and "sft+<regularizer>" (`methods` "all": "sft" and one per regularizer
`lambdas` sweeps); a cell is (method, λ, fine-tune task, seed). The fine-tune task is the lm-eval task that
scores the new skill (A_FT); `dataset_path` gives its SFT data (`TASK=FOLDER`, a `save_to_disk` folder). The
skills world (`world="skills"`, `"skills-quick"`) supplies the model, the tasks, the SFT data and the retain set.
"""

from __future__ import annotations

import os
import time
from typing import Mapping, Sequence

from ..language.finetune import SFT_METHOD, regularizer_of, sft_method
from .arguments import SKILLS_WORLDS, Cell, StudyArguments

# Study options that only a CLIP study reads, and their defaults: a causal-LM study refuses them changed.
CLIP_ONLY = ("reference", "lp_iterations", "eval_max_train_samples", "eval_num_workers", "distances", "wise_alphas", "frontier",
             "lambda_sweep_methods", "eval_seed")
# The options a skills-world study takes from its world.
WORLD_OWNED = ("task_dir", "retain", "dataset_path")
# Where a causal-LM study caches the base model's scores, shared by its cells (keyed, checked on read).
LANGUAGE_CACHE_FOLDER = "language_cache"
RESULT_FILES = ("results.json", "results.csv", "results.md")


def check_language_study(args: StudyArguments) -> None:
    """A causal-LM study's own checks, before anything runs (one line each)."""
    from dataclasses import fields

    defaults = {f.name: f.default for f in fields(StudyArguments)}
    changed = [name for name in CLIP_ONLY if getattr(args, name) != defaults[name]]
    if changed:
        raise ValueError(f"{', '.join('--' + c for c in changed)} belong to CLIP studies; a causal-LM study does not read them: leave them out")
    if args.world not in ("none", *SKILLS_WORLDS):
        raise ValueError(f"world {args.world!r} is the concept world of CLIP studies; a causal-LM study runs on {', '.join(SKILLS_WORLDS)} or none")
    if args.world in SKILLS_WORLDS:
        given = [name for name in WORLD_OWNED if getattr(args, name)] + (["model_name_or_path"] if args.model_name_or_path != defaults["model_name_or_path"] else [])
        if given:
            raise ValueError(f"{', '.join('--' + g for g in given)}: the skills world supplies them (its model, tasks, SFT data and retain set); leave them out")
    else:
        missing = [flag for flag, value in (("--model_name_or_path", args.model_name_or_path != defaults["model_name_or_path"]),
                                            ("--finetune_tasks", args.finetune_tasks.strip() != "all"), ("--eval_tasks", args.eval_tasks.strip() != "all"),
                                            ("--dataset_path", bool(args.dataset_path))) if not value]
        if missing:
            raise ValueError(f"a causal-LM study without --world skills needs {', '.join(missing)} (the model, the lm-eval task that scores "
                             "the new skill, the tasks to score and TASK=SFT_FOLDER)")
    if args.world_seed < 0:
        raise ValueError(f"world_seed must be >= 0, got {args.world_seed}")
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(f"max_steps must be >= 1, or -1 for the SFT arguments' epochs, got {args.max_steps}")
    if not 0 <= args.checkpoint_every_percent < 100:
        raise ValueError(f"checkpoint_every_percent must be in [0, 100) (0: only the end), got {args.checkpoint_every_percent}")
    if any(">" in t for t in args.finetune_tasks.split(",")):
        raise ValueError(f"finetune_tasks {args.finetune_tasks!r}: a causal-LM study runs no sequences of tasks")
    args.seed_list()
    _check_options(args)


def _check_options(args: StudyArguments) -> None:
    """finetune_options are SFT arguments the cells do not own, accepted by trl's SFTConfig for every method."""
    from ..language.finetune import OWNED, sft_config
    from ..options import check_json_options
    from ..training.arguments import weight_arguments

    methods = language_methods(args)
    sweeps = args.lambda_sweeps()
    options = check_json_options(args.finetune_options, (_config_class(),), "finetune_options")
    owned = sorted(set(options) & {*OWNED, "seed", "max_steps", "model_name_or_path", "dataset_path"})
    if owned:
        raise ValueError(f"finetune_options may not set {owned}: the study sets them per cell (use the study's own options)")
    args.finetune_options = options
    for method in methods:
        regularizer = regularizer_of(method)
        weights = sweeps.get(regularizer) or [None]
        extra = weight_arguments(regularizer, weights[0], options) if weights[0] is not None else {}
        try:
            sft_config(os.path.join("not-created"), regularizer, **{**options, **extra, "use_cpu": True, "bf16": False})
        except (ValueError, TypeError) as err:
            raise ValueError(f"finetune_options {options} are refused by the SFT arguments (method {method}): {' '.join(str(err).split())}") from None


def _config_class():
    from ..language.finetune import sft_classes

    return sft_classes()[0]


def language_methods(args: StudyArguments) -> list[str]:
    """"all": "sft" and "sft+<regularizer>" for each regularizer `lambdas` sweeps; else the named ones, each once."""
    sweeps = args.lambda_sweeps()
    if args.methods.strip() == "all":
        return [SFT_METHOD] + [sft_method(r) for r in sweeps]
    methods = [sft_method(regularizer_of(m)) for m in args.methods.split(",") if m.strip()]
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice or not methods:
        raise ValueError(f"methods {args.methods!r}: name each method once ('sft', 'sft+ldifs', ...), or 'all'")
    unswept = [r for r in sweeps if sft_method(r) not in methods]
    if unswept:
        raise ValueError(f"--lambdas sweeps {', '.join(unswept)}, but methods {args.methods!r} runs no sft+{unswept[0]}; add it or drop the sweep")
    return methods


def language_eval_tasks(args: StudyArguments, world=None) -> list[str]:
    """The lm-eval tasks every cell is scored on: "all" is the skills world's (the new skill's included)."""
    if args.eval_tasks.strip() == "all":
        return list(world.tasks)
    return [t.strip() for t in args.eval_tasks.split(",") if t.strip()]


def finetune_task_names(args: StudyArguments, world=None) -> list[str]:
    if args.finetune_tasks.strip() == "all":
        return [world.new_task]
    return [t.strip() for t in args.finetune_tasks.split(",") if t.strip()]


def language_cells(args: StudyArguments, world=None) -> list[Cell]:
    """The grid in a fixed order: method, λ, fine-tune task, seed (each task's SFT data named by `dataset_path`)."""
    from ..benchmarks import parse_dataset_paths

    tasks, paths = finetune_task_names(args, world), parse_dataset_paths(args.dataset_path)
    missing = [t for t in tasks if t not in paths]
    if missing:
        raise ValueError(f"no SFT data for fine-tune task(s) {', '.join(missing)}: pass --dataset_path {missing[0]}=FOLDER (a save_to_disk folder)")
    return [Cell(method, (task,), seed, lam) for method in args.method_names() for lam in args.method_lambdas(method)
            for task in tasks for seed in args.seed_list()]


def language_cell_config(args: StudyArguments, cell: Cell, eval_tasks: Sequence[str]) -> dict:
    """What determines a causal-LM cell's result: its SFT arguments and its evaluation's (output folders aside)."""
    import json

    from ..benchmarks import parse_dataset_paths
    from ..training.arguments import weight_arguments

    regularizer, task = regularizer_of(cell.method), cell.tasks[0]
    finetune = dict(model_name_or_path=args.model_name_or_path, dataset_path=parse_dataset_paths(args.dataset_path)[task], finetune_task=task,
                    regularizer=regularizer, seed=cell.seed)
    if args.max_steps > 0:
        finetune["max_steps"] = args.max_steps
    if args.checkpoint_every_percent > 0:  # a ratio below 1 is a fraction of the total steps (TrainingArguments.save_steps)
        finetune.update(save_strategy="steps", save_steps=args.checkpoint_every_percent / 100)
    else:
        finetune["save_strategy"] = "no"
    finetune.update(args.finetune_options)
    if cell.lam is not None:
        finetune.update(weight_arguments(regularizer, cell.lam, finetune))
    evaluation = dict(tasks=",".join(eval_tasks), task_dir=args.task_dir, finetune_task=task, retain=list(args.retain), pretrained=args.model_name_or_path,
                      batch_size=args.eval_batch_size, limit=args.eval_max_eval_samples, include_intermediate=args.checkpoint_every_percent > 0)
    config = {"method": cell.method, "tasks": [task], "seed": cell.seed, "model_type": "causal-lm", "finetune": finetune, "evaluation": evaluation}
    if cell.lam is not None:
        config["lambda"] = cell.lam
    return json.loads(json.dumps(config))  # the form cell.json stores, so a comparison is exact


def prepare_language_world(args: StudyArguments, resolved: StudyArguments, *, progress: bool = False):
    """The skills world (pre-trained or read from the cache) and `resolved` pointed at its model, tasks, SFT
    data and retain set; None without a world (a user's own model and data, their folders made absolute)."""
    if args.world == "none":
        resolved.dataset_path = [f"{name}={os.path.abspath(path)}" for name, path in _pairs(args.dataset_path)]
        resolved.task_dir = args.task_dir and os.path.abspath(args.task_dir)
        return None
    from ..language.skills import prepare_skills, skills_settings

    world = prepare_skills(skills_settings(SKILLS_WORLDS[args.world], args.world_seed), resolved.world_cache_dir, progress=progress)
    resolved.model_name_or_path, resolved.task_dir = str(world.model_dir), str(world.task_dir)
    resolved.dataset_path, resolved.retain = [f"{world.new_task}={world.sft_dir}"], [str(world.retain_dir)]
    return world


def _pairs(entries):
    from ..benchmarks import parse_dataset_paths

    return parse_dataset_paths(entries).items()


def check_language_data(args: StudyArguments, plan) -> None:
    """Before the first cell: every fine-tune task's SFT data and the task folder are there, and lm_eval imports.
    lm_eval's and datasets' output of loading the tasks ("Generating test split" bars) goes to the study's log."""
    from ..console import run_output
    from ..language.harness import load_task_set
    from ..language.finetune import load_sft_data

    if not plan.todo:
        return
    paths = dict(_pairs(args.dataset_path))
    for task in dict.fromkeys(t for cell in plan.cells for t in cell.tasks):
        load_sft_data(paths[task])
    with run_output(args.output_dir, verbose=args.verbose):
        load_task_set(list(dict.fromkeys(list(plan.eval_tasks) + [t for cell in plan.cells for t in cell.tasks])), args.task_dir, {})


def run_language_cell(args: StudyArguments, cell: Cell, config: dict, run_dir: str, staging: str) -> dict:
    """Fine-tune (or continue, or reuse) one causal-LM cell's run, then score it into `staging`: what the
    runner's cell.json needs (records, the base model's scores, the files, the run, the timings)."""
    from ..language import evaluate_language_model
    from ..language.finetune import finetune_language_model

    start, cpu_start = time.perf_counter(), time.process_time()
    record = finetune_language_model(output_dir=run_dir, overwrite_output_dir=args.overwrite_output_dir, **config["finetune"])
    timings = {"finetune_s": time.perf_counter() - start}
    result = evaluate_language_model(checkpoint=[f"{cell.method}={run_dir}"], output_dir=staging, frontier=False,  # the study's report draws it
                                     cache_dir=os.path.join(args.output_dir, LANGUAGE_CACHE_FOLDER), **config["evaluation"])
    timings["evaluate_s"] = time.perf_counter() - start - timings["finetune_s"]
    timings["cpu_s"] = time.process_time() - cpu_start  # this process's CPU time: the cell's cost on a busy machine
    return {"records": result.records, "pretrained_accuracy": {"scores": result.base_scores, "retain": result.base_retain},
            "files": list(RESULT_FILES), "run_dirs": [record.output_dir], "run_record": record, "timings": timings}


def assemble_language_study(args: StudyArguments, cells: Sequence[dict], evidence: Mapping | None = None):
    """The study's report from its done cells: every checkpoint's scores (results.json/.csv/.md, as the language
    evaluation writes them), the final models' Δ per task, A_FT and retain loss per (method, λ), mean ± std over
    seeds (summary.md), and the frontier and the claims over seeds (frontier.csv/.png, claims.json; their table and
    sentences in results.md). `evidence`: how the claims are made (`claims.build_evidence`'s options; default: the
    generic claims, every λ a main point)."""
    from ..language.report import seed_mean_table, write_language_evidence, write_language_report
    from .tables import StudyTables

    records = [r for cell in cells for r in cell["records"]]
    base = cells[0]["pretrained_accuracy"] if cells else {"scores": {}, "retain": None}
    tasks = list(base["scores"])
    summary = {"model_type": "causal-lm", "study": args.output_dir, "tasks": tasks, "base_scores": base["scores"], "base_retain": base["retain"]}
    paths = write_language_report(records, args.output_dir, summary=summary, tasks=tasks, base_scores=base["scores"], base_retain=base["retain"])
    table = seed_mean_table(records, tasks)
    paths["summary"] = os.path.join(args.output_dir, "summary.md")
    with open(paths["summary"], "w") as f:
        f.write(table)
    written, text = write_language_evidence(records, args.output_dir, evidence=evidence,
                                            title="SFT: A_FT against mean Δ of the other tasks (mean and 95 % CI over seeds)")
    paths.update(written)
    if text:
        table += "\n" + text + "\n"
    return StudyTables(paths=paths, table3=table)


