"""A run that goes wrong stops loudly, keeps what was good, and never reports a wrong number
(docs/RELIABILITY.md's tables name the fault each test below covers)."""

import copy
import json
import os
import shutil
from types import SimpleNamespace

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPModel, GPT2Config, HfArgumentParser

from ldifs_hf.cli import parse_finetune_args
from ldifs_hf.evaluation import EvaluationArguments, run_evaluation
from ldifs_hf.evaluation.checkpoints import resolve_checkpoints
from ldifs_hf.modeling import CLIPVisionClassifier
from ldifs_hf.records import RunRecord
from ldifs_hf.testing import save_benchmark_like_dataset
from ldifs_hf import run_folder
from ldifs_hf.run_folder import checkpoint_problem, plan_output_dir
from ldifs_hf.training import guards, preflight
from ldifs_hf.training.guards import NonFiniteGuard, NonFiniteLossError
from ldifs_hf.training.terms import get_regularizer
from ldifs_hf.training.run import run_finetune
from conftest import finetune_argv, one_line_error


def _argv(model_dir, data_dir, out_dir, method="zs-init-ldifs", *extra):
    return finetune_argv(model_dir, data_dir, out_dir, method, "--logging_steps", "1", *extra)


def _finetune(argv):
    return run_finetune(*parse_finetune_args(argv))


# -- 1. non-finite guard ---------------------------------------------------------------------------


def _guard(terms, *, regularizer="ldifs", weight=10.0, accumulation=1, weights=None):
    """The guard over a stand-in trainer with `regularizer` on at λ = `weight` (the trainer's state, which the guard
    reads) whose step recorded `terms` ({name: [values]})."""
    model = torch.nn.Linear(2, 2)
    if weights is not None:
        with torch.no_grad():
            model.weight.fill_(weights)
    trainer = SimpleNamespace(_metrics={"train": {k: [torch.tensor(v) for v in vs] for k, vs in terms.items()}}, model=model,
                              regularizer_active=True, regularizer_term=get_regularizer(regularizer), regularizer_weight=weight)
    args = SimpleNamespace(gradient_accumulation_steps=accumulation, device="cpu")
    return NonFiniteGuard(trainer), args, SimpleNamespace(global_step=7), SimpleNamespace(should_save=False)


def test_guard_names_the_non_finite_term_and_the_step():
    guard, args, state, control = _guard({"loss_task": [1.0], "loss_ldifs": [float("nan")]})
    with pytest.raises(NonFiniteLossError, match=r"step 7: loss_ldifs \(nan\) is not finite"):
        guard.on_step_end(args, state, control)
    guard, args, state, control = _guard({"loss_task": [float("inf")], "loss_l2sp": [0.0]}, regularizer="l2sp", weight=0.5)
    with pytest.raises(NonFiniteLossError, match=r"step 7: loss_task \(inf\)"):
        guard.on_step_end(args, state, control)
    guard, args, state, control = _guard({"loss_task": [1.0], "loss_ldifs": [0.5]})
    guard.on_step_end(args, state, control)  # finite: nothing happens


def test_guard_checks_the_weighted_loss_in_float32_and_every_accumulated_micro_batch():
    # 1 + 1e30 * 1e10 = 1e40 overflows float32 (max 3.4e38), as the trainer's own sum would.
    guard, args, state, control = _guard({"loss_task": [1.0], "loss_ldifs": [1e10]}, weight=1e30)
    with pytest.raises(NonFiniteLossError, match=r"the loss \(task \+ weighted regularizer\)"):
        guard.on_step_end(args, state, control)
    guard, args, state, control = _guard({"loss_task": [1.0], "loss_ldifs": [1e7]}, weight=1e30)  # 1e37: finite
    guard.on_step_end(args, state, control)
    # With 2 micro-batches per step, the first one of this step is checked too; an older value is not.
    guard, args, state, control = _guard({"loss_task": [float("nan"), 1.0, 1.0]}, accumulation=2)
    guard.on_step_end(args, state, control)
    guard, args, state, control = _guard({"loss_task": [1.0, float("nan"), 1.0]}, accumulation=2)
    with pytest.raises(NonFiniteLossError, match="loss_task"):
        guard.on_step_end(args, state, control)


