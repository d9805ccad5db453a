"""`ldifs-hf evaluate` / `ldifs_hf.evaluate`: a user's bad input is one `error:` line (exit 2), or a
ValueError/TypeError from the library, before any model or data is loaded; nothing the user had is
overwritten. The Python API takes one checkpoint as a string and benchmarks as a list."""

import json
import shutil

import pytest
import torch

import ldifs_hf
from ldifs_hf.evaluation import EvaluationArguments
from ldifs_hf.evaluation import evaluator as evaluator_module
from ldifs_hf.evaluation import run as run_module
from ldifs_hf.records import RunRecord
from ldifs_hf.testing import save_benchmark_like_dataset
from ldifs_hf.run_folder import plan as run_folder_plan
from conftest import one_line_error


@pytest.fixture(scope="module")
def eurosat_dir(tmp_path_factory):
    return save_benchmark_like_dataset("eurosat", tmp_path_factory.mktemp("eurosat"), num_train=16, num_test=8)


@pytest.fixture
def loads(monkeypatch):
    """Every model or dataset load attempted: each is recorded and fails, so nothing gets scored."""
    calls = []

    def refuse(what):
        def load(*args, **kwargs):
            calls.append((what, args))
            raise AssertionError(f"{what} was loaded before the bad input was refused")
        return load

    monkeypatch.setattr(run_module.ConceptForgettingEvaluator, "from_pretrained", refuse("the pretrained model"))
    monkeypatch.setattr(evaluator_module, "load_checkpoint", refuse("a checkpoint"))
    monkeypatch.setattr(evaluator_module, "load_benchmark", refuse("a benchmark"))
    return calls


def _argv(tiny_clip_dir, eurosat_dir, out, *extra):
    return ["evaluate", "--checkpoint", str(tiny_clip_dir), "--pretrained", str(tiny_clip_dir), "--datasets", "eurosat",
            "--dataset_path", f"eurosat={eurosat_dir}", "--output_dir", str(out), "--lp_iterations", "5",
            "--num_workers", "0", *extra]


# -- 1. output_dir, before scoring ------------------------------------------------------------------


def test_an_output_dir_that_is_a_file_is_refused_before_loading_and_left_alone(tiny_clip_dir, eurosat_dir, tmp_path, capsys, loads):
    afile = tmp_path / "afile"
    afile.write_text("the user's notes")
    line = one_line_error(capsys, _argv(tiny_clip_dir, eurosat_dir, afile))
    assert line == f"error: output_dir '{afile}' is a file; pass a directory (created if missing) for the report"
    line = one_line_error(capsys, _argv(tiny_clip_dir, eurosat_dir, afile / "report"))
    assert "cannot be created" in line and "is a file, not a directory" in line
    assert loads == [] and afile.read_text() == "the user's notes"


def test_an_unwritable_output_dir_is_refused_before_loading(tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch, capsys, loads):
    def refuse(*args, **kwargs):  # what a read-only mount does (chmod does not stop root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(run_folder_plan.tempfile, "mkstemp", refuse)
    line = one_line_error(capsys, _argv(tiny_clip_dir, eurosat_dir, tmp_path / "ro" / "report"))
    assert "output_dir" in line and "is not writable" in line and "Permission denied" in line
    assert loads == [] and not (tmp_path / "ro").exists()


# -- 2. device --------------------------------------------------------------------------------------


def test_a_device_this_machine_lacks_or_torch_cannot_parse_is_refused_before_loading(tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch, capsys, loads):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    out = tmp_path / "report"
    line = one_line_error(capsys, _argv(tiny_clip_dir, eurosat_dir, out, "--device", "cuda"))
    assert line.startswith("error: device 'cuda': this machine has no cuda device") and "--device cpu" in line
    assert "no mps device" in one_line_error(capsys, _argv(tiny_clip_dir, eurosat_dir, out, "--device", "mps"))
    for bad in ("gpu", "cuda:x", "CUDA"):
        line = one_line_error(capsys, _argv(tiny_clip_dir, eurosat_dir, out, "--device", bad))
        assert line.startswith(f"error: device '{bad}' is not a device: use cpu, cuda, cuda:N"), line
        assert "mps" in line
    assert "cannot run an evaluation" in one_line_error(capsys, _argv(tiny_clip_dir, eurosat_dir, out, "--device", "meta"))
    assert loads == [] and not out.exists()
    # The library: the same ValueError; cpu and "unset" are accepted.
    with pytest.raises(ValueError, match="no cuda device"):
        EvaluationArguments(checkpoint=["x"], device="cuda:0")
    assert EvaluationArguments(checkpoint=["x"], device="cpu").device == "cpu"
    assert EvaluationArguments(checkpoint=["x"]).device is None


def test_a_gpu_index_past_the_machines_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert EvaluationArguments(checkpoint=["x"], device="cuda:1").device == "cuda:1"
    with pytest.raises(ValueError, match=r"device 'cuda:2': this machine has 2 cuda device\(s\), numbered from 0"):
        EvaluationArguments(checkpoint=["x"], device="cuda:2")


