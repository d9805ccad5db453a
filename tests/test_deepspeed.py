"""DeepSpeed ZeRO-2 and ZeRO-3 through the shipped accelerate configs, on CPU with one process (DeepSpeed's
CPU accelerator; accelerate runs DeepSpeed on several processes only on GPUs).

A ZeRO run must train exactly as a plain run: the same logged losses (so the LDIFS teacher is the
pretrained encoder, 0 at the first step), the same exported weights and A_FT. The teacher is an
inference engine of its own (partitioned under ZeRO-3, never trained), as trl prepares reference models.
What ZeRO-3 cannot do (L2SP, the in-training forgetting callback, an export without gathered weights) is
refused in one line before anything is loaded."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from ldifs_hf.cli import parse_finetune_args
from ldifs_hf.run_folder import read_holder
from ldifs_hf.evaluation.run import EvaluationArguments, run_evaluation
from ldifs_hf.testing import save_benchmark_like_dataset
from ldifs_hf.training.distributed import teacher_deepspeed_config
from ldifs_hf.training.run import run_finetune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "examples", "accelerate_configs")

# Runs the script and records, when training ends, what the teacher is and whether its weights are shards.
RECORDING_LAUNCH = textwrap.dedent(
    """
    import json, os, runpy, sys
    from ldifs_hf.training.trainer import LDIFSTrainer
    train = LDIFSTrainer.train

    def recording_train(self, *args, **kwargs):
        try:
            return train(self, *args, **kwargs)
        finally:
            teacher = self.teacher
            params = list(teacher.parameters()) if teacher is not None else []
            seen = {
                "teacher": type(teacher).__name__,
                # ZeRO-3 manages every weight (ds_tensor) and releases all but the small persistent ones
                "teacher_partitioned": bool(params) and all(hasattr(p, "ds_tensor") for p in params) and any(p.numel() == 0 for p in params),
                "teacher_trainable": any(p.requires_grad for p in params),
                "student": type(self.model_wrapped).__name__,
            }
            with open(os.environ["RECORD_TO"], "w") as f:
                json.dump(seen, f)

    LDIFSTrainer.train = recording_train
    if os.environ.get("SLOW_STEPS"):  # slowed down, so that a test can kill it mid-run
        import time
        step = LDIFSTrainer.training_step
        LDIFSTrainer.training_step = lambda self, *a, **k: (time.sleep(0.25), step(self, *a, **k))[1]
    sys.argv = [sys.argv[1], *sys.argv[2:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


def _argv(method, model_dir, data_dir, out_dir):
    return [
        "--method", method, "--dataset", "eurosat", "--dataset_path", str(data_dir), "--model_name_or_path", str(model_dir),
        "--output_dir", str(out_dir), "--max_steps", "4", "--per_device_train_batch_size", "4", "--report_to", "none",
        "--lp_iterations", "20", "--warmup_steps", "0", "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "2",
        "--disable_tqdm", "true", "--learning_rate", "1e-3", "--seed", "0",
    ]


def _env(**extra):
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]), **extra}


def _accelerate_command(config, script_args, tmp_path):
    """`accelerate launch --config_file CONFIG --num_processes 1 examples/run_finetune.py ...`, through the
    recording launcher (run from the repo root: the yaml names its json relative to it)."""
    launcher = tmp_path / "recording_launch.py"
    launcher.write_text(RECORDING_LAUNCH)
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", os.path.join(CONFIGS, config), "--num_processes", "1",
            str(launcher), os.path.join(ROOT, "examples", "run_finetune.py"), *script_args]


def _accelerate(config, script_args, tmp_path):
    cmd = _accelerate_command(config, script_args, tmp_path)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(RECORD_TO=str(tmp_path / "seen.json")), timeout=600)


def _logged(out, term):
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [v for h in history if "loss_task" in h for v in (h["loss"], h["loss_task"], h[term])]


@pytest.fixture(scope="module")
def eurosat(tmp_path_factory):
    return save_benchmark_like_dataset("eurosat", tmp_path_factory.mktemp("ds") / "eurosat", num_train=16, num_test=8)


