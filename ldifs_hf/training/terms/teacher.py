"""The frozen teacher that LDIFS and KL share: its settings (`TeacherSettings`: dtype, the student's dropout),
how it is made (`frozen_teacher`: a copy kept off the optimizer, DDP and checkpoints, or a PeftModel with
its adapters disabled), and the inputs it takes from the student's forward."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from ..distributed import prepare_frozen_model
from . import RegularizerSettings

TEACHER_DTYPES = ("float32", "bfloat16", "float16")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
logger = logging.getLogger(__name__)
# Attributes that hold a probability used functionally: attention and activation dropout (ViT, CLIP, Llama,
# BART, Whisper, ...), stochastic depth (DropPath's `drop_prob`: Swin, ConvNeXt, BEiT, timm) and layer drop.
_STOCHASTIC_ATTRIBUTES = (
    "dropout", "dropout_prob", "attention_dropout", "attn_dropout", "dropout_p", "activation_dropout", "hidden_dropout",
    "drop_prob", "layerdrop",
)
# Forward arguments the teacher never takes from the student's call: targets, loss and output switches, caches,
# trl's fused LM head (the teacher returns its logits).
NOT_TEACHER_INPUTS = frozenset({
    "labels", "return_loss", "num_items_in_batch", "output_hidden_states", "output_attentions", "return_dict",
    "use_cache", "past_key_values", "cache", "cache_position", "fused_lm_head", "shift_labels", "output_router_logits",
})


@dataclass
class TeacherSettings(RegularizerSettings):
    """The frozen teacher's settings, shared by the regularizers that have one (LDIFS, KL).

    Parameters:
        teacher_dtype (`str`, *optional*, defaults to `None`):
            Cast the frozen teacher to "bfloat16"/"float16"/"float32". None means the dtype of the
            student's weights, so the term is exactly 0 at step 1 under any autocast; "bfloat16" under
            `bf16` saves memory and time (the teacher never trains, so it needs no float32 copy) at a
            rounding of about 1e-6 in the term.
        keep_student_dropout (`bool`, *optional*, defaults to `False`):
            Keep the student's stochastic layers (dropout, DropPath, ...) while the term is on (its λ > 0).
            By default they are switched off, as trl's `disable_dropout`, so student and teacher agree at step 0.
    """

    teacher_dtype: str | None = field(
        default=None,
        metadata={"help": f"dtype of the frozen teacher: one of {TEACHER_DTYPES} (default: the student's weights' dtype)."},
    )
    keep_student_dropout: bool = field(
        default=False,
        metadata={"help": "Keep the student's dropout and stochastic depth while LDIFS or KL is on (default: switched off)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.teacher_dtype is not None and self.teacher_dtype not in TEACHER_DTYPES:
            raise ValueError(f"teacher_dtype must be one of {TEACHER_DTYPES} or None, got {self.teacher_dtype!r}")


def disable_dropout(model: nn.Module) -> None:
    """Set every stochastic probability of `model` to 0: `nn.Dropout` modules, DropPath's `drop_prob`,
    attention/activation dropout floats and layer drop."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        for name in _STOCHASTIC_ATTRIBUTES:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def resolve_teacher_dtype(settings: TeacherSettings, student: nn.Module) -> torch.dtype:
    """The teacher's dtype: `teacher_dtype`, else the dtype of `student`'s weights (the part the teacher copies), so
    that at step 1, under any autocast, the teacher computes exactly what the student computes and the term is 0
    (bf16 teacher weights under a float32 student's bf16 autocast give about 1e-6 instead)."""
    if settings.teacher_dtype is not None:
        return _DTYPES[settings.teacher_dtype]
    return next((p.dtype for p in student.parameters() if p.is_floating_point()), torch.float32)


def in_teacher_dtype(teacher, inputs: dict) -> dict:
    """Floating-point inputs cast to a separate teacher's dtype (an adapter-disabled teacher is the student)."""
    if not isinstance(teacher, nn.Module):
        return inputs
    dtype = next(teacher.parameters()).dtype
    return {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}


class AdapterDisabledTeacher:
    """A PeftModel's `module` (its encoder, or itself) run under `disable_adapter()`, in eval mode, without
    gradients: no second copy."""

    def __init__(self, peft_model: nn.Module, module: nn.Module):
        self.peft_model = peft_model
        self.module = module

    def __call__(self, **inputs):
        modes = {m: m.training for m in self.module.modules()}
        self.module.eval()
        try:
            with self.peft_model.disable_adapter(), torch.no_grad():
                return self.module(**inputs)
        finally:
            for module, training in modes.items():
                module.training = training


def frozen_teacher(trainer, module: nn.Module, settings: TeacherSettings, student: nn.Module, name: str) -> nn.Module:
    """`module` (already a copy) frozen, in eval mode, in the teacher's dtype (`resolve_teacher_dtype` of `student`),
    and prepared beside the student: moved to the device and wrapped for mixed precision, never in DDP; DeepSpeed
    gives it an inference engine of its own (partitioned under ZeRO-3). One info line says the dtype."""
    # A forward patched onto an instance whose closure calls the original model (trl's fused LM head keeps the
    # model's own forward) would, copied, run the student: such a copy runs its class's forward.
    for copied in module.modules():
        if _forward_calls_another_module(copied):
            del copied.__dict__["forward"]
    module.requires_grad_(False)
    module.eval()
    dtype = resolve_teacher_dtype(settings, student)
    module.to(dtype)
    logger.info("%s teacher: a frozen copy in %s (%s)", name, str(dtype).replace("torch.", ""),
                "teacher_dtype" if settings.teacher_dtype else "the student's dtype; teacher_dtype= to change it")
    return prepare_frozen_model(trainer, module)



def _forward_calls_another_module(module: nn.Module) -> bool:
    """Whether `module`'s instance-level `forward` closes over a bound method of another module."""
    cells = getattr(getattr(module.__dict__.get("forward"), "__func__", None), "__closure__", None) or ()
    for cell in cells:
        try:
            owner = getattr(cell.cell_contents, "__self__", None)
        except ValueError:  # an empty cell
            continue
        if isinstance(owner, nn.Module) and owner is not module:
            return True
    return False


def adapter_disabled_teacher(peft_model: nn.Module, module: nn.Module, settings: TeacherSettings, name: str) -> AdapterDisabledTeacher:
    """The teacher of a PeftModel without `teacher_model`: `module` of the model itself, adapters disabled."""
    if settings.teacher_dtype is not None:
        raise ValueError(
            f"teacher_dtype={settings.teacher_dtype!r} needs a separate teacher, but a PeftModel's teacher is "
            "the model itself with adapters disabled; pass teacher_model= or leave teacher_dtype unset"
        )
    logger.info("%s teacher: the model itself with its adapters disabled, in the student's dtype", name)
    return AdapterDisabledTeacher(peft_model, module)
