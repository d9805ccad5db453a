"""Reports (JSON, CSV, Table-3 Markdown, PNG plots) and an evaluation run end to end (`ldifs-hf evaluate`)."""

import copy
import csv
import json

import pytest
import torch
from PIL import Image
from transformers import CLIPModel, HfArgumentParser

from ldifs_hf.benchmarks import BenchmarkError
from ldifs_hf.evaluation import CheckpointError, EvaluationArguments, run_evaluation
from ldifs_hf.modeling import CLIPVisionClassifier
from ldifs_hf.evaluation.checkpoints import resolve_checkpoints
from ldifs_hf.evaluation.report import csv_rows, markdown_table, plot_deltas, plot_distances, write_report
from ldifs_hf.testing import save_benchmark_like_dataset



def _record(method, task, percent, delta, distance):
    return {
        "method": method, "finetune_task": task, "checkpoint": f"runs/{method}", "step": int(percent), "percent": percent,
        "eval": {name: {"zs_acc": 0.5, "lp_acc": 0.6, "delta_zs": delta, "delta_lp": delta / 2, "feature_distance": distance} for name in ("mnist", "cifar10", "eurosat")},
        "a_ft": 0.95, "param_distance": 10 * distance, "feature_distance": distance,
    }


RECORDS = [_record(m, "eurosat", p, -0.01 * p / 100 * (2 if m == "zs-init-ce" else 1), p / 1000) for m in ("zs-init-ce", "lp-init-ldifs") for p in (0.0, 50.0, 100.0)]


def test_markdown_table_is_shaped_like_table_3():
    text = markdown_table(RECORDS, {"mnist": {"zs": 0.5, "lp": 0.9}})
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert lines[0] == "| fine-tune task | eval task | lp-init-ldifs | zs-init-ce |"
    assert lines[2] == "| eurosat | A_FT | 95.00 | 95.00 |"
    # Final checkpoint (100 %) of each run; cells Δ_ZS / Δ_LP in percentage points.
    assert "| eurosat | mnist | -1.00 / -0.50 | -2.00 / -1.00 |" in lines
    assert "| eurosat | mean (other tasks) | -1.00 / -0.50 | -2.00 / -1.00 |" in lines
    assert "| mnist | 50.00 | 90.00 |" in lines


def test_csv_rows_one_per_checkpoint_and_eval_task():
    rows = csv_rows(RECORDS)
    assert len(rows) == len(RECORDS) * 3
    assert rows[0]["eval_task"] == "mnist" and rows[0]["delta_lp"] == RECORDS[0]["eval"]["mnist"]["delta_lp"] and rows[0]["a_ft"] == 0.95


def test_plots_are_real_pngs_with_one_panel_per_benchmark(tmp_path):
    for plot in (plot_deltas, plot_distances):
        path = plot(RECORDS, str(tmp_path / f"{plot.__name__}.png"))
        with Image.open(path) as image:
            assert image.format == "PNG"
            width, height = image.size
            assert width >= 600 and height >= 300
            assert len(set(image.convert("L").getdata())) > 10  # drawn on, not blank
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_deltas([{"method": "x", "eval": {}}], str(tmp_path / "empty.png"))


def _evaluate(argv):
    (args,) = HfArgumentParser(EvaluationArguments).parse_args_into_dataclasses(args=argv)
    return run_evaluation(args)


@pytest.fixture(scope="module")
def two_runs(tiny_clip_dir, tmp_path_factory):
    """A ZS-init classifier run fine-tuned on eurosat (final model + checkpoint-2), and a bare moved CLIPModel."""
    root = tmp_path_factory.mktemp("runs")
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    classifier = CLIPVisionClassifier.from_clip(clip, torch.randn(10, clip.config.projection_dim, generator=torch.Generator().manual_seed(0)))
    run = root / "zs_run"
    for folder, step, scale in ((run / "checkpoint-2", 2, 0.01), (run, 4, 0.03)):
        moved = copy.deepcopy(classifier)
        with torch.no_grad():
            for p in moved.vision_model.parameters():
                p.add_(scale * torch.randn(p.shape, generator=torch.Generator().manual_seed(step)))
        moved.save_pretrained(folder)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 4}))
    (run / "ldifs_run.json").write_text(json.dumps({"method": "zs-init-ce", "dataset": "eurosat", "base_model": tiny_clip_dir}))
    flyp = copy.deepcopy(clip)
    with torch.no_grad():
        flyp.visual_projection.weight.mul_(1.5).add_(0.05)
    flyp.save_pretrained(root / "flyp_run")
    data = {name: save_benchmark_like_dataset(name, root / name, num_train=20, num_test=8) for name in ("eurosat", "mnist")}
    return str(run), str(root / "flyp_run"), data


