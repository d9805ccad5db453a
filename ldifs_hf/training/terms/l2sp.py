"""L2SP: λ‖θ−θ0‖² over the encoder's trainable weights (Xuhong et al. 2018), logged as `loss_l2sp`.

The reference θ0 is the encoder of `teacher_model`, else of the model as given to the trainer. On a peft
`PeftModel` the frozen base weights are the anchor: the penalty is the squared norm of the LoRA change
Σ‖scale·B·A‖² plus ‖θ−θ0‖² of the other trainable encoder weights; heads and `modules_to_save` are never anchored.
"""

from __future__ import annotations

import torch
from torch import nn

from ...modeling import image_encoder, lora_delta_weights, named_encoder_parameters
from ...regularizers import l2sp_penalty
from ..distributed import L2SP_UNDER_ZERO3, deepspeed_stage
from . import Regularizer, register_regularizer


def anchored_names(trainer, model: nn.Module) -> list[str]:
    """Encoder parameters L2SP anchors directly: the trainable ones, LoRA factors and modules_to_save excepted
    (a frozen weight is at its anchor, and the LoRA change is measured as scale·B·A)."""
    names = [n for n, p in named_encoder_parameters(model).items() if p.requires_grad]
    if trainer._peft:
        names = [n for n in names if "lora_" not in n and "modules_to_save" not in n and "original_module" not in n]
    return names


def is_dtensor(tensor) -> bool:
    return hasattr(tensor, "to_local") and hasattr(tensor, "placements")


def _in_dtypes_of(trainer, attribute: str, params: list) -> list:
    """The reference kept in `trainer.<attribute>`, cast once to the weights' dtypes where they differ:
    DeepSpeed and FSDP with bf16/fp16 hold the weights themselves in 16 bits (their float32 copy is the
    optimizer's), and θ0 in float32 would make the penalty start at the rounding error, not 0."""
    reference = getattr(trainer, attribute)
    checked = trainer.__dict__.setdefault("_l2sp_dtypes_checked", set())
    if attribute in checked:  # the weights' dtypes are set once the model is prepared: checked at the first step
        return reference
    if any(r.dtype != p.dtype for r, p in zip(reference, params)):
        reference = [r.to(p.dtype) if r.dtype != p.dtype else r for r, p in zip(reference, params)]
        setattr(trainer, attribute, reference)
    checked.add(attribute)
    return reference


def sharded_l2sp_penalty(trainer, params: list) -> torch.Tensor:
    """L2SP on FSDP2-sharded weights (DTensors): each process sums ‖θ−θ0‖² over the shards it holds, against
    the same shards of θ0 (cut from the full reference once, by the weights' own placements).

    The value is the sum over all processes (all-reduced, for the log and the loss), while the gradient
    stays the local 2(θ−θ0) of each shard: L2SP is a sum over elements, so a shard's gradient is exactly
    its own, and FSDP adds it to the shard's averaged task gradient without averaging it again."""
    from torch.distributed.tensor import distribute_tensor

    if getattr(trainer, "_l2sp_local_reference", None) is None:
        trainer._l2sp_local_reference = [
            distribute_tensor(ref.to(p.device), p.device_mesh, p.placements).to_local() if is_dtensor(p) else ref
            for p, ref in zip(params, trainer._l2sp_reference)
        ]
    pairs = list(zip(params, _in_dtypes_of(trainer, "_l2sp_local_reference", params)))
    sharded = [(p.to_local(), ref) for p, ref in pairs if is_dtensor(p)]
    local = l2sp_penalty(*zip(*sharded))
    # Summed over the processes that hold the other shards: the mesh dimensions the weights are sharded
    # on (under HSDP the replicas along the other dimension hold the same shards and are not added).
    first = next(p for p in params if is_dtensor(p))
    groups = [first.device_mesh.get_group(dim) for dim, placement in enumerate(first.placements) if placement.is_shard()]
    if groups:
        total = local.detach().clone()
        for group in groups:
            torch.distributed.all_reduce(total, group=group)
        local = local + (total - local.detach())
    whole = [(p, ref) for p, ref in pairs if not is_dtensor(p)]  # outside any shard unit: the same on every process
    return local + l2sp_penalty(*zip(*whole)) if whole else local


class L2SP(Regularizer):
    name = "l2sp"
    log_name = "loss_l2sp"

    def setup(self, trainer, teacher_model) -> None:
        if deepspeed_stage(trainer.accelerator) == 3:
            raise ValueError(L2SP_UNDER_ZERO3)
        model = trainer.accelerator.unwrap_model(trainer.model)
        names = anchored_names(trainer, model)
        if trainer._peft:
            if teacher_model is not None:
                raise ValueError(
                    "L2SP on a PeftModel anchors the frozen base weights (the LoRA change is θ−θ0); "
                    "teacher_model is not supported there, leave it unset"
                )
            has_lora = bool(lora_delta_weights(image_encoder(model), model))  # refuses what is not plain LoRA
            source = model
        else:
            has_lora = False
            source = teacher_model if teacher_model is not None else model
        if not names and not has_lora:
            raise ValueError(f"L2SP found no trainable parameter in the encoder of {type(model).__name__} to anchor")
        reference = named_encoder_parameters(source)
        missing = [n for n in names if n not in reference]
        if missing:
            raise ValueError(f"teacher_model's encoder lacks the model's parameter {missing[0]!r}; it cannot anchor L2SP")
        trainer._l2sp_names = names
        trainer._l2sp_reference = [reference[n].detach().clone().to(trainer.args.device) for n in names]

    def penalty(self, trainer, model, captured_hidden_states=None, teacher_inputs=None) -> torch.Tensor:
        named = named_encoder_parameters(model)
        penalty = None
        if trainer._l2sp_names:
            params = [named[n] for n in trainer._l2sp_names]
            if any(is_dtensor(p) for p in params):
                penalty = sharded_l2sp_penalty(trainer, params)
            else:
                penalty = l2sp_penalty(params, _in_dtypes_of(trainer, "_l2sp_reference", params))
        if trainer._peft:
            lora = sum(delta.float().pow(2).sum() for delta in lora_delta_weights(image_encoder(model), model))
            penalty = lora if penalty is None else penalty + lora
        return penalty

    def weight(self, args) -> float:
        return args.l2sp_lambda

    def describe(self, args, layers=None) -> str:
        return f"L2SP, λ = {args.l2sp_lambda}"


register_regularizer(L2SP())
