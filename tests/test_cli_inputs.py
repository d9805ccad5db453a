"""What a new user tried (a trial of the README and the CLI): each mistake is one `error:` line and exit
code 2 before anything expensive, a rerun never silently reuses a run made with other settings, and the
model card does not claim a Hub dataset the run did not read."""

import json
import os
import subprocess
import sys

import pytest

from ldifs_hf import __version__
from ldifs_hf.cli import _fail, main
from ldifs_hf.records import RunRecord
from conftest import finetune_argv, one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _argv(model_dir, data_dir, out, *extra, method="zs-init-l2sp"):
    return ["finetune", *finetune_argv(model_dir, data_dir, out, method, *extra)]


def test_no_command_is_an_error_and_the_overview_says_what_each_command_does(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "error: a command is required: one of demo, finetune, evaluate, evaluate-lm, study, lambda-search, interpolate, list"
    for command in ("demo", "finetune", "evaluate", "study", "lambda-search", "interpolate", "list"):
        assert any(line.split()[:1] == [command] and len(line.split()) > 3 for line in captured.out.splitlines()), command
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"ldifs-hf {__version__}"


def test_finetune_without_output_dir_is_refused_not_written_to_trainer_output(tiny_clip_dir, eurosat_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(capsys, _argv(tiny_clip_dir, eurosat_dir, None))
    assert "--output_dir is required" in line
    assert os.listdir(tmp_path) == []  # no ./trainer_output


@pytest.mark.parametrize("command", ["finetune", "lambda-search"])
def test_a_run_without_a_method_is_refused_on_the_command_line_and_in_a_config_file(tmp_path, capsys, command):
    refused = "--method is required: one of flyp, flyp-ce, lp-init-ce"
    assert refused in one_line_error(capsys, [command, "--dataset", "eurosat", "--output_dir", str(tmp_path / "run")])
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"dataset": "eurosat", "output_dir": str(tmp_path / "run")}))
    assert refused in one_line_error(capsys, [command, str(config)])
    assert not (tmp_path / "run").exists()


