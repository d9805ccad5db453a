"""KL anchor: λ·τ²·KL(p_teacher ‖ p_student) between the output distributions of the frozen starting model and
the trained one on the same inputs, logged as `loss_kl` (the anchor of "SFT with a KL term to the base model").

The teacher is a frozen copy of the model as given to the trainer (its head included), kept off the optimizer,
DDP and checkpoints, in `teacher_dtype`; for a peft `PeftModel` without `teacher_model` it is the model itself
under `disable_adapter()`. A `teacher_model` of the model's class is copied whole; one of another class lends the
weights it shares by name and shape (a `CLIPModel`'s vision tower and projection under a CLIP classifier's head:
the starting point's head on the teacher's features). The student's stochastic layers are off while λ > 0
(`keep_student_dropout` keeps them), and the teacher replays the random numbers the student's forward drew.

Which outputs count: a classifier's class logits [B, C], one row per example; per-token logits [B, T, V] over the
tokens the task loss counts (`labels` != -100), after the causal shift for a causal LM (position t predicts
token t + 1), aligned as they are for an encoder-decoder's decoder or a token classifier. The term is the mean
over those rows (tokens, not sequences: the task loss of a causal LM is a mean over its tokens too), in float32.
Under trl's fused LM head (`SFTTrainer`), which returns no logits, both sides' logits of the counted tokens come
from the backbone's last hidden state through the output embeddings. At λ = 0 nothing is built.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ...modeling import image_encoder, is_encoder_decoder, is_peft_model
from ...regularizers import kl_anchor
from . import Regularizer, RegularizerState, check_weight, register_regularizer
from ..distributed import plain_model
from .teacher import (
    NOT_TEACHER_INPUTS, AdapterDisabledTeacher, TeacherSettings, adapter_disabled_teacher, disable_dropout, frozen_teacher,
    in_teacher_dtype,
)

# Logit transforms a model's own forward applies after its output embeddings (Gemma's soft-capping, Cohere's and
# Granite's scales): logits rebuilt from the hidden states under trl's fused head would miss them.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


@dataclass
class KLSettings(TeacherSettings):
    """The KL anchor's hyperparameters (flags of `LDIFSArgumentsMixin`), with the teacher's (`TeacherSettings`).

    Parameters:
        kl_lambda (`float`, *optional*, defaults to `1.0`):
            Weight of τ²·KL(p_teacher ‖ p_student), per example or counted token: at 1 a nat of KL weighs as
            much as a nat of the task's cross-entropy.
        kl_temperature (`float`, *optional*, defaults to `1.0`):
            Temperature τ of both softmaxes; 1 compares the distributions the model predicts.
    """

    kl_lambda: float = field(default=1.0, metadata={"help": "Weight of the KL anchor τ²·KL(p_teacher ‖ p_student)."})
    kl_temperature: float = field(default=1.0, metadata={"help": "Softmax temperature τ of the KL anchor (both sides)."})

    def __post_init__(self):
        super().__post_init__()
        check_weight("kl_lambda", self.kl_lambda)
        value = self.kl_temperature
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"kl_temperature must be a finite number > 0, got {value!r}")


@dataclass
class KLState(RegularizerState):
    """teacher: the frozen copy (or the adapter-disabled student); tokens: how per-token logits meet their labels,
    "causal" (shifted by one), "aligned" (as they are) or None (the model does not say: refused)."""

    teacher: object = None
    tokens: str | None = None


def _token_alignment(model: nn.Module) -> str | None:
    base = model.get_base_model() if is_peft_model(model) else model
    if is_encoder_decoder(base):
        return "aligned"
    can_generate = getattr(base, "can_generate", None)
    if can_generate is None:
        return None
    return "causal" if can_generate() else "aligned"


def _starting_copy(model: nn.Module, teacher_model: nn.Module | None) -> nn.Module:
    """A copy of the teacher: `teacher_model` if it is of the model's class (a PeftModel's: its base model's), else
    the model as given with the weights `teacher_model` shares by name and shape, its encoder's all among them."""
    base = model.get_base_model() if is_peft_model(model) else model
    if teacher_model is None:
        return copy.deepcopy(model)
    if type(teacher_model) is type(base):
        return copy.deepcopy(teacher_model)
    if base is not model:
        raise ValueError(
            f"teacher_model ({type(teacher_model).__name__}) cannot be the KL teacher of a PeftModel of {type(base).__name__}: "
            "pass a model of that class, or none (the model with its adapters disabled)"
        )
    teacher = copy.deepcopy(base)
    own, lent = teacher.state_dict(), teacher_model.state_dict()
    shared = {k: v for k, v in lent.items() if k in own and own[k].shape == v.shape}
    prefix = next(name for name, module in teacher.named_modules() if module is image_encoder(teacher))
    missing = [k for k in own if k.startswith(f"{prefix}.") and k not in shared]
    if not shared or missing:
        raise ValueError(
            f"teacher_model ({type(teacher_model).__name__}) cannot be the KL teacher of {type(base).__name__}: it lacks "
            f"{'every weight' if not shared else repr(missing[0])} of the model's encoder; pass a model of the same class"
        )
    teacher.load_state_dict(shared, strict=False)
    return teacher


