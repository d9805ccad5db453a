"""`ldifs_hf.run_folder`: damaged and foreign checkpoints on resume, the recorded number of processes and
global batch, `--overwrite_output_dir` that deletes only an earlier run's files and never an input, and
a rerun after an interrupted export that keeps the real train metrics."""

import json
import logging
import os
import zipfile

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPModel

from conftest import finetune_argv
from ldifs_hf.cli import main
from ldifs_hf.run_folder import FolderLock, RunRecord, checkpoint_problem, damaged_file, plan_output_dir
from ldifs_hf.training.run import finetune_parser, run_settings

SETTINGS = {"learning_rate": 1e-5, "world_size": 2, "global_train_batch_size": 8}


def _checkpoint(folder, model, step, record=None):
    """A complete Trainer checkpoint as far as resume can tell: weights, config, a torch zip, the state."""
    model.save_pretrained(folder)
    torch.save({"step": torch.arange(64)}, folder / "optimizer.pt")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 10}))
    if record is not None:
        record.save(folder)


@pytest.fixture
def run_dir(tmp_path, tiny_clip_dir):
    """An unfinished zs-init-ce run with complete checkpoints at steps 2 and 4, each carrying its record."""
    out = tmp_path / "run"
    out.mkdir()
    record = RunRecord(method="zs-init-ce", dataset="eurosat", base_model="m", settings=SETTINGS)
    record.save(out)
    model = CLIPModel.from_pretrained(tiny_clip_dir)
    for step in (2, 4):
        _checkpoint(out / f"checkpoint-{step}", model, step, record)
    return out


def _plan(out, **kwargs):
    return plan_output_dir(str(out), "zs-init-ce", "eurosat", settings=SETTINGS, **kwargs)


def test_complete_checkpoints_pass_the_file_check(run_dir):
    assert checkpoint_problem(str(run_dir / "checkpoint-4"), check_files=True) is None
    assert _plan(run_dir).resume_from == str(run_dir / "checkpoint-4")


