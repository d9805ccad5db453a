"""A fine-tuning run end to end (the library call behind `ldifs-hf finetune` and examples/run_finetune.py),
offline, on a tiny local CLIP and a schema-exact local dataset."""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import CLIPModel

from ldifs_hf import get_method, list_methods
from ldifs_hf.testing import save_benchmark_like_dataset

from ldifs_hf.cli import parse_finetune_args
from ldifs_hf.records import RunRecord
from ldifs_hf.training.run import run_finetune
from conftest import finetune_argv, one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _finetune(argv) -> RunRecord:
    return run_finetune(*parse_finetune_args(argv))


def _argv(model_dir, data_dir, out_dir, method, *extra):
    return finetune_argv(model_dir, data_dir, out_dir, method, "--logging_steps", "1", *extra)


@pytest.mark.parametrize("method", list_methods())
def test_run_finetune_every_method(method, tiny_clip_dir, eurosat_dir, tmp_path):
    out = tmp_path / method
    results = _finetune(_argv(tiny_clip_dir, eurosat_dir, out, method)).results
    assert 0.0 <= results["test_accuracy"] <= 1.0
    run = json.loads((out / "ldifs_run.json").read_text())
    assert run["method"] == method and run["dataset"] == "eurosat"
    assert run["results"]["test_accuracy"] == results["test_accuracy"]
    state = json.loads((out / "trainer_state.json").read_text())
    # The task loss is logged beside a regularizer's term; without one the entries are the stock ones.
    regularized = get_method(method).regularizer != "none"
    assert any("loss" in h for h in state["log_history"])
    assert any("loss_task" in h for h in state["log_history"]) == regularized
    assert (out / "model.safetensors").exists()
    exported = CLIPModel.from_pretrained(out / "clip")
    assert type(exported) is CLIPModel
    assert "eurosat" in (out / "clip" / "README.md").read_text()


def test_json_config_file_is_accepted(tiny_clip_dir, eurosat_dir, tmp_path):
    config = {
        "method": "zs-init-ce", "dataset": "eurosat", "dataset_path": str(eurosat_dir),
        "model_name_or_path": str(tiny_clip_dir), "output_dir": str(tmp_path / "out"), "max_steps": 1,
        "per_device_train_batch_size": 8, "use_cpu": True, "report_to": "none", "save_strategy": "no",
    }
    path = tmp_path / "args.json"
    path.write_text(json.dumps(config))
    assert "test_accuracy" in _finetune([str(path)]).results
    assert json.loads((tmp_path / "out" / "ldifs_run.json").read_text())["method"] == "zs-init-ce"


def test_rerun_returns_the_finished_run_another_run_is_refused_overwrite_redoes(tiny_clip_dir, eurosat_dir, tmp_path):
    out = tmp_path / "run"
    first = _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce"))
    before = (out / "model.safetensors").read_bytes()
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    again = _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce"))  # finished: not redone
    assert again == first and (out / "model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match=r"holds a zs-init-ce run on eurosat, not zs-init-l2sp.*--overwrite_output_dir"):
        _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-l2sp"))
    assert (out / "model.safetensors").read_bytes() == before  # nothing lost
    redone = _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-l2sp", "--overwrite_output_dir"))
    assert redone.method == "zs-init-l2sp" and RunRecord.load(out).method == "zs-init-l2sp"


def test_a_directory_of_another_program_is_refused(tiny_clip_dir, eurosat_dir, tmp_path):
    out = tmp_path / "foreign"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="did not record"):
        _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce"))
    assert (out / "config.json").read_text() == "{}"


def test_bad_inputs_fail_fast_with_one_line_errors(tiny_clip_dir, eurosat_dir, tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(ValueError, match="unknown method 'ldifs-deluxe'"):
        _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "ldifs-deluxe"))
    with pytest.raises(ValueError, match="ldifs_lambda must be a number >= 0, got -3"):
        _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ldifs", "--ldifs_lambda", "-3"))
    with pytest.raises(ValueError, match="pixels"):
        _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce", "--image_column", "pixels"))
    with pytest.raises(ValueError, match="out of range"):
        _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ldifs", "--ldifs_layers", "0", "7"))
    with pytest.raises(OSError, match="could not load CLIP model"):
        _finetune(_argv(tmp_path / "no-model", eurosat_dir, out, "zs-init-ce"))
    assert not (out / "model.safetensors").exists()


def test_label_outside_the_class_list_is_an_error(tiny_clip_dir, tmp_path):
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    from PIL import Image

    image = Image.new("RGB", (32, 32), (10, 20, 30))
    ds = datasets.Dataset.from_dict({"image": [image] * 4, "label": [0, 1, 0, 5]}, features=features)
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(tmp_path / "data")
    argv = ["--method", "zs-init-ce", "--dataset", "custom", "--dataset_path", str(tmp_path / "data"),
            "--model_name_or_path", str(tiny_clip_dir), "--output_dir", str(tmp_path / "o"), "--max_steps", "1", "--use_cpu"]
    with pytest.raises(ValueError, match="ClassLabel|class names"):
        _finetune(argv)
    # With class names given... label 5 is outside them.
    from ldifs_hf.benchmarks import load_benchmark

    with pytest.raises(ValueError, match="5"):
        load_benchmark("custom", data_path=str(tmp_path / "data"), class_names=["a", "b"])


@pytest.mark.slow
def test_accelerate_launch_on_cpu(tiny_clip_dir, eurosat_dir, tmp_path):
    out = tmp_path / "accel"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no",
           os.path.join(ROOT, "examples", "run_finetune.py"), *_argv(tiny_clip_dir, eurosat_dir, out, "lp-init-ldifs")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((out / "ldifs_run.json").read_text())
    assert run["regularizer"] == "ldifs" and "test_accuracy" in run["results"]


