"""Faults found by trying the commands as a new user would: each test pins one fix, and docs/RELIABILITY.md's
tables name it beside the fault it covers."""

import errno
import json
import os
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import finetune_argv, main, one_line_error
from PIL import Image
from test_folder_ownership import held_by_another_process

from ldifs_hf.benchmarks import load_benchmark
from ldifs_hf.benchmarks.registry import get_benchmark
from ldifs_hf.interrupts import Terminated
from ldifs_hf.model_folder import load_clip_processor
from ldifs_hf.run_folder import explain_write_failure, write_failures_explained
from ldifs_hf.run_folder.lock import HOLDER_FILE, LOCK_FILE
from ldifs_hf.study.lambda_search import quiet_interrupted_trials


def _image_folder_of_eurosat(root, images_per_class=2):
    """An image folder with EuroSAT's classes as folder names; every image of the spec's class c is the
    flat grey 20 * c, so a row's true class can be read back from its pixels."""
    names = get_benchmark("eurosat").class_names
    for split in ("train", "test"):
        for index, name in enumerate(names):
            os.makedirs(root / split / name, exist_ok=True)
            for copy in range(images_per_class):
                Image.new("RGB", (8, 8), (20 * index,) * 3).save(root / split / name / f"{copy}.png")
    return names


def test_an_image_folder_whose_sorted_class_folders_differ_from_the_spec_order_keeps_each_image_its_class(tmp_path):
    names = _image_folder_of_eurosat(tmp_path)
    assert sorted(names) != list(names)  # the folder order (sorted) is not the spec's order
    loaded = load_benchmark("eurosat", data_path=tmp_path, validation_fraction=0)
    assert loaded.class_names == list(names)
    for split in ("train", "test"):
        for row in loaded.splits[split]:
            true_class = int(np.asarray(row["image"])[0, 0, 0]) // 20
            assert loaded.class_names[row["label"]] == names[true_class], (split, row["label"], true_class)


def test_interpolate_into_a_folder_another_process_writes_is_one_line(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    """Two `interpolate` commands into one new folder both exited 0, each naming the folder as its α's model."""
    run = tmp_path / "run"
    assert main(["finetune", *finetune_argv(tiny_clip_dir, eurosat_dir, run, "zs-init-ldifs")]) == 0
    out = tmp_path / "theta"
    with held_by_another_process(out) as holder:
        line = one_line_error(capsys, ["interpolate", "--run", str(run), "--alpha", "0.5", "--output_dir", str(out)])
        assert f"is being written by pid {holder.pid}" in line
    assert not out.exists() or os.listdir(out) == []  # the refused command wrote nothing
    assert main(["interpolate", "--run", str(run), "--alpha", "0.5", "--output_dir", str(out)]) == 0
    assert not {LOCK_FILE, HOLDER_FILE} & set(os.listdir(out))


def test_a_quota_is_named_as_such_not_as_a_full_disk(tmp_path):
    quota = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert "quota or file-size limit" in str(explain_write_failure(quota, str(tmp_path)))
    assert explain_write_failure(RuntimeError("a shape mismatch"), str(tmp_path)) is None


@pytest.mark.slow
def test_a_file_size_limit_during_a_checkpoint_is_one_line_and_the_rerun_continues(tiny_clip_dir, eurosat_dir, tmp_path):
    """A quota or file-size limit (the disk itself has room) cut `optimizer.pt` short: torch's raw
    "unexpected pos" error used to be the last line."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "ldifs_hf", "finetune", *finetune_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ldifs", "--save_strategy", "steps", "--save_steps", "1")]

    def limit_file_size():  # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (300 * 1024, resource.RLIM_INFINITY))

    limited = subprocess.run(argv, capture_output=True, text=True, preexec_fn=limit_file_size, timeout=600)
    lines = limited.stderr.strip().splitlines()
    assert limited.returncode == 2 and "Traceback" not in limited.stderr, lines[-5:]
    assert lines[-1].startswith("error: writing the run's files in output_dir") and "file-size limit" in lines[-1], lines[-1]
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads((out / "ldifs_run.json").read_text())["completed"] is True


def test_an_interrupted_lambda_search_trial_is_not_logged_with_a_traceback(capfd):
    """SIGTERM during a λ-search trial: optuna logged the trial as failed with the interruption's traceback
    before the command's one line."""
    import optuna

    def objective(trial):
        trial.suggest_categorical("ldifs_lambda", [0.1])
        raise Terminated()

    study = optuna.create_study()
    with pytest.raises(Terminated), quiet_interrupted_trials():
        study.optimize(objective, n_trials=1)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "failed with" not in err, err
    with pytest.raises(ZeroDivisionError), quiet_interrupted_trials():  # other failures are still logged, with their traceback
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1) / 0, n_trials=1)
    assert "Traceback" in capfd.readouterr().err


