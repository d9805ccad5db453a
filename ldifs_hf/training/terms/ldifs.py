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

from ...modeling import image_encoder, is_encoder_decoder, is_peft_model
from ...regularizers import LDIFS_NORMALIZATIONS, check_ldifs_layers, default_ldifs_layers, ldifs_per_sample
from . import Regularizer, RegularizerState, check_weight, register_regularizer
from ..distributed import plain_model
from .teacher import NOT_TEACHER_INPUTS, TeacherSettings, adapter_disabled_teacher, disable_dropout, frozen_teacher, in_teacher_dtype

LDIFS_TAPS = ("encoder", "decoder", "both")


@dataclass
class LDIFSSettings(TeacherSettings):
    """LDIFS's hyperparameters (flags of `LDIFSArgumentsMixin`, which derives from this class), with the
    teacher's (`TeacherSettings`: teacher_dtype, keep_student_dropout).

    Parameters:
        ldifs_lambda (`float`, *optional*, defaults to `10.0`):
            Weight of the LDIFS feature distance (the paper's best value in general).
        ldifs_layers (`list[int]`, *optional*, defaults to `None`):
            Indices into the model's `hidden_states` to tap; None means 0 and every L/4 blocks.
        ldifs_normalization (`str`, *optional*, defaults to `"token"`):
            "token" (official code, the default λ was tuned with it) or "flatten" (paper appendix B).
        ldifs_tap (`str`, *optional*, defaults to `"encoder"`):
            Which stack of an encoder-decoder model (T5, BART, Whisper) is tapped: "encoder" (its hidden
            states do not depend on the labels), "decoder" (the teacher's decoder reads the teacher's
            encoder output and the student's decoder inputs) or "both" (the taps of both, in one mean).
            Other models have one stack: "encoder" only.
    """

    ldifs_lambda: float = field(default=10.0, metadata={"help": "Weight of the LDIFS feature distance."})
    ldifs_layers: list[int] | None = field(
        default=None, metadata={"help": "hidden_states indices to tap (default: 0 and every L/4 blocks)."}
    )
    ldifs_normalization: str = field(
        default="token", metadata={"help": f"LDIFS feature normalisation: one of {LDIFS_NORMALIZATIONS}."}
    )
    ldifs_tap: str = field(
        default="encoder", metadata={"help": f"Encoder-decoder models: the stack LDIFS taps, one of {LDIFS_TAPS}."}
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
            if len(set(self.ldifs_layers)) != len(self.ldifs_layers):  # a repeated index would weigh its layer twice
                raise ValueError(f"ldifs_layers must name each hidden-state index once, got {list(self.ldifs_layers)}")
        if self.ldifs_tap not in LDIFS_TAPS:
            raise ValueError(f"ldifs_tap must be one of {LDIFS_TAPS}, got {self.ldifs_tap!r}")


@dataclass
class LDIFSState(RegularizerState):
    """teacher: the frozen teacher encoder (or the adapter-disabled student; with decoder taps, a
    `_Seq2SeqTeacher`); layers: the encoder's taps (None when only the decoder is tapped); decoder_layers:
    the decoder's (None unless tapped); teacher_inputs: the encoder's forward inputs, taken from its call;
    masks_tokens: whether the encoder's own `attention_mask` leaves padded tokens out."""

    teacher: object = None
    layers: list[int] | None = None
    decoder_layers: list[int] | None = None
    teacher_inputs: frozenset[str] = frozenset()
    masks_tokens: bool = False


def _num_hidden_layers(encoder: nn.Module) -> int | None:
    config = getattr(encoder, "config", None)
    config = getattr(config, "vision_config", config)
    return getattr(config, "num_hidden_layers", None)


def _num_decoder_layers(model: nn.Module) -> int | None:
    config = model.config
    for name in ("decoder_layers", "num_decoder_layers", "num_hidden_layers"):  # BART/Whisper, T5, else
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    return None


def _taps(settings: LDIFSSettings, num_layers: int | None, module: nn.Module) -> list[int]:
    if settings.ldifs_layers is not None:
        layers = list(settings.ldifs_layers)
    elif num_layers is not None:
        layers = default_ldifs_layers(num_layers)
    else:
        raise ValueError(f"cannot infer the number of blocks of {type(module).__name__}; set ldifs_layers explicitly")
    if num_layers is not None:
        check_ldifs_layers(layers, num_layers)
    return layers


class _Seq2SeqTeacher(nn.Module):
    """Frozen copies of an encoder-decoder's two stacks: the decoder reads the teacher encoder's output."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, encoder_inputs: dict, decoder_inputs: dict):
        encoded = self.encoder(**encoder_inputs, output_hidden_states=True)
        decoded = self.decoder(**decoder_inputs, encoder_hidden_states=encoded.last_hidden_state, output_hidden_states=True)
        return encoded.hidden_states, decoded.hidden_states


def _accepts(module: nn.Module, name: str) -> bool:
    params = inspect.signature(module.forward).parameters
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _named_inputs(module: nn.Module) -> frozenset[str]:
    params = inspect.signature(module.forward).parameters
    return frozenset(n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)) - NOT_TEACHER_INPUTS


class LDIFS(Regularizer):
    name = "ldifs"
    settings_class = LDIFSSettings
    weight_field = "ldifs_lambda"
    needs_hidden_states = True
    log_name = "loss_ldifs"

    def setup(self, trainer, teacher_model, settings: LDIFSSettings) -> LDIFSState:
        model = plain_model(trainer.accelerator, trainer.model)
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
        if settings.ldifs_tap != "encoder" and not is_encoder_decoder(model):
            raise ValueError(
                f"ldifs_tap={settings.ldifs_tap!r} needs an encoder-decoder model (T5, BART, Whisper, ...); "
                f"{type(model).__name__} has one stack: use ldifs_tap 'encoder'"
            )
        taps_encoder = settings.ldifs_tap in ("encoder", "both")
        decoder = model.get_decoder() if settings.ldifs_tap != "encoder" else None
        layers = _taps(settings, _num_hidden_layers(encoder), encoder) if taps_encoder else None
        decoder_layers = _taps(settings, _num_decoder_layers(model), decoder) if decoder is not None else None
        teacher_inputs = _named_inputs(encoder)
        # The mask is the encoder's own only if its forward takes one (FLYP's text mask is not the vision tower's).
        state = LDIFSState(settings, layers=layers, decoder_layers=decoder_layers, teacher_inputs=teacher_inputs,
                           masks_tokens="attention_mask" in teacher_inputs)
        if self.disables_student_dropout(settings):
            disable_dropout(model)
        if is_peft_model(model) and teacher_model is None:
            if decoder is not None:
                raise ValueError(
                    f"ldifs_tap={settings.ldifs_tap!r} on a PeftModel needs teacher_model= (the adapter-disabled "
                    "teacher taps the encoder only)"
                )
            state.teacher = adapter_disabled_teacher(model, encoder, settings, "LDIFS")
            return state
        source = teacher_model if teacher_model is not None else model
        if decoder is None:
            teacher = copy.deepcopy(image_encoder(source))
        else:
            teacher = _Seq2SeqTeacher(copy.deepcopy(image_encoder(source)), copy.deepcopy(source.get_decoder()))
        state.teacher = frozen_teacher(trainer, teacher, settings, encoder, "LDIFS")
        return state

    def check_model_config(self, settings: LDIFSSettings, config) -> None:
        blocks = getattr(getattr(config, "vision_config", config), "num_hidden_layers", None)
        if settings.ldifs_layers is not None and settings.ldifs_tap == "encoder" and isinstance(blocks, int):
            check_ldifs_layers(settings.ldifs_layers, blocks)

    def disables_student_dropout(self, settings: LDIFSSettings) -> bool:
        return settings.ldifs_lambda > 0 and not settings.keep_student_dropout

    def tapped_modules(self, state: LDIFSState, model: nn.Module) -> dict[str, nn.Module]:
        modules = {"encoder": image_encoder(model)}  # also for decoder taps: the teacher's decoder reads its encoder
        if state.decoder_layers is not None:
            modules["decoder"] = model.get_decoder()
        return modules

    def penalty(self, state: LDIFSState, model, taps, inputs) -> torch.Tensor:
        for name, tap in taps.items():
            if tap.inputs is None:
                raise ValueError(
                    f"{type(model).__name__}'s {name} ran without LDIFS's forward hooks in this step: it was not called, or a "
                    "torch.compile graph traced without the hooks was reused (dynamo does not guard on module hooks: "
                    "compile the model anew, or call torch._dynamo.reset())"
                )
            if tap.hidden_states is None:
                raise ValueError(f"{type(model).__name__}'s {name} returned no hidden_states; LDIFS needs them")
        encoder_inputs = {k: v for k, v in (taps["encoder"].inputs or {}).items() if k in state.teacher_inputs and v is not None}
        if not encoder_inputs:
            raise ValueError(
                f"the encoder was called with none of the teacher's inputs {sorted(state.teacher_inputs)}; LDIFS runs "
                "the teacher on the student's inputs"
            )
        encoder_inputs = in_teacher_dtype(state.teacher, encoder_inputs)
        normalization = state.settings.ldifs_normalization
        # The teacher draws the random numbers the student's encoder drew (a random patch mask, ...).
        with torch.no_grad(), taps["encoder"].replayed_randomness():
            if state.decoder_layers is None:
                teacher_encoder, teacher_decoder = state.teacher(**encoder_inputs, output_hidden_states=True).hidden_states, None
            else:
                decoder_inputs = {k: v for k, v in taps["decoder"].inputs.items()
                                  if k not in NOT_TEACHER_INPUTS and k != "encoder_hidden_states"}
                teacher_encoder, teacher_decoder = state.teacher(encoder_inputs=encoder_inputs,
                                                                 decoder_inputs=in_teacher_dtype(state.teacher, decoder_inputs))
        parts = []  # (per-sample distance, number of taps)
        if state.layers is not None:
            mask = encoder_inputs.get("attention_mask") if state.masks_tokens else None
            parts.append((ldifs_per_sample(taps["encoder"].hidden_states, teacher_encoder, state.layers, normalization, mask),
                          len(state.layers)))
        if state.decoder_layers is not None:
            mask = taps["decoder"].inputs.get("attention_mask")
            parts.append((ldifs_per_sample(taps["decoder"].hidden_states, teacher_decoder, state.decoder_layers, normalization,
                                           mask), len(state.decoder_layers)))
        # "token": the mean over all taps; "flatten": the squared norm of one concatenation, a sum over taps.
        if normalization == "token":
            per_sample = sum(d * n for d, n in parts) / sum(n for _, n in parts)
        else:
            per_sample = sum(d for d, _ in parts)
        return per_sample.mean()

    def record(self, settings: LDIFSSettings, state: LDIFSState | None = None) -> dict:
        recorded = super().record(settings)
        if state is not None and state.layers is not None:
            recorded["ldifs_layers"] = list(state.layers)  # the taps the run used, also when they were the default
        return recorded

    def describe(self, settings: LDIFSSettings, state: LDIFSState | None = None) -> str:
        text = f"LDIFS, λ = {settings.ldifs_lambda}, {settings.ldifs_normalization or 'token'} normalisation"
        if settings.ldifs_tap in ("encoder", "both"):
            text += f", taps {state.layers if state is not None else settings.ldifs_layers}"
        if settings.ldifs_tap in ("decoder", "both"):
            text += f", decoder taps {state.decoder_layers if state is not None else settings.ldifs_layers}"
        return text


register_regularizer(LDIFS())
