"""The callbacks that stop a fine-tuning run loudly instead of letting it go wrong quietly.

- `NonFiniteGuard`, a `TrainerCallback` that `run_finetune` attaches:
    * after every optimizer step it checks the step's objective and regularizer terms (`loss_task` and the
      regularizer's, `loss_ldifs`, `loss_l2sp`, `loss_kl`, ..., as `LDIFSTrainer` keeps them) and the loss they
      make (task + λ·regularizer, λ the trainer's); a NaN or ±inf raises `NonFiniteLossError` naming the term and the step;
    * before every checkpoint save and at the end of training it checks that the weights are finite,
      so a checkpoint of NaN weights is never written, `save_total_limit` never rotates the last good
      checkpoint away for one, and the run never reaches its export, model cards or push;
    * a logged gradient norm that is not finite `INF_GRAD_NORM_PATIENCE` logs in a row raises (the
      Trainer's clipping scales an infinite-norm gradient to zero, so such a run learns nothing);
      a step that fp16 loss scaling skipped for an overflow does not count.
  In a multi-process run the verdict is agreed across processes (one all-reduce of a flag), so every
  process raises together rather than leaving the others waiting in a collective.
- `RunIdentityCallback`: every checkpoint carries the record of the run that wrote it, so that resume
  and evaluation refuse another run's checkpoint.

The checks made before a run starts are in `training/preflight.py`.
"""

from __future__ import annotations

import logging
import math
import os

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from .terms import TASK_LOG_NAME

logger = logging.getLogger(__name__)

# Consecutive steps with an infinite/NaN gradient norm that make an error: one can be a fluke that
# clipping absorbs; three in a row is a run that is not learning.
INF_GRAD_NORM_PATIENCE = 3


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
                f"(NaN or inf); the weights of this step were not saved. Lower --learning_rate or {_weight_hint(self.trainer)}, "
                "or use float32, and rerun with --overwrite_output_dir"
            )
        self._check_grad_norm(state)
        if control.should_save:  # the Trainer saves right after this callback: never NaN weights
            self._check_weights(args, state, "before saving checkpoint-{}".format(state.global_step))

    def _first_bad_term(self, args) -> str | None:
        metrics = self.trainer._metrics["train"]
        # This step's values: one per gradient-accumulation micro-batch, the last ones of each list
        # (log() empties the lists after this callback; an older value at worst is checked twice).
        weights = {TASK_LOG_NAME: None}  # each term the trainer adds and its weight in the loss (the task's: None, i.e. 1)
        if getattr(self.trainer, "regularizer_active", False):
            weights[self.trainer.regularizer_term.log_name] = self.trainer.regularizer_weight
        recent = {name: [v.float() for v in metrics.get(name, [])[-args.gradient_accumulation_steps :]] for name in weights}
        for name, values in recent.items():
            for value in values:
                if not torch.isfinite(value).all():
                    return f"{name} ({value.item()})"
        if recent[TASK_LOG_NAME]:
            # float32, as the trainer adds them: a huge weight can overflow a finite term to inf.
            loss = torch.stack(recent[TASK_LOG_NAME])
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
                f"so clipping zeroes every update and nothing learns. Lower {_weight_hint(self.trainer)} or --learning_rate"
            )


def _weight_hint(trainer) -> str:
    """The run's regularizer weight as a user sets it: "the regularizer weight (--kl_lambda)", or its entry of
    --regularizer_options for a plug-in."""
    term = getattr(trainer, "regularizer_term", None)
    field = getattr(term, "weight_field", None)
    if field is None:
        return "the regularizer weight"
    if hasattr(getattr(trainer, "args", None), field):
        return f"the regularizer weight (--{field})"
    return f"the regularizer weight ({field} in --regularizer_options)"


class RunIdentityCallback(TrainerCallback):
    """Writes the run's record (`ldifs_run.json`) into every checkpoint it saves, so that a checkpoint
    says which run wrote it: evaluation refuses to credit another run's checkpoint to this one."""

    def __init__(self, record):
        self.record = record

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if state.is_world_process_zero and os.path.isdir(folder):
            self.record.save(folder)
