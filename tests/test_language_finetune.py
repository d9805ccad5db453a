"""A language-model fine-tuning run (`finetune_language_model`: trl's SFT with a regularizer) keeps a run folder by
the CLIP run's rules: its record says method, regularizer, λ and seed (which the language evaluation reads), a rerun
returns the finished run, other settings are refused naming --overwrite_output_dir, and a run killed after a
checkpoint continues from it to the same weights as an uninterrupted one."""

import json

import pytest
import torch
from safetensors.torch import load_file

from ldifs_hf.language import finetune as language_finetune
from ldifs_hf.language.finetune import finetune_language_model, regularizer_of, sft_method
from ldifs_hf.language.skills import prepare_skills, skills_settings
from ldifs_hf.records import RunRecord

pytest.importorskip("trl")
SFT = dict(max_steps=6, save_strategy="steps", save_steps=3, per_device_train_batch_size=8, learning_rate=1e-3, seed=3, logging_steps=3)


@pytest.fixture(scope="module")
def skills(quick_skills_cache):
    return prepare_skills(skills_settings("quick"), quick_skills_cache, progress=False)


def _run(skills, out, **kwargs):
    return finetune_language_model(str(skills.model_dir), str(skills.sft_dir), str(out), finetune_task=skills.new_task, **{**SFT, **kwargs})


def test_the_run_records_what_the_language_evaluation_reads_and_reruns_by_the_run_folder_rules(skills, tmp_path):
    record = _run(skills, tmp_path / "run", regularizer="ldifs", ldifs_lambda=10.0)
    assert (record.method, record.dataset, record.regularizer, record.regularizer_weight, record.completed) == (
        "sft+ldifs", "skills_shift", "ldifs", 10.0, True)
    assert record.settings["seed"] == 3 and record.settings["ldifs_lambda"] == 10.0 and record.settings["max_steps"] == 6
    assert RunRecord.load(tmp_path / "run") == record and RunRecord.load(tmp_path / "run" / "checkpoint-3").method == "sft+ldifs"
    assert _run(skills, tmp_path / "run", regularizer="ldifs", ldifs_lambda=10.0) == record  # finished: returned, nothing trained
    with pytest.raises(ValueError, match=r"other settings \(ldifs_lambda 10.0 -> 1.0\).*--overwrite_output_dir"):
        _run(skills, tmp_path / "run", regularizer="ldifs", ldifs_lambda=1.0)
    with pytest.raises(ValueError, match="holds a sft\\+ldifs run on skills_shift, not sft on skills_shift.*--overwrite_output_dir"):
        _run(skills, tmp_path / "run")
    replaced = _run(skills, tmp_path / "run", regularizer="ldifs", ldifs_lambda=1.0, overwrite_output_dir=True)
    assert replaced.regularizer_weight == 1.0 and RunRecord.load(tmp_path / "run").regularizer_weight == 1.0

    pytest.importorskip("lm_eval")
    from ldifs_hf.language import evaluate_language_model

    result = evaluate_language_model(checkpoint=[str(tmp_path / "run")], tasks=",".join(skills.tasks), task_dir=str(skills.task_dir),
                                     output_dir=str(tmp_path / "report"), include_intermediate=False, base_cache=False, limit=4, batch_size=16)
    (scored,) = result.records
    assert (scored["method"], scored["regularizer"], scored["lambda"], scored["seed"], scored["finetune_task"]) == (
        "sft+ldifs", "ldifs", 1.0, 3, "skills_shift")
    assert scored["a_ft"] == scored["eval"]["skills_shift"]["score"]


class _Killed(Exception):
    pass


def test_a_run_stopped_after_a_checkpoint_continues_from_it_to_the_uninterrupted_weights(skills, tmp_path, monkeypatch):
    whole = _run(skills, tmp_path / "whole", regularizer="kl", kl_lambda=1.0)

    class StopAtStep4(language_finetune.NonFiniteGuard):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 4:  # checkpoint-3 is saved, step 4 trained: the process dies here
                raise _Killed()
            return super().on_step_end(args, state, control, **kwargs)

    monkeypatch.setattr(language_finetune, "NonFiniteGuard", StopAtStep4)
    with pytest.raises(_Killed):
        _run(skills, tmp_path / "killed", regularizer="kl", kl_lambda=1.0)
    monkeypatch.undo()
    assert not RunRecord.load(tmp_path / "killed").completed and not (tmp_path / "killed" / "checkpoint-6").exists()
    resumed = _run(skills, tmp_path / "killed", regularizer="kl", kl_lambda=1.0)
    assert resumed.completed and json.loads((tmp_path / "killed" / "trainer_state.json").read_text())["global_step"] == 6
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "killed" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert whole.regularizer_weight == resumed.regularizer_weight == 1.0


def test_method_names_and_bad_arguments_are_one_line(skills, tmp_path):
    assert [sft_method(r) for r in ("none", "l2sp")] == ["sft", "sft+l2sp"] and regularizer_of("sft+kl") == "kl" and regularizer_of("sft") == "none"
    for bad in ("lp-init-ldifs", "sft+", "sft+nope"):
        with pytest.raises((ValueError, KeyError)):
            regularizer_of(bad)
    with pytest.raises(ValueError, match=r"unknown fine-tuning argument\(s\) \['ldifs_lamda'\]"):
        _run(skills, tmp_path / "x", regularizer="ldifs", ldifs_lamda=1.0)
    with pytest.raises(ValueError, match="may not set \\['method'\\]"):
        finetune_language_model(str(skills.model_dir), str(skills.sft_dir), str(tmp_path / "x"), method="sft+kl")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        finetune_language_model(str(skills.model_dir), str(tmp_path / "missing"), str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
