"""Refusals of the study's presets' settings found in review: a cross frontier whose main λ is no cell of
a swept method, a negative world seed, a done cell's refusal that names every differing setting, a λ list or method
name no cell would use, options an end-only cell cannot take, and what the plan and manifest say."""

import json

import pytest

from ldifs_hf.study import Cell, StudyArguments
from ldifs_hf.study.arguments import cell_config, study_cells
from ldifs_hf.study.runner import CELL_FILE, cell_status, describe_plan, plan_study, write_manifest
from conftest import one_line_error

TASKS = ["world-digit", "world-colour"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        # The default main λ (LDIFS 10, L2SP 0.5) outside the list: the swept methods would have no main cell.
        (dict(methods="lp-init-ldifs", ldifs_lambdas="1,100"), r"main ldifs_lambda=10 .*which --ldifs_lambdas '1,100' lacks"),
        (dict(methods="zs-init-l2sp", l2sp_lambdas="0.05,5"), r"main l2sp_lambda=0.5 .*which --l2sp_lambdas '0.05,5' lacks"),
        # A method left unswept uses the options' λ, but the swept one still has no cell at it.
        (dict(methods="zs-init-ldifs,lp-init-ldifs", ldifs_lambdas="1,10", lambda_sweep_methods="lp-init-ldifs",
              finetune_options='{"ldifs_lambda": 3}'), r"main ldifs_lambda=3 .*which --ldifs_lambdas '1,10' lacks"),
    ],
)
def test_a_cross_frontier_needs_its_main_lambda_among_the_swept_weights(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StudyArguments(finetune_tasks="eurosat", frontier="cross", **kwargs)


def test_the_main_lambda_is_not_needed_where_nothing_crosses():
    # The full frontier has no main λ (a study whose list sweeps no method at all is refused: see below).
    assert StudyArguments(methods="lp-init-ldifs", finetune_tasks="eurosat", ldifs_lambdas="1,100").swept_methods() == ["lp-init-ldifs"]
    crossing = StudyArguments(methods="lp-init-ldifs", finetune_tasks="eurosat", ldifs_lambdas="1,100", frontier="cross",
                              finetune_options='{"ldifs_lambda": 100}')
    assert crossing.main_lambda("ldifs") == 100.0


def test_cli_refuses_a_cross_frontier_without_its_main_lambda_and_a_negative_world_seed(tmp_path, capsys):
    out = tmp_path / "study"
    base = ["study", "--output_dir", str(out), "--methods", "lp-init-ldifs", "--finetune_tasks", "world-digit", "--world", "quick",
            "--world_cache_dir", str(tmp_path / "cache")]
    one_line_error(capsys, base + ["--frontier", "cross", "--ldifs_lambdas", "1,100"], "which --ldifs_lambdas '1,100' lacks")
    # Refused before the world is pre-trained (numpy's own words came from inside it, naming nothing).
    one_line_error(capsys, base + ["--world_seed", "-1"], "world_seed must be >= 0, got -1")
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_a_done_cell_refusal_names_a_setting_only_the_saved_cell_has(tmp_path):
    """A cross cell scored at other α, asked for again without --wise_alphas: the saved cell has a
    wise_evaluation that the settings lack; the refusal names it (it said "()") and offers the redo."""
    with_alphas = StudyArguments(methods="zs-init-ce", finetune_tasks="eurosat", wise_alphas="0,1", frontier="cross")
    without = StudyArguments(methods="zs-init-ce", finetune_tasks="eurosat", frontier="cross")
    cell = Cell("zs-init-ce", ("eurosat",), 0)
    saved = cell_config(with_alphas, cell, TASKS)
    cell_dir = tmp_path / "cell"
    cell_dir.mkdir()
    (cell_dir / CELL_FILE).write_text(json.dumps({"config": saved, "run_dirs": [], "evaluation_files": []}))
    with pytest.raises(ValueError, match=r"other settings \(frontier, wise_evaluation\); .*--overwrite_output_dir to redo every cell"):
        cell_status(str(cell_dir), cell_config(without, cell, TASKS))
    # Both kinds at once: the evaluation's settings and the top-level ones are all named.
    full = StudyArguments(methods="zs-init-ce", finetune_tasks="eurosat", wise_alphas="0,1")
    with pytest.raises(ValueError, match=r"other settings \(evaluation.wise_alphas, frontier, wise_evaluation\)"):
        cell_status(str(cell_dir), cell_config(full, cell, TASKS))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        # A λ list that no cell would use: refused, not ignored.
        (dict(methods="zs-init-ce", ldifs_lambdas="1,10"), r"--ldifs_lambdas '1,10' sweeps no cell: no LDIFS method the study runs \(zs-init-ce\)"),
        (dict(methods="zs-init-ldifs,lp-init-ldifs", ldifs_lambdas="1,10", lambda_sweep_methods=""), r"lambda_sweep_methods ''"),
        (dict(methods="lp-init-ldifs,zs-init-l2sp", l2sp_lambdas="0.5,5", lambda_sweep_methods="lp-init-ldifs,lp-init-l2sp"), r"--l2sp_lambdas '0.5,5' sweeps no cell"),
        (dict(methods="zs-init-ce,lp-init-ce,ZS-init-CE"), r"methods names 'zs-init-ce' more than once"),
        # Options the main cells accept but the cross frontier's end-only cells (no checkpoints) cannot take.
        (dict(methods="lp-init-ldifs", ldifs_lambdas="1,10", frontier="cross",
              finetune_options='{"load_best_model_at_end": true, "eval_strategy": "steps", "eval_steps": 0.2}'),
         r"refused for the cells scored at their end only \(method lp-init-ldifs, λ = 1: .*save and eval strategy to match"),
    ],
)
def test_what_no_cell_would_use_or_an_end_only_cell_cannot_take_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StudyArguments(finetune_tasks="eurosat", **kwargs)