def _logits(output) -> torch.Tensor | None:
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        logits = output[0]
    return logits


def counted_rows(logits: torch.Tensor, labels: torch.Tensor | None, tokens: str | None, model_name: str,
                 shifted: bool = False) -> torch.Tensor:
    """The rows of `logits` the term compares: [B, C] as they are; [B, T, V] at the positions the task loss counts
    (`labels` != -100, after the causal shift unless `shifted`: labels already shifted, trl's `shift_labels`)."""
    if logits.dim() == 2:
        return logits
    if logits.dim() != 3:
        raise ValueError(f"KL compares class logits [B, C] or token logits [B, T, V]; {model_name} returned {tuple(logits.shape)}")
    if labels is None:
        raise ValueError(
            f"KL on per-token logits needs the tokens the task loss counts: `labels` (-100 where not counted) among "
            f"{model_name}'s inputs, and it was called without them (trl's DPO, KTO and GRPO score their own way: use ldifs or l2sp)"
        )
    if tokens is None:
        raise ValueError(f"KL cannot tell whether {model_name}'s token logits predict the next token or their own; use ldifs or l2sp")
    if tokens == "causal" and not shifted:
        logits, labels = logits[:, :-1], labels[:, 1:]
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"KL: {model_name}'s token logits {tuple(logits.shape)} do not match its labels {tuple(labels.shape)}")
    return logits[labels != -100]


@contextlib.contextmanager
def _teacher_module(teacher):
    """The teacher as a module to call piece by piece: the frozen copy, or the PeftModel with its adapters disabled."""
    if isinstance(teacher, AdapterDisabledTeacher):
        modes = {m: m.training for m in teacher.module.modules()}
        teacher.module.eval()
        try:
            with teacher.peft_model.disable_adapter(), torch.no_grad():
                yield teacher.module
        finally:
            for module, training in modes.items():
                module.training = training
    else:
        with torch.no_grad():
            yield teacher