# -- 3. counts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, value, least", [
    ("max_train_samples", "-3", 1), ("max_eval_samples", "0", 1), ("batch_size", "0", 1), ("num_workers", "-1", 0),
    ("feature_distance_samples", "0", 1), ("lp_iterations", "0", 1),
])
def test_counts_out_of_range_are_refused_before_loading(flag, value, least, tiny_clip_dir, eurosat_dir, tmp_path, capsys, loads):
    line = one_line_error(capsys, _argv(tiny_clip_dir, eurosat_dir, tmp_path / "report", f"--{flag}", value))
    assert line.startswith(f"error: {flag} must be >= {least}, got {value}"), line
    assert loads == [] and not (tmp_path / "report").exists()


def test_no_cap_stays_allowed_and_a_cap_of_one_is_a_cap():
    args = EvaluationArguments(checkpoint=["x"], max_train_samples=None, max_eval_samples=None, num_workers=0)
    assert (args.max_train_samples, args.max_eval_samples, args.num_workers) == (None, None, 0)
    assert EvaluationArguments(checkpoint=["x"], max_train_samples=1).settings().max_train_samples == 1


# -- 4. pretrained ----------------------------------------------------------------------------------


def test_a_missing_pretrained_model_is_named_as_such_and_a_relative_path_is_no_hub_id(tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch, capsys, loads):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "report"
    for missing in ("/nonexistent", "./models/clip-tiny", "runs/models/clip-tiny", "~/clip-tiny"):
        line = one_line_error(capsys, _argv(tiny_clip_dir, eurosat_dir, out, "--pretrained", missing))
        assert line.startswith(f"error: pretrained model '{missing}' does not exist (neither a local directory nor a Hub model id"), line
    (tmp_path / "weights.bin").write_bytes(b"")
    line = one_line_error(capsys, _argv(tiny_clip_dir, eurosat_dir, out, "--pretrained", "weights.bin"))
    assert line.startswith("error: pretrained model 'weights.bin' is a file, not a model directory")
    assert loads == [] and not out.exists()


def test_a_hub_shaped_pretrained_model_that_is_not_there_says_pretrained(tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # offline (conftest): tried as a Hub id, and the error says which argument gave it
    line = one_line_error(capsys, _argv(tiny_clip_dir, eurosat_dir, tmp_path / "report", "--pretrained", "models/clip-tiny"))
    assert line.startswith("error: could not load pretrained model 'models/clip-tiny' as a Hub model id (no local directory has that name)")
    assert not (tmp_path / "report").exists()


def test_a_recorded_base_model_that_is_gone_asks_for_pretrained(tiny_clip_dir, eurosat_dir, tmp_path, capsys, loads):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_clip_dir, run_dir)
    RunRecord(method="zs-init-ce", dataset="eurosat", base_model=str(tmp_path / "moved" / "clip")).save(run_dir)
    argv = [a for a in _argv(run_dir, eurosat_dir, tmp_path / "report") if a != str(tiny_clip_dir)]
    argv.remove("--pretrained")
    line = one_line_error(capsys, argv)
    assert line.startswith(f"error: pretrained model '{tmp_path / 'moved' / 'clip'}' does not exist") and line.endswith("pass --pretrained")
    assert loads == []


# -- 5. Python API types ------------------------------------------------------------------------------


def test_the_python_api_takes_one_checkpoint_as_a_string_and_benchmarks_as_a_list(tiny_clip_dir, eurosat_dir, tmp_path):
    result = ldifs_hf.evaluate(
        checkpoint=str(tiny_clip_dir), pretrained=tiny_clip_dir, datasets=["eurosat"], dataset_path=f"eurosat={eurosat_dir}",
        templates="a centered satellite photo of {}.", output_dir=tmp_path / "report", lp_iterations=5, distances=False,
        num_workers=0, device="cpu",
    )
    assert [r["checkpoint"] for r in result.records] == [str(tiny_clip_dir)]
    assert result.benchmarks == ["eurosat"] and result.failures == []
    assert json.loads((tmp_path / "report" / "results.json").read_text())["records"][0]["status"] == "ok"
    args = EvaluationArguments(checkpoint=("a", tmp_path), datasets=("mnist", "cifar10"), dataset_path=None, templates=["t {}"])
    assert (args.checkpoint, args.datasets, args.dataset_path, args.templates) == (["a", str(tmp_path)], "mnist,cifar10", [], ["t {}"])


@pytest.mark.parametrize("field, value", [
    ("checkpoint", 3), ("checkpoint", ["a", 3]), ("datasets", {"eurosat"}), ("datasets", ["eurosat", None]),
    ("dataset_path", {"eurosat": "/data"}), ("templates", 7), ("pretrained", 1), ("output_dir", None),
    ("batch_size", "8"), ("max_train_samples", 2.5), ("num_workers", True),
])
def test_a_wrong_type_is_a_type_error_naming_the_field(field, value, loads):
    kwargs = {"checkpoint": "x", field: value}
    with pytest.raises(TypeError, match=f"^{field} must be "):
        ldifs_hf.evaluate(**kwargs)
    assert loads == []


def test_a_wrong_type_in_a_json_config_is_one_error_line(tiny_clip_dir, tmp_path, capsys, loads):
    config = tmp_path / "evaluate.json"
    config.write_text(json.dumps({"checkpoint": str(tiny_clip_dir), "datasets": 3, "output_dir": str(tmp_path / "report")}))
    line = one_line_error(capsys, ["evaluate", str(config)])
    assert line.startswith("error: datasets must be 'all', a comma-separated string or a list of benchmark names, got 3")
    assert loads == []
