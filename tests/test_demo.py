"""A scaled-down run of the embedded demo: world pre-training, fine-tuning, evaluation, table, plots."""

import csv
import json
import os
import sys

import pytest
from PIL import Image

from transformers import HfArgumentParser

from ldifs_hf.study.demo import DemoArguments, run_demo


def _demo(argv):
    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses(args=argv)
    return run_demo(args)


@pytest.mark.slow
def test_quick_demo_writes_table_plots_and_reuses_the_cache(tmp_path, capsys):
    argv = ["--quick", "--output_dir", str(tmp_path / "demo"), "--cache_dir", str(tmp_path / "cache"), "--seeds", "0,1",
            "--methods", "zs-init-ce,lp-init-ce,lp-init-ldifs", "--max_steps", "5", "--lp_iterations", "20",
            "--lambdas", "ldifs=1,10", "--wise_alphas", "0,0.5,1"]
    result = _demo(argv)
    captured = capsys.readouterr()
    printed = captured.out
    # The console has the phases, one line per run and the tables; each run's own log is in its folder.
    console = (printed + captured.err).split("\n")  # lines as a terminal shows them: a bar redraws its own with "\r"
    # Per seed, one line per cell of the study: three runs and one λ-sweep run (lp-init-ldifs at λ = 1).
    assert len(console) <= 80 and sum("seed 1: " in line for line in console) == 4, console
    assert "train_runtime" not in printed + captured.err
    cells = tmp_path / "demo" / "cells"
    assert "train_runtime" in (cells / "zs-init-ce" / "world-digit" / "seed-0" / "output.log").read_text()
    assert "| eval task | lp-init-ce | lp-init-ldifs | zs-init-ce |" in printed and "mean ± std over seeds 0, 1" in printed
    assert {r["method"] for r in result.records} == {"zs-init-ce", "lp-init-ce", "lp-init-ldifs"} and {r["seed"] for r in result.records} == {0, 1}
    assert set(result.pretrained_accuracy) == {0, 1}
    assert set(result.pretrained_accuracy[0]) == {"world-digit", "world-colour", "world-texture", "world-position"}
    out = tmp_path / "demo"
    for name in ("results.json", "results.md", "summary.json", "timings.json", "seed-0/results.md", "seed-1/results.csv"):
        assert (out / name).stat().st_size > 0, name
    for png in ("deltas_over_training.png", "distances_over_training.png", "tradeoff.png", "frontier.png", "seed-1/deltas_over_training.png"):
        with Image.open(out / png) as image:
            assert image.format == "PNG" and image.size[0] > 200
    saved = json.loads((out / "results.json").read_text())
    # Per seed and method: the 0 % point (the pretrained model, Δ = 0), then a checkpoint every 20 %.
    percents = sorted(r["percent"] for r in saved["records"] if r["seed"] == 0 and r["method"] == "zs-init-ce")
    assert percents == [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
    start = [r for r in saved["records"] if r["percent"] == 0.0]
    assert all(v["delta_lp"] == 0.0 and v["delta_zs"] == 0.0 for r in start for v in r["eval"].values())
    # The summary is the mean over seeds of each run's final record.
    summary = json.loads((out / "summary.json").read_text())["methods"]
    finals = {r["seed"]: r for r in saved["records"] if r["method"] == "zs-init-ce" and r["percent"] == 100.0}
    assert summary["zs-init-ce"]["a_ft"] == [finals[0]["a_ft"], finals[1]["a_ft"]]
    assert summary["zs-init-ce"]["eval"]["world-colour"]["delta_zs"] == [finals[s]["eval"]["world-colour"]["delta_zs"] for s in (0, 1)]

    # The frontier: every run's final model at α = 0, 0.5 (the WiSE-FT sweep) and 1 (the run), and the λ sweep's run at α = 1.
    with open(out / "frontier.csv") as f:
        rows = {(r["method"], r["lambda"], r["alpha"]): r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted([("zs-init-ce", "", a) for a in ("0.0", "0.5", "1.0")] + [("lp-init-ce", "", a) for a in ("0.0", "0.5", "1.0")]
                                  + [("lp-init-ldifs", "10.0", a) for a in ("0.0", "0.5", "1.0")] + [("lp-init-ldifs", "1.0", "1.0")])
    assert all(r["seeds"] == "2" for r in rows.values())
    # At α = 0 a ZS-init run is the pretrained model with its zero-shot head: no forgetting, exactly.
    assert float(rows["zs-init-ce", "", "0.0"]["delta_zs_mean"]) == 0.0 and float(rows["zs-init-ce", "", "0.0"]["delta_lp_mean"]) == 0.0
    # α = 1 is the run's final model as the main evaluation scored it.
    a_ft = [summary["lp-init-ldifs"]["a_ft"][s] for s in (0, 1)]
    assert float(rows["lp-init-ldifs", "10.0", "1.0"]["a_ft_mean"]) == pytest.approx(sum(a_ft) / 2)
    # The demo is a study: its manifest lists the cells, the main λ's with checkpoints, the λ sweep's at its end only.
    manifest = json.loads((out / "study.json").read_text())
    assert {(c["method"], c.get("lambda"), c["seed"], c["status"]) for c in manifest["cells"]} == {
        (m, lam, s, "done") for s in (0, 1) for m, lam in (("zs-init-ce", None), ("lp-init-ce", None), ("lp-init-ldifs", 10.0), ("lp-init-ldifs", 1.0))}
    assert len(list((cells / "lp-init-ldifs" / "lambda-10" / "world-digit" / "seed-0" / "run").glob("checkpoint-*"))) == 5
    assert not list((cells / "lp-init-ldifs" / "lambda-1" / "world-digit" / "seed-0" / "run").glob("checkpoint-*"))  # the λ sweep: final model only
    sweep = {(r["seed"], r.get("alpha")): r for r in saved["sweep_records"] if r["method"] == "lp-init-ldifs" and r["lambda"] == 1.0}
    assert set(sweep) == {(0, None), (1, None)}
    # The claims: each paired over the two seeds, recomputed here from the per-seed records.
    finals = {(r["method"], r["seed"]): r for r in saved["records"] if r["percent"] == 100.0}
    others = ("world-colour", "world-texture", "world-position")
    diffs = [sum(finals["lp-init-ldifs", s]["eval"][n]["delta_lp"] - finals["lp-init-ce", s]["eval"][n]["delta_lp"] for n in others) / 3 for s in (0, 1)]
    (claim,) = [c for c in result.claims if c.metric == "delta_lp" and c.better == "lp-init-ldifs (λ = 10)" and c.worse == "lp-init-ce"]
    assert claim.differences == pytest.approx(diffs)
    assert [(c.better, c.worse, c.metric) for c in result.claims] == [
        ("lp-init-ldifs (λ = 10)", "lp-init-ce", "delta_lp"), ("lp-init-ldifs (λ = 10)", "lp-init-ce", "delta_zs"),
        ("lp-init-ldifs (λ = 10) at α = 0.5", "lp-init-ce at α = 0.5", "delta_lp"),
        ("lp-init-ldifs (λ = 10)", "lp-init-ce at α = 0.5", "delta_lp"), ("lp-init-ldifs (λ = 10)", "lp-init-ce at α = 0.5", "a_ft"),
    ]
    assert result.claims_text in printed and result.claims_text in (out / "results.md").read_text()
    assert f"- {claim.sentence()}." in result.claims_text and "| method | λ | α | A_FT | Δ_ZS | Δ_LP |" in printed

    # Same settings again: the pre-trained world comes from the cache, and the finished runs are reused.
    weights = cells / "zs-init-ce" / "world-digit" / "seed-0" / "run" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    again = _demo(argv)
    assert weights.stat().st_mtime_ns == mtime
    assert again.timings["pretrain_or_load_s"] < result.timings["pretrain_or_load_s"]
    assert again.table == result.table
    redone = _demo(argv + ["--overwrite_output_dir"])
    assert weights.stat().st_mtime_ns != mtime
    assert redone.pretrained_accuracy == result.pretrained_accuracy  # deterministic for a seed
    assert redone.table == result.table


def test_summary_table_is_mean_and_std_over_seeds():
    from ldifs_hf.study.demo import summarise, summary_table

    def record(seed, method, a_ft, colour, texture):
        return {"seed": seed, "method": method, "finetune_task": "world-digit", "percent": 100.0, "step": 10, "a_ft": a_ft,
                "eval": {"world-digit": {"delta_zs": 0.1, "delta_lp": 0.2}, "world-colour": {"delta_zs": colour, "delta_lp": 0.0},
                         "world-texture": {"delta_zs": texture, "delta_lp": -0.02}}}

    records = [record(0, "ce", 0.50, -0.10, -0.20), record(1, "ce", 0.60, -0.30, -0.40)]
    summary = summarise(records, "world-digit")
    assert summary["ce"]["mean_other"]["delta_zs"] == pytest.approx([-0.15, -0.35])
    lines = summary_table(summary, [0, 1]).splitlines()
    # Sample standard deviations over the two seeds: |a - b| / sqrt(2).
    assert "| A_FT (%) | 55.0 ± 7.1 |" in lines
    assert "| world-colour | -20.0 ± 14.1 / +0.0 ± 0.0 |" in lines
    assert "| mean (other tasks) | -25.0 ± 14.1 / -1.0 ± 0.0 |" in lines


def test_demo_rejects_unknown_methods_and_tasks(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'ft-magic'"):
        _demo(["--methods", "ft-magic", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="'world-smell' is not a world task; choose one of world-digit"):
        _demo(["--finetune_task", "world-smell", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match=r"lambda_sweep_methods \['zs-init-ce'\] have no regularizer weight to sweep"):
        _demo(["--lambda_sweep_methods", "zs-init-ce", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="--lambdas ldifs= must be distinct comma-separated numbers >= 0"):
        _demo(["--lambdas", "ldifs=1,-2", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="wise_alphas"):
        _demo(["--wise_alphas", "0,1.5", "--output_dir", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


def test_world_tasks_resolve_by_name_in_a_fresh_process(tmp_path):
    import subprocess

    code = "from ldifs_hf.benchmarks import get_benchmark; s = get_benchmark('world-texture'); print(s.name, s.num_classes)"
    env = {**os.environ, "LDIFS_HF_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["world-texture", "5"]
