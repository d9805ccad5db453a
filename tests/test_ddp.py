"""Two CPU processes (gloo) train exactly as one: the same logged losses and final weights, and only
rank 0 writes (besides each rank's RNG state in a checkpoint, which the Trainer saves per process);
the LDIFS teacher is never wrapped in DDP. Launched with torchrun and with `accelerate launch --multi_gpu` (on CPU through the
script's --use_cpu). `accelerate launch --cpu --num_processes 2` starts ONE process, because accelerate
runs several CPU processes only through MPI (--mpirun_hostfile): the run refuses it."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from ldifs_hf.cli import parse_finetune_args
from ldifs_hf.testing import save_benchmark_like_dataset
from ldifs_hf.training.run import run_finetune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Records every file-system change a process makes under the output directory (Python's audit
# events: open for writing, mkdir, rename/replace, remove, rmtree) into its own file outside it.
AUDITED_LAUNCH = textwrap.dedent(
    """
    import atexit, json, os, runpy, sys
    watched = os.path.abspath(os.environ["AUDIT_WATCH"])
    changes = []
    WRITES = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree", "shutil.move", "shutil.copyfile"}

    def inside(path):
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(watched)
        except TypeError:
            return False

    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing and inside(path):
                changes.append([event, os.fsdecode(path)])
        elif event in WRITES and any(inside(a) for a in args if isinstance(a, (str, bytes, os.PathLike))):
            changes.append([event, *[os.fsdecode(a) for a in args if isinstance(a, (str, bytes, os.PathLike))]])

    # What the student and the LDIFS teacher were wrapped in, seen when training ends.
    wrapped = {}
    from ldifs_hf.training.trainer import LDIFSTrainer
    train = LDIFSTrainer.train

    def recording_train(self, *args, **kwargs):
        try:
            return train(self, *args, **kwargs)
        finally:
            wrapped.update(student=type(self.model_wrapped).__name__, teacher=type(self.teacher).__name__)

    LDIFSTrainer.train = recording_train

    def dump():
        with open(os.path.join(os.environ["AUDIT_DIR"], "rank%s.json" % os.environ.get("RANK", "0")), "w") as f:
            json.dump({"changes": changes, "wrapped": wrapped}, f)

    atexit.register(dump)
    sys.addaudithook(hook)
    sys.argv = [sys.argv[1], *sys.argv[2:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


def _argv(model_dir, data_dir, out_dir, batch_size):
    # 16 training rows: every global batch of 8 is full, so 1 x 8 and 2 x 4 see the same examples.
    return [
        "--method", "lp-init-ldifs", "--dataset", "eurosat", "--dataset_path", str(data_dir), "--model_name_or_path", str(model_dir),
        "--output_dir", str(out_dir), "--max_steps", "4", "--max_train_samples", "16", "--per_device_train_batch_size", str(batch_size),
        "--use_cpu", "--report_to", "none", "--lp_iterations", "20", "--warmup_steps", "0", "--logging_steps", "1",
        "--save_strategy", "steps", "--save_steps", "2", "--disable_tqdm", "true", "--learning_rate", "1e-3", "--seed", "0",
    ]


def _losses(out):
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [v for h in history if "loss_task" in h for v in (h["loss"], h["loss_task"], h["loss_ldifs"])]


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"],
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no"],
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_two_cpu_processes_train_like_one_and_only_rank_0_writes(launcher, tiny_clip_dir, tmp_path):
    data = save_benchmark_like_dataset("eurosat", tmp_path / "eurosat", num_train=30, num_test=10)
    single = tmp_path / "single"
    run_finetune(*parse_finetune_args(_argv(tiny_clip_dir, data, single, 8)))

    double, audit = tmp_path / "double", tmp_path / "audit"
    audit.mkdir()
    (tmp_path / "audited_launch.py").write_text(AUDITED_LAUNCH)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "AUDIT_WATCH": str(double),
           "AUDIT_DIR": str(audit), "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    cmd = [*LAUNCHERS[launcher], str(tmp_path / "audited_launch.py"), os.path.join(ROOT, "examples", "run_finetune.py"),
           *_argv(tiny_clip_dir, data, double, 4)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    assert sorted(os.listdir(audit)) == ["rank0.json", "rank1.json"]  # two processes did run
    audits = [json.loads((audit / f"rank{r}.json").read_text()) for r in (0, 1)]
    for seen in audits:  # the student is DDP-wrapped, the frozen teacher never
        assert seen["wrapped"]["student"] == "DistributedDataParallel" and seen["wrapped"]["teacher"] not in ("DistributedDataParallel", "NoneType"), seen["wrapped"]
    rank0, rank1 = (seen["changes"] for seen in audits)
    assert any(path.endswith("ldifs_run.json.tmp") for _, path, *_ in rank0)  # the audit sees rank 0's writes
    # Rank 1's only writes: its own RNG state in each checkpoint (the Trainer's, for an exact resume;
    # torch.save writes it from C++, so the audit sees just the folder it makes sure exists).
    assert {(event, os.path.basename(path)) for event, path, *_ in rank1} <= {("os.mkdir", "checkpoint-2"), ("os.mkdir", "checkpoint-4")}
    assert sorted(f for f in os.listdir(double / "checkpoint-4") if f.startswith("rng_state")) == ["rng_state_0.pth", "rng_state_1.pth"]

    # Float32 all-reduce sums in another order than one process: equal to a few ulps (relative 2e-6).
    assert len(_losses(single)) == 3 * 4 and _losses(double) == pytest.approx(_losses(single), rel=2e-6, abs=1e-6)
    assert sorted(os.listdir(double)) == sorted(os.listdir(single))  # nothing extra, nothing missing
    a, b = load_file(single / "model.safetensors"), load_file(double / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        if name.endswith("k_proj.bias"):
            # A key bias adds the same score to every key, which softmax cancels: its true gradient is 0, and
            # Adam turns the float noise left in it into full-size steps that differ with the summation order.
            continue
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.slow
def test_accelerate_cpu_with_two_processes_starts_one_and_is_refused(tiny_clip_dir, tmp_path):
    data = save_benchmark_like_dataset("eurosat", tmp_path / "eurosat", num_train=30, num_test=10)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", os.path.join(ROOT, "examples", "run_finetune.py"),
           *_argv(tiny_clip_dir, data, tmp_path / "out", 4)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    for variable in ("WORLD_SIZE", "RANK", "MASTER_ADDR"):
        env.pop(variable, None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr[-2000:]  # one process, one error line
    assert "started one" in errors[0] and "torchrun --nproc_per_node N" in errors[0]
    assert not (tmp_path / "out").exists()