@pytest.mark.slow
@pytest.mark.parametrize(
    "config,method,term",
    [("deepspeed_zero2.yaml", "lp-init-ldifs", "loss_ldifs"), ("deepspeed_zero3.yaml", "lp-init-ldifs", "loss_ldifs"),
     ("deepspeed_zero2.yaml", "zs-init-l2sp", "loss_l2sp")],
)
def test_a_zero_run_trains_exports_and_scores_like_a_plain_run(config, method, term, tiny_clip_dir, eurosat, tmp_path):
    plain = tmp_path / "plain"
    run_finetune(*parse_finetune_args(_argv(method, tiny_clip_dir, eurosat, plain)))

    zero = tmp_path / "zero"
    proc = _accelerate(config, _argv(method, tiny_clip_dir, eurosat, zero), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["student"] == "DeepSpeedEngine"
    if term == "loss_ldifs":
        # The teacher: an inference engine of its own, frozen; under ZeRO-3 each process holds shards of it.
        assert seen["teacher"] == "DeepSpeedEngine" and not seen["teacher_trainable"]
        assert seen["teacher_partitioned"] is (config == "deepspeed_zero3.yaml")

    # The same losses step by step: the regularizer is 0 at step 1 (teacher = pretrained) and then the same.
    assert _logged(zero, term)[2] == 0 and len(_logged(zero, term)) == 3 * 4
    assert _logged(zero, term) == pytest.approx(_logged(plain, term), rel=1e-5, abs=1e-6)
    # The export is whole (gathered, under ZeRO-3) and equal to the plain run's; so is A_FT.
    a, b = load_file(plain / "clip" / "model.safetensors"), load_file(zero / "clip" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-4, rtol=1e-4, msg=name)
    record = json.loads((zero / "ldifs_run.json").read_text())
    assert record["completed"] and record["results"] == json.loads((plain / "ldifs_run.json").read_text())["results"]

    # Its checkpoints hold gathered weights the evaluation scores like any other.
    result = run_evaluation(EvaluationArguments(
        checkpoint=[str(zero)], datasets="eurosat", dataset_path=[f"eurosat={eurosat}"], output_dir=str(tmp_path / "eval"),
        include_intermediate=True, lp_iterations=20, num_workers=0,
    ))
    assert not result.failures and {r["status"] for r in result.records} == {"ok"}


@pytest.mark.slow
def test_a_killed_zero3_run_resumes_from_its_checkpoint_to_the_same_weights(tiny_clip_dir, eurosat, tmp_path):
    import signal
    import time

    argv = lambda out: [*_argv("lp-init-ldifs", tiny_clip_dir, eurosat, out), "--max_steps", "8"]  # saves every 2 steps
    straight = tmp_path / "straight"
    assert _accelerate("deepspeed_zero3.yaml", argv(straight), tmp_path).returncode == 0

    out = tmp_path / "killed"
    env = _env(RECORD_TO=str(tmp_path / "seen.json"), SLOW_STEPS="1")
    # Its own session, so that the kill reaches accelerate's launcher and the training process under it.
    proc = subprocess.Popen(_accelerate_command("deepspeed_zero3.yaml", argv(out), tmp_path), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint-4" / "trainer_state.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # torch's elastic agent starts the training process in a session of its own, so the kill above can
    # leave it running, and writing, as an orphan: the folder's lock names it; it dies too, as a kill of
    # the whole job would take it.
    holder = read_holder(str(out))
    if holder is not None:
        try:
            os.kill(int(holder["pid"]), signal.SIGKILL)
        except ProcessLookupError:
            pass
        while True:
            try:
                os.kill(int(holder["pid"]), 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert not (out / "model.safetensors").exists()
    kept = (out / "checkpoint-4" / "model.safetensors").stat().st_mtime_ns

    resumed = _accelerate("deepspeed_zero3.yaml", argv(out), tmp_path)  # the same command: continues from checkpoint-4 or -6
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (out / "checkpoint-4" / "model.safetensors").stat().st_mtime_ns == kept  # continued, not redone
    assert json.loads((out / "ldifs_run.json").read_text())["completed"]
    a, b = load_file(straight / "clip" / "model.safetensors"), load_file(out / "clip" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=1e-6, msg=name)
    # The teacher after the resume is still the pretrained encoder: the LDIFS terms match the straight run's.
    assert _logged(out, "loss_ldifs")[-3:] == pytest.approx(_logged(straight, "loss_ldifs")[-3:], rel=1e-6)


def _write_config(tmp_path, zero: dict) -> str:
    with open(os.path.join(CONFIGS, "deepspeed_zero3.json")) as f:
        config = json.load(f)
    config["zero_optimization"] = zero
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case,expected",
    [
        ("l2sp", "L2SP under DeepSpeed ZeRO-3 is not supported"),
        ("no_gather", "stage3_gather_16bit_weights_on_model_save"),
        ("forgetting", "--forgetting_benchmarks scores the model on the main process"),
    ],
)
def test_what_zero3_cannot_do_is_refused_in_one_line_before_loading(case, expected, tiny_clip_dir, eurosat, tmp_path):
    out = tmp_path / "out"
    method = "zs-init-l2sp" if case == "l2sp" else "lp-init-ldifs"
    zero = {"stage": 3, "stage3_gather_16bit_weights_on_model_save": case != "no_gather"}
    args = [*_argv(method, tiny_clip_dir, eurosat, out), "--deepspeed", _write_config(tmp_path, zero)]
    if case == "forgetting":
        args += ["--forgetting_benchmarks", "eurosat"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m", "ldifs_hf", "finetune", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=600)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode != 0 and len(errors) == 1 and expected in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr.split("error: ")[0]  # the process itself printed no traceback
    assert not out.exists()  # refused before the output directory, data or weights were touched


@pytest.mark.slow
def test_the_zero3_checks_also_hold_under_accelerate_launch(tiny_clip_dir, eurosat, tmp_path):
    """`accelerate launch --config_file deepspeed_zero3.yaml` gives the run no --deepspeed argument: the
    config comes through accelerate's plugin, and the same checks must read it."""
    out = tmp_path / "out"
    proc = _accelerate("deepspeed_zero3.yaml", _argv("zs-init-l2sp", tiny_clip_dir, eurosat, out), tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode != 0 and len(errors) == 1 and "L2SP under DeepSpeed ZeRO-3 is not supported" in errors[0], proc.stderr[-2000:]
    assert not out.exists()


def test_the_teacher_engine_config_follows_the_student_and_the_teacher_dtype():
    student = {
        "train_micro_batch_size_per_gpu": 4, "train_batch_size": 32, "gradient_accumulation_steps": 2, "gradient_clipping": 1.0,
        "optimizer": {"type": "AdamW"}, "scheduler": {"type": "WarmupLR"}, "bf16": {"enabled": True},
        "zero_optimization": {"stage": 3, "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": 1000,
                              "stage3_param_persistence_threshold": "auto", "offload_optimizer": {"device": "cpu"},
                              "offload_param": {"device": "cpu"}},
    }
    config = teacher_deepspeed_config(student, torch.bfloat16, hidden_size=768)
    # Stage 3 stays; "auto" buckets sized as trl sizes them, explicit ones kept; nothing to optimize.
    assert config["zero_optimization"] == {
        "stage": 3, "reduce_bucket_size": 768 * 768, "stage3_prefetch_bucket_size": 1000,
        "stage3_param_persistence_threshold": 7680, "offload_param": {"device": "cpu"},
    }
    assert "optimizer" not in config and "scheduler" not in config and "gradient_clipping" not in config
    assert config["train_micro_batch_size_per_gpu"] == 4 and "train_batch_size" not in config
    assert config["bf16"] == {"enabled": True} and "fp16" not in config
    # A float32 teacher under a bf16 run stays float32: no precision section at all.
    config32 = teacher_deepspeed_config(student, torch.float32, hidden_size=768)
    assert "bf16" not in config32 and "fp16" not in config32
    assert teacher_deepspeed_config({**student, "bf16": {"enabled": False}}, torch.float16, 768)["fp16"] == {"enabled": True}
    # ZeRO-1/2 partition optimizer state and gradients, which a frozen model has none of: stage 0.
    for stage in (1, 2):
        lower = teacher_deepspeed_config({**student, "zero_optimization": {"stage": stage, "overlap_comm": True}}, torch.float32, 768)
        assert lower["zero_optimization"] == {"stage": 0}
    # "auto" batch sizes (not filled in yet) become a micro batch of 1; the student's config is untouched.
    auto = teacher_deepspeed_config({**student, "train_micro_batch_size_per_gpu": "auto"}, torch.float32, 768)
    assert auto["train_micro_batch_size_per_gpu"] == 1
    assert student["zero_optimization"]["reduce_bucket_size"] == "auto" and "optimizer" in student