def test_a_config_json_that_is_a_directory_and_a_model_symlink_loop_are_named(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    """They were reported as "it has no config.json" and "that path does not exist"."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").mkdir()
    argv = finetune_argv(folder, eurosat_dir, tmp_path / "out", "zs-init-ldifs")
    assert "config.json is a directory, not a JSON config file" in one_line_error(capsys, ["finetune", *argv])
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    argv = finetune_argv(loop, eurosat_dir, tmp_path / "out", "zs-init-ldifs")
    assert "symbolic link that leads nowhere (broken, or a loop)" in one_line_error(capsys, ["finetune", *argv])
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_and_processor_naming_custom_code_never_run_it(tiny_clip_dir, tmp_path):
    """The model's config.json is a plain CLIP; its tokenizer_config.json and processor_config.json name a
    Python file of the folder (`auto_map`). The processor loads as CLIP's own; the file never runs."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_clip_dir, folder)
    marker = tmp_path / "code_ran"
    (folder / "evil_tok.py").write_text(f"open({str(marker)!r}, 'w').close()\nfrom transformers import CLIPTokenizerFast as EvilTokenizer\nEvilProcessor = None\n")
    for name, entry in (("tokenizer_config.json", {"AutoTokenizer": ["evil_tok.EvilTokenizer", None]}), ("processor_config.json", {"AutoProcessor": "evil_tok.EvilProcessor"})):
        config = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps({**config, "auto_map": entry}))
    processor = load_clip_processor(str(folder))
    assert type(processor).__name__ == "CLIPProcessor" and processor.tokenizer("a photo of a cat.")["input_ids"]
    assert not marker.exists()


def test_a_full_disk_while_the_export_is_written_is_named(tmp_path, monkeypatch):
    """A disk that filled after training, while the final model or export was written: safetensors'
    own error ("I/O error: No space left on device") was the last line, exit 1, naming no folder."""
    from safetensors import SafetensorError

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * 2**20, 10 * 2**20 - 2**16, 2**16))
    with pytest.raises(OSError, match=rf"the disk of output_dir '{tmp_path}' is full \(0.1 MiB free\).*SafetensorError"):
        with write_failures_explained(str(tmp_path)):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    with pytest.raises(ValueError, match="not finite"):  # a run's own errors pass through as they are
        with write_failures_explained(str(tmp_path)):
            raise ValueError("training stopped at step 2: loss_task (nan) is not finite")


def test_each_split_is_mapped_by_its_own_label_names(tmp_path):
    """A train split numbered in sorted order and a test split of string labels: only train is remapped."""
    import datasets

    names = list(get_benchmark("eurosat").class_names)
    image = Image.new("RGB", (8, 8))
    train = datasets.Dataset.from_dict(
        {"image": [image] * len(names), "label": list(range(len(names)))},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=sorted(names))}),
    )
    test = datasets.Dataset.from_dict({"image": [image] * len(names), "label": names}, features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}))
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(tmp_path / "data")
    loaded = load_benchmark("eurosat", data_path=tmp_path / "data", validation_fraction=0)
    assert [loaded.class_names[label] for label in loaded.splits["train"]["label"]] == sorted(names)
    assert [loaded.class_names[label] for label in loaded.splits["test"]["label"]] == names


# -- the trial of docs/RELIABILITY.md's reference section: one test per group of fixes ----------------


