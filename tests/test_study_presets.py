"""What a preset of the study (the demo) is built from: the cross frontier, which λ is swept, the
evaluation seed per cell, redoing a study in place, and a preset's own report run inside the study."""

import json
import os

import pytest

from ldifs_hf.run_folder.lock import read_holder
from ldifs_hf.study import StudyArguments, StudyRun, run_study
from ldifs_hf.study.arguments import cell_config, study_cells
from ldifs_hf.study.runner import describe_plan, plan_study

TASKS = ["world-digit", "world-colour"]


def _cells(args):
    return {(c.method, c.lam, c.seed): c for c in study_cells(args)}


def test_cross_frontier_keeps_the_main_lambda_whole_and_scores_the_other_weights_at_their_end():
    args = StudyArguments(methods="zs-init-ce,lp-init-ldifs,zs-init-l2sp", finetune_tasks="eurosat", seeds="0",
                          ldifs_lambdas="1,10,100", l2sp_lambdas="0.05,0.5", wise_alphas="0,0.5,1", frontier="cross")
    cells = _cells(args)
    # The main λ is the fine-tuning arguments' own: LDIFS 10, L2SP 0.5 (their defaults).
    assert args.main_lambda("ldifs") == 10.0 and args.main_lambda("l2sp") == 0.5 and args.main_lambda("none") is None
    main = cell_config(args, cells["lp-init-ldifs", 10.0, 0], TASKS)
    assert main["finetune"]["save_strategy"] == "steps" and main["evaluation"]["include_intermediate"] and main["evaluation"]["distances"]
    # The final model alone at the other α (α = 1 is the run as it is, scored by the main evaluation).
    assert "wise_alphas" not in main["evaluation"]
    assert main["wise_evaluation"]["wise_alphas"] == "0.0,0.5" and not main["wise_evaluation"]["include_intermediate"]
    assert not main["wise_evaluation"]["distances"] and main["frontier"] == "cross"
    for lam in (1.0, 100.0):
        side = cell_config(args, cells["lp-init-ldifs", lam, 0], TASKS)
        assert side["finetune"]["save_strategy"] == "no" and "save_steps" not in side["finetune"]
        assert not side["evaluation"]["include_intermediate"] and not side["evaluation"]["distances"]
        assert "wise_evaluation" not in side and "wise_alphas" not in side["evaluation"]
    assert cell_config(args, cells["zs-init-l2sp", 0.05, 0], TASKS)["finetune"]["save_strategy"] == "no"
    assert "wise_evaluation" in cell_config(args, cells["zs-init-l2sp", 0.5, 0], TASKS)
    assert "wise_evaluation" in cell_config(args, cells["zs-init-ce", None, 0], TASKS)
    # The full frontier (the default) scores every cell and checkpoint at every α, as before.
    full = StudyArguments(methods="lp-init-ldifs", finetune_tasks="eurosat", seeds="0", ldifs_lambdas="1,10", wise_alphas="0,1")
    for cell in study_cells(full):
        config = cell_config(full, cell, TASKS)
        assert config["evaluation"]["wise_alphas"] == "0,1" and config["evaluation"]["include_intermediate"]
        assert "wise_evaluation" not in config and "frontier" not in config


def test_the_main_lambda_comes_from_the_finetune_options_and_must_be_a_cell_of_the_cross():
    args = StudyArguments(methods="lp-init-ldifs", finetune_tasks="eurosat", seeds="0", ldifs_lambdas="1,3", frontier="cross",
                          finetune_options='{"ldifs_lambda": 3}')
    configs = {c.lam: cell_config(args, c, TASKS) for c in study_cells(args)}
    assert configs[3.0]["finetune"]["save_strategy"] == "steps" and configs[1.0]["finetune"]["save_strategy"] == "no"
    assert configs[1.0]["finetune"]["ldifs_lambda"] == 1.0  # the cell's own λ, not the options'


def test_lambda_sweep_methods_choose_which_methods_are_swept():
    args = StudyArguments(methods="zs-init-ldifs,lp-init-ldifs,lp-init-l2sp", finetune_tasks="eurosat", seeds="0",
                          ldifs_lambdas="1,10", l2sp_lambdas="0.05,0.5", lambda_sweep_methods="lp-init-ldifs,lp-init-l2sp,zs-init-l2sp")
    assert args.swept_methods() == ["lp-init-ldifs", "lp-init-l2sp"]  # zs-init-l2sp is not run
    assert [(c.method, c.lam) for c in study_cells(args)] == [
        ("zs-init-ldifs", None), ("lp-init-ldifs", 1.0), ("lp-init-ldifs", 10.0), ("lp-init-l2sp", 0.05), ("lp-init-l2sp", 0.5)]
    # A method that is not swept runs at the fine-tuning arguments' λ, which may then be set.
    options = StudyArguments(methods="zs-init-ldifs,lp-init-ldifs", finetune_tasks="eurosat", seeds="0", ldifs_lambdas="1,10",
                             lambda_sweep_methods="lp-init-ldifs", finetune_options='{"ldifs_lambda": 3}')
    (plain,) = [c for c in study_cells(options) if c.method == "zs-init-ldifs"]
    assert plain.lam is None and cell_config(options, plain, TASKS)["finetune"]["ldifs_lambda"] == 3


