"""Refusals of the study's presets' settings found in review: a cross frontier whose main λ is no cell of
a swept method, a negative world seed, and a done cell's refusal that names every differing setting."""

import json

import pytest

from ldifs_hf.study import Cell, StudyArguments
from ldifs_hf.study.runner import CELL_FILE, cell_config, cell_status
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
    # The full frontier has no main λ; a study that sweeps no method of that regularizer has no crossing.
    assert StudyArguments(methods="lp-init-ldifs", finetune_tasks="eurosat", ldifs_lambdas="1,100").swept_methods() == ["lp-init-ldifs"]
    args = StudyArguments(methods="zs-init-ce", finetune_tasks="eurosat", ldifs_lambdas="1,100", frontier="cross")
    assert args.swept_methods() == []
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
    with pytest.raises(ValueError, match=r"other settings \(wise_evaluation\); .*--overwrite_output_dir to redo every cell"):
        cell_status(str(cell_dir), cell_config(without, cell, TASKS))
    # Both kinds at once: the evaluation's settings and the top-level ones are all named.
    full = StudyArguments(methods="zs-init-ce", finetune_tasks="eurosat", wise_alphas="0,1")
    with pytest.raises(ValueError, match=r"other settings \(evaluation.wise_alphas, frontier, wise_evaluation\)"):
        cell_status(str(cell_dir), cell_config(full, cell, TASKS))