@pytest.mark.parametrize("extra, needle", [
    (("--per_device_train_batch_size", "0"), "per_device_train_batch_size must be >= 1, got 0"),  # was torch's "batch_size should be ..."
    (("--gradient_accumulation_steps", "0"), "gradient_accumulation_steps must be >= 1, got 0"),  # was a ZeroDivisionError, exit 1
    (("--learning_rate=-1",), "learning_rate must be >= 0, got -1.0"),  # was torch's "Invalid learning rate"
    (("--weight_decay=-0.1",), "weight_decay must be >= 0, got -0.1"),  # trained, growing the weights
    (("--seed=-1",), "seed must be in 0..4294967295, got -1"),  # was numpy's "Seed must be between ..."
    (("--output_dir", ""), "output_dir is empty"),  # was "[Errno 2] No such file or directory: ''"
    (("--ldifs_layers", "2", "2"), "ldifs_layers must name each hidden-state index once, got [2, 2]"),  # weighed layer 2 twice
])
def test_settings_out_of_range_name_the_flag_before_anything_loads(tiny_clip_dir, eurosat_dir, tmp_path, capsys, extra, needle):
    assert needle in one_line_error(capsys, ["finetune", *finetune_argv(tiny_clip_dir, eurosat_dir, tmp_path / "out", "zs-init-ldifs", *extra)])
    assert not (tmp_path / "out").exists()


def _edited_clip(tiny_clip_dir, tmp_path, name, edit):
    folder = tmp_path / name
    shutil.copytree(tiny_clip_dir, folder)
    edit(folder)
    return folder


def _edit_config(folder, **values):
    config = json.loads((folder / "config.json").read_text())
    for key, value in values.items():
        if value is None:
            config.pop(key)
        elif isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def _nan_weight(folder):
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    weights["visual_projection.weight"][0, 0] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


MODEL_FAULTS = {
    # the base model (or, last, the reference) at fault -> what the user now reads (and saw before)
    "a string where a size goes": (lambda f: _edit_config(f, vision_config={"hidden_size": "big"}), "its config.json is not a valid CLIPConfig"),  # StrictDataclassFieldValidationError, exit 1
    "no model_type": (lambda f: _edit_config(f, model_type=None), "has no model_type in its config.json"),  # "is a None model"
    "a damaged tokenizer.json": (lambda f: (f / "tokenizer.json").write_text("{"), "tokenizer.json is damaged"),  # a bare JSON error, no file
    "NaN weights": (_nan_weight, "is not finite (weight visual_projection.weight holds NaN or inf)"),  # blamed the learning rate at step 1
    "a reference of another size": (lambda f: _edit_config(f, vision_config={"intermediate_size": 96}), "has another image encoder than the model the run trains (intermediate_size 96 vs 64)"),  # failed at step 1
}


@pytest.mark.parametrize("fault", MODEL_FAULTS)
def test_a_model_at_fault_is_named_before_training(tiny_clip_dir, eurosat_dir, tmp_path, capsys, fault):
    edit, needle = MODEL_FAULTS[fault]
    folder = _edited_clip(tiny_clip_dir, tmp_path, "model", edit)
    models = ("--reference_model_name_or_path", str(folder)) if fault.startswith("a reference") else ("--model_name_or_path", str(folder))
    line = one_line_error(capsys, ["finetune", *finetune_argv(tiny_clip_dir, eurosat_dir, tmp_path / "out", "zs-init-ldifs", *models)], after_work=True)
    assert needle in line and str(folder) in line, line
    assert not (tmp_path / "out" / "ldifs_run.json").exists()