def test_evaluation_seed_is_zero_by_default_or_each_cells_own():
    grid = dict(methods="zs-init-ce", finetune_tasks="eurosat", seeds="3,4")
    assert {cell_config(StudyArguments(**grid), c, TASKS)["evaluation"]["seed"] for c in study_cells(StudyArguments(**grid))} == {0}
    own = StudyArguments(eval_seed=-1, **grid)
    assert [cell_config(own, c, TASKS)["evaluation"]["seed"] for c in study_cells(own)] == [3, 4]
    fixed = StudyArguments(eval_seed=7, **grid)
    assert [cell_config(fixed, c, TASKS)["evaluation"]["seed"] for c in study_cells(fixed)] == [7, 7]


GRID = dict(
    methods="zs-init-ce,zs-init-ldifs", finetune_tasks="world-digit", eval_tasks="world-digit,world-colour", seeds="1",
    world="quick", max_steps=2, checkpoint_every_percent=50, lp_iterations=10, eval_max_train_samples=32, eval_num_workers=0,
    finetune_options={"per_device_train_batch_size": 16, "warmup_steps": 0, "learning_rate": 1e-3, "use_cpu": True},
    ldifs_lambdas="1,10", wise_alphas="0,1", frontier="cross", eval_seed=-1,
)


@pytest.mark.slow
def test_a_cross_study_runs_its_cells_hands_its_report_the_run_and_redoes_in_place(tmp_path):
    out, seen = tmp_path / "study", []

    def report(run: StudyRun):
        seen.append(run)
        holder = read_holder(run.args.output_dir)  # the study folder is still held while the report runs
        assert holder is not None and holder["pid"] == os.getpid()
        return "the preset's report"

    args = StudyArguments(output_dir=str(out), world_cache_dir=str(tmp_path / "cache"), **GRID)
    assert run_study(args, report=report) == "the preset's report"
    (run,) = seen
    assert not (out / "results.md").exists()  # the study's own tables are replaced by the report
    cells = {(c["cell"]["method"], c["cell"]["lam"]): c for c in run.cells()}
    assert sorted(cells, key=str) == sorted([("zs-init-ce", None), ("zs-init-ldifs", 1.0), ("zs-init-ldifs", 10.0)], key=str)
    assert set(run.ran) == set(run.plan.cells) and all(t["finetune_s"] > 0 and t["evaluate_s"] > 0 for t in run.ran.values())
    assert run.timings["prepare_s"] > 0 and run.timings["cells_s"] > 0

    main = cells["zs-init-ldifs", 10.0]
    # Evaluated with the cell's own seed; every checkpoint as it is, and the final model also at α = 0.
    assert main["config"]["evaluation"]["seed"] == 1 and all(r["seed"] == 1 and r["lambda"] == 10.0 for r in main["records"])
    assert [(r["percent"], r.get("alpha")) for r in main["records"]] == [(50.0, None), (100.0, None), (100.0, 0.0)]
    assert all(os.path.isfile(p) for p in main["evaluation_files"]) and any("/wise/" in p for p in main["evaluation_files"])
    side = cells["zs-init-ldifs", 1.0]
    assert [(r["percent"], r.get("alpha")) for r in side["records"]] == [(100.0, None)]
    assert side["records"][0].get("param_distance") is None  # scored at its end only, without distances
    side_run = out / "cells" / "zs-init-ldifs" / "lambda-1" / "world-digit" / "seed-1" / "run"
    assert not list(side_run.glob("checkpoint-*")) and (side_run / "model.safetensors").is_file()
    # One point per run is no curve: those evaluations write their tables and CSVs but draw nothing.
    main_eval = out / "cells" / "zs-init-ldifs" / "lambda-10" / "world-digit" / "seed-1" / "evaluation"
    assert (main_eval / "deltas_over_training.png").is_file() and (main_eval / "wise" / "frontier.csv").is_file()
    assert not list((main_eval / "wise").glob("*.png")) and not list((side_run.parent / "evaluation").glob("*.png"))
    assert (side_run.parent / "evaluation" / "results.md").is_file()

    # Again: every cell is done, nothing runs, the report sees the same cells.
    weights = out / "cells" / "zs-init-ce" / "world-digit" / "seed-1" / "run" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    run_study(args, report=report)
    assert seen[-1].ran == {} and weights.stat().st_mtime_ns == mtime
    assert [c["records"] for c in seen[-1].cells()] == [c["records"] for c in run.cells()]

    # Other settings: refused by name, and nothing is touched; with overwrite_output_dir every cell is redone.
    other = StudyArguments(output_dir=str(out), world_cache_dir=str(tmp_path / "cache"), **{**GRID, "lp_iterations": 11})
    with pytest.raises(ValueError, match=r"was run with other settings \(.*evaluation.lp_iterations"):
        run_study(other, report=report)
    assert weights.stat().st_mtime_ns == mtime
    redo = StudyArguments(output_dir=str(out), world_cache_dir=str(tmp_path / "cache"), overwrite_output_dir=True,
                          **{**GRID, "lp_iterations": 11})
    run_study(redo, report=report)
    assert set(seen[-1].ran) == set(seen[-1].plan.cells) and weights.stat().st_mtime_ns != mtime
    redone = json.loads((out / "cells" / "zs-init-ce" / "world-digit" / "seed-1" / "cell.json").read_text())
    assert redone["config"]["evaluation"]["lp_iterations"] == 11 and redone["config"]["finetune"]["lp_iterations"] == 11
    # The redone study is an ordinary one: a rerun without the flag keeps every cell.
    run_study(StudyArguments(output_dir=str(out), world_cache_dir=str(tmp_path / "cache"), **{**GRID, "lp_iterations": 11}), report=report)
    assert seen[-1].ran == {}


