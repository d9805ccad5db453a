"""LDIFS: λ·d(student, teacher) over the encoder's hidden states at the taps (Mukhoti et al. 2024),
logged as `loss_ldifs`.

The frozen teacher is a copy of the encoder of `teacher_model`, else of the model as given to the
trainer, in `teacher_dtype` and never in DDP; for a peft `PeftModel` without `teacher_model` it is the
model's own encoder run under `disable_adapter()` (no second copy). While λ > 0 the student's dropout is
off unless `keep_student_dropout`, so the term is 0 at step 0. Where the encoder takes an
`attention_mask`, padded tokens take no part.
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

from ...modeling import image_encoder
from ...regularizers import default_ldifs_layers, ldifs_distance
from . import Regularizer, register_regularizer
from ..distributed import prepare_frozen_model

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Attributes that hold a dropout probability used functionally inside attention (ViT, CLIP, Llama, ...).
_DROPOUT_ATTRIBUTES = ("dropout", "dropout_prob", "attention_dropout", "attn_dropout", "dropout_p")


def _num_hidden_layers(encoder: nn.Module) -> int | None:
    config = getattr(encoder, "config", None)
    config = getattr(config, "vision_config", config)
    return getattr(config, "num_hidden_layers", None)


def _accepts(module: nn.Module, name: str) -> bool:
    params = inspect.signature(module.forward).parameters
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability of `model` to 0: `nn.Dropout` modules and attention-dropout floats."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        for name in _DROPOUT_ATTRIBUTES:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


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
    needs_hidden_states = True
    log_name = "loss_ldifs"

    def setup(self, trainer, teacher_model) -> None:
        args = trainer.args
        model = trainer.accelerator.unwrap_model(trainer.model)
        encoder = image_encoder(model)
        if not (_accepts(encoder, "output_hidden_states") and _accepts(model, "output_hidden_states")):
            raise ValueError(
                f"LDIFS needs a model that returns hidden_states, but {type(encoder).__name__}.forward takes no "
                "output_hidden_states; use regularizer 'l2sp' or 'none' for this model"
            )
        if getattr(args, "padding_free", False):
            raise ValueError(
                "LDIFS normalises each sequence over its tokens, which padding_free=True packs into one row; "
                "set padding_free=False"
            )
        num_layers = _num_hidden_layers(encoder)
        if args.ldifs_layers is not None:
            trainer.ldifs_layers = list(args.ldifs_layers)
        elif num_layers is not None:
            trainer.ldifs_layers = default_ldifs_layers(num_layers)
        else:
            raise ValueError(f"cannot infer the number of blocks of {type(encoder).__name__}; set ldifs_layers explicitly")
        if num_layers is not None and max(trainer.ldifs_layers) > num_layers:
            raise ValueError(
                f"ldifs layer index {max(trainer.ldifs_layers)} out of range: the model has {num_layers} blocks, "
                f"so hidden_states indices are 0..{num_layers}"
            )
        # The mask is the encoder's own only if its forward takes one (FLYP's text mask is not the vision tower's).
        trainer._masks_tokens = "attention_mask" in trainer._teacher_inputs
        if self.disables_student_dropout(args):
            disable_dropout(model)
        if trainer._peft and teacher_model is None:
            if args.teacher_dtype is not None:
                raise ValueError(
                    f"teacher_dtype={args.teacher_dtype!r} needs a separate teacher, but a PeftModel's teacher is "
                    "the model itself with adapters disabled; pass teacher_model= or leave teacher_dtype unset"
                )
            trainer.teacher = _AdapterDisabledTeacher(model, encoder)
            return
        source = teacher_model if teacher_model is not None else model
        teacher = copy.deepcopy(image_encoder(source))
        teacher.requires_grad_(False)
        teacher.eval()
        dtype = trainer.teacher_dtype()
        if dtype is not None:
            teacher.to(_DTYPES[dtype])
        # Evaluation mode: moved to the device and wrapped for mixed precision, never in DDP; DeepSpeed
        # gives it an inference engine of its own (partitioned under ZeRO-3).
        trainer.teacher = prepare_frozen_model(trainer, teacher)

    def disables_student_dropout(self, args) -> bool:
        return args.ldifs_lambda > 0 and not args.keep_student_dropout

    def penalty(self, trainer, model, captured_hidden_states, teacher_inputs) -> torch.Tensor:
        if captured_hidden_states is None:
            raise ValueError(f"{type(model).__name__} returned no hidden_states; LDIFS needs them")
        teacher = self.teacher_hidden_states(trainer, teacher_inputs)
        mask = teacher_inputs.get("attention_mask") if trainer._masks_tokens else None
        return ldifs_distance(captured_hidden_states, teacher, trainer.ldifs_layers, trainer.args.ldifs_normalization, mask)

    @staticmethod
    def teacher_hidden_states(trainer, teacher_inputs: dict):
        if not teacher_inputs:
            raise ValueError(
                f"the batch has none of the teacher's inputs {sorted(trainer._teacher_inputs)}; LDIFS runs the teacher "
                "on the student's batch"
            )
        if isinstance(trainer.teacher, nn.Module):
            dtype = next(trainer.teacher.parameters()).dtype
            teacher_inputs = {
                k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in teacher_inputs.items()
            }
        with torch.no_grad():
            return trainer.teacher(**teacher_inputs, output_hidden_states=True).hidden_states

    def weight(self, args) -> float:
        return args.ldifs_lambda

    def describe(self, args, layers=None) -> str:
        return f"LDIFS, λ = {args.ldifs_lambda}, {args.ldifs_normalization or 'token'} normalisation, taps {layers}"


register_regularizer(LDIFS())
