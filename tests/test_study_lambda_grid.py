"""The study's λ dimension: --lambdas REGULARIZER=weights (and the earlier --ldifs_lambdas / --l2sp_lambdas) repeat
each regularised method's cells per λ (folders, cell.json, records carry λ), unregularised methods and the default
grid are unchanged, and the study writes the frontier (one point per method and λ, mean ± std over seeds)."""

import csv
import json
import os

import pytest

from ldifs_hf.study import StudyArguments, run_study
from ldifs_hf.study.arguments import cell_config, study_cells


def test_default_grid_is_unchanged_by_the_lambda_dimension():
    args = StudyArguments(methods="zs-init-ce,lp-init-ldifs,zs-init-l2sp", finetune_tasks="eurosat", seeds="0,1")
    cells = study_cells(args)
    assert [(c.method, c.lam) for c in cells] == [(m, None) for m in ("zs-init-ce", "lp-init-ldifs", "zs-init-l2sp") for _ in (0, 1)]
    assert cells[2].folder == os.path.join("cells", "lp-init-ldifs", "eurosat", "seed-0")  # today's folder: old studies resume
    config = cell_config(args, cells[2], ["mnist"])
    assert "lambda" not in config and "ldifs_lambda" not in config["finetune"] and "wise_alphas" not in config["evaluation"]
    assert StudyArguments(wise_alphas="0,0.5,1").wise_alphas == "0,0.5,1"


def test_lambda_lists_repeat_only_the_regularised_methods_cells():
    args = StudyArguments(methods="zs-init-ce,lp-init-ldifs,zs-init-l2sp", finetune_tasks="eurosat", seeds="0",
                          ldifs_lambdas="1,10,100", l2sp_lambdas="0.05,0.5")
    cells = study_cells(args)
    assert [(c.method, c.lam) for c in cells] == [
        ("zs-init-ce", None), ("lp-init-ldifs", 1.0), ("lp-init-ldifs", 10.0), ("lp-init-ldifs", 100.0),
        ("zs-init-l2sp", 0.05), ("zs-init-l2sp", 0.5),
    ]
    assert cells[0].folder == os.path.join("cells", "zs-init-ce", "eurosat", "seed-0")
    assert cells[1].folder == os.path.join("cells", "lp-init-ldifs", "lambda-1", "eurosat", "seed-0")
    assert cells[4].folder == os.path.join("cells", "zs-init-l2sp", "lambda-0.05", "eurosat", "seed-0")
    ldifs = cell_config(args, cells[3], ["mnist"])
    assert ldifs["lambda"] == 100.0 and ldifs["finetune"]["ldifs_lambda"] == 100.0 and "l2sp_lambda" not in ldifs["finetune"]
    l2sp = cell_config(args, cells[5], ["mnist"])
    assert l2sp["finetune"]["l2sp_lambda"] == 0.5 and "ldifs_lambda" not in l2sp["finetune"]
    assert "lambda" not in cell_config(args, cells[0], ["mnist"])
    # The same grid through --lambdas, keyed by regularizer, with KL beside them.
    keyed = StudyArguments(methods="zs-init-ce,lp-init-ldifs,zs-init-l2sp,lp-init-kl", finetune_tasks="eurosat", seeds="0",
                           lambdas=["ldifs=1,10,100", "l2sp=0.05,0.5", "kl=0.1,1"])
    assert [(c.method, c.lam) for c in study_cells(keyed)] == [(c.method, c.lam) for c in cells] + [("lp-init-kl", 0.1), ("lp-init-kl", 1.0)]
    assert [cell_config(keyed, c, ["mnist"]) for c in study_cells(keyed)[:6]] == [cell_config(args, c, ["mnist"]) for c in cells]
    kl = cell_config(keyed, study_cells(keyed)[6], ["mnist"])
    assert kl["lambda"] == 0.1 and kl["finetune"]["kl_lambda"] == 0.1 and kl["finetune"]["method"] == "lp-init-kl"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ldifs_lambdas="1,x"), r"ldifs_lambdas must be distinct comma-separated numbers >= 0 .*got '1,x'"),
        (dict(l2sp_lambdas="-1"), r"l2sp_lambdas must be distinct comma-separated numbers >= 0 .*got '-1'"),
        (dict(ldifs_lambdas="10,10.0"), r"ldifs_lambdas must be distinct"),
        (dict(ldifs_lambdas=""), r"ldifs_lambdas must be distinct comma-separated numbers >= 0 .*got ''"),
        (dict(ldifs_lambdas="nan"), r"ldifs_lambdas must be"),
        (dict(wise_alphas="0,2"), r"wise_alphas"),
        # The fine-tuning arguments' λ is then the weight of no cell: every LDIFS method is swept, and not in the cross.
        (dict(ldifs_lambdas="1,10", finetune_options='{"ldifs_lambda": 3}'), r"finetune_options sets ldifs_lambda=3, which no cell uses"),
        (dict(ldifs_lambdas="1,10", finetune_options='{"ldifs_lambda": 10}'), r"finetune_options sets ldifs_lambda=10, which no cell uses"),
        (dict(ldifs_lambdas="1,10", frontier="cross", finetune_options='{"ldifs_lambda": 3}'), r"ldifs_lambda=3, which no cell uses"),
        (dict(lambda_sweep_methods="zs-init-ce"), r"lambda_sweep_methods \['zs-init-ce'\] have no regularizer weight to sweep"),
        (dict(lambdas=["kl=0.1,x"]), r"--lambdas kl= must be distinct comma-separated numbers >= 0 .*got '0.1,x'"),
        (dict(lambdas=["kl"]), r"--lambdas entries are REGULARIZER=weights \(e.g. ldifs=1,10,100\), got 'kl'"),
        (dict(lambdas=["l3=1"]), r"unknown regularizer 'l3'"),
        (dict(lambdas=["none=1"]), r"--lambdas 'none=1': regularizer 'none' has no weight to sweep"),
        (dict(lambdas=["ldifs=1,10"], ldifs_lambdas="1"), r"--ldifs_lambdas 'ldifs=1': the weights of ldifs are given twice"),
        (dict(methods="lp-init-ldifs", lambdas=["kl=1,10"]), r"--lambdas kl=1,10 sweeps no cell: no KL method the study runs"),
        (dict(methods="lp-init-kl", lambdas=["kl=1,10"], finetune_options='{"kl_lambda": 3}'), r"finetune_options sets kl_lambda=3, which no cell uses"),
        (dict(lambda_sweep_methods="zs-init-magic"), r"unknown method 'zs-init-magic'"),
        (dict(frontier="diagonal"), r"frontier must be one of full, cross, got 'diagonal'"),
        (dict(eval_seed=-2), r"eval_seed must be >= 0, or -1 for each cell's own seed, got -2"),
    ],
)
def test_bad_lambda_lists_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StudyArguments(**kwargs)


