"""The checks a fine-tuning run makes before anything expensive.

- `preflight`: what needs no data or model weights (step counts, dtypes, an FSDP or DeepSpeed launch
  with --use_cpu, `accelerate launch --cpu --num_processes N` that started one process, the output
  directory writable with room for the checkpoints).
- `check_splits`: the benchmark's splits are non-empty (an empty validation split is allowed only
  when nothing evaluates on it).

Every error is a `ValueError` or `OSError`, which the command line prints as one line (exit code 2).
"""

from __future__ import annotations

import os

from ..run_folder import check_output_dir
from .distributed import check_deepspeed_args

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


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
    _check_ranges(training_args)
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


# Settings and the least value each takes: below it the Trainer or torch fails late, in words that name
# neither the flag nor the value (a ZeroDivisionError, "Invalid learning rate"), or trains silently
# (a negative weight decay makes AdamW grow the weights).
_LEAST = {"per_device_train_batch_size": 1, "per_device_eval_batch_size": 1, "gradient_accumulation_steps": 1, "learning_rate": 0, "weight_decay": 0}
_SEEDS = range(2**32)  # what numpy's and torch's seeding accept


def _check_ranges(training_args) -> None:
    if not training_args.output_dir:
        raise ValueError("output_dir is empty; pass the folder the run writes its checkpoints, model and record to")
    for name, least in _LEAST.items():
        if getattr(training_args, name) < least:
            raise ValueError(f"{name} must be >= {least}, got {getattr(training_args, name)}")
    for name in ("seed", "data_seed"):
        value = getattr(training_args, name, None)
        if value is not None and value not in _SEEDS:
            raise ValueError(f"{name} must be in 0..{_SEEDS[-1]}, got {value}")


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