def test_guard_refuses_to_save_or_finish_with_non_finite_weights():
    guard, args, state, control = _guard({"loss_task": [1.0]}, weights=float("nan"))
    guard.on_step_end(args, state, control)  # no save this step: the loss terms are what count
    control.should_save = True
    with pytest.raises(NonFiniteLossError, match="weights are not finite before saving checkpoint-7 .first: weight"):
        guard.on_step_end(args, state, control)
    with pytest.raises(NonFiniteLossError, match="at the end of training"):
        guard.on_train_end(args, state, control)


def test_guard_stops_after_three_infinite_gradient_norms_in_a_row():
    guard, args, state, control = _guard({})

    def step(norm):
        guard.trainer._step_grad_norm = norm
        guard.on_step_end(args, state, control)

    for norm in (float("inf"), float("inf"), 1.0, float("inf"), torch.tensor(float("nan"))):  # a finite one resets the count
        step(norm)
    with pytest.raises(NonFiniteLossError, match=f"gradient norm was inf in {guards.INF_GRAD_NORM_PATIENCE} steps in a row"):
        step(float("inf"))
    # fp16 loss scaling skips overflow steps on purpose: those do not count.
    guard, args, state, control = _guard({})
    guard.trainer.accelerator = SimpleNamespace(optimizer_step_was_skipped=True)
    for _ in range(5):
        step(float("inf"))


def test_without_a_per_step_norm_the_guard_counts_the_logged_ones():
    """A Trainer without `_get_grad_norm` (transformers 4.x) never sets the per-step norm: the logged one counts."""
    guard, args, state, control = _guard({})
    for _ in range(guards.INF_GRAD_NORM_PATIENCE - 1):
        guard.on_log(args, state, control, logs={"grad_norm": float("inf")})
    guard.on_log(args, state, control, logs={"loss": 1.0})  # a log without a norm neither counts nor resets
    with pytest.raises(NonFiniteLossError, match="in 3 logs in a row"):
        guard.on_log(args, state, control, logs={"grad_norm": float("inf")})
    # With the per-step norm the logs are not counted again.
    guard, args, state, control = _guard({})
    guard.trainer._step_grad_norm = 1.0
    for _ in range(5):
        guard.on_log(args, state, control, logs={"grad_norm": float("inf")})


