"""What stops a fine-tuning run loudly instead of letting it go wrong quietly.

- `NonFiniteGuard`, a `TrainerCallback` that `run_finetune` attaches:
    * after every optimizer step it checks the step's objective and regularizer terms (`loss_task`,
      `loss_ldifs`, `loss_l2sp`, as `LDIFSTrainer` keeps them) and the loss they make
      (task + λ·regularizer); a NaN or ±inf raises `NonFiniteLossError` naming the term and the step;
    * before every checkpoint save and at the end of training it checks that the weights are finite,
      so a checkpoint of NaN weights is never written, `save_total_limit` never rotates the last good
      checkpoint away for one, and the run never reaches its export, model cards or push;
    * a logged gradient norm that is not finite `INF_GRAD_NORM_PATIENCE` logs in a row raises (the
      Trainer's clipping scales an infinite-norm gradient to zero, so such a run learns nothing);
      a step that fp16 loss scaling skipped for an overflow does not count.
  In a multi-process run the verdict is agreed across processes (one all-reduce of a flag), so every
  process raises together rather than leaving the others waiting in a collective.
- `RunIdentityCallback`: every checkpoint carries the record of the run that wrote it.
- `preflight`: the checks that need no data or model weights (step counts, dtypes, an FSDP or
  DeepSpeed launch with --use_cpu, `accelerate launch --cpu --num_processes N` that started one
  process, the output directory writable with room for the checkpoints).
- `explain_write_failure`: a failure with a full output disk is reported as such.
- `check_splits`: the benchmark's splits are non-empty (an empty validation split is allowed only
  when nothing evaluates on it).

Every error is a `ValueError` or `OSError`, which the command line prints as one line (exit code 2).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile

import torch
import torch.distributed as dist
from transformers import TrainerCallback
from .distributed import check_deepspeed_args
from .terms import loss_weights

logger = logging.getLogger(__name__)

# Consecutive steps with an infinite/NaN gradient norm that make an error: one can be a fluke that
# clipping absorbs; three in a row is a run that is not learning.
INF_GRAD_NORM_PATIENCE = 3
# A checkpoint holds the weights, AdamW's two moments (float32) and the final model and export come on
# top: about six copies of the base model's weight file is the least the output directory must hold.
CHECKPOINT_SIZE_FACTOR = 6
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class NonFiniteLossError(ValueError):
    """Training produced a NaN or infinite loss, weight or gradient norm; the run was stopped."""


def _any_process(flag: bool, device) -> bool:
    """`flag` OR-ed over the processes of a distributed run (the flag itself in a single process)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


