"""LDIFS: λ·d(student, teacher) over the encoder's hidden states at the taps (Mukhoti et al. 2024),
logged as `loss_ldifs`.

The frozen teacher is a copy of the encoder of `teacher_model`, else of the model as given to the
trainer, in `teacher_dtype` and never in DDP; for a peft `PeftModel` without `teacher_model` it is the
model's own encoder run under `disable_adapter()` (no second copy). An encoder-decoder model (T5, BART,
Whisper) is tapped at its encoder, whose hidden states do not depend on the labels. While λ > 0 every
stochastic layer of the student (dropout, DropPath / stochastic depth, attention dropout, layer drop)
is off unless `keep_student_dropout`, so the term is 0 at step 0. Where the encoder takes an
`attention_mask`, padded tokens take no part. At λ = 0 the term is only logged.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field

import torch
from torch import nn

from ...modeling import image_encoder, is_peft_model
from ...regularizers import LDIFS_NORMALIZATIONS, default_ldifs_layers, ldifs_distance
from . import Regularizer, RegularizerSettings, RegularizerState, check_weight, register_regularizer
from ..distributed import prepare_frozen_model

TEACHER_DTYPES = ("float32", "bfloat16", "float16")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Attributes that hold a probability used functionally: attention and activation dropout (ViT, CLIP, Llama,
# BART, Whisper, ...), stochastic depth (DropPath's `drop_prob`: Swin, ConvNeXt, BEiT, timm) and layer drop.
_STOCHASTIC_ATTRIBUTES = (
    "dropout", "dropout_prob", "attention_dropout", "attn_dropout", "dropout_p", "activation_dropout", "hidden_dropout",
    "drop_prob", "layerdrop",
)
# Forward arguments the teacher never takes from the batch: targets, loss and output switches.
_NOT_TEACHER_INPUTS = {
    "labels", "return_loss", "num_items_in_batch", "output_hidden_states", "output_attentions", "return_dict",
    "use_cache", "past_key_values",
}


@dataclass
class LDIFSSettings(RegularizerSettings):
    """LDIFS's hyperparameters (flags of `LDIFSArgumentsMixin`, which derives from this class).

    Parameters:
        ldifs_lambda (`float`, *optional*, defaults to `10.0`):
            Weight of the LDIFS feature distance (the paper's best value in general).
        ldifs_layers (`list[int]`, *optional*, defaults to `None`):
            Indices into the model's `hidden_states` to tap; None means 0 and every L/4 blocks.
        ldifs_normalization (`str`, *optional*, defaults to `"token"`):
            "token" (official code, the default λ was tuned with it) or "flatten" (paper appendix B).
        teacher_dtype (`str`, *optional*, defaults to `None`):
            Cast the frozen teacher to "bfloat16"/"float16"/"float32" (it never trains, so it needs no
            float32 master copy). None means the compute precision: bfloat16 under `bf16`, float16
            under `fp16`, else the student's dtype.
        keep_student_dropout (`bool`, *optional*, defaults to `False`):
            Keep the student's stochastic layers (dropout, DropPath, ...) while the LDIFS term is on
            (ldifs_lambda > 0). By default they are switched off, as trl's `disable_dropout`, so student
            and teacher features agree at step 0.
    """

    ldifs_lambda: float = field(default=10.0, metadata={"help": "Weight of the LDIFS feature distance."})
    ldifs_layers: list[int] | None = field(
        default=None, metadata={"help": "hidden_states indices to tap (default: 0 and every L/4 blocks)."}
    )
    ldifs_normalization: str = field(
        default="token", metadata={"help": f"LDIFS feature normalisation: one of {LDIFS_NORMALIZATIONS}."}
    )
    teacher_dtype: str | None = field(
        default=None,
        metadata={"help": f"dtype of the frozen teacher: one of {TEACHER_DTYPES} (default: bfloat16 under --bf16, float16 under --fp16, else the student's)."},
    )
    keep_student_dropout: bool = field(
        default=False, metadata={"help": "Keep the student's dropout and stochastic depth while LDIFS is on (default: switched off)."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_weight("ldifs_lambda", self.ldifs_lambda)
        if self.ldifs_normalization not in LDIFS_NORMALIZATIONS:
            raise ValueError(f"ldifs_normalization must be one of {LDIFS_NORMALIZATIONS}, got {self.ldifs_normalization!r}")
        if self.ldifs_layers is not None:
            if not self.ldifs_layers:
                raise ValueError("ldifs_layers must name at least one hidden-state index, got an empty list")
            bad = [i for i in self.ldifs_layers if not isinstance(i, int) or i < 0]
            if bad:
                raise ValueError(f"ldifs_layers must be hidden-state indices >= 0, got {bad[0]!r}")
        if self.teacher_dtype is not None and self.teacher_dtype not in TEACHER_DTYPES:
            raise ValueError(f"teacher_dtype must be one of {TEACHER_DTYPES} or None, got {self.teacher_dtype!r}")


@dataclass
class LDIFSState(RegularizerState):
    """teacher: the frozen teacher encoder (or the adapter-disabled student); layers: the taps;
    teacher_inputs: the encoder's forward inputs, taken from each batch; masks_tokens: whether the
    encoder's own `attention_mask` leaves padded tokens out."""

    teacher: object = None
    layers: list[int] = field(default_factory=list)
    teacher_inputs: frozenset[str] = frozenset()
    masks_tokens: bool = False


def _num_hidden_layers(encoder: nn.Module) -> int | None:
    config = getattr(encoder, "config", None)
    config = getattr(config, "vision_config", config)
    return getattr(config, "num_hidden_layers", None)


def _accepts(module: nn.Module, name: str) -> bool:
    params = inspect.signature(module.forward).parameters
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _named_inputs(module: nn.Module) -> frozenset[str]:
    params = inspect.signature(module.forward).parameters
    return frozenset(n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)) - _NOT_TEACHER_INPUTS


