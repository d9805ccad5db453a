"""One test per kind of fault a careless user met (docs/RELIABILITY.md, "Damaged inputs and reruns"): a
damaged input is refused by name and never used as if whole; a moved run names where it is; an overwrite
removes links, never what they point to; an input's own error is named instead of an internal one; a
setting or cache at fault is named before anything runs; a rerun that would change meaning is refused
with the way out, and an interrupted write is taken up again by the same command."""

import errno
import json
import os
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPModel

from conftest import finetune_argv, main, one_line_error
from ldifs_hf.benchmarks.registry import BenchmarkError
from ldifs_hf.evaluation.checkpoints import resolve_checkpoints
from ldifs_hf import evidence
from ldifs_hf.evaluation.claims import Evidence, claim_sentence, claims_section
from ldifs_hf.evaluation.frontier import CLIP_AXES
from ldifs_hf.model_folder import ModelFolderError, load_clip_model, load_clip_processor
from ldifs_hf.run_folder import RunRecord, last_complete_checkpoint, plan_output_dir, remove_earlier_run
from ldifs_hf.run_folder import plan as plan_module
from ldifs_hf.study.demo import _mean_std
from ldifs_hf.testing import make_benchmark_like_dataset


def _copy(tiny_clip_dir, tmp_path, name="model"):
    folder = tmp_path / name
    shutil.copytree(tiny_clip_dir, folder)
    return folder


def _rewrite_weights(folder, change):
    weights = load_file(folder / "model.safetensors")
    change(weights)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def _drop_layer(weights):
    for key in [k for k in weights if "text_model.encoder.layers.0." in k]:
        del weights[key]


def _truncate(folder, name):
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])


def _pickle_only(folder, whole_module=False):
    model = CLIPModel.from_pretrained(folder)
    os.remove(folder / "model.safetensors")
    torch.save(model if whole_module else model.state_dict(), folder / "pytorch_model.bin")