class NonFiniteGuard(TrainerCallback):
    """Stops training at the first non-finite loss term, before any non-finite weights are saved.

    Args:
        trainer: the `LDIFSTrainer` whose `_metrics["train"]` lists hold the step's terms (read at
            `on_step_end`, before `log()` clears them).
        inf_grad_norm_patience: how many optimizer steps in a row with a non-finite gradient norm make an error.
    """

    def __init__(self, trainer, inf_grad_norm_patience: int = INF_GRAD_NORM_PATIENCE):
        if inf_grad_norm_patience < 1:
            raise ValueError(f"inf_grad_norm_patience must be >= 1, got {inf_grad_norm_patience}")
        self.trainer = trainer
        self.patience = inf_grad_norm_patience
        self._bad_grad_steps = 0

    # -- loss terms, every step -------------------------------------------------------------------

    def on_step_end(self, args, state, control, **kwargs):
        problem = self._first_bad_term(args)
        if _any_process(problem is not None, args.device):
            raise NonFiniteLossError(
                f"training stopped at step {state.global_step}: {problem or 'a loss term on another process'} is not finite "
                "(NaN or inf); the weights of this step were not saved. Lower --learning_rate or the regularizer weight "
                "(--ldifs_lambda / --l2sp_lambda), or use float32, and rerun with --overwrite_output_dir"
            )
        self._check_grad_norm(state)
        if control.should_save:  # the Trainer saves right after this callback: never NaN weights
            self._check_weights(args, state, "before saving checkpoint-{}".format(state.global_step))

    def _first_bad_term(self, args) -> str | None:
        metrics = self.trainer._metrics["train"]
        # This step's values: one per gradient-accumulation micro-batch, the last ones of each list
        # (log() empties the lists after this callback; an older value at worst is checked twice).
        weights = loss_weights(args)  # every registered term and its weight in the loss (the task's: None)
        recent = {name: [v.float() for v in metrics.get(name, [])[-args.gradient_accumulation_steps :]] for name in weights}
        for name, values in recent.items():
            for value in values:
                if not torch.isfinite(value).all():
                    return f"{name} ({value.item()})"
        if recent["loss_task"]:
            # float32, as the trainer adds them: a huge weight can overflow a finite term to inf.
            loss = torch.stack(recent["loss_task"])
            for name, weight in weights.items():
                if weight is not None and len(recent[name]) == len(loss):
                    loss = loss + weight * torch.stack(recent[name])
            if not torch.isfinite(loss).all():
                return "the loss (task + weighted regularizer)"
        return None

    # -- weights, before every save and at the end ------------------------------------------------

    def on_train_end(self, args, state, control, **kwargs):
        self._check_weights(args, state, "at the end of training")

    def _check_weights(self, args, state, when: str) -> None:
        # A sharded parameter (FSDP2's DTensor, DeepSpeed ZeRO-3's ds_tensor) is checked by the process
        # that holds each shard.
        local = lambda p: p.to_local() if hasattr(p, "to_local") else getattr(p, "ds_tensor", p)  # noqa: E731
        bad = next((name for name, p in self.trainer.model.named_parameters() if not torch.isfinite(local(p)).all()), None)
        if _any_process(bad is not None, args.device):
            raise NonFiniteLossError(
                f"training stopped at step {state.global_step}: the weights are not finite {when} "
                f"(first: {bad or 'on another process'}); they were not saved, exported or pushed (earlier checkpoints hold finite weights). Lower --learning_rate "
                "or the regularizer weight and rerun with --overwrite_output_dir"
            )

    # -- gradient norm, every optimizer step -------------------------------------------------------

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Only where the Trainer has no per-step hook (`_get_grad_norm`, transformers 5): the logged norm.
        if getattr(self.trainer, "_step_grad_norm", None) is None and (logs or {}).get("grad_norm") is not None:
            self._count_grad_norm(logs["grad_norm"], state, "logs")

    def _check_grad_norm(self, state) -> None:
        """The step's gradient norm (`LDIFSTrainer` keeps it from `_get_grad_norm`); logging needs not be on."""
        grad_norm = getattr(self.trainer, "_step_grad_norm", None)
        if grad_norm is not None:
            self._count_grad_norm(grad_norm, state, "steps")

    def _count_grad_norm(self, grad_norm, state, unit: str) -> None:
        if getattr(getattr(self.trainer, "accelerator", None), "optimizer_step_was_skipped", False):
            return  # fp16 loss scaling: an overflow step is skipped and the scale lowered, as intended
        grad_norm = float(grad_norm)
        self._bad_grad_steps = self._bad_grad_steps + 1 if not math.isfinite(grad_norm) else 0
        if self._bad_grad_steps >= self.patience:
            raise NonFiniteLossError(
                f"training stopped at step {state.global_step}: the gradient norm was {grad_norm} in {self.patience} {unit} in a row, "
                "so clipping zeroes every update and nothing learns. Lower the regularizer weight (--ldifs_lambda / "
                "--l2sp_lambda) or --learning_rate"
            )


class RunIdentityCallback(TrainerCallback):
    """Writes the run's record (`ldifs_run.json`) into every checkpoint it saves, so that a checkpoint
    says which run wrote it: evaluation refuses to credit another run's checkpoint to this one."""

    def __init__(self, record):
        self.record = record

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if state.is_world_process_zero and os.path.isdir(folder):
            self.record.save(folder)


# -- before anything expensive ----------------------------------------------------------------------


def preflight(model_args, training_args) -> None:
    """Check what needs no data and no weights: step counts, dtypes, and the output directory."""
    if training_args.max_steps == 0 or training_args.max_steps < -1:
        raise ValueError(
            f"max_steps must be a positive number of optimizer steps, or -1 to train for num_train_epochs; got {training_args.max_steps}"
        )
    if training_args.max_steps == -1 and not training_args.num_train_epochs > 0:
        raise ValueError(f"num_train_epochs must be > 0 when max_steps is not set, got {training_args.num_train_epochs}")
    if training_args.save_strategy != "no" and training_args.save_steps is not None and training_args.save_steps <= 0:
        raise ValueError(f"save_steps must be > 0, got {training_args.save_steps}")
    _check_launch()
    check_deepspeed_args(training_args)
    for variable, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if training_args.use_cpu and os.environ.get(variable, "").lower() in ("1", "true"):
            # Measured: with --use_cpu, `accelerate launch` with an FSDP config trains plain DDP, silently.
            raise ValueError(
                f"accelerate launched this run with {name}, which does not run with --use_cpu (the processes would "
                "silently train as plain DDP); drop --use_cpu on GPUs, or launch DDP on CPU (torchrun --nproc_per_node N)"
            )
    mixed = "bfloat16" if training_args.bf16 else "float16" if training_args.fp16 else None
    teacher = training_args.teacher_dtype
    if mixed is not None and teacher not in (None, "float32", mixed):
        flag = "--bf16" if training_args.bf16 else "--fp16"
        raise ValueError(
            f"teacher_dtype {teacher!r} does not fit {flag} ({mixed} autocast): use --teacher_dtype {mixed}, float32, or leave it unset"
        )
    if training_args.should_save:  # only the main process writes (the others need no room and no probe)
        check_output_dir(training_args.output_dir, _model_weight_bytes(model_args.model_name_or_path))