def disable_dropout(model: nn.Module) -> None:
    """Set every stochastic probability of `model` to 0: `nn.Dropout` modules, DropPath's `drop_prob`,
    attention/activation dropout floats and layer drop."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        for name in _STOCHASTIC_ATTRIBUTES:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def resolve_teacher_dtype(settings: LDIFSSettings, args) -> str | None:
    """The teacher's dtype: `teacher_dtype`, else the compute precision under bf16/fp16 (the teacher only runs
    forward, under autocast, so its float32 master copy would be read for nothing)."""
    if settings.teacher_dtype is not None:
        return settings.teacher_dtype
    if getattr(args, "bf16", False):
        return "bfloat16"
    if getattr(args, "fp16", False):
        return "float16"
    return None


class _AdapterDisabledTeacher:
    """A PeftModel's encoder run under `disable_adapter()`, in eval mode, without gradients: no second copy."""

    def __init__(self, peft_model: nn.Module, encoder: nn.Module):
        self.peft_model = peft_model
        self.encoder = encoder

    def __call__(self, **inputs):
        modes = {m: m.training for m in self.encoder.modules()}
        self.encoder.eval()
        try:
            with self.peft_model.disable_adapter(), torch.no_grad():
                return self.encoder(**inputs)
        finally:
            for module, training in modes.items():
                module.training = training