def test_forgetting_callback_is_wired_into_the_script(tiny_clip_dir, eurosat_dir, tmp_path):
    mnist = save_benchmark_like_dataset("mnist", tmp_path / "mnist", num_train=20, num_test=10)
    out = tmp_path / "tracked"
    _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ldifs", "--forgetting_benchmarks", "eurosat,mnist",
                            "--forgetting_every_percent", "50", "--forgetting_dataset_paths", f"mnist={mnist}"))
    rows = json.loads((out / "forgetting_log.json").read_text())
    assert [r["percent"] for r in rows] == [0.0, 50.0, 100.0]
    assert set(rows[0]["eval"]) == {"eurosat", "mnist"}
    assert rows[0]["param_distance"] == 0.0 and rows[-1]["param_distance"] > 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert any("forgetting/mnist/delta_zs" in h for h in state["log_history"])


NINE = ["cars", "cifar10", "cifar100", "dtd", "eurosat", "gtsrb", "mnist", "resisc45", "svhn"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NINE)
def test_run_finetune_takes_every_registered_benchmark(name, tiny_clip_dir, tmp_path):
    from ldifs_hf.benchmarks import get_benchmark

    data = save_benchmark_like_dataset(name, tmp_path / name, num_train=12, num_test=6)
    argv = _argv(tiny_clip_dir, data, tmp_path / "out", "zs-init-ce", "--max_steps", "1")
    argv[argv.index("--dataset") + 1] = name
    _finetune(argv)
    run = json.loads((tmp_path / "out" / "ldifs_run.json").read_text())
    assert run["dataset"] == name
    classifier = json.loads((tmp_path / "out" / "config.json").read_text())
    assert len(classifier["id2label"]) == get_benchmark(name).num_classes
    assert list(classifier["id2label"].values()) == list(get_benchmark(name).class_names)


@pytest.mark.parametrize("name,epochs", [("eurosat", 12), ("dtd", 76), ("cars", 35), ("mnist", 10)])
def test_epochs_default_to_the_benchmarks(name, epochs, tmp_path):
    from ldifs_hf.training.run import finetune_arguments, with_benchmark_epochs

    def epochs_of(*extra):
        _, data_args, args = parse_finetune_args(["--method", "zs-init-ce", "--dataset", name, "--output_dir", str(tmp_path), *extra])
        parsed = args.num_train_epochs
        resolved = with_benchmark_epochs(data_args, args).num_train_epochs
        assert args.num_train_epochs == parsed  # the parsed arguments are never rewritten
        return resolved

    assert epochs_of() == epochs
    assert epochs_of("--num_train_epochs", "2") == 2
    assert epochs_of("--num_train_epochs=3") == 3  # the '=' form is the user's choice too
    # Through the API: epochs given as a keyword win over the benchmark's, settled before parsing.
    _, data_args, args = finetune_arguments({"method": "zs-init-ce", "dataset": name, "output_dir": str(tmp_path), "num_train_epochs": 2})
    assert with_benchmark_epochs(data_args, args).num_train_epochs == 2
    _, data_args, args = finetune_arguments({"method": "zs-init-ce", "dataset": name, "output_dir": str(tmp_path)})
    assert with_benchmark_epochs(data_args, args).num_train_epochs == epochs and args.num_train_epochs != epochs


class _Crash(RuntimeError):
    pass


def test_rerun_resumes_from_the_last_checkpoint_to_the_same_weights(tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from ldifs_hf.training import run as run_module

    argv = lambda out: _argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ldifs", "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2")
    _finetune(argv(tmp_path / "straight"))

    class CrashAfterFirstCheckpoint(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise _Crash("killed mid-run")

    class CrashingTrainer(run_module.LDIFSTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(CrashAfterFirstCheckpoint())

    out = tmp_path / "interrupted"
    monkeypatch.setattr(run_module, "LDIFSTrainer", CrashingTrainer)
    with pytest.raises(_Crash):
        _finetune(argv(out))
    assert (out / "checkpoint-2").is_dir() and not RunRecord.load(out).completed
    first_half = (out / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns
    monkeypatch.undo()
    record = _finetune(argv(out))  # the same command again: continues from checkpoint-2
    assert record.completed
    # Continued, not restarted: steps 1-2 were not redone (checkpoint-2 untouched), steps 3-4 were.
    assert (out / "checkpoint-2" / "model.safetensors").stat().st_mtime_ns == first_half
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4 and (out / "checkpoint-4").is_dir()
    straight, resumed = load_file(tmp_path / "straight" / "model.safetensors"), load_file(out / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_push_to_hub_without_network_fails_before_training_in_one_line(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    out = tmp_path / "pushed"
    argv = ["finetune", *_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce", "--push_to_hub", "--hub_model_id", "me/model", "--hub_token", "hf_x")]
    one_line_error(capsys, argv, "me/model")  # HF_HUB_OFFLINE=1 in the tests: the Hub cannot be reached
    assert not out.exists()  # nothing half-written


def test_a_bad_model_with_overwrite_keeps_the_earlier_run(tiny_clip_dir, eurosat_dir, tmp_path):
    out = tmp_path / "kept"
    _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce"))
    before = sorted(os.listdir(out))
    with pytest.raises(OSError, match="could not load CLIP model"):
        _finetune(_argv(tmp_path / "misspelt-model", eurosat_dir, out, "zs-init-ce", "--overwrite_output_dir"))
    assert sorted(os.listdir(out)) == before and RunRecord.load(out).completed
