"""A scaled-down run of the embedded demo: world pre-training, fine-tuning, evaluation, table, plots."""

import json
import os
import sys

import pytest
from PIL import Image

from transformers import HfArgumentParser

from ldifs_hf.world.demo import DemoArguments, run_demo


def _demo(argv):
    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses(args=argv)
    return run_demo(args)


@pytest.mark.slow
def test_quick_demo_writes_table_plots_and_reuses_the_cache(tmp_path, capsys):
    argv = ["--quick", "--output_dir", str(tmp_path / "demo"), "--cache_dir", str(tmp_path / "cache"),
            "--methods", "zs-init-ce,lp-init-ldifs", "--max_steps", "2", "--lp_iterations", "20"]
    result = _demo(argv)
    printed = capsys.readouterr().out
    assert "| fine-tune task | eval task |" in printed and "zs-init-ce" in printed and "lp-init-ldifs" in printed
    assert {r["method"] for r in result.records} == {"zs-init-ce", "lp-init-ldifs"}
    assert set(result.pretrained_accuracy) == {"world-digit", "world-colour", "world-texture", "world-position"}
    out = tmp_path / "demo"
    for name in ("results.json", "results.csv", "results.md", "timings.json"):
        assert (out / name).stat().st_size > 0
    for png in ("delta_lp_over_training.png", "distances_over_training.png"):
        with Image.open(out / png) as image:
            assert image.format == "PNG" and image.size[0] > 200
    saved = json.loads((out / "results.json").read_text())
    # Each run's 0 % point is the pretrained model itself (Δ = 0), then its scored final checkpoint.
    assert sorted(r["percent"] for r in saved["records"]) == [0.0, 0.0, 100.0, 100.0]
    start = [r for r in saved["records"] if r["percent"] == 0.0]
    assert all(v["delta_lp"] == 0.0 and v["delta_zs"] == 0.0 for r in start for v in r["eval"].values())

    # Same settings again: the pre-trained world comes from the cache, and the finished runs are reused.
    weights = out / "runs" / "zs-init-ce" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    again = _demo(argv)
    assert weights.stat().st_mtime_ns == mtime
    assert again.timings["pretrain_or_load_s"] < result.timings["pretrain_or_load_s"]
    assert again.table == result.table
    redone = _demo(argv + ["--overwrite_output_dir"])
    assert weights.stat().st_mtime_ns != mtime
    assert redone.pretrained_accuracy == result.pretrained_accuracy  # deterministic for a seed
    assert redone.table == result.table


def test_demo_rejects_unknown_methods_and_tasks(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'ft-magic'"):
        _demo(["--methods", "ft-magic", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="'world-smell' is not a world task; choose one of world-digit"):
        _demo(["--finetune_task", "world-smell", "--output_dir", str(tmp_path)])


def test_world_tasks_resolve_by_name_in_a_fresh_process(tmp_path):
    import subprocess

    code = "from ldifs_hf.benchmarks import get_benchmark; s = get_benchmark('world-texture'); print(s.name, s.num_classes)"
    env = {**os.environ, "LDIFS_HF_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["world-texture", "5"]