def test_the_plan_counts_what_each_frontier_scores(tmp_path):
    grid = dict(output_dir=str(tmp_path / "study"), methods="zs-init-ce,lp-init-ldifs", finetune_tasks="eurosat", eval_tasks="mnist,eurosat",
                seeds="0", ldifs_lambdas="1,10", wise_alphas="0,0.5,1", max_steps=10)
    # Checkpoints every 20 %: 5 per cell. Cross: the main cells (zs-init-ce, lp-init-ldifs at λ = 10) 5 + 2 α,
    # the cell at λ = 1 its end only: 15 models on 2 tasks. Full: each of the 3 cells' 5 checkpoints at 3 α.
    for frontier, evaluations in (("cross", 30), ("full", 90)):
        args = StudyArguments(frontier=frontier, **grid)
        text = describe_plan(args, plan_study(args))
        assert f"; {evaluations} evaluations (checkpoint x eval task" in text, text
    assert not (tmp_path / "study").exists()  # planning writes nothing


def test_the_demo_is_this_study():
    from ldifs_hf.study.demo import DemoArguments

    demo = DemoArguments(output_dir="runs/demo-x", seeds="0,1")
    study = demo.study_arguments()  # the first world's
    assert (study.world, study.world_seed, study.finetune_tasks, study.eval_tasks, study.seeds) == ("default", 0, "world-digit", "all", "0,1")
    assert (study.frontier, study.eval_seed, study.max_steps, study.checkpoint_every_percent) == ("cross", -1, 100, 20.0)
    assert (study.output_dir, study.distances, study.eval_validation, study.cell_plots, study.workers) == ("runs/demo-x/world-0", True, True, False, 2)
    # The other world keeps only its runs' final models, without distances.
    other = demo.study_arguments(1)
    assert (other.output_dir, other.world_seed, other.checkpoint_every_percent, other.distances) == ("runs/demo-x/world-1", 1, 0.0, False)
    # The main λ (each regularizer's default) first, then the sweep's others; only the LP-init methods are swept.
    assert (study.lambdas, study.wise_alphas) == (["l2sp=0.5,0.05,5.0", "ldifs=10.0,1.0,100.0", "kl=1.0,0.1,10.0"], "0,0.5,1")
    assert study.methods.split(",")[-1] == "lp-init-kl" and len(study.method_names()) == 9
    assert study.swept_methods() == ["lp-init-l2sp", "lp-init-ldifs", "lp-init-kl"]
    assert study.finetune_options == {"learning_rate": 1e-3, "per_device_train_batch_size": 32, "warmup_steps": 0,
                                      "logging_steps": 20, "save_only_model": True, "max_eval_samples": 1000}
    # Each unit draws its own 1000 test images and 500 probe images from the world's pools.
    assert (study.eval_max_train_samples, study.eval_max_eval_samples, study.eval_num_workers, study.lp_iterations) == (500, 1000, 0, 1000)
    assert (study.main_lambda("ldifs"), study.main_lambda("l2sp"), study.main_lambda("kl")) == (10.0, 0.5, 1.0)
    assert StudyArguments is type(study) and len(study_cells(study)) == 9 * 2 + 3 * 2 * 2  # 9 methods, 2 more λ for 3 methods, 2 seeds
    no_sweep = DemoArguments(lambdas=[], wise_alphas="").study_arguments()
    assert (no_sweep.lambdas, no_sweep.wise_alphas, no_sweep.swept_methods()) == ([], None, [])