def test_a_truncated_weight_file_is_named_and_resume_falls_back_with_one_warning(run_dir, caplog):
    weights = run_dir / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert damaged_file(str(run_dir / "checkpoint-4")).startswith(f"{weights} is damaged (it has ")
    assert checkpoint_problem(str(run_dir / "checkpoint-4")) is None  # evaluation's quick check does not read every file
    with caplog.at_level(logging.WARNING):
        assert _plan(run_dir).resume_from == str(run_dir / "checkpoint-2")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"skipping {run_dir / 'checkpoint-4'}: {weights} is damaged") and "\n" not in warning


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_torch_file_is_named(run_dir, damage):
    optimizer = run_dir / "checkpoint-4" / "optimizer.pt"
    data = bytearray(optimizer.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # one byte of the tensor's data, inside the archive: its CRC no longer matches
        with zipfile.ZipFile(optimizer) as archive:
            entry = next(i for i in archive.infolist() if i.file_size >= 64 * 8)
        data[entry.header_offset + 30 + len(entry.filename.encode()) + entry.file_size // 2] ^= 0xFF
    optimizer.write_bytes(bytes(data))
    problem = damaged_file(str(run_dir / "checkpoint-4"))
    assert problem is not None and problem.startswith(f"{optimizer} is damaged"), problem
    assert _plan(run_dir).resume_from == str(run_dir / "checkpoint-2")


def test_an_explicit_damaged_checkpoint_is_refused_by_name(run_dir):
    (run_dir / "checkpoint-4" / "config.json").write_text('{"model_type": ')
    with pytest.raises(ValueError, match=r"cannot be resumed from: .*checkpoint-4/config.json is damaged"):
        _plan(run_dir, resume_from_checkpoint=str(run_dir / "checkpoint-4"))


def test_an_explicit_checkpoint_is_resumed_into_a_new_folder_that_this_command_holds(run_dir, tmp_path):
    new = tmp_path / "new"
    with FolderLock(new):  # the lock made the folder: it is still a new run's
        assert _plan(new, resume_from_checkpoint=str(run_dir / "checkpoint-4")).resume_from == str(run_dir / "checkpoint-4")


def test_resume_refuses_another_runs_checkpoint_by_name(run_dir):
    other = RunRecord(method="zs-init-ce", dataset="eurosat", base_model="m", settings={**SETTINGS, "learning_rate": 1e-3})
    other.save(run_dir / "checkpoint-4")
    with pytest.raises(ValueError) as refused:
        _plan(run_dir)
    message = str(refused.value)
    assert message.startswith(f"{run_dir / 'checkpoint-4'} cannot be resumed from: another run wrote it")
    assert "learning_rate 0.001 vs 1e-05" in message and "\n" not in message
    # Another method's checkpoint too, although the settings agree.
    RunRecord(method="zs-init-l2sp", dataset="eurosat", base_model="m", regularizer="l2sp", settings=SETTINGS).save(run_dir / "checkpoint-4")
    with pytest.raises(ValueError, match="checkpoint-4 cannot be resumed from: another run wrote it .zs-init-l2sp on eurosat"):
        _plan(run_dir)


def test_resuming_with_another_number_of_processes_is_refused_naming_both(run_dir):
    with pytest.raises(ValueError) as refused:
        plan_output_dir(str(run_dir), "zs-init-ce", "eurosat", settings={**SETTINGS, "world_size": 1, "global_train_batch_size": 4})
    assert "world_size 2 -> 1" in str(refused.value) and "global_train_batch_size 8 -> 4" in str(refused.value)


def test_the_settings_record_processes_and_global_batch(tmp_path):
    model_args, data_args, training_args = finetune_parser().parse_args_into_dataclasses(
        finetune_argv("m", "d", tmp_path / "out", "zs-init-ce", "--per_device_train_batch_size", "3", "--gradient_accumulation_steps", "5")
    )
    settings = run_settings(model_args, data_args, training_args)
    assert settings["world_size"] == 1 and settings["global_train_batch_size"] == 15


@pytest.mark.parametrize("where", ["is", "holds"])
def test_overwrite_never_touches_an_input_of_the_run(tmp_path, tiny_clip_dir, where):
    model_dir = tmp_path / "model"
    CLIPModel.from_pretrained(tiny_clip_dir).save_pretrained(model_dir)
    out = model_dir if where == "is" else tmp_path
    RunRecord(method="zs-init-ce", dataset="eurosat", base_model="m").save(out)  # even a folder an earlier run recorded
    before = sorted(os.listdir(model_dir))
    with pytest.raises(ValueError, match=f"output_dir {str(out)!r} {where} the run's input --model_name_or_path"):
        plan_output_dir(str(out), "zs-init-ce", "eurosat", overwrite=True, inputs={"--model_name_or_path": str(model_dir)})
    assert sorted(os.listdir(model_dir)) == before


def test_overwrite_refuses_model_files_that_no_run_recorded(tmp_path, tiny_clip_dir):
    out = tmp_path / "someone-elses-model"
    CLIPModel.from_pretrained(tiny_clip_dir).save_pretrained(out)
    before = sorted(os.listdir(out))
    with pytest.raises(ValueError, match="deletes only an earlier ldifs_hf run's files"):
        plan_output_dir(str(out), "zs-init-ce", "eurosat", overwrite=True)
    assert sorted(os.listdir(out)) == before


def test_cli_refuses_an_output_dir_that_is_the_model_in_one_line(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    model_dir = tmp_path / "model"
    CLIPModel.from_pretrained(tiny_clip_dir).save_pretrained(model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"):
        if os.path.isfile(os.path.join(tiny_clip_dir, name)):
            (model_dir / name).write_bytes(open(os.path.join(tiny_clip_dir, name), "rb").read())
    before = {name: (model_dir / name).read_bytes() for name in os.listdir(model_dir)}
    assert main(["finetune", *finetune_argv(model_dir, eurosat_dir, model_dir, "zs-init-ce", "--overwrite_output_dir")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and "is the run's input --model_name_or_path" in lines[-1], lines[-3:]
    assert {name: (model_dir / name).read_bytes() for name in os.listdir(model_dir)} == before


@pytest.mark.slow
def test_a_rerun_after_an_interrupted_export_keeps_the_real_train_metrics(tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch):
    from ldifs_hf.training import run as run_module

    out = tmp_path / "run"
    argv = finetune_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce", "--save_strategy", "steps", "--save_steps", "2")

    def killed_during_export(*args, **kwargs):
        raise KeyboardInterrupt  # what Ctrl-C during the export is, to the run

    monkeypatch.setattr(run_module, "export_clip_model", killed_during_export)
    with pytest.raises(KeyboardInterrupt):
        run_module.run_finetune(*finetune_parser().parse_args_into_dataclasses(argv))
    first = json.loads((out / "train_results.json").read_text())
    assert first["train_loss"] > 0 and not RunRecord.load(out).completed
    monkeypatch.undo()
    record = run_module.run_finetune(*finetune_parser().parse_args_into_dataclasses(argv))
    assert record.completed and os.path.isdir(record.export_dir)
    assert json.loads((out / "train_results.json").read_text()) == first
    assert json.loads((out / "all_results.json").read_text())["train_loss"] == first["train_loss"]
    # No step was trained again: the export holds the final checkpoint's weights, the state its step.
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    final, exported = load_file(out / "checkpoint-2" / "model.safetensors"), load_file(os.path.join(record.export_dir, "model.safetensors"))
    shared = [k for k in final if k.startswith("vision_model.") and k in exported]
    assert len(shared) > 10 and all(torch.equal(final[k], exported[k]) for k in shared)


def test_cli_never_resumes_from_another_runs_checkpoint(tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    RunRecord(method="zs-init-ce", dataset="eurosat", base_model=str(tiny_clip_dir)).save(out)  # killed before its first save
    other = RunRecord(method="zs-init-l2sp", dataset="eurosat", base_model=str(tiny_clip_dir), regularizer="l2sp",
                      regularizer_settings={"l2sp_lambda": 0.5}, regularizer_weight=0.5)
    _checkpoint(out / "checkpoint-4", CLIPModel.from_pretrained(tiny_clip_dir), 4, other)
    assert main(["finetune", *finetune_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"error: {out / 'checkpoint-4'} cannot be resumed from: another run wrote it (zs-init-l2sp"), lines[-3:]
    assert sorted(os.listdir(out)) == ["checkpoint-4", "ldifs_run.json"] and not RunRecord.load(out).completed


# -- records of the earlier format (the built-ins' weights as fields of their own) ------------------------------------

EARLIER = {  # as the releases before the regularizer reported its own settings wrote ldifs_run.json (fields cut short)
    "method": "lp-init-ldifs", "dataset": "world-digit", "base_model": "m", "regularizer": "ldifs", "ldifs_lambda": 10.0,
    "l2sp_lambda": 0.5, "ldifs_layers": [0, 1, 2, 3, 4], "ldifs_normalization": "token",
    "regularizer_text": "LDIFS, λ = 10.0, token normalisation, taps [0, 1, 2, 3, 4]", "completed": True,
    "settings": {"learning_rate": 0.001, "seed": 0, "regularizer": "ldifs", "ldifs_lambda": 10.0, "l2sp_lambda": 0.5,
                 "ldifs_layers": None, "ldifs_normalization": "token", "teacher_dtype": None, "world_size": 1},
}


def test_a_record_of_the_earlier_format_reads_into_todays_shape_and_keeps_its_identity(tmp_path):
    from ldifs_hf.run_folder.checkpoints import foreign_checkpoint

    run = tmp_path / "run"
    (run / "checkpoint-2").mkdir(parents=True)
    for folder in (run, run / "checkpoint-2"):
        (folder / "ldifs_run.json").write_text(json.dumps(EARLIER))
    for name in ("config.json", "model.safetensors"):  # a finished run holds its model (the reuse check looks)
        (run / name).write_text("{}")
    record = RunRecord.load(run)
    assert record.regularizer_settings == {"ldifs_lambda": 10.0, "ldifs_layers": [0, 1, 2, 3, 4], "ldifs_normalization": "token"}
    assert (record.regularizer_weight, record.regularizer_text) == (10.0, EARLIER["regularizer_text"])
    assert "ldifs_lambda" not in record.to_dict()  # written back in today's shape
    # Today's record of the same run (its regularizer reports more settings) owns the earlier checkpoint; another λ does not.
    today = dict(ldifs_lambda=10.0, ldifs_layers=[0, 1, 2, 3, 4], ldifs_normalization="token", ldifs_tap="encoder",
                 teacher_dtype=None, keep_student_dropout=False)
    settings = {**{k: v for k, v in EARLIER["settings"].items() if k != "l2sp_lambda"}, **today, "ldifs_layers": None}
    same = RunRecord(method="lp-init-ldifs", dataset="world-digit", base_model="m", regularizer="ldifs", regularizer_settings=today,
                     regularizer_weight=10.0, settings=settings)
    assert foreign_checkpoint(str(run / "checkpoint-2"), same) is None
    other = RunRecord(**{**same.to_dict(), "regularizer_settings": {**today, "ldifs_lambda": 1.0}})
    assert "ldifs_lambda 10.0 vs 1.0" in foreign_checkpoint(str(run / "checkpoint-2"), other)
    # Resume and reuse compare the settings both records have: the same run is found finished, another λ refused.
    assert plan_output_dir(str(run), "lp-init-ldifs", "world-digit", settings=settings).finished.regularizer_weight == 10.0
    with pytest.raises(ValueError, match=r"other settings \(ldifs_lambda 10.0 -> 1.0\)"):
        plan_output_dir(str(run), "lp-init-ldifs", "world-digit", settings={**settings, "ldifs_lambda": 1.0})


@pytest.mark.parametrize("fields, settings, weight, text", [
    ({"regularizer": "ldifs", "ldifs_lambda": 3.0, "ldifs_layers": [0, 2], "ldifs_normalization": None},
     {"ldifs_lambda": 3.0, "ldifs_layers": [0, 2], "ldifs_normalization": "token"}, 3.0, "LDIFS, λ = 3.0, token normalisation, taps [0, 2]"),
    ({"regularizer": "l2sp", "ldifs_lambda": 10.0, "l2sp_lambda": 0.5}, {"l2sp_lambda": 0.5}, 0.5, "L2SP, λ = 0.5"),
    ({"regularizer": "none", "ldifs_lambda": 10.0, "l2sp_lambda": 0.5}, {}, None, "none"),
])
def test_the_oldest_records_without_a_card_text_get_the_text_they_were_given(fields, settings, weight, text):
    record = RunRecord.from_dict({"method": "m", "dataset": "d", "base_model": "b", **fields})
    assert (record.regularizer_settings, record.regularizer_weight, record.regularizer_text) == (settings, weight, text)
