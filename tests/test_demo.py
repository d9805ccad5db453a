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
    argv = ["--quick", "--output_dir", str(tmp_path / "demo"), "--cache_dir", str(tmp_path / "cache"), "--seeds", "0", "--world_seeds", "0,1",
            "--methods", "zs-init-ce,lp-init-ce,lp-init-ldifs", "--max_steps", "5", "--lp_iterations", "20",
            "--lambdas", "ldifs=1,10", "--wise_alphas", "0,0.5,1", "--workers", "2"]
    result = _demo(argv)
    captured = capsys.readouterr()
    printed = captured.out
    # The console has the phases, one line per run and the tables; each run's own log is in its folder.
    console = (printed + captured.err).split("\n")  # lines as a terminal shows them: a bar redraws its own with "\r"
    # Per world, one line per cell of its study: three runs and one λ-sweep run (lp-init-ldifs at λ = 1).
    assert len(console) <= 100 and sum("seed 0: " in line for line in console) == 2 * 4, console
    assert "train_runtime" not in printed + captured.err and "torchvision" not in printed + captured.err
    out = tmp_path / "demo"
    cells = {w: out / f"world-{w}" / "cells" for w in (0, 1)}
    assert "train_runtime" in (cells[0] / "zs-init-ce" / "world-digit" / "seed-0" / "output.log").read_text()
    assert "| eval task | lp-init-ce | lp-init-ldifs | zs-init-ce |" in printed and "over the 2 units (world 0 seed 0 … world 1 seed 0)" in printed
    assert {r["method"] for r in result.records} == {"zs-init-ce", "lp-init-ce", "lp-init-ldifs"}
    units = {(r["world"], r["seed"]) for r in result.records}
    assert units == {(0, 0), (1, 0)} and set(result.pretrained_accuracy) == {f"world {w} seed {s}" for w, s in units}
    assert set(result.pretrained_accuracy["world 1 seed 0"]) == {"world-digit", "world-colour", "world-texture", "world-position"}
    for name in ("results.json", "results.md", "summary.json", "timings.json", "claims.json", "world-0/seed-0/results.md", "world-1/seed-0/results.csv"):
        assert (out / name).stat().st_size > 0, name
    for png in ("deltas_over_training.png", "distances_over_training.png", "tradeoff.png", "frontier.png", "world-0/seed-0/deltas_over_training.png"):
        with Image.open(out / png) as image:
            assert image.format == "PNG" and image.size[0] > 200
    saved = json.loads((out / "results.json").read_text())
    # Per unit and method: the 0 % point (the pretrained model, Δ = 0), then a checkpoint every 20 % in the first world, the end in the other.
    percents = {w: sorted(r["percent"] for r in saved["records"] if (r["world"], r["seed"]) == (w, 0) and r["method"] == "zs-init-ce") for w in (0, 1)}
    assert percents == {0: [0.0, 20.0, 40.0, 60.0, 80.0, 100.0], 1: [0.0, 100.0]}
    start = [r for r in saved["records"] if r["percent"] == 0.0]
    assert all(v["delta_lp"] == 0.0 and v["delta_zs"] == 0.0 for r in start for v in r["eval"].values())
    # Every final model was also scored on the validation splits (what λ and α are chosen on).
    assert all("validation" in r for r in saved["records"] + saved["sweep_records"] if r["percent"] == 100.0)
    # The summary is each unit's final record, units in order.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["units"] == ["world 0 seed 0", "world 1 seed 0"]
    finals = {(r["world"], r["seed"]): r for r in saved["records"] if r["method"] == "zs-init-ce" and r["percent"] == 100.0}
    order = [(0, 0), (1, 0)]
    assert summary["methods"]["zs-init-ce"]["a_ft"] == [finals[u]["a_ft"] for u in order]
    assert summary["methods"]["zs-init-ce"]["eval"]["world-colour"]["delta_zs"] == [finals[u]["eval"]["world-colour"]["delta_zs"] for u in order]

    # The frontier: every run's final model at α = 0, 0.5 (the WiSE-FT sweep) and 1 (the run), and the λ sweep's run at α = 1.
    with open(out / "frontier.csv") as f:
        rows = {(r["method"], r["lambda"], r["alpha"]): r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted([("zs-init-ce", "", a) for a in ("0.0", "0.5", "1.0")] + [("lp-init-ce", "", a) for a in ("0.0", "0.5", "1.0")]
                                  + [("lp-init-ldifs", "10.0", a) for a in ("0.0", "0.5", "1.0")] + [("lp-init-ldifs", "1.0", "1.0")])
    assert all(r["units"] == "2" for r in rows.values())
    # At α = 0 a ZS-init run is the pretrained model with its zero-shot head: no forgetting, exactly.
    assert float(rows["zs-init-ce", "", "0.0"]["delta_zs_mean"]) == 0.0 and float(rows["zs-init-ce", "", "0.0"]["delta_lp_mean"]) == 0.0
    # α = 1 is the run's final model as the main evaluation scored it.
    a_ft = summary["methods"]["lp-init-ldifs"]["a_ft"]
    assert float(rows["lp-init-ldifs", "10.0", "1.0"]["a_ft_mean"]) == pytest.approx(sum(a_ft) / 2)
    # One point per method is chosen on validation.
    assert sum(r["chosen"] == "True" for r in rows.values()) == 3
    # The demo is one study per world: its manifest lists the cells, the main λ's with checkpoints in the first world only.
    for w in (0, 1):
        manifest = json.loads((out / f"world-{w}" / "study.json").read_text())
        assert {(c["method"], c.get("lambda"), c["seed"], c["status"]) for c in manifest["cells"]} == {
            (m, lam, 0, "done") for m, lam in (("zs-init-ce", None), ("lp-init-ce", None), ("lp-init-ldifs", 10.0), ("lp-init-ldifs", 1.0))}
    assert len(list((cells[0] / "lp-init-ldifs" / "lambda-10" / "world-digit" / "seed-0" / "run").glob("checkpoint-*"))) == 5
    assert not list((cells[1] / "lp-init-ldifs" / "lambda-10" / "world-digit" / "seed-0" / "run").glob("checkpoint-*"))
    assert not list((cells[0] / "lp-init-ldifs" / "lambda-1" / "world-digit" / "seed-0" / "run").glob("checkpoint-*"))  # the λ sweep: final model only
    sweep = {(r["world"], r["seed"], r.get("alpha")) for r in saved["sweep_records"] if r["method"] == "lp-init-ldifs" and r["lambda"] == 1.0}
    assert sweep == {(w, s, None) for w, s in order}
    # The claims: each paired over the two units, recomputed here from the per-unit records.
    finals = {(r["method"], r["world"], r["seed"]): r for r in saved["records"] if r["percent"] == 100.0}
    others = ("world-colour", "world-texture", "world-position")
    diffs = [sum(finals["lp-init-ldifs", w, s]["eval"][n]["delta_lp"] - finals["lp-init-ce", w, s]["eval"][n]["delta_lp"] for n in others) / 3
             for w, s in order]
    (claim,) = [c for c in result.claims if c.metric == "delta_lp" and c.a == "lp-init-ldifs (λ = 10)" and c.b == "lp-init-ce"]
    assert claim.differences == pytest.approx(diffs) and claim.units == summary["units"]
    assert [(c.a, c.b, c.metric) for c in result.claims][:3] == [("lp-init-ldifs (λ = 10)", "lp-init-ce", m) for m in ("delta_lp", "delta_zs", "a_ft")]
    assert ("lp-init-ldifs (chosen on validation)", "lp-init-ce (chosen on validation)", "a_ft") in [(c.a, c.b, c.metric) for c in result.claims]
    assert result.claims_text in printed and result.claims_text in (out / "results.md").read_text()
    document = json.loads((out / "claims.json").read_text())
    assert [c["sentence"] for c in document["claims"]] == [line[2:] for line in result.claims_text.splitlines() if line.startswith("- ")]
    assert {c["method"] for c in document["choices"]} == {"zs-init-ce", "lp-init-ce", "lp-init-ldifs"}
    assert len(document["noise_sources_covered"]) == 4 and document["units"] == summary["units"]

    # Same settings again: the pre-trained worlds come from the cache, and the finished runs are reused.
    weights = cells[0] / "zs-init-ce" / "world-digit" / "seed-0" / "run" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    again = _demo(argv)
    assert weights.stat().st_mtime_ns == mtime
    assert again.table == result.table and again.claims_text == result.claims_text
    redone = _demo(argv + ["--overwrite_output_dir", "--workers", "1"])  # in this process, one cell after another: the same numbers
    assert weights.stat().st_mtime_ns != mtime
    assert redone.pretrained_accuracy == result.pretrained_accuracy  # deterministic for a seed
    assert redone.table == result.table and redone.claims_text == result.claims_text


def test_summary_table_is_mean_and_std_over_units():
    from ldifs_hf.study.demo import summarise, summary_table

    def record(world, seed, method, a_ft, colour, texture):
        return {"world": world, "seed": seed, "method": method, "finetune_task": "world-digit", "percent": 100.0, "step": 10, "a_ft": a_ft,
                "eval": {"world-digit": {"delta_zs": 0.1, "delta_lp": 0.2}, "world-colour": {"delta_zs": colour, "delta_lp": 0.0},
                         "world-texture": {"delta_zs": texture, "delta_lp": -0.02}}}

    records = [record(1, 0, "ce", 0.60, -0.30, -0.40), record(0, 0, "ce", 0.50, -0.10, -0.20)]
    summary = summarise(records, "world-digit")
    assert summary["units"] == ["world 0 seed 0", "world 1 seed 0"]
    assert summary["methods"]["ce"]["mean_other"]["delta_zs"] == pytest.approx([-0.15, -0.35])
    lines = summary_table(summary, summary["units"]).splitlines()
    # Sample standard deviations over the two units: |a - b| / sqrt(2).
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
    with pytest.raises(ValueError, match="world_seeds must be distinct comma-separated integers"):
        _demo(["--world_seeds", "0,0", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="choice rule must be one of balanced, a_ft, got 'test'"):
        _demo(["--choice_rule", "test", "--output_dir", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


def test_world_tasks_resolve_by_name_in_a_fresh_process(tmp_path):
    import subprocess

    code = "from ldifs_hf.benchmarks import get_benchmark; s = get_benchmark('world-texture'); print(s.name, s.num_classes)"
    env = {**os.environ, "LDIFS_HF_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["world-texture", "5"]
