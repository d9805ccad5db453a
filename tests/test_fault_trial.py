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