def test_a_classifier_run_given_as_the_base_or_the_pretrained_model_is_named_with_the_way_out(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    """A run folder (our classifier) as the base model was refused as a model whose "config names custom code";
    as `--pretrained`, after loading it: "must be a CLIPModel ..., got CLIPVisionClassifier"."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model_type": "ldifs_clip_classifier", "auto_map": {"AutoConfig": "x.Y"}}))
    line = one_line_error(capsys, ["finetune", *finetune_argv(run, eurosat_dir, tmp_path / "out", "zs-init-ce")])
    assert line.endswith(f"is a classifier fine-tuned by ldifs_hf ('ldifs_clip_classifier'); the paper's methods fine-tune a CLIP model: "
                         f"accepted model_type 'clip': to start from it, pass its stock CLIPModel export, '{run}/clip'"), line
    line = one_line_error(capsys, ["evaluate", "--checkpoint", str(tiny_clip_dir), "--datasets", f"eurosat={eurosat_dir}", "--pretrained", str(run),
                                   "--output_dir", str(tmp_path / "report")])
    assert line.endswith("pass the base model its run started from (base_model in its ldifs_run.json)"), line


def test_damaged_records_and_a_finished_run_whose_files_are_gone_are_refused_by_name(tiny_clip_dir, tmp_path):
    """A record whose settings were a list was reused as "the same settings"; ldifs_run.json as a folder
    was a raw "[Errno 21]"; a run recorded finished whose clip/ was deleted was returned as done."""
    from ldifs_hf.records import RunRecord
    from ldifs_hf.run_folder import plan_output_dir

    run = tmp_path / "run"
    from transformers import CLIPModel

    CLIPModel.from_pretrained(tiny_clip_dir).save_pretrained(run)
    RunRecord(method="zs-init-ce", dataset="eurosat", base_model="m", completed=True, output_dir=str(run), export_dir=str(run / "clip"),
              settings={"seed": 0}).save(run)
    with pytest.raises(ValueError, match=r"holds a run recorded as finished whose files are gone \(.*clip/config.json.*--overwrite_output_dir"):
        plan_output_dir(str(run), "zs-init-ce", "eurosat", settings={"seed": 0})
    record = json.loads((run / "ldifs_run.json").read_text())
    (run / "ldifs_run.json").write_text(json.dumps({**record, "settings": [1]}))
    with pytest.raises(ValueError, match=r"ldifs_run.json is damaged: settings must be a JSON object or null, got \[1\]"):
        plan_output_dir(str(run), "zs-init-ce", "eurosat", settings={"seed": 0})
    os.remove(run / "ldifs_run.json")
    (run / "ldifs_run.json").mkdir()
    with pytest.raises(ValueError, match="ldifs_run.json is a directory, not a run record"):
        plan_output_dir(str(run), "zs-init-ce", "eurosat")


def test_a_copied_sequence_is_reused_where_it_is_now(tmp_path):
    """A finished sequence copied elsewhere was refused task by task: task 2 recorded task 1's export in
    the old folder as its model ("other settings (model_name_or_path ...)")."""
    from ldifs_hf.records import RunRecord
    from ldifs_hf.run_folder import plan_output_dir

    old, new = tmp_path / "old", tmp_path / "new"
    task2 = old / "2-mnist"
    task2.mkdir(parents=True)
    (task2 / "config.json").write_text("{}")
    (task2 / "model.safetensors").write_text("")
    (task2 / "clip").mkdir()
    (task2 / "clip" / "config.json").write_text("{}")
    (task2 / "clip" / "model.safetensors").write_text("")
    settings = {"model_name_or_path": str(old / "1-eurosat" / "clip"), "seed": 0}
    RunRecord(method="zs-init-ce", dataset="mnist", base_model=str(old / "1-eurosat" / "clip"), completed=True, output_dir=str(task2),
              export_dir=str(task2 / "clip"), settings=settings).save(task2)
    (old / "sequence.json").write_text("{}")
    shutil.copytree(old, new)
    now = {"model_name_or_path": str(new / "1-eurosat" / "clip"), "seed": 0}
    finished = plan_output_dir(str(new / "2-mnist"), "zs-init-ce", "mnist", settings=now).finished
    assert finished.base_model == str(new / "1-eurosat" / "clip") and finished.export_dir == str(new / "2-mnist" / "clip")
    with pytest.raises(ValueError, match="other settings"):  # a single run's sibling is not moved with it: the path given counts
        os.remove(new / "sequence.json")
        plan_output_dir(str(new / "2-mnist"), "zs-init-ce", "mnist", settings={**now, "model_name_or_path": str(new / "other")})


def test_data_and_caches_at_fault_are_named(tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch):
    """A damaged dataset_dict.json was a bare JSON error; $LDIFS_DATA_DIR set to a file sent the benchmark
    to the Hub; an empty test split was "cannot extract features from an empty dataset"; a feature cache
    that is a file was "[Errno 17] File exists"."""
    import datasets

    from ldifs_hf.benchmarks.registry import BenchmarkError
    from ldifs_hf.evaluation import ConceptForgettingEvaluator, EvaluatorSettings

    broken = tmp_path / "broken"
    shutil.copytree(eurosat_dir, broken)
    (broken / "dataset_dict.json").write_text("{")
    with pytest.raises(BenchmarkError, match=rf"{broken}/dataset_dict.json is damaged or missing \(JSONDecodeError"):
        load_benchmark("eurosat", data_path=broken)
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("LDIFS_DATA_DIR", str(tmp_path / "afile"))
    with pytest.raises(BenchmarkError, match=r"\$LDIFS_DATA_DIR is '.*afile', which is not a folder"):
        load_benchmark("eurosat")
    data = datasets.load_from_disk(eurosat_dir)
    data["test"] = data["test"].select([])
    data.save_to_disk(tmp_path / "empty_test")
    evaluator = ConceptForgettingEvaluator.from_pretrained(tiny_clip_dir, EvaluatorSettings(dataset_paths={"eurosat": str(tmp_path / "empty_test")}))
    with pytest.raises(BenchmarkError, match="the test split of 'eurosat' is empty"):
        evaluator.benchmark("eurosat")
    with pytest.raises(OSError, match=r"feature_cache_dir '.*afile' cannot hold the cache: '.*afile' is a file"):
        ConceptForgettingEvaluator.from_pretrained(tiny_clip_dir, EvaluatorSettings(feature_cache_dir=str(tmp_path / "afile")))


def test_a_study_checks_its_paths_and_data_before_the_first_cell(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    """An eval task without data was met after the first cell trained (and, through submitit, as a failed
    job); a misspelt `--dataset_path` name was ignored."""
    argv = ["study", "--output_dir", str(tmp_path / "st"), "--methods", "zs-init-ce", "--finetune_tasks", "eurosat", "--model_name_or_path",
            str(tiny_clip_dir), "--max_steps", "1", "--checkpoint_every_percent", "0"]
    line = one_line_error(capsys, [*argv, "--eval_tasks", "eurosat,mnist", "--dataset_path", f"eurosat={eurosat_dir}", f"mnist={tmp_path / 'nowhere'}"])
    assert "'mnist'" in line and "nowhere" in line
    line = one_line_error(capsys, [*argv, "--eval_tasks", "eurosat", "--dataset_path", f"eurosat={eurosat_dir}", f"mnsit={eurosat_dir}"])
    assert line == "error: dataset_path names 'mnsit', which no cell fine-tunes or scores (eurosat)"
    assert not (tmp_path / "st" / "cells").exists()


def test_interpolate_names_a_checkpoint_given_as_the_run_and_a_base_model_that_moved(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    run = tmp_path / "run"
    argv = finetune_argv(tiny_clip_dir, eurosat_dir, run, "zs-init-ce", "--save_strategy", "steps", "--save_steps", "1")
    assert main(["finetune", *argv]) == 0
    line = one_line_error(capsys, ["interpolate", "--run", str(run / "checkpoint-1"), "--alpha", "0.5", "--output_dir", str(tmp_path / "a")])
    assert f"is a checkpoint of the run '{run}'; pass the run's folder" in line  # was "is not finished (... completed: false)"
    record = json.loads((run / "ldifs_run.json").read_text())
    (run / "ldifs_run.json").write_text(json.dumps({**record, "base_model": str(tmp_path / "gone")}))
    line = one_line_error(capsys, ["interpolate", "--run", str(run), "--alpha", "0.5", "--output_dir", str(tmp_path / "b")])
    assert f"base model '{tmp_path / 'gone'}' does not exist" in line  # was "Repo id must be in the form ..."


def test_a_config_file_that_is_a_directory_and_library_calls_are_named(tmp_path, capsys):
    """A .json config that is a folder was "does not exist"; finetune() without output_dir wrote into
    ./trainer_output; an int for ldifs_layers failed as "'int' object is not iterable"."""
    from ldifs_hf import finetune

    (tmp_path / "c.json").mkdir()
    assert one_line_error(capsys, ["finetune", str(tmp_path / "c.json")]) == f"error: config file {tmp_path / 'c.json'} is a directory, not a JSON file"
    with pytest.raises(ValueError, match="finetune\\(\\) needs output_dir="):
        finetune(method="zs-init-ce", dataset="eurosat")
    with pytest.raises(ValueError, match="ldifs_layers must be a list of integers or null, got 3"):
        finetune(method="zs-init-ldifs", output_dir=str(tmp_path / "x"), ldifs_layers=3)


def test_a_damaged_cell_json_runs_that_cell_again(tmp_path, caplog):
    """A cut-short cell.json stopped every rerun of the study with a bare JSON error."""
    from ldifs_hf.study.runner import cell_status

    (tmp_path / "cell").mkdir()
    for content in ("{", "[]", '{"config": {}}'):
        (tmp_path / "cell" / "cell.json").write_text(content)
        with caplog.at_level("WARNING"):
            assert cell_status(str(tmp_path / "cell"), {"finetune": {}, "evaluation": {}}) == "partial"
        assert "cell.json is damaged" in caplog.text