DAMAGES = {
    # what was done to a copy of the tiny CLIP -> what the refusal says
    "missing tensors": (lambda f: _rewrite_weights(f, _drop_layer), "its weights lack 16 tensor(s) the config has"),
    "an extra tensor": (lambda f: _rewrite_weights(f, lambda w: w.update(extra=torch.zeros(2))), "hold 1 tensor(s) the config has no place for (extra)"),
    "a wrong shape": (
        lambda f: _rewrite_weights(f, lambda w: w.update({"visual_projection.weight": torch.zeros(3, 3)})),
        "visual_projection.weight has shape (3, 3) in its weights but (32, 32) in its config",
    ),
    "truncated safetensors": (lambda f: _truncate(f, "model.safetensors"), "model.safetensors is damaged (it has"),
    "truncated torch file": (lambda f: (_pickle_only(f), _truncate(f, "pytorch_model.bin")), "pytorch_model.bin is damaged"),
    "a pickled module": (lambda f: _pickle_only(f, whole_module=True), "holds pickled Python objects, not plain tensors"),
    "no weights": (lambda f: os.remove(f / "model.safetensors"), "has no weights (model.safetensors or pytorch_model.bin"),
    "no tokenizer": (lambda f: os.remove(f / "tokenizer.json"), "has no tokenizer (tokenizer.json or vocab.json with merges.txt)"),
    "no image processor": (lambda f: os.remove(f / "processor_config.json"), "has no image processor"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_model_folder_is_refused_by_name(tiny_clip_dir, tmp_path, damage):
    """Missing tensors were initialised at random and the run trained and exported them as "the pretrained
    text tower"; the others ended in transformers' or torch's own words (a sequence-length error for a
    folder without a tokenizer, "ignore_mismatched_sizes", a header or unpickling error)."""
    do, needle = DAMAGES[damage]
    folder = _copy(tiny_clip_dir, tmp_path)
    do(folder)
    with pytest.raises(ModelFolderError, match="") as raised:
        load_clip_model(folder, what="model_name_or_path")
        load_clip_processor(folder, what="model_name_or_path")
    assert needle in str(raised.value) and str(folder) in str(raised.value), str(raised.value)


def test_finetune_refuses_a_base_model_missing_tensors_in_one_line_before_training(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    folder = _copy(tiny_clip_dir, tmp_path)
    _rewrite_weights(folder, _drop_layer)
    line = one_line_error(capsys, ["finetune", *finetune_argv(folder, eurosat_dir, tmp_path / "out", "zs-init-ldifs")], after_work=True)
    assert "does not match its config.json: its weights lack 16 tensor(s)" in line
    assert not (tmp_path / "out" / "ldifs_run.json").exists()


def _checkpoint(folder, model, step, state=None):
    model.save_pretrained(folder)
    (folder / "trainer_state.json").write_text(json.dumps(state if state is not None else {"global_step": step, "max_steps": 4}))


@pytest.fixture
def run_dir(tmp_path, tiny_clip_dir):
    """An unfinished zs-init-ce run with complete checkpoints at steps 2 and 4."""
    out = tmp_path / "run"
    out.mkdir()
    RunRecord(method="zs-init-ce", dataset="eurosat", base_model="m").save(out)
    model = CLIPModel.from_pretrained(tiny_clip_dir)
    for step in (2, 4):
        _checkpoint(out / f"checkpoint-{step}", model, step)
    return out


@pytest.mark.parametrize("state", [{"global_step": 2, "max_steps": 4}, {}, [4]], ids=["another step", "empty", "a list"])
def test_a_checkpoint_state_not_its_own_is_skipped(run_dir, state, caplog):
    """checkpoint-1 with the state of step 2 (of 2) was taken as the end of training: a 1-step run was
    recorded complete. A state of {} failed every rerun with a TypeError."""
    (run_dir / "checkpoint-4" / "trainer_state.json").write_text(json.dumps(state))
    with caplog.at_level("WARNING"):
        assert last_complete_checkpoint(str(run_dir), RunRecord.load(run_dir)) == str(run_dir / "checkpoint-2")
    assert "skipping" in caplog.text and "checkpoint-4: its trainer_state.json" in caplog.text


def test_a_damaged_record_fails_its_checkpoint_only(run_dir, tmp_path):
    """A cut-short ldifs_run.json in checkpoint-2 stopped the whole evaluation with a bare JSON error; a
    damaged record of a run given beside another now fails that run only."""
    RunRecord.load(run_dir).save(run_dir / "checkpoint-4")
    (run_dir / "checkpoint-2" / "ldifs_run.json").write_text('{"method": ')
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    (other / "ldifs_run.json").write_text("[]")
    entries = {e.path: e for e in resolve_checkpoints([str(run_dir), str(other)])}
    assert "checkpoint-2/ldifs_run.json is damaged: not JSON" in entries[str(run_dir / "checkpoint-2")].problem
    assert entries[str(run_dir / "checkpoint-4")].problem is None
    assert "ldifs_run.json is damaged: it holds a JSON list" in entries[str(other)].problem


def test_a_moved_run_names_its_new_folder(run_dir, tmp_path):
    """Rerun in its new folder, the success line and the record named the old one, and a sequence's next
    task started from the old folder's export."""
    record = RunRecord.load(run_dir)
    record.completed, record.output_dir, record.export_dir = True, str(run_dir), str(run_dir / "clip")
    record.save(run_dir)
    for folder in (run_dir, run_dir / "clip"):  # the final model and the export a finished run holds
        shutil.copytree(run_dir / "checkpoint-4", folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.json", "checkpoint-*"))
        shutil.copy(run_dir / "checkpoint-4" / "config.json", folder)
    moved = tmp_path / "moved"
    shutil.move(run_dir, moved)
    finished = plan_output_dir(str(moved), "zs-init-ce", "eurosat").finished
    assert (finished.output_dir, finished.export_dir) == (str(moved), str(moved / "clip"))
    assert RunRecord.load(moved).output_dir == str(moved)  # what `evaluate` and `interpolate` read


def test_overwrite_removes_links_not_their_targets(run_dir, tmp_path, monkeypatch):
    """A checkpoint that was a symbolic link stopped `--overwrite_output_dir` half-way ("Cannot call rmtree on
    a symbolic link", naming no path) after the record was gone, so the folder could no longer be reused."""
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run_dir / "checkpoint-2", elsewhere)
    (run_dir / "checkpoint-2").symlink_to(elsewhere)
    (run_dir / "checkpoint-4" / "link").symlink_to(elsewhere)
    (run_dir / "clip").symlink_to(elsewhere)
    (run_dir / "notes.txt").write_text("mine")
    before = sorted(os.listdir(elsewhere))
    real_remove = os.remove

    def refuse_the_record(path):
        if str(path).endswith("ldifs_run.json"):
            raise PermissionError(errno.EACCES, "Permission denied")
        real_remove(path)

    monkeypatch.setattr(plan_module.os, "remove", refuse_the_record)
    with pytest.raises(OSError, match=rf"could not remove {run_dir}/ldifs_run.json \(Permission denied\).*rerun the same command"):
        remove_earlier_run(str(run_dir))
    assert sorted(os.listdir(run_dir)) == ["ldifs_run.json", "notes.txt"]  # the record goes last: still this run's folder
    assert sorted(os.listdir(elsewhere)) == before
    monkeypatch.undo()
    remove_earlier_run(str(run_dir))
    assert os.listdir(run_dir) == ["notes.txt"]


@pytest.mark.parametrize("config, needle", [
    ({"max_steps": "two"}, "max_steps must be an integer, got 'two'"),
    (["--method", "zs-init-ce"], "holds a JSON list; a config is a JSON object"),
    ("{\"method\": ", "is not JSON (Expecting value"),
    ({"weight_decay": float("nan")}, "weight_decay must be a finite number, got nan"),
])
def test_a_bad_json_config_is_one_line(tmp_path, capsys, config, needle):
    """A string where a number goes failed as "'<' not supported between instances of 'str' and 'int'", a
    list for the whole config as "'list' object is not a mapping"."""
    path = tmp_path / "config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(
        {"method": "zs-init-ce", "output_dir": str(tmp_path / "out"), **config} if isinstance(config, dict) else config))
    for command in ("finetune", "lambda-search") if isinstance(config, dict) else ("finetune", "evaluate", "study", "demo"):
        assert needle in one_line_error(capsys, [command, str(path)])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value", [("--ldifs_lambda", "inf"), ("--weight_decay", "nan"), ("--max_grad_norm", "nan"), ("--learning_rate", "-inf"),
                                         ("--forgetting_every_percent", "nan")])
