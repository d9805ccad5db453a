"""L2SP: λ‖θ−θ0‖² over the encoder's trainable weights (Xuhong et al. 2018), logged as `loss_l2sp`.

The reference θ0 is the encoder of `teacher_model`, else of the model as given to the trainer. On a peft
`PeftModel` the frozen base weights are the anchor: the penalty is the squared norm of the LoRA change
Σ‖scale·B·A‖² plus ‖θ−θ0‖² of the other trainable encoder weights; heads and `modules_to_save` are never anchored.
`l2sp_scope="all"` anchors every trainable weight of the model instead (the decoder of an
encoder-decoder model, a head, ...). At λ = 0 nothing is required (a model with nothing to anchor
logs 0) and the term takes no part in the backward, so no weight gets a gradient the stock Trainer
would not give it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ...modeling import L2SP_SCOPES, image_encoder, is_peft_model, lora_delta_weights, named_scope_parameters
from ...regularizers import l2sp_penalty
from ..distributed import L2SP_UNDER_ZERO3, deepspeed_stage, plain_model
from . import Regularizer, RegularizerSettings, RegularizerState, check_weight, register_regularizer


@dataclass
class L2SPSettings(RegularizerSettings):
    """L2SP's hyperparameters (flags of `LDIFSArgumentsMixin`, which derives from this class).

    Parameters:
        l2sp_lambda (`float`, *optional*, defaults to `0.5`):
            Weight of the L2SP penalty (official default).
        l2sp_scope (`str`, *optional*, defaults to `"encoder"`):
            Which weights are anchored: "encoder" (the image/text encoder; an encoder-decoder model's
            encoder) or "all" (every trainable weight, heads and decoders included).
    """

    l2sp_lambda: float = field(default=0.5, metadata={"help": "Weight of the L2SP penalty."})
    l2sp_scope: str = field(
        default="encoder", metadata={"help": f"Weights L2SP anchors: one of {L2SP_SCOPES} (encoder-decoder: the encoder)."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_weight("l2sp_lambda", self.l2sp_lambda)
        if self.l2sp_scope not in L2SP_SCOPES:
            raise ValueError(f"l2sp_scope must be one of {L2SP_SCOPES}, got {self.l2sp_scope!r}")


@dataclass
class L2SPState(RegularizerState):
    """names: the anchored parameters (named as `named_scope_parameters` names them); reference: θ0 of each;
    peft: whether the LoRA change is added; local_reference: θ0 cut to each process's FSDP2 shards."""

    names: list[str] = field(default_factory=list)
    reference: list[torch.Tensor] = field(default_factory=list)
    peft: bool = False
    local_reference: list[torch.Tensor] | None = None
    dtypes_checked: set[str] = field(default_factory=set)


def anchored_names(model: nn.Module, peft: bool, scope: str = "encoder") -> list[str]:
    """Parameters L2SP anchors directly: the trainable ones in `scope`, LoRA factors and modules_to_save excepted
    (a frozen weight is at its anchor, and the LoRA change is measured as scale·B·A)."""
    names = [n for n, p in named_scope_parameters(model, scope).items() if p.requires_grad]
    if peft:
        names = [n for n in names if "lora_" not in n and "modules_to_save" not in n and "original_module" not in n]
    return names


def is_dtensor(tensor) -> bool:
    return hasattr(tensor, "to_local") and hasattr(tensor, "placements")


def _in_dtypes_of(state: L2SPState, attribute: str, params: list) -> list:
    """The reference kept in `state.<attribute>`, cast once to the weights' dtypes where they differ:
    DeepSpeed and FSDP with bf16/fp16 hold the weights themselves in 16 bits (their float32 copy is the
    optimizer's), and θ0 in float32 would make the penalty start at the rounding error, not 0."""
    reference = getattr(state, attribute)
    if attribute in state.dtypes_checked:  # the weights' dtypes are set once the model is prepared: checked at the first step
        return reference
    if any(r.dtype != p.dtype for r, p in zip(reference, params)):
        reference = [r.to(p.dtype) if r.dtype != p.dtype else r for r, p in zip(reference, params)]
        setattr(state, attribute, reference)
    state.dtypes_checked.add(attribute)
    return reference


def sharded_l2sp_penalty(state: L2SPState, params: list) -> torch.Tensor:
    """L2SP on FSDP2-sharded weights (DTensors): each process sums ‖θ−θ0‖² over the shards it holds, against
    the same shards of θ0 (cut from the full reference once, by the weights' own placements).

    The value is the sum over all processes (all-reduced, for the log and the loss), while the gradient
    stays the local 2(θ−θ0) of each shard: L2SP is a sum over elements, so a shard's gradient is exactly
    its own, and FSDP adds it to the shard's averaged task gradient without averaging it again."""
    from torch.distributed.tensor import distribute_tensor

    if state.local_reference is None:
        state.local_reference = [
            distribute_tensor(ref.to(p.device), p.device_mesh, p.placements).to_local() if is_dtensor(p) else ref
            for p, ref in zip(params, state.reference)
        ]
    pairs = list(zip(params, _in_dtypes_of(state, "local_reference", params)))
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
    settings_class = L2SPSettings
    weight_field = "l2sp_lambda"
    log_name = "loss_l2sp"

    def setup(self, trainer, teacher_model, settings: L2SPSettings) -> L2SPState:
        if deepspeed_stage(trainer.accelerator) == 3:
            raise ValueError(L2SP_UNDER_ZERO3)
        model = plain_model(trainer.accelerator, trainer.model)
        peft = is_peft_model(model)
        names = anchored_names(model, peft, settings.l2sp_scope)
        if peft:
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
        if not names and not has_lora and settings.l2sp_lambda > 0:
            raise ValueError(
                f"L2SP found no trainable parameter in the {settings.l2sp_scope} of {type(model).__name__} to anchor "
                "(l2sp_scope='all' anchors every trainable weight; or set l2sp_lambda 0)"
            )
        reference = named_scope_parameters(source, settings.l2sp_scope)
        missing = [n for n in names if n not in reference]
        if missing:
            raise ValueError(f"teacher_model lacks the model's parameter {missing[0]!r}; it cannot anchor L2SP")
        return L2SPState(
            settings, names=names, reference=[reference[n].detach().clone().to(trainer.args.device) for n in names], peft=peft
        )

    def penalty(self, state: L2SPState, model, taps=None, inputs=None) -> torch.Tensor:
        named = named_scope_parameters(model, state.settings.l2sp_scope)
        penalty = None
        if state.names:
            params = [named[n] for n in state.names]
            if any(is_dtensor(p) for p in params):
                penalty = sharded_l2sp_penalty(state, params)
            else:
                penalty = l2sp_penalty(params, _in_dtypes_of(state, "reference", params))
        if state.peft:
            deltas = lora_delta_weights(image_encoder(model), model)
            if deltas:
                lora = sum(delta.float().pow(2).sum() for delta in deltas)
                penalty = lora if penalty is None else penalty + lora
        if penalty is None:  # nothing to anchor (allowed at λ = 0 only)
            penalty = torch.zeros((), device=model.device if hasattr(model, "device") else None)
        return penalty

    def describe(self, settings: L2SPSettings, state=None) -> str:
        scope = "" if settings.l2sp_scope == "encoder" else f", scope {settings.l2sp_scope}"
        return f"L2SP, λ = {settings.l2sp_lambda}{scope}"


register_regularizer(L2SP())