GRID = dict(
    methods="zs-init-ce,lp-init-ldifs", finetune_tasks="world-digit", eval_tasks="all", seeds="0,1",
    world="quick", max_steps=2, checkpoint_every_percent=0, lp_iterations=20, eval_max_train_samples=64, eval_num_workers=0,
    finetune_options={"per_device_train_batch_size": 16, "warmup_steps": 0, "learning_rate": 1e-3, "use_cpu": True},
)


@pytest.mark.slow
def test_world_study_with_lambda_and_alpha_grids_writes_cells_records_and_the_frontier(tmp_path):
    out = tmp_path / "study"
    result = run_study(StudyArguments(output_dir=str(out), world_cache_dir=str(tmp_path / "cache"), ldifs_lambdas="1,100", wise_alphas="0,1", **GRID))
    assert len(result.plan.cells) == 6 and all(s == "done" for s in result.plan.status.values())
    manifest = json.loads((out / "study.json").read_text())
    assert sorted((c["method"], c.get("lambda")) for c in manifest["cells"]) == sorted(
        [("zs-init-ce", None)] * 2 + [("lp-init-ldifs", 1.0)] * 2 + [("lp-init-ldifs", 100.0)] * 2)
    cell = json.loads((out / "cells" / "lp-init-ldifs" / "lambda-100" / "world-digit" / "seed-1" / "cell.json").read_text())
    assert cell["config"]["lambda"] == 100.0 and cell["config"]["finetune"]["ldifs_lambda"] == 100.0 and cell["config"]["evaluation"]["wise_alphas"] == "0,1"
    assert cell["records"] and all(r["lambda"] == 100.0 and r["seed"] == 1 for r in cell["records"])
    assert sorted(r["alpha"] for r in cell["records"]) == [0.0, 1.0]
    run = json.loads((out / "cells" / "lp-init-ldifs" / "lambda-100" / "world-digit" / "seed-1" / "run" / "ldifs_run.json").read_text())
    assert run["regularizer_settings"]["ldifs_lambda"] == 100.0 and run["regularizer_weight"] == 100.0
    plain = json.loads((out / "cells" / "zs-init-ce" / "world-digit" / "seed-0" / "cell.json").read_text())
    assert all(r["lambda"] is None for r in plain["records"])
    # Table 3 has a column per λ and α; the frontier a point per (method, λ, α), over both seeds.
    assert "| lp-init-ldifs@λ=100@α=0 | lp-init-ldifs@λ=100@α=1 | lp-init-ldifs@λ=1@α=0 | lp-init-ldifs@λ=1@α=1 | zs-init-ce@α=0 |" in result.tables.table3
    with open(out / "frontier.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["lambda"], r["alpha"], r["units"]) for r in rows] == [
        ("lp-init-ldifs", "1.0", "0.0", "2"), ("lp-init-ldifs", "1.0", "1.0", "2"), ("lp-init-ldifs", "100.0", "0.0", "2"),
        ("lp-init-ldifs", "100.0", "1.0", "2"), ("zs-init-ce", "", "0.0", "2"), ("zs-init-ce", "", "1.0", "2")]
    finals = {s: [r for r in json.loads((out / "cells" / "lp-init-ldifs" / "lambda-1" / "world-digit" / f"seed-{s}" / "cell.json").read_text())["records"]
                  if r["alpha"] == 1.0][0] for s in (0, 1)}
    assert float(rows[1]["a_ft_mean"]) == pytest.approx((finals[0]["a_ft"] + finals[1]["a_ft"]) / 2)
    # At α = 0 a ZS-init run is the pretrained model with its zero-shot head: no forgetting, exactly.
    assert float(rows[4]["delta_zs_mean"]) == 0.0 and float(rows[4]["delta_lp_mean"]) == 0.0
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.tables.paths["frontier_csv"] == str(out / "frontier.csv")
    # The study's claims (the generic rule: no two of its methods differ only in the regularizer, so none) and its
    # choices on the tasks' validation splits when the cells score them (not asked here: none).
    claims = json.loads((out / "claims.json").read_text())
    assert claims["claims"] == [] and claims["choices"] == [] and claims["units"] == ["seed 0", "seed 1"]