class LDIFS(Regularizer):
    name = "ldifs"
    settings_class = LDIFSSettings
    needs_hidden_states = True
    log_name = "loss_ldifs"

    def setup(self, trainer, teacher_model, settings: LDIFSSettings) -> LDIFSState:
        model = trainer.accelerator.unwrap_model(trainer.model)
        encoder = image_encoder(model)
        if not (_accepts(encoder, "output_hidden_states") and _accepts(model, "output_hidden_states")):
            raise ValueError(
                f"LDIFS needs a model that returns hidden_states, but {type(encoder).__name__}.forward takes no "
                "output_hidden_states; use regularizer 'l2sp' or 'none' for this model"
            )
        if getattr(trainer.args, "padding_free", False):
            raise ValueError(
                "LDIFS normalises each sequence over its tokens, which padding_free=True packs into one row; "
                "set padding_free=False"
            )
        num_layers = _num_hidden_layers(encoder)
        if settings.ldifs_layers is not None:
            layers = list(settings.ldifs_layers)
        elif num_layers is not None:
            layers = default_ldifs_layers(num_layers)
        else:
            raise ValueError(f"cannot infer the number of blocks of {type(encoder).__name__}; set ldifs_layers explicitly")
        if num_layers is not None and max(layers) > num_layers:
            raise ValueError(
                f"ldifs layer index {max(layers)} out of range: the model has {num_layers} blocks, "
                f"so hidden_states indices are 0..{num_layers}"
            )
        teacher_inputs = _named_inputs(encoder)
        # The mask is the encoder's own only if its forward takes one (FLYP's text mask is not the vision tower's).
        state = LDIFSState(settings, layers=layers, teacher_inputs=teacher_inputs, masks_tokens="attention_mask" in teacher_inputs)
        if self.disables_student_dropout(settings):
            disable_dropout(model)
        if is_peft_model(model) and teacher_model is None:
            if settings.teacher_dtype is not None:
                raise ValueError(
                    f"teacher_dtype={settings.teacher_dtype!r} needs a separate teacher, but a PeftModel's teacher is "
                    "the model itself with adapters disabled; pass teacher_model= or leave teacher_dtype unset"
                )
            state.teacher = _AdapterDisabledTeacher(model, encoder)
            return state
        source = teacher_model if teacher_model is not None else model
        teacher = copy.deepcopy(image_encoder(source))
        teacher.requires_grad_(False)
        teacher.eval()
        dtype = resolve_teacher_dtype(settings, trainer.args)
        if dtype is not None:
            teacher.to(_DTYPES[dtype])
        # Evaluation mode: moved to the device and wrapped for mixed precision, never in DDP; DeepSpeed
        # gives it an inference engine of its own (partitioned under ZeRO-3).
        state.teacher = prepare_frozen_model(trainer, teacher)
        return state

    def disables_student_dropout(self, settings: LDIFSSettings) -> bool:
        return settings.ldifs_lambda > 0 and not settings.keep_student_dropout

    def penalty(self, state: LDIFSState, model, captured_hidden_states, inputs) -> torch.Tensor:
        if captured_hidden_states is None:
            raise ValueError(f"{type(model).__name__} returned no hidden_states; LDIFS needs them")
        teacher_inputs = {k: v for k, v in inputs.items() if k in state.teacher_inputs}
        teacher = self.teacher_hidden_states(state, teacher_inputs)
        mask = teacher_inputs.get("attention_mask") if state.masks_tokens else None
        return ldifs_distance(captured_hidden_states, teacher, state.layers, state.settings.ldifs_normalization, mask)

    @staticmethod
    def teacher_hidden_states(state: LDIFSState, teacher_inputs: dict):
        if not teacher_inputs:
            raise ValueError(
                f"the batch has none of the teacher's inputs {sorted(state.teacher_inputs)}; LDIFS runs the teacher "
                "on the student's batch"
            )
        if isinstance(state.teacher, nn.Module):
            dtype = next(state.teacher.parameters()).dtype
            teacher_inputs = {
                k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in teacher_inputs.items()
            }
        with torch.no_grad():
            return state.teacher(**teacher_inputs, output_hidden_states=True).hidden_states

    def weight(self, settings: LDIFSSettings) -> float:
        return settings.ldifs_lambda

    def describe(self, settings: LDIFSSettings, state: LDIFSState | None = None) -> str:
        layers = state.layers if state is not None else settings.ldifs_layers
        return f"LDIFS, λ = {settings.ldifs_lambda}, {settings.ldifs_normalization or 'token'} normalisation, taps {layers}"


register_regularizer(LDIFS())