# Where a launcher puts the number of processes (torchrun, MPI flavours); accelerate reads the same.
_WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _check_launch() -> None:
    """Refuse `accelerate launch --cpu --num_processes N` (N > 1) without MPI: accelerate then starts one
    process, and sets MASTER_ADDR for the others that never come, but no world size."""
    env = os.environ
    if (
        env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
        and "MASTER_ADDR" in env
        and not any(v in env for v in _WORLD_SIZE_VARIABLES)
    ):
        raise ValueError(
            "accelerate launch --cpu was asked for several processes but started one: accelerate runs several CPU "
            "processes only through MPI (--mpirun_hostfile). Use torchrun --nproc_per_node N, or accelerate launch "
            "--multi_gpu --num_processes N with the script's --use_cpu (or unset MASTER_ADDR if you meant one process)"
        )


def check_output_dir(output_dir: str, model_bytes: int | None = None) -> None:
    """`output_dir` (or its nearest existing parent, when it does not exist yet) accepts a new file, and
    its disk has room for about `CHECKPOINT_SIZE_FACTOR` copies of a `model_bytes` weight file.

    The check writes and removes a probe file, because permission bits say nothing for root or on
    read-only mounts; it creates nothing that stays.
    """
    existing = os.path.abspath(output_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise OSError(f"output_dir {output_dir!r} cannot be created: {existing!r} is a file, not a directory")
    try:
        handle, probe = tempfile.mkstemp(prefix=".ldifs_write_probe_", dir=existing)
        os.close(handle)
        os.remove(probe)
    except OSError as err:
        raise OSError(f"output_dir {output_dir!r} is not writable ({existing!r}: {err.strerror or err}); choose another --output_dir") from err
    if model_bytes:
        free = shutil.disk_usage(existing).free
        needed = CHECKPOINT_SIZE_FACTOR * model_bytes
        if free < needed:
            raise OSError(
                f"output_dir {output_dir!r} has {free / 2**20:.0f} MiB free, but a run of this model needs about {needed / 2**20:.0f} MiB "
                f"({CHECKPOINT_SIZE_FACTOR} x its {model_bytes / 2**20:.0f} MiB of weights: checkpoint with optimizer state, final model, export); "
                "free some space or choose another --output_dir"
            )


def _model_weight_bytes(model_name_or_path: str) -> int | None:
    """Size of a local model directory's weight files (None for a Hub id: its size is not known here)."""
    if not os.path.isdir(model_name_or_path):
        return None
    weights = [
        os.path.getsize(os.path.join(model_name_or_path, f))
        for f in os.listdir(model_name_or_path)
        if f in _WEIGHT_FILES or (f.endswith((".safetensors", ".bin")) and f.startswith(("model-", "pytorch_model-")))
    ]
    return sum(weights) or None


def explain_write_failure(error: BaseException, output_dir: str, model_bytes: int | None = None) -> OSError | None:
    """An `OSError` saying the output directory's disk is full when a run failed with (almost) no
    space left there, or None. torch reports a full disk during a checkpoint as a bare RuntimeError
    ("file write failed"); the half-written checkpoint it leaves is skipped when the run resumes."""
    if not isinstance(error, (OSError, RuntimeError)) or not os.path.isdir(output_dir):
        return None
    free = shutil.disk_usage(output_dir).free
    if free >= max(model_bytes or 0, 2**20):
        return None
    return OSError(
        f"the disk of output_dir {output_dir!r} is full ({free / 2**20:.1f} MiB free) and writing the run's files failed "
        f"({type(error).__name__}: {' '.join(str(error).split())[:200]}); free some space and rerun the same command: it "
        "continues from the last complete checkpoint (a half-written one is skipped)"
    )


def check_splits(splits, dataset: str, *, validation_needed: bool) -> None:
    """The train and test splits hold examples; so does validation when something evaluates on it."""
    for name in ("train", "test"):
        if len(splits[name]) == 0:
            raise ValueError(f"the {name} split of {dataset!r} is empty; a run needs at least one {name} example")
    if validation_needed and len(splits["validation"]) == 0:
        raise ValueError(
            f"the validation split of {dataset!r} is empty (--validation_fraction 0, or too few training examples) "
            "but --eval_strategy evaluates on it; pass --eval_strategy no or a --validation_fraction > 0"
        )
