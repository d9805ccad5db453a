"""A causal-LM study (`ldifs-hf study --world skills-quick`): 2 regularizers x 2 λ x 2 seeds of SFT on the skills
world's new skill, killed in the middle of a cell and run again, continues from the cell's checkpoint and finishes
with the results of an uninterrupted run of that cell; its options are refused in one line where they do not fit."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ldifs_hf.study.arguments import StudyArguments

pytest.importorskip("trl")
pytest.importorskip("lm_eval")

SFT = '{"per_device_train_batch_size": 4, "learning_rate": 0.001, "logging_steps": 4}'


def _argv(cache, out, *extra):
    return ["--world", "skills-quick", "--world_cache_dir", str(cache), "--methods", "sft+ldifs,sft+kl", "--lambdas", "ldifs=1,10", "kl=0.1,1",
            "--seeds", "0,1", "--max_steps", "8", "--checkpoint_every_percent", "25", "--finetune_options", SFT, "--eval_max_eval_samples", "4",
            "--output_dir", str(out), *extra]


def _final_records(out):
    records = json.loads((out / "results.json").read_text())["records"]
    keep = ("method", "lambda", "seed", "step", "a_ft", "eval", "retain_loss", "retain_loss_base")
    return sorted((json.dumps({k: r[k] for k in keep}, sort_keys=True) for r in records if r["percent"] == 100.0))


@pytest.mark.slow  # a study of the tiny world's 8 cells, killed and run again, and one cell again
def test_a_study_killed_mid_cell_continues_and_finishes_as_an_uninterrupted_one(quick_skills_cache, tmp_path):
    out = tmp_path / "study"
    victim = out / "cells" / "sft+kl" / "lambda-1" / "skills_shift" / "seed-0"  # the 7th of 8 cells
    command = [sys.executable, "-m", "ldifs_hf", "study", *_argv(quick_skills_cache, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one torch thread: the tiny model's fastest on a shared machine
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.monotonic() + 300
    # trainer_state.json is a checkpoint's last file: the cell has a complete checkpoint-2 and is still training.
    while not (victim / "run" / "checkpoint-2" / "trainer_state.json").is_file() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)  # the study and anything it started, mid-cell
    first.wait()
    assert (victim / "run" / "checkpoint-2").is_dir() and not (victim / "cell.json").exists(), "the study was not stopped mid-cell"
    manifest = json.loads((out / "study.json").read_text())
    assert [c["status"] for c in manifest["cells"]].count("done") == 6

    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "8 cells, 6 done, 2 to run" in again.stdout
    assert "continuing from" in (victim / "output.log").read_text()
    assert (out / "results.md").is_file() and (out / "summary.md").is_file()
    assert all(c["status"] == "done" for c in json.loads((out / "study.json").read_text())["cells"])
    assert "Generating" not in again.stderr and "not a git repository" not in again.stderr  # third-party output: in the logs
    # The frontier and the generic claims along the language axes: each sft+kl point against each sft+ldifs point (they
    # differ only in the regularizer), on A_FT and mean Δ, paired over the two seeds.
    claims = json.loads((out / "claims.json").read_text())
    assert sorted({(c["a"], c["b"]) for c in claims["claims"]}) == sorted(
        (f"sft+kl (λ = {k:g})", f"sft+ldifs (λ = {d:g})") for k in (0.1, 1) for d in (1, 10))
    assert {c["metric"] for c in claims["claims"]} == {"a_ft", "delta"} and claims["units"] == ["seed 0", "seed 1"]
    assert (out / "frontier.csv").is_file() and "## Frontier and claims" in (out / "results.md").read_text()
    # evaluate-lm over the same runs writes the same claims: a report of any runs has them, not only a study's.
    from ldifs_hf.language import evaluate_language_model

    evaluation = json.loads(next((out / "cells").rglob("cell.json")).read_text())["config"]["evaluation"]
    runs = [f"{run.parts[-5]}={run}" for run in sorted((out / "cells").glob("*/lambda-*/skills_shift/seed-*/run"))]
    assert len(runs) == 8
    report = tmp_path / "evaluate-lm"
    from ldifs_hf.study.language import LANGUAGE_CACHE_FOLDER

    evaluate_language_model(**{**evaluation, "checkpoint": runs, "include_intermediate": False, "output_dir": str(report),
                               "cache_dir": str(out / LANGUAGE_CACHE_FOLDER)})
    again_claims = json.loads((report / "claims.json").read_text())["claims"]
    assert [(c["a"], c["b"], c["metric"], c["units"], c["verdict"]) for c in again_claims] == [
        (c["a"], c["b"], c["metric"], c["units"], c["verdict"]) for c in claims["claims"]]
    assert (report / "frontier.png").is_file() and "## Frontier and claims" in (report / "results.md").read_text()

    # The same cell, never interrupted, in a study of its own: the same scores, A_FT and retain loss.
    alone = tmp_path / "alone"
    from ldifs_hf.study.runner import run_study

    argv = _argv(quick_skills_cache, alone)
    argv[argv.index("--seeds") + 1], argv[argv.index("--methods") + 1] = "0", "sft+kl"
    argv[argv.index("--lambdas") + 1: argv.index("--lambdas") + 3] = ["kl=1"]
    from ldifs_hf.cli import _parse

    (args,) = _parse("study", argv)
    run_study(args)
    killed = [r for r in _final_records(out) if '"method": "sft+kl"' in r and '"lambda": 1.0' in r and '"seed": 0' in r]
    assert killed == _final_records(alone) and len(killed) == 1


@pytest.mark.parametrize("options, says", [
    (dict(world="skills-quick", lp_iterations=5), "--lp_iterations belong to CLIP studies"),
    (dict(task_dir="tasks"), "--task_dir belong to causal-LM studies"),
    (dict(world="skills", model_type="clip"), "is the skills world of causal-LM studies"),
    (dict(world="quick", model_type="causal-lm"), "is the concept world of CLIP studies"),
    (dict(model_type="causal-lm"), "needs --model_name_or_path, --finetune_tasks, --eval_tasks, --dataset_path"),
    (dict(world="skills", retain=["x.txt"]), "--retain: the skills world supplies them"),
    (dict(world="skills", methods="sft,sft+l2sp", lambdas=["kl=1"]), "--lambdas sweeps kl, but methods 'sft,sft\\+l2sp' runs no sft\\+kl"),
    (dict(world="skills", methods="sft,lp-init-ldifs"), "a language-model method is 'sft' or 'sft\\+REGULARIZER'"),
    (dict(world="skills", finetune_options='{"learning_rat": 1}'), "learning_rat"),
    (dict(world="skills", finetune_options='{"seed": 1}'), "may not set \\['seed'\\]"),
])
def test_options_that_do_not_fit_a_causal_lm_study_are_refused_in_one_line(options, says):
    with pytest.raises(ValueError, match=says) as err:
        StudyArguments(**options)
    assert "\n" not in str(err.value)


def test_a_causal_lm_study_s_grid_and_cell_settings():
    args = StudyArguments(world="skills", lambdas=["ldifs=1,10", "kl=0.5"], seeds="0,1", max_steps=5, checkpoint_every_percent=0,
                          finetune_options='{"learning_rate": 0.0003}')
    assert args.is_language and args.method_names() == ["sft", "sft+ldifs", "sft+kl"]
    assert args.method_lambdas("sft") == [None] and args.method_lambdas("sft+ldifs") == [1.0, 10.0]
    from ldifs_hf.study.language import language_cell_config
    from ldifs_hf.study.arguments import Cell

    args.dataset_path = ["skills_shift=/sft"]  # as the prepared world sets it
    config = language_cell_config(args, Cell("sft+ldifs", ("skills_shift",), 1, 10.0), ["skills_add", "skills_shift"])
    assert config["finetune"] == {"model_name_or_path": args.model_name_or_path, "dataset_path": "/sft", "finetune_task": "skills_shift",
                                  "regularizer": "ldifs", "seed": 1, "max_steps": 5, "save_strategy": "no", "learning_rate": 0.0003,
                                  "ldifs_lambda": 10.0}
    assert config["evaluation"]["tasks"] == "skills_add,skills_shift" and config["evaluation"]["finetune_task"] == "skills_shift"