def test_resolve_checkpoints_reads_runs_and_intermediate_checkpoints(two_runs):
    run, flyp, _ = two_runs
    entries = resolve_checkpoints([run, f"flyp={flyp}"])
    assert [(e.method, e.step, e.percent, e.finetune_task) for e in entries] == [
        ("zs-init-ce", 2, 50.0, "eurosat"), ("zs-init-ce", 4, 100.0, "eurosat"), ("flyp", None, 100.0, None),
    ]
    assert [e.path for e in resolve_checkpoints([run], include_intermediate=False)] == [run]
    (hub,) = resolve_checkpoints(["lp-ft=someone/clip-finetuned"])  # loaded later, from the Hub or its cache
    assert (hub.path, hub.method, hub.percent) == ("someone/clip-finetuned", "lp-ft", 100.0)


@pytest.mark.slow
def test_run_evaluation_writes_all_four_outputs(two_runs, tmp_path):
    run, flyp, data = two_runs
    out = tmp_path / "report"
    result = _evaluate([
        "--checkpoint", run, f"flyp={flyp}", "--datasets", "eurosat,mnist",
        "--dataset_path", f"eurosat={data['eurosat']}", f"mnist={data['mnist']}",
        "--output_dir", str(out), "--lp_iterations", "50", "--feature_distance_samples", "8", "--device", "cpu", "--num_workers", "0",
    ])
    for name in ("results.json", "results.csv", "results.md", "deltas_over_training.png", "distances_over_training.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results["records"]] == ["zs-init-ce", "zs-init-ce", "flyp"]
    assert set(results["pretrained_accuracy"]) == {"eurosat", "mnist"}
    assert results["records"][1]["a_ft"] is not None and results["records"][2]["a_ft"] is None
    assert 0 < results["records"][0]["param_distance"] < results["records"][1]["param_distance"]
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 3 * 2
    table = (out / "results.md").read_text()
    assert "| fine-tune task | eval task | flyp | zs-init-ce |" in table and "| eurosat | A_FT |" in table
    with Image.open(out / "deltas_over_training.png") as image:
        assert image.format == "PNG" and image.size[0] > 600
    assert result.paths["markdown"] == str(out / "results.md")


def test_run_evaluation_bad_input_is_a_clear_error(two_runs, tmp_path):
    main = _evaluate
    run, flyp, _ = two_runs
    with pytest.raises(CheckpointError, match="does not exist"):
        main(["--checkpoint", str(tmp_path / "nope"), "--datasets", "mnist"])
    with pytest.raises(CheckpointError, match="no config.json"):
        main(["--checkpoint", str(tmp_path), "--datasets", "mnist"])
    with pytest.raises(BenchmarkError, match="Unknown benchmark 'not-a-benchmark'"):
        main(["--checkpoint", run, "--datasets", "mnist,not-a-benchmark"])
    with pytest.raises(CheckpointError, match="pass --pretrained"):
        main(["--checkpoint", flyp, "--datasets", "mnist"])
    with pytest.raises(ValueError, match="name=path"):
        main(["--checkpoint", run, "--dataset_path", "mnist"])
    with pytest.raises(ValueError, match="--checkpoint is required"):
        main(["--datasets", "mnist"])


def test_write_report_without_distances_skips_that_plot(tmp_path):
    records = [{k: v for k, v in r.items() if k != "param_distance"} for r in RECORDS]
    paths = write_report(records, str(tmp_path), plots=True)
    assert set(paths) == {"json", "csv", "markdown", "deltas_plot"}


def test_tradeoff_plot_has_one_point_per_method_with_error_bars(tmp_path):
    from ldifs_hf.evaluation.report import plot_tradeoff

    points = {"ce": {"a_ft": [0.5, 0.6], "delta_zs": [-0.1, -0.2], "delta_lp": [0.0, -0.01]},
              "ldifs": {"a_ft": [0.55, 0.57], "delta_zs": [-0.01, -0.02], "delta_lp": [0.0, 0.0]}}
    path = plot_tradeoff(points, str(tmp_path / "tradeoff.png"))
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] >= 800
        assert len(set(image.convert("L").getdata())) > 10
    with pytest.raises(ValueError, match="no methods"):
        plot_tradeoff({}, str(tmp_path / "none.png"))


def test_each_method_has_one_colour_in_every_figure():
    from ldifs_hf.evaluation.report import METHOD_COLOURS, method_colour
    from ldifs_hf.training.methods import list_methods

    built_in = {name: method_colour(name) for name in list_methods()}
    assert set(built_in) <= set(METHOD_COLOURS), "give a new built-in method its colour in METHOD_COLOURS"
    # No two methods of one kind of figure share one; an SFT method (causal LMs, never drawn beside CLIP methods)
    # takes its regularizer's CLIP colour.
    clip = {m: c for m, c in METHOD_COLOURS.items() if not m.startswith("sft")}
    sft = {m: c for m, c in METHOD_COLOURS.items() if m.startswith("sft")}
    assert len(set(clip.values())) == len(clip) and len(set(sft.values())) == len(sft)
    assert sft["sft+ldifs"] == clip["zs-init-ldifs"] and sft["sft+kl"] == clip["zs-init-kl"] and sft["sft"] == clip["zs-init-ce"]
    assert method_colour("lp-init-ldifs@α=0.5") == method_colour("lp-init-ldifs")  # an α of a method keeps its colour
    assert method_colour("my-method") == method_colour("my-method") and method_colour("my-method") not in METHOD_COLOURS.values()