def test_a_non_finite_setting_is_refused(tiny_clip_dir, eurosat_dir, tmp_path, capsys, flag, value):
    """`--ldifs_lambda inf` trained to a NaN loss; `--weight_decay nan` and `--max_grad_norm nan` trained NaN
    weights or were never used. Every float of the argument dataclasses is checked, not a list of names."""
    line = one_line_error(capsys, ["finetune", *finetune_argv(tiny_clip_dir, eurosat_dir, tmp_path / "out", "zs-init-ldifs", f"{flag}={value}")])
    assert line.startswith(f"error: {flag[2:]} must be a finite number, got {float(value)}")
    assert not (tmp_path / "out").exists()


def test_an_empty_saved_split_is_named_as_empty(tiny_clip_dir, tmp_path, capsys):
    """A split saved with no rows failed as "Could not read the local copy ... (IndexError: list index out of range)"."""
    data = make_benchmark_like_dataset("eurosat", num_train=6, num_test=4)
    data["train"] = data["train"].select([])
    data.save_to_disk(tmp_path / "data")
    line = one_line_error(capsys, ["finetune", *finetune_argv(tiny_clip_dir, tmp_path / "data", tmp_path / "out", "zs-init-ce")])
    assert line == "error: the train split of 'eurosat' is empty; a run needs at least one train example"


