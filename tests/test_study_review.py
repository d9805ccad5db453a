"""Refusals of the study's presets' settings found in review: a cross frontier whose main λ is no cell of
a swept method, and a negative world seed."""

import pytest

from ldifs_hf.study import StudyArguments
from conftest import one_line_error


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