class KL(Regularizer):
    name = "kl"
    settings_class = KLSettings
    weight_field = "kl_lambda"
    needs_outputs = True
    log_name = "loss_kl"

    def setup(self, trainer, teacher_model, settings: KLSettings) -> KLState:
        model = plain_model(trainer.accelerator, trainer.model)
        objective = getattr(trainer, "loss_objective", "ce")
        if objective != "ce":
            raise ValueError(
                f"KL anchors a classifier's or a language model's output distribution; objective {objective!r} scores "
                "image-text pairs of the batch instead: use ldifs or l2sp with FLYP"
            )
        problem = getattr(getattr(model, "config", None), "problem_type", None)
        if problem in ("multi_label_classification", "regression"):
            raise ValueError(f"KL compares softmax distributions; a {problem} head has none: use ldifs or l2sp")
        state = KLState(settings, tokens=_token_alignment(model))
        if self.disables_student_dropout(settings):
            disable_dropout(model)
        if is_peft_model(model) and teacher_model is None:
            state.teacher = adapter_disabled_teacher(model, model, settings, "KL")
        else:
            state.teacher = frozen_teacher(trainer, _starting_copy(model, teacher_model), settings, model, "KL")
        return state

    def disables_student_dropout(self, settings: KLSettings) -> bool:
        return settings.kl_lambda > 0 and not settings.keep_student_dropout

    def tapped_modules(self, state: KLState, model: nn.Module) -> dict[str, nn.Module]:
        modules = {"model": model}
        if state.tokens == "causal":  # trl's fused LM head returns no logits: they are rebuilt from the backbone's output
            modules["backbone"] = image_encoder(model)
        return modules

    def penalty(self, state: KLState, model, taps, inputs) -> torch.Tensor:
        tap, name = taps["model"], type(model).__name__
        if tap.inputs is None:
            raise ValueError(
                f"{name} ran without KL's forward hooks in this step: it was not called, or a torch.compile graph traced "
                "without the hooks was reused (compile the model anew, or call torch._dynamo.reset())"
            )
        labels, shifted = tap.inputs.get("labels"), tap.inputs.get("shift_labels") is not None
        if shifted:
            labels = tap.inputs["shift_labels"]
        student = _logits(tap.output)
        with tap.replayed_randomness():  # the teacher draws the random numbers the student drew
            if student is None:
                student_rows, teacher_rows = self._fused_head_rows(state, model, taps, labels, shifted)
            else:
                inputs = {k: v for k, v in tap.inputs.items() if k not in NOT_TEACHER_INPUTS and v is not None}
                if is_encoder_decoder(model) and labels is not None:
                    inputs["labels"] = labels  # the teacher's decoder inputs are built from them, as the student's were
                with _teacher_module(state.teacher) as teacher:
                    teacher_logits = _logits(teacher(**in_teacher_dtype(state.teacher, inputs)))
                student_rows = counted_rows(student, labels, state.tokens, name, shifted)
                teacher_rows = counted_rows(teacher_logits, labels, state.tokens, name, shifted)
        per_row = kl_anchor(student_rows, teacher_rows, state.settings.kl_temperature)
        return per_row.sum() / max(per_row.numel(), 1)  # no counted token: 0, still on the graph

    def _fused_head_rows(self, state: KLState, model, taps, labels, shifted: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Under trl's fused LM head: the counted tokens' logits of both sides, as output embeddings of the backbone's
        last hidden state (the head the fused kernel applies)."""
        base = model.get_base_model() if is_peft_model(model) else model
        config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
        transform = next((t for t in _LOGIT_TRANSFORMS if getattr(config, t, None) not in (None, 1, 1.0)), None)
        backbone = taps.get("backbone")
        if transform is not None or backbone is None or getattr(backbone.output, "last_hidden_state", None) is None:
            raise ValueError(
                f"KL needs {type(model).__name__}'s logits, and its forward returned none"
                + (f" (trl's fused LM head; its config's {transform} cannot be rebuilt from the hidden states)" if transform else "")
                + ": use a loss that returns logits (e.g. SFTConfig with a compute_loss_func), or ldifs or l2sp"
            )
        rows = lambda hidden: counted_rows(hidden, labels, state.tokens, type(model).__name__, shifted)  # noqa: E731
        student = model.get_output_embeddings()(rows(backbone.output.last_hidden_state))
        inputs = {k: v for k, v in backbone.inputs.items() if k not in NOT_TEACHER_INPUTS and v is not None}
        with _teacher_module(state.teacher) as teacher:
            teacher = getattr(teacher, "module", teacher)  # a DeepSpeed engine's model, called piece by piece
            hidden = image_encoder(teacher)(**in_teacher_dtype(state.teacher, inputs)).last_hidden_state
            teacher_logits = teacher.get_output_embeddings()(rows(hidden))
        return student, teacher_logits

    def describe(self, settings: KLSettings, state: KLState | None = None) -> str:
        return f"KL to the starting model, λ = {settings.kl_lambda}, τ = {settings.kl_temperature}"


register_regularizer(KL())