def test_a_cache_that_is_a_file_is_named(tmp_path, monkeypatch):
    """HF_HOME (or the world cache) being a file was reported as unreadable data ("Could not read the local
    copy ... NotADirectoryError") or a raw "[Errno 20] Not a directory"."""
    import datasets

    from ldifs_hf.benchmarks import load_benchmark
    from ldifs_hf.testing import save_benchmark_like_dataset
    from ldifs_hf.world.settings import write_atomically

    parquet = save_benchmark_like_dataset("eurosat", tmp_path / "parquet", format="parquet", num_train=6, num_test=4)
    cache = tmp_path / "hf_home"
    cache.write_text("")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache / "datasets")
    with pytest.raises(BenchmarkError, match=rf"the datasets cache '{cache}/datasets' \(from \$HF_HOME\) cannot hold files: '{cache}' is a file"):
        load_benchmark("eurosat", data_path=parquet)
    with pytest.raises(OSError, match=rf"the world cache cannot hold model in '{cache}/world' \(Not a directory\); set --world_cache_dir"):
        write_atomically(cache / "world" / "model", lambda tmp: pytest.fail("nothing is made before the cache is known to take it"))


def test_a_missing_local_path_is_never_taken_for_a_hub_id(tiny_clip_dir, eurosat_dir, tmp_path, capsys, monkeypatch):
    """`runs/typo` (a run folder misspelt inside an existing `runs/`) was scored as a Hub model and failed
    at the end; a misspelt reference model failed after the data and the model had loaded."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    line = one_line_error(capsys, ["evaluate", "--checkpoint", "runs/typo", "--datasets", "eurosat", "--pretrained", str(tiny_clip_dir)])
    assert line == "error: checkpoint 'runs/typo' does not exist (and is not a Hub id: 'runs' is a local folder, so this is a path in it)"
    argv = finetune_argv(tiny_clip_dir, eurosat_dir, tmp_path / "out", "zs-init-ldifs", "--reference_model_name_or_path", "runs/typo")
    assert "'runs/typo' (reference_model_name_or_path): that path does not exist" in one_line_error(capsys, ["finetune", *argv])


def test_a_sequences_later_data_is_checked_first(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    argv = finetune_argv(tiny_clip_dir, eurosat_dir, tmp_path / "seq", "zs-init-ce")
    argv[argv.index("--dataset") + 1] = "eurosat,mnist"
    argv[argv.index("--dataset_path") + 1] = f"eurosat={eurosat_dir},mnist={tmp_path / 'nowhere'}"
    assert "Data path" in one_line_error(capsys, ["finetune", *argv], "'mnist' does not exist")
    assert not (tmp_path / "seq").exists()


def test_a_sequence_in_another_order_is_refused(tmp_path, monkeypatch):
    """A finished eurosat>mnist rerun as mnist>eurosat trained a second sequence into the same folder
    (1-eurosat, 2-mnist, 1-mnist, 2-eurosat), and sequence.json named only the last."""
    from ldifs_hf.training import sequences

    out = tmp_path / "seq"
    for folder, task in (("1-eurosat", "eurosat"), ("2-mnist", "mnist")):
        (out / folder).mkdir(parents=True)
        RunRecord(method="zs-init-ce", dataset=task, base_model="m", completed=True).save(out / folder)
    (out / "sequence.json").write_text(json.dumps({"tasks": ["eurosat", "mnist"]}))
    with pytest.raises(ValueError, match=r"holds a sequence of other tasks or order \(eurosat>mnist; .*rerun it as --dataset eurosat,mnist"):
        sequences._check_earlier_sequence(str(out), ["mnist", "eurosat"], overwrite=False)
    sequences._check_earlier_sequence(str(out), ["eurosat", "mnist", "cifar10"], overwrite=False)  # one more task: it continues
    with pytest.raises(ValueError, match=r"eurosat>mnist; its task folders 2-mnist"):
        sequences._check_earlier_sequence(str(out), ["eurosat"], overwrite=False)
    (out / "2-mnist" / "notes.txt").write_text("mine")
    sequences._check_earlier_sequence(str(out), ["mnist", "eurosat"], overwrite=True)
    assert sorted(os.listdir(out)) == ["2-mnist", "sequence.json"] and os.listdir(out / "2-mnist") == ["notes.txt"]
    with pytest.raises(ValueError, match="holds a sequence of tasks .sequence.json."):  # and a single run never goes beside one
        plan_output_dir(str(out), "zs-init-ce", "eurosat")


def test_a_study_leaving_out_done_cells_is_refused(tmp_path):
    """A demo rerun with fewer methods rewrote its tables without the rows of the cells it left out."""
    from ldifs_hf.study.arguments import StudyArguments
    from ldifs_hf.study.runner import MANIFEST_FILE, check_dropped_cells, plan_study

    args = StudyArguments(output_dir=str(tmp_path), methods="zs-init-ce", finetune_tasks="eurosat", eval_tasks="eurosat", seeds="0", world="none")
    plan = plan_study(args)
    manifest = [{"folder": c.folder, "status": "done"} for c in plan.cells] + [{"folder": "cells/flyp/eurosat/seed-0", "status": "done"}]
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"cells": manifest}))
    with pytest.raises(ValueError, match=r"holds 1 done cell\(s\) these options leave out \(cells/flyp/eurosat/seed-0\)"):
        check_dropped_cells(args, plan)
    args.overwrite_output_dir = True
    check_dropped_cells(args, plan)


def test_one_seed_reports_no_spread():
    """One seed printed "± nan points ...; the difference is inside the noise" and tables "± 0.0"."""
    claim = evidence.correct([evidence.Claim("lp-init-ldifs", "lp-init-ce", "delta_lp", {"seed 0": (0.0, -0.05)})])[0]
    assert not claim.tested and claim.verdict == evidence.NO_DIFFERENCE
    assert claim_sentence(claim, CLIP_AXES).endswith("one seed: no test (lp-init-ldifs − lp-init-ce = +5.0 points).")
    assert "nan" not in claims_section(Evidence(CLIP_AXES, [], claims=[claim]))
    assert _mean_std([0.5]) == "+50.0" and _mean_std([0.5, 0.7], signed=False) == "60.0 ± 14.1"  # the tables' cells


@pytest.fixture(scope="module")
def finished_run(tiny_clip_dir, eurosat_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["finetune", *finetune_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce")]) == 0
    return out


@pytest.mark.slow
def test_a_cut_short_interpolation_or_report_resumes(finished_run, tiny_clip_dir, eurosat_dir, tmp_path, capsys, monkeypatch):
    """A killed `interpolate` (a folder with some of its files) and an evaluation whose report was cut short
    (a full disk: "[Errno 28] No space left on device", naming no folder) blocked the same command."""
    from ldifs_hf.evaluation import run as evaluation_run

    out = tmp_path / "theta"
    argv = ["interpolate", "--run", str(finished_run), "--alpha", "0.5", "--output_dir", str(out)]
    assert main(argv) == 0
    record = json.loads((out / "ldifs_run.json").read_text())
    (out / "ldifs_run.json").write_text(json.dumps({**record, "completed": False}))  # a kill before the last write
    shutil.rmtree(out / "clip")
    assert main(argv) == 0 and (out / "clip" / "model.safetensors").is_file() and json.loads((out / "ldifs_run.json").read_text())["completed"]
    assert main([*argv[:-3], "0.3", *argv[-2:]]) == 2  # another α: refused, naming the one the folder holds

    report = tmp_path / "report"
    evaluate = ["evaluate", "--checkpoint", str(finished_run), "--datasets", f"eurosat={eurosat_dir}", "--output_dir", str(report),
                "--lp_iterations", "5", "--device", "cpu", "--no_plots"]

    def full_disk(*args, **kwargs):
        (report / "results.json").write_text("{")  # the first file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(evaluation_run, "write_report", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**30, 2**30 - 2**10, 2**10))
    line = one_line_error(capsys, evaluate, code=2, after_work=True)
    assert f"the disk of output_dir '{report}' is full" in line and "replaces the unfinished report" in line
    monkeypatch.undo()
    assert main(evaluate) == 0 and json.loads((report / "results.json").read_text())["records"]
    assert not (report / evaluation_run.REPORT_UNFINISHED).exists()
    assert main(evaluate) == 2  # a finished report is still kept unless --overwrite_report