def test_a_misspelt_later_task_of_a_sequence_is_refused_before_the_first_trains(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    argv = _argv(tiny_clip_dir, eurosat_dir, tmp_path / "seq")
    argv[argv.index("--dataset") + 1] = "eurosat,mnst"
    argv[argv.index("--dataset_path") + 1] = f"eurosat={eurosat_dir}"
    line = one_line_error(capsys, argv)
    assert "Unknown benchmark 'mnst' (did you mean 'mnist'?)" in line
    assert not (tmp_path / "seq").exists()


def test_a_method_typo_gets_a_suggestion(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    line = one_line_error(capsys, _argv(tiny_clip_dir, eurosat_dir, tmp_path / "x", method="lp-init-ldif"))
    assert "unknown method 'lp-init-ldif' (did you mean 'lp-init-ldifs'?)" in line


@pytest.mark.slow
def test_a_rerun_with_other_settings_is_refused_and_with_the_same_reuses_the_run(tiny_clip_dir, eurosat_dir, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    assert main(_argv(tiny_clip_dir, eurosat_dir, out)) == 0
    record = RunRecord.load(out)
    assert record.completed and record.settings["max_steps"] == 2 and record.settings["dataset_path"] == str(eurosat_dir)
    files = {name: os.path.getmtime(out / name) for name in os.listdir(out)}
    capsys.readouterr()

    line = one_line_error(capsys, _argv(tiny_clip_dir, eurosat_dir, out, "--max_steps", "3", "--learning_rate", "1e-4"))
    assert "holds a finished zs-init-l2sp run with other settings" in line
    assert "max_steps 2 -> 3" in line and "learning_rate" in line and "--overwrite_output_dir" in line
    assert {name: os.path.getmtime(out / name) for name in os.listdir(out)} == files  # nothing touched

    with caplog.at_level("WARNING", logger="ldifs_hf"):
        assert main(_argv(tiny_clip_dir, eurosat_dir, out)) == 0  # the same command: reused, and said so
    assert "already holds this finished run" in caplog.text and "nothing was trained" in caplog.text
    assert {name: os.path.getmtime(out / name) for name in os.listdir(out)} == files

    # A record from before settings were recorded is reused as before (nothing to compare).
    data = json.loads((out / "ldifs_run.json").read_text())
    del data["settings"]
    (out / "ldifs_run.json").write_text(json.dumps(data))
    assert main(_argv(tiny_clip_dir, eurosat_dir, out, "--max_steps", "3")) == 0


@pytest.mark.slow
def test_a_started_run_is_not_continued_with_other_settings(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_argv(tiny_clip_dir, eurosat_dir, out, "--save_strategy", "steps", "--save_steps", "1")) == 0
    data = json.loads((out / "ldifs_run.json").read_text())
    data["completed"] = False  # as if killed after its checkpoints
    (out / "ldifs_run.json").write_text(json.dumps(data))
    line = one_line_error(capsys, _argv(tiny_clip_dir, eurosat_dir, out, "--save_strategy", "steps", "--save_steps", "1", "--seed", "7"))
    assert "holds a started zs-init-l2sp run with other settings (seed 42 -> 7)" in line and "to continue it" in line


@pytest.mark.slow
def test_a_run_on_a_local_copy_says_so_and_links_no_hub_dataset(tiny_clip_dir, eurosat_dir, tmp_path):
    out = tmp_path / "run"
    assert main(_argv(tiny_clip_dir, eurosat_dir, out)) == 0
    record = RunRecord.load(out)
    assert f"from the local copy {eurosat_dir}" in record.dataset_splits
    assert "27 train / 3 validation / 10 test images used" in record.dataset_splits
    # The Hub copy's split note is kept (a local copy is usually a download of it), but said to be about it.
    assert "; if that is a copy of tanganke/eurosat: tanganke/eurosat has 21,600 train" in record.dataset_splits
    for card in (out / "README.md", out / "clip" / "README.md"):
        metadata = card.read_text().split("---")[1]
        assert "datasets:" not in metadata and "tanganke" not in metadata, card  # no Hub dataset linked


def test_a_dataset_folder_given_as_the_model_is_not_sent_to_the_hub(eurosat_dir, tmp_path, capsys):
    line = one_line_error(capsys, _argv(eurosat_dir, eurosat_dir, tmp_path / "x"))
    assert f"model_name_or_path '{eurosat_dir}' is not a model directory" in line and "hf download" not in line


def test_the_error_line_starts_its_own_line_after_a_progress_bar(capsys):
    from tqdm import tqdm

    bar = tqdm(total=3, desc="benchmarks")
    bar.update(1)
    assert _fail("something went wrong", 2) == 2
    err = capsys.readouterr().err
    assert "\nerror: something went wrong" in err and "error: something went wrong" in err.splitlines()


def test_demo_threads_must_be_positive(capsys):
    assert "threads must be >= 1" in one_line_error(capsys, ["demo", "--threads", "0"])


@pytest.mark.parametrize("command", ["list", "--help"])
def test_output_piped_into_a_reader_that_stops_early_ends_quietly(command):
    # `true` exits before the command starts writing, so every write meets a closed pipe (EPIPE).
    proc = subprocess.run(
        f"{sys.executable} -m ldifs_hf {command} | true; echo rc=${{PIPESTATUS[0]}}", shell=True, executable="/bin/bash",
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert proc.stdout.strip() == "rc=0" and "error" not in proc.stderr.lower() and "Traceback" not in proc.stderr, proc.stderr


def test_evaluate_keeps_transformers_quiet_while_logging_its_own_progress(tiny_clip_dir, tmp_path, capsys):
    """transformers at INFO printed every config it loaded (about 300 lines an evaluation)."""
    import logging

    import transformers

    transformers.utils.logging.set_verbosity(logging.INFO)
    one_line_error(capsys, ["evaluate", "--checkpoint", str(tiny_clip_dir), "--datasets", "notabench", "--output_dir", str(tmp_path / "r")])
    assert transformers.utils.logging.get_verbosity() == logging.WARNING
    assert logging.getLogger("ldifs_hf").level == logging.INFO


def test_a_broken_pipe_that_is_not_stdout_is_a_fault(capsys, monkeypatch):
    from ldifs_hf import cli

    def broken(argv):
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a DataLoader worker's pipe, with stdout fine

    monkeypatch.setitem(cli.COMMANDS, "list", broken)
    assert main(["list"]) == 1
    assert capsys.readouterr().err.strip().startswith("error: BrokenPipeError")


def test_help_shows_defaults_and_negative_flags_read_the_right_way(capsys):
    from ldifs_hf.cli import parse_finetune_args

    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Weight of the LDIFS feature distance. (default: 10.0)" in text
    assert "--no_train_augmentation, --no-train-augmentation Turn off --train_augmentation." in text
    assert "Turn off --train_augmentation. (default" not in text
    # The flags themselves still parse as before.
    args = ["--method", "lp-init-ldifs", "--dataset", "eurosat", "--output_dir", "x"]
    assert parse_finetune_args(args)[1].train_augmentation is True
    assert parse_finetune_args([*args, "--no_train_augmentation"])[1].train_augmentation is False