def test_the_same_options_pass_where_every_cell_keeps_its_checkpoints():
    StudyArguments(methods="lp-init-ldifs", finetune_tasks="eurosat", ldifs_lambdas="1,10",
                   finetune_options='{"load_best_model_at_end": true, "eval_strategy": "steps", "eval_steps": 0.2}')


def test_the_demo_passes_a_lambda_list_only_where_it_sweeps():
    from ldifs_hf.study.demo import DemoArguments

    study = DemoArguments(methods="zs-init-ce,lp-init-ldifs").study_arguments()  # no L2SP or KL method run: no list of theirs
    assert study.lambdas == ["ldifs=10.0,1.0,100.0"]
    assert DemoArguments(methods="zs-init-ce").study_arguments().lambdas == []


def test_a_cell_the_cross_frontier_does_not_change_is_the_full_frontiers_cell():
    grid = dict(methods="zs-init-ce,lp-init-ldifs", finetune_tasks="eurosat", seeds="0", ldifs_lambdas="1,10")
    full, cross = StudyArguments(**grid), StudyArguments(frontier="cross", **grid)
    configs = {f: {(c.method, c.lam): cell_config(a, c, ["mnist"]) for c in study_cells(a)} for f, a in (("full", full), ("cross", cross))}
    # Without α: the CE cell and the main λ's cell are the same cells (a study can switch); the λ = 1 cell is not.
    assert configs["full"]["zs-init-ce", None] == configs["cross"]["zs-init-ce", None]
    assert configs["full"]["lp-init-ldifs", 10.0] == configs["cross"]["lp-init-ldifs", 10.0]
    assert configs["cross"]["lp-init-ldifs", 1.0]["frontier"] == "cross" and "frontier" not in configs["full"]["lp-init-ldifs", 1.0]


def test_the_plan_counts_every_save_and_the_end_and_the_manifest_leaves_out_how_it_ran(tmp_path):
    args = StudyArguments(output_dir=str(tmp_path / "s"), methods="zs-init-ce", finetune_tasks="eurosat", eval_tasks="mnist",
                          seeds="0", max_steps=10, checkpoint_every_percent=30, overwrite_output_dir=True)
    plan = plan_study(args)
    # Saves at 30, 60 and 90 % and the end: 4 models scored on 1 task.
    assert "; 4 evaluations (checkpoint x eval task" in describe_plan(args, plan) and plan.status[plan.cells[0]] == "redo"
    manifest = json.loads(open(write_manifest(args, plan)).read())
    assert "overwrite_output_dir" not in manifest["study"] and manifest["study"]["checkpoint_every_percent"] == 30