def test_diverged_run_stops_keeps_the_last_good_checkpoint_and_exports_nothing(tiny_clip_dir, eurosat_dir, tmp_path, capsys, monkeypatch):
    from ldifs_hf import hub

    pushed = []
    monkeypatch.setattr(hub, "check_push_target", lambda repo_id, token=None: repo_id)  # the Hub, as if reachable
    monkeypatch.setattr(hub, "push_clip_to_hub", lambda *args, **kwargs: pushed.append(args))
    out = tmp_path / "diverged"
    # lr 1e4: the weights are NaN after step 2; with save_total_limit 1 a save at step 2 would rotate
    # checkpoint-1 away.
    argv = _argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ldifs", "--learning_rate", "1e4", "--max_steps", "6",
                 "--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "1", "--push_to_hub", "--hub_model_id", "me/x")
    line = one_line_error(capsys, ["finetune", *argv], after_work=True)
    assert pushed == []
    assert "training stopped at step 2" in line and "not finite" in line, line
    assert sorted(os.listdir(out)) == ["checkpoint-1", "ldifs_run.json", "start_head.safetensors"]  # no model, no export, no card (the start head is written before training)
    assert not RunRecord.load(out).completed
    weights = load_file(out / "checkpoint-1" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    with pytest.raises(NonFiniteLossError, match="step 3: loss_task .nan."):  # without saves: the NaN loss of step 3
        _finetune(_argv(tiny_clip_dir, eurosat_dir, tmp_path / "nosave", "zs-init-ldifs", "--learning_rate", "1e4", "--max_steps", "6"))


def test_an_enormous_regularizer_weight_is_an_error_not_a_silent_run(tiny_clip_dir, eurosat_dir, tmp_path):
    # Every step counts, not only logged ones: with a log every 100 steps it still stops at step 4 of 6
    # (step 1's LDIFS term is 0, the teacher being the student; steps 2, 3 and 4 have an infinite norm).
    with pytest.raises(NonFiniteLossError, match="step 4: the gradient norm was inf in 3 steps in a row"):
        _finetune(_argv(tiny_clip_dir, eurosat_dir, tmp_path / "huge", "zs-init-ldifs", "--ldifs_lambda", "1e30", "--max_steps", "6",
                        "--logging_steps", "100"))


# -- 2. evaluation per checkpoint, complete checkpoints ---------------------------------------------


def _write_checkpoint(folder, model, step, max_steps=4):
    model.save_pretrained(folder)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": max_steps}))


@pytest.fixture(scope="module")
def troubled_run(tiny_clip_dir, tmp_path_factory):
    """A run directory with a good checkpoint-1, a NaN checkpoint-2, a half-written checkpoint-3 (killed
    mid-save: config and weights, no trainer state), a final model at step 4 and an earlier run's
    checkpoint-9."""
    root = tmp_path_factory.mktemp("troubled")
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    classifier = CLIPVisionClassifier.from_clip(clip, torch.randn(10, clip.config.projection_dim, generator=torch.Generator().manual_seed(0)))
    run = root / "run"
    _write_checkpoint(run / "checkpoint-1", classifier, 1)
    nan = copy.deepcopy(classifier)
    with torch.no_grad():
        nan.vision_model.post_layernorm.weight.fill_(float("nan"))
    _write_checkpoint(run / "checkpoint-2", nan, 2)
    classifier.save_pretrained(run / "checkpoint-3")
    _write_checkpoint(run / "checkpoint-9", classifier, 9, max_steps=10)
    _write_checkpoint(run, classifier, 4)
    RunRecord(method="zs-init-ce", dataset="eurosat", base_model=str(tiny_clip_dir)).save(run)
    mnist = save_benchmark_like_dataset("mnist", root / "mnist", num_train=20, num_test=8)
    return run, mnist


def test_checkpoint_problems_are_found_without_loading(troubled_run):
    run, _ = troubled_run
    assert checkpoint_problem(str(run / "checkpoint-1")) is None
    assert "no trainer_state.json" in checkpoint_problem(str(run / "checkpoint-3"))
    entries = {os.path.basename(e.path): e for e in resolve_checkpoints([str(run)])}
    assert list(entries) == ["checkpoint-1", "checkpoint-2", "checkpoint-3", "checkpoint-9", "run"]
    assert entries["checkpoint-2"].problem is None  # NaN weights are found when it is loaded
    assert "a save was interrupted" in entries["checkpoint-3"].problem
    assert "past the run's final step 4" in entries["checkpoint-9"].problem


def test_a_checkpoint_written_by_another_run_is_not_credited_to_this_one(tiny_clip_dir, tmp_path):
    run = tmp_path / "run"
    model = CLIPModel.from_pretrained(tiny_clip_dir)
    _write_checkpoint(run / "checkpoint-2", model, 2, max_steps=20)
    _write_checkpoint(run / "checkpoint-4", model, 4, max_steps=20)
    _write_checkpoint(run, model, 20, max_steps=20)
    this = RunRecord(method="zs-init-l2sp", dataset="eurosat", base_model="m", regularizer="l2sp",
                     regularizer_settings={"l2sp_lambda": 0.5}, regularizer_weight=0.5)
    this.save(run)
    this.save(run / "checkpoint-4")
    RunRecord(method="zs-init-ldifs", dataset="eurosat", base_model="m", regularizer="ldifs",
              regularizer_settings={"ldifs_lambda": 10.0}, regularizer_weight=10.0).save(run / "checkpoint-2")
    problems = {os.path.basename(e.path): e.problem for e in resolve_checkpoints([str(run)])}
    assert problems["checkpoint-4"] is None and problems["run"] is None
    assert problems["checkpoint-2"].startswith("another run wrote it (zs-init-ldifs on eurosat, not zs-init-l2sp on eurosat; method")


def test_resume_skips_a_half_written_checkpoint(tmp_path, tiny_clip_dir):
    out = tmp_path / "run"
    RunRecord(method="zs-init-ce", dataset="eurosat", base_model="m").save(out.mkdir() or out)
    model = CLIPModel.from_pretrained(tiny_clip_dir)
    _write_checkpoint(out / "checkpoint-2", model, 2)
    model.save_pretrained(out / "checkpoint-4")  # a kill during the save: no trainer_state.json
    assert plan_output_dir(str(out), "zs-init-ce", "eurosat").resume_from == str(out / "checkpoint-2")
    (out / "checkpoint-4" / "trainer_state.json").write_text('{"global_st')  # a kill while writing it
    assert plan_output_dir(str(out), "zs-init-ce", "eurosat").resume_from == str(out / "checkpoint-2")
    with pytest.raises(ValueError, match="cannot be resumed from: its trainer_state.json is unreadable"):
        plan_output_dir(str(out), "zs-init-ce", "eurosat", resume_from_checkpoint=str(out / "checkpoint-4"))


def test_evaluation_scores_the_good_checkpoints_and_records_the_others(troubled_run, tiny_clip_dir, tmp_path, capsys):
    run, mnist = troubled_run
    out = tmp_path / "report"
    argv = ["evaluate", "--checkpoint", str(run), "--datasets", "mnist", "--dataset_path", f"mnist={mnist}", "--output_dir", str(out),
            "--lp_iterations", "20", "--feature_distance_samples", "8", "--device", "cpu", "--num_workers", "0"]
    line = one_line_error(capsys, argv, code=1, after_work=True)
    assert "3 checkpoint(s) could not be scored or are not finite" in line, line
    records = json.loads((out / "results.json").read_text())["records"]
    by_name = {os.path.basename(r["checkpoint"]): r for r in records}
    assert {k: r["status"] for k, r in by_name.items()} == {
        "checkpoint-1": "ok", "checkpoint-2": "non_finite", "checkpoint-3": "failed", "checkpoint-9": "failed", "run": "ok",
    }
    assert "post_layernorm.weight is not finite" in by_name["checkpoint-2"]["error"]
    assert by_name["checkpoint-2"]["eval"] == {}  # no accuracy, no Δ (never a Δ of 0)
    assert "mnist" in by_name["run"]["eval"] and by_name["run"]["param_distance"] == 0.0
    table = (out / "results.md").read_text()
    assert "Not scored" in table and "| non-finite |" in table and "no trainer_state.json" in table
    csv_text = (out / "results.csv").read_text()
    assert ",non_finite," in csv_text and ",failed," in csv_text
    # A second evaluation into the same folder is refused before anything is loaded...
    line = one_line_error(capsys, argv)
    assert "already holds a report" in line and "--overwrite_report" in line
    # ... unless asked; an unreadable final model is then failed, and the rest still scored.
    (run / "model.safetensors").rename(run / "model.safetensors.bak")
    try:
        (args,) = HfArgumentParser(EvaluationArguments).parse_args_into_dataclasses(args=argv[1:] + ["--overwrite_report", "--distances", "false"])
        result = run_evaluation(args)
    finally:
        (run / "model.safetensors.bak").rename(run / "model.safetensors")
    assert [os.path.basename(r["checkpoint"]) for r in result.failures] == ["checkpoint-2", "checkpoint-3", "checkpoint-9", "run"]
    assert "| eurosat | A_FT | failed |" in (out / "results.md").read_text()  # the run's final model failed: said so


def test_a_corrupt_safetensors_file_fails_that_checkpoint_only(troubled_run, tiny_clip_dir, tmp_path):
    run, mnist = troubled_run
    corrupt = tmp_path / "corrupt"
    CLIPModel.from_pretrained(tiny_clip_dir).save_pretrained(corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    result = run_evaluation(EvaluationArguments(
        checkpoint=[f"bad={corrupt}", f"good={tiny_clip_dir}"], datasets="mnist", dataset_path=[f"mnist={mnist}"],
        output_dir=str(tmp_path / "report"), lp_iterations=20, distances=False, device="cpu", num_workers=0, pretrained=str(tiny_clip_dir),
    ))
    assert [r["status"] for r in result.records] == ["failed", "ok"]
    assert result.records[1]["eval"]["mnist"]["delta_zs"] == 0.0  # the pretrained model itself, scored


def test_a_non_finite_pretrained_model_is_refused(troubled_run, tiny_clip_dir, tmp_path):
    run, mnist = troubled_run
    broken = tmp_path / "nan-clip"
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    with torch.no_grad():
        clip.visual_projection.weight.fill_(float("inf"))
    clip.save_pretrained(broken)
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json"):  # its processor, unchanged
        shutil.copy(os.path.join(tiny_clip_dir, name), broken / name)
    with pytest.raises(ValueError, match="pretrained model .* is not finite .weight visual_projection.weight"):
        run_evaluation(EvaluationArguments(checkpoint=[str(run)], datasets="mnist", dataset_path=[f"mnist={mnist}"],
                                           pretrained=str(broken), output_dir=str(tmp_path / "r"), device="cpu", num_workers=0))


# -- 3. pre-flight -----------------------------------------------------------------------------------


def test_step_counts_and_dtypes_are_refused_before_anything_is_loaded(tiny_clip_dir, eurosat_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="max_steps must be a positive number of optimizer steps, or -1 .*got 0"):
        _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce", "--max_steps", "0"))
    with pytest.raises(ValueError, match="got -5"):
        _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce", "--max_steps", "-5"))
    with pytest.raises(ValueError, match="save_steps must be > 0, got 0"):
        _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce", "--save_strategy", "steps", "--save_steps", "0"))
    with pytest.raises(ValueError, match="num_train_epochs must be > 0"):
        _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce", "--max_steps", "-1", "--num_train_epochs", "0"))
    with pytest.raises(ValueError, match="teacher_dtype 'float16' does not fit --bf16"):
        _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ldifs", "--bf16", "--teacher_dtype", "float16"))
    assert not out.exists()


def test_an_fsdp_launch_on_cpu_is_refused_not_silently_ddp(tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --config_file fsdp.yaml` sets
    with pytest.raises(ValueError, match="with FSDP, which does not run with --use_cpu"):
        _finetune(_argv(tiny_clip_dir, eurosat_dir, tmp_path / "out", "zs-init-ce"))


def test_a_cpu_launch_that_started_one_of_several_processes_is_refused(tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch):
    # What `accelerate launch --cpu --num_processes 2` leaves to its single process.
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    for variable in preflight._WORLD_SIZE_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ValueError, match="asked for several processes but started one"):
        _finetune(_argv(tiny_clip_dir, eurosat_dir, tmp_path / "out", "zs-init-ce"))
    monkeypatch.setenv("WORLD_SIZE", "1")  # a launcher that says how many processes there are: accepted
    preflight._check_launch()


def test_an_unwritable_or_full_output_dir_fails_at_once(tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = one_line_error(capsys, ["finetune", *_argv(tiny_clip_dir, eurosat_dir, blocker / "out", "zs-init-ce")])
    assert "cannot be created" in line and "is a file" in line

    def refuse(*args, **kwargs):  # what a read-only mount does (chmod does not stop root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(run_folder.plan.tempfile, "mkstemp", refuse)
    line = one_line_error(capsys, ["finetune", *_argv(tiny_clip_dir, eurosat_dir, tmp_path / "ro", "zs-init-ce")])
    assert "is not writable" in line and "Permission denied" in line
    monkeypatch.undo()
    weights = os.path.getsize(os.path.join(tiny_clip_dir, "model.safetensors"))
    monkeypatch.setattr(run_folder.plan.shutil, "disk_usage", lambda path: SimpleNamespace(free=5 * weights))
    line = one_line_error(capsys, ["finetune", *_argv(tiny_clip_dir, eurosat_dir, tmp_path / "full", "zs-init-ce")])
    assert "MiB free" in line and "needs about" in line
    assert not (tmp_path / "ro").exists() and not (tmp_path / "full").exists()


def test_a_full_disk_during_a_checkpoint_says_so_and_the_rerun_continues(tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch, capsys):
    from transformers import Trainer

    out = tmp_path / "full"
    argv = _argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce", "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2")
    disk = {"free": 2**40}
    save = Trainer._save_optimizer_and_scheduler

    def fill_the_disk(self, output_dir):
        if self.state.global_step == 4:  # checkpoint-4's weights are written, then the disk is full
            disk["free"] = 0
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0: file write failed")
        return save(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", fill_the_disk)
    monkeypatch.setattr(run_folder.plan.shutil, "disk_usage", lambda path: SimpleNamespace(free=disk["free"]))
    line = one_line_error(capsys, ["finetune", *argv], after_work=True)
    assert "the disk of output_dir" in line and "is full (0.0 MiB free)" in line and "file write failed" in line, line
    assert checkpoint_problem(str(out / "checkpoint-4")) is not None  # half-written
    assert RunRecord.load(out / "checkpoint-2") == RunRecord.load(out)  # a checkpoint says which run wrote it
    monkeypatch.undo()  # space freed: the same command continues from checkpoint-2
    assert plan_output_dir(str(out), "zs-init-ce", "eurosat").resume_from == str(out / "checkpoint-2")
    assert _finetune(argv).completed and checkpoint_problem(str(out / "checkpoint-4")) is None


def test_a_model_path_is_never_taken_for_a_hub_id_and_must_be_a_clip(tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(capsys, ["finetune", *_argv("./models/clip-tiny", eurosat_dir, tmp_path / "o", "zs-init-ce")])
    assert "that path does not exist" in line
    line = one_line_error(capsys, ["finetune", *_argv("models/clip-tiny", eurosat_dir, tmp_path / "o", "zs-init-ce")])
    assert "as a Hub id (no local directory 'models/clip-tiny' exists)" in line
    GPT2Config(n_layer=2, n_embd=32, n_head=2).save_pretrained(tmp_path / "gpt2")
    line = one_line_error(capsys, ["finetune", *_argv(tmp_path / "gpt2", eurosat_dir, tmp_path / "o", "zs-init-ce")])
    assert "is a 'gpt2' model" in line


def test_no_validation_split_trains_and_records_test_accuracy_only(tiny_clip_dir, eurosat_dir, tmp_path):
    out = tmp_path / "noval"
    record = _finetune(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce", "--validation_fraction", "0", "--max_steps", "1"))
    assert record.completed and list(record.results) == ["test_accuracy"]
    assert "no validation split" in RunRecord.load(out).dataset_splits and (out / "clip" / "config.json").exists()
    with pytest.raises(ValueError, match="validation split of 'eurosat' is empty .* --eval_strategy no"):
        _finetune(_argv(tiny_clip_dir, eurosat_dir, tmp_path / "noval-eval", "zs-init-ce", "--validation_fraction", "0", "--eval_strategy", "steps"))
    assert not (tmp_path / "noval-eval" / "ldifs_run.json").exists()


def test_an_empty_train_or_test_split_is_refused():
    with pytest.raises(ValueError, match="the train split of 'x' is empty"):
        preflight.check_splits({"train": [], "validation": [1], "test": [1]}, "x", validation_needed=False)
    with pytest.raises(ValueError, match="the test split of 'x' is empty"):
        preflight.check_splits({"train": [1], "validation": [1], "test": []}, "x", validation_needed=False)
    preflight.check_splits({"train": [1], "validation": [], "test": [1]}, "x", validation_needed=False)


def test_a_one_image_dataset_runs_to_the_end(tiny_clip_dir, tmp_path):
    data = save_benchmark_like_dataset("eurosat", tmp_path / "one", num_train=1, num_test=1)
    record = _finetune(_argv(tiny_clip_dir, data, tmp_path / "out", "zs-init-ce", "--max_steps", "1"))
    assert record.completed and list(record.results) == ["test_accuracy"]


# -- 4. the user's dataset folder is never written ------------------------------------------------


def _files(folder):
    return sorted(os.path.relpath(os.path.join(root, f), folder) for root, _, files in os.walk(folder) for f in files)


@pytest.mark.parametrize("name", ["eurosat", "cifar100"])  # cifar100: columns "img" and "fine_label", renamed
def test_loading_writes_nothing_into_a_read_only_dataset_folder(name, tmp_path):
    from ldifs_hf.benchmarks import load_benchmark
    from ldifs_hf.testing import make_benchmark_like_dataset

    folder = save_benchmark_like_dataset(name, tmp_path / "data", num_train=30, num_test=10)
    before = _files(folder)
    modes = {}
    for root, dirs, files in os.walk(folder):
        for entry in [root, *(os.path.join(root, f) for f in files)]:
            modes[entry] = os.stat(entry).st_mode
            os.chmod(entry, 0o555 if os.path.isdir(entry) else 0o444)
    try:
        loaded = load_benchmark(name, data_path=folder, max_eval_samples=6, cache_dir=str(tmp_path / "cache"))
    finally:
        for entry, mode in modes.items():
            os.chmod(entry, mode)
    # Tests run as root, which chmod does not stop: what proves it is that no file appeared.
    assert _files(folder) == before
    source = make_benchmark_like_dataset(name, num_train=30, num_test=10)
    spec = loaded.spec
    assert [len(loaded.splits[s]) for s in ("train", "validation", "test")] == [27, 3, 6]
    assert loaded.splits["train"].features["label"].names == loaded.class_names
    # The rows and labels are the source's: same label for the same image bytes.
    train = source[spec.train_split]
    by_bytes = {train.cast_column(spec.image_column, datasets.Image(decode=False))[i][spec.image_column]["bytes"]: train[i][spec.label_column] for i in range(len(train))}
    ours = loaded.splits["train"].cast_column("image", datasets.Image(decode=False))
    assert all(by_bytes[row["image"]["bytes"]] == row["label"] for row in ours)



def test_overwrite_removes_the_earlier_runs_model_state_and_checkpoints_but_not_the_users_files(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    RunRecord(method="zs-init-ldifs", dataset="eurosat", base_model="m").save(out)
    for name in ("model.safetensors", "config.json", "trainer_state.json", "all_results.json", "training_args.bin", "README.md", "notes.txt"):
        (out / name).write_text("earlier")
    (out / "checkpoint-30").mkdir()
    (out / "clip").mkdir()
    plan = plan_output_dir(str(out), "zs-init-l2sp", "eurosat", overwrite=True)
    assert plan.resume_from is None and plan.finished is None
    assert sorted(os.listdir(out)) == ["README.md", "notes.txt"]  # a stale final model can no longer pass as the new run's


# -- a kill -9 mid-run, then a resume ---------------------------------------------------------------

# Runs the CLI with every training step slowed down, so that the test can kill it mid-run.
SLOW_STEPS = """
import sys, time
import torch
torch.set_num_threads(1)  # as the tests' own process (conftest): the same float sums, bit for bit
from ldifs_hf.training.trainer import LDIFSTrainer
step = LDIFSTrainer.training_step
LDIFSTrainer.training_step = lambda self, *a, **k: (time.sleep(0.25), step(self, *a, **k))[1]
from ldifs_hf.cli import main
sys.exit(main(["finetune", *sys.argv[1:]]))
"""


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_gives_the_same_weights_bit_for_bit(tiny_clip_dir, eurosat_dir, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    argv = lambda out: _argv(tiny_clip_dir, eurosat_dir, out, "lp-init-ldifs", "--max_steps", "8", "--save_strategy", "steps", "--save_steps", "2")
    _finetune(argv(tmp_path / "straight"))

    out = tmp_path / "killed"
    (tmp_path / "slow_steps.py").write_text(SLOW_STEPS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "slow_steps.py"), *argv(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint-4" / "trainer_state.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not RunRecord.load(out).completed and not (out / "model.safetensors").exists()
    kept = (out / "checkpoint-4" / "model.safetensors").stat().st_mtime_ns

    record = _finetune(argv(out))  # the same command again: continues from the last complete checkpoint
    assert record.completed
    assert (out / "checkpoint-4" / "model.safetensors").stat().st_mtime_ns == kept  # continued, not redone
    straight, resumed = load_file(tmp_path / "straight" / "model.safetensors"), load_file(out / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    # The LDIFS term after the resume is the straight run's: the teacher is still the pretrained model.
    ldifs = lambda run: [h["loss_ldifs"] for h in json.loads((run / "trainer_state.json").read_text())["log_history"] if "loss_ldifs" in h]
    assert ldifs(out)[-2:] == ldifs(tmp_path / "straight")[-2:] and ldifs(out)[-1] > 0
