"""`LDIFSMixin`: adds an L2SP or LDIFS term to any `transformers.Trainer`'s loss; `LDIFSTrainer` is it on `Trainer`.

The task loss is the parent trainer's own `compute_loss` (for `Trainer`: the model's loss from
`model(**inputs)`, the label smoother, `compute_loss_func`; for trl's `SFTTrainer`: its SFT loss), with
`output_hidden_states=True` added to the inputs only while LDIFS needs them; the CLIP objectives of the
paper's methods (FLYP, FLYP-CE) keep their own losses. So any HF model and any Trainer subclass:

    class LDIFSSFTTrainer(LDIFSMixin, SFTTrainer): ...   # with a config (LDIFSArgumentsMixin, SFTConfig)

The frozen teacher (LDIFS) and the reference weights (L2SP) are snapshots of the model's encoder
(`modeling.image_encoder`) taken when the trainer is built: for a sequence of tasks that is the model
after the previous task, as in the official code; pass `teacher_model=` (e.g. the pretrained model) to
anchor elsewhere. Neither is a submodule of the trained model, so they never enter the optimizer, the
DDP wrapper or a checkpoint. For a peft `PeftModel` without `teacher_model`, the teacher is the model's
own encoder run under `disable_adapter()` (no second copy), and L2SP is the squared norm of the LoRA
weight change Σ‖scale·B·A‖² (plus ‖θ−θ0‖² of other trainable encoder weights); heads and
`modules_to_save` are never anchored.

The teacher runs on the batch filtered to its forward signature (input_ids/attention_mask, pixel_values,
...). The student's hidden states are taken from its encoder's first forward in `compute_loss`, so a
parent loss that never returns the outputs (trl's fused LM head) still feeds LDIFS. Where the encoder
takes an `attention_mask`, padded tokens take no part in LDIFS. While the LDIFS term is on
(`ldifs_lambda > 0`) the student's dropout is off unless `keep_student_dropout`, so the term is 0 at step 0.

Terms are batch means; when the parent's task loss is already scaled for gradient accumulation (the
Trainer's `loss_is_scaled_for_ga` rule) they are divided by the accumulation steps to match.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections import defaultdict

import torch
from torch import nn
from transformers import Trainer
from transformers.utils import ModelOutput

from ..clip_classifier import CLIPVisionClassifier
from ..modeling import image_encoder, is_peft_model, lora_delta_weights, named_encoder_parameters
from ..regularizers import default_ldifs_layers, l2sp_penalty, ldifs_distance
from .arguments import LDIFSArgumentsMixin, LDIFSTrainingArguments
from .objectives import OBJECTIVES

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TERMS = ("loss_task", "loss_ldifs", "loss_l2sp")
# Forward arguments the teacher never takes from the batch: targets, loss and output switches.
_NOT_TEACHER_INPUTS = {
    "labels", "return_loss", "num_items_in_batch", "output_hidden_states", "output_attentions", "return_dict",
    "use_cache", "past_key_values",
}
# Attributes that hold a dropout probability used functionally inside attention (ViT, CLIP, Llama, ...).
_DROPOUT_ATTRIBUTES = ("dropout", "dropout_prob", "attention_dropout", "attn_dropout", "dropout_p")


def _num_hidden_layers(encoder: nn.Module) -> int | None:
    config = getattr(encoder, "config", None)
    config = getattr(config, "vision_config", config)
    return getattr(config, "num_hidden_layers", None)


def _accepts(module: nn.Module, name: str) -> bool:
    params = inspect.signature(module.forward).parameters
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def _named_inputs(module: nn.Module) -> set[str]:
    params = inspect.signature(module.forward).parameters
    return {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - _NOT_TEACHER_INPUTS


def disable_dropout(model: nn.Module) -> None:
    """Set every dropout probability of `model` to 0: `nn.Dropout` modules and attention-dropout floats."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        for name in _DROPOUT_ATTRIBUTES:
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def _without_hidden_states(outputs):
    """`outputs` without the hidden states LDIFS asked for, so predictions carry plain logits."""
    if not isinstance(outputs, ModelOutput):
        return outputs
    kept = {}
    for key, value in outputs.items():
        if key == "hidden_states":
            continue
        kept[key] = _without_hidden_states(value) if isinstance(value, ModelOutput) else value
    return type(outputs)(**kept)


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


class LDIFSMixin:
    """Mixin for a `transformers.Trainer` subclass; `args.method`/`args.regularizer` choose objective and term.

    `args` must carry the LDIFS fields (`LDIFSTrainingArguments`, or a config deriving from
    `LDIFSArgumentsMixin`). Extra keyword arguments:
        teacher_model: model whose encoder is the LDIFS teacher and the L2SP anchor
            (default: a frozen copy of `model` as given; for a PeftModel, the model with adapters disabled).
        objective: "ce" (the parent trainer's loss), "clip-contrastive" or "clip-ce"
            (default: the method's, else "ce").

    Logged per term, unrounded: `loss_task` (the objective), `loss_ldifs` (the unweighted feature
    distance), `loss_l2sp` (the unweighted squared parameter distance); prefixed `eval_` in evaluation.
    """

    def __init__(self, model=None, args=None, *trainer_args, teacher_model=None, objective: str | None = None, **kwargs):
        if args is None:
            args = LDIFSTrainingArguments(output_dir="tmp_trainer")
        if not isinstance(args, LDIFSArgumentsMixin):
            raise TypeError(
                f"{type(self).__name__} needs arguments with the LDIFS fields (LDIFSTrainingArguments, or a config "
                f"class deriving from LDIFSArgumentsMixin), got {type(args).__name__}"
            )
        spec = args.method_spec
        # Not `self.objective`: Trainer.hyperparameter_search keeps each trial's score under that name.
        self.loss_objective = objective or (spec.objective if spec else "ce")
        if self.loss_objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {tuple(OBJECTIVES)}, got {self.loss_objective!r}")
        super().__init__(model, args, *trainer_args, **kwargs)
        unwrapped = self.accelerator.unwrap_model(self.model)
        if self.loss_objective != "ce" or isinstance(unwrapped, CLIPVisionClassifier):
            # These losses are batch means that ignore num_items_in_batch: the Trainer divides them by
            # the accumulation steps.
            self.model_accepts_loss_kwargs = False
        if not hasattr(self, "_metrics"):
            self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.regularizer = args.regularizer
        self.teacher = None
        self._peft = is_peft_model(unwrapped)
        if self._peft and teacher_model is None and self.regularizer != "none":
            if unwrapped.peft_config[unwrapped.active_adapter].is_prompt_learning:
                raise ValueError(
                    f"LDIFS/L2SP on a PeftModel need adapter layers in the encoder; prompt-learning adapter "
                    f"{unwrapped.active_adapter!r} ({unwrapped.peft_config[unwrapped.active_adapter].peft_type}) changes "
                    "the inputs instead; use regularizer 'none'"
                )
        if self.regularizer == "ldifs":
            self._setup_ldifs(teacher_model)
        elif self.regularizer == "l2sp":
            self._setup_l2sp(teacher_model)

    # -- set-up ---------------------------------------------------------------------------------

    def _setup_ldifs(self, teacher_model) -> None:
        model = self.accelerator.unwrap_model(self.model)
        encoder = image_encoder(model)
        if not (_accepts(encoder, "output_hidden_states") and _accepts(model, "output_hidden_states")):
            raise ValueError(
                f"LDIFS needs a model that returns hidden_states, but {type(encoder).__name__}.forward takes no "
                "output_hidden_states; use regularizer 'l2sp' or 'none' for this model"
            )
        if getattr(self.args, "padding_free", False):
            raise ValueError(
                "LDIFS normalises each sequence over its tokens, which padding_free=True packs into one row; "
                "set padding_free=False"
            )
        num_layers = _num_hidden_layers(encoder)
        if self.args.ldifs_layers is not None:
            self.ldifs_layers = list(self.args.ldifs_layers)
        elif num_layers is not None:
            self.ldifs_layers = default_ldifs_layers(num_layers)
        else:
            raise ValueError(f"cannot infer the number of blocks of {type(encoder).__name__}; set ldifs_layers explicitly")
        if num_layers is not None and max(self.ldifs_layers) > num_layers:
            raise ValueError(
                f"ldifs layer index {max(self.ldifs_layers)} out of range: the model has {num_layers} blocks, "
                f"so hidden_states indices are 0..{num_layers}"
            )
        if self.is_deepspeed_enabled:
            raise NotImplementedError("LDIFS with DeepSpeed is not supported yet; use DDP or FSDP through accelerate")
        self._teacher_inputs = _named_inputs(encoder)
        # The mask is the encoder's own only if its forward takes one (FLYP's text mask is not the vision tower's).
        self._masks_tokens = "attention_mask" in self._teacher_inputs
        if self.args.ldifs_lambda > 0 and not self.args.keep_student_dropout:
            disable_dropout(model)
        if self._peft and teacher_model is None:
            if self.args.teacher_dtype is not None:
                raise ValueError(
                    f"teacher_dtype={self.args.teacher_dtype!r} needs a separate teacher, but a PeftModel's teacher is "
                    "the model itself with adapters disabled; pass teacher_model= or leave teacher_dtype unset"
                )
            self.teacher = _AdapterDisabledTeacher(model, encoder)
            return
        source = teacher_model if teacher_model is not None else model
        teacher = copy.deepcopy(image_encoder(source))
        teacher.requires_grad_(False)
        teacher.eval()
        dtype = self.teacher_dtype()
        if dtype is not None:
            teacher.to(_DTYPES[dtype])
        # Evaluation mode: moved to the device and wrapped for mixed precision, never in DDP.
        self.teacher = self.accelerator.prepare_model(teacher, evaluation_mode=True)

    def call_model_init(self, trial=None):
        """A trial's fresh model (hyperparameter search) gets the same treatment as the first: dropout off
        while LDIFS is on. The teacher and the L2SP anchor stay those of the model given at construction
        (`model_init` returns the same pretrained model every time)."""
        model = super().call_model_init(trial)
        # From args: Trainer.__init__ calls this before our own __init__ has run on.
        if self.args.regularizer == "ldifs" and self.args.ldifs_lambda > 0 and not self.args.keep_student_dropout:
            disable_dropout(model)
        return model

    def teacher_dtype(self) -> str | None:
        """The teacher's dtype: `args.teacher_dtype`, else the compute precision under bf16/fp16 (the teacher
        only runs forward, under autocast, so its float32 master copy would be read for nothing)."""
        if self.args.teacher_dtype is not None:
            return self.args.teacher_dtype
        if getattr(self.args, "bf16", False):
            return "bfloat16"
        if getattr(self.args, "fp16", False):
            return "float16"
        return None

    def _setup_l2sp(self, teacher_model) -> None:
        model = self.accelerator.unwrap_model(self.model)
        names = self._l2sp_names(model)
        if self._peft:
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
        self._l2sp_names = names
        self._l2sp_reference = [reference[n].detach().clone().to(self.args.device) for n in names]

    def _l2sp_names(self, model: nn.Module) -> list[str]:
        """Encoder parameters L2SP anchors directly: the trainable ones, LoRA factors and modules_to_save excepted
        (a frozen weight is at its anchor, and the LoRA change is measured as scale·B·A)."""
        names = [n for n, p in named_encoder_parameters(model).items() if p.requires_grad]
        if self._peft:
            names = [n for n in names if "lora_" not in n and "modules_to_save" not in n and "original_module" not in n]
        return names

    # -- loss -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _first_encoder_output(self):
        """Yields a dict that receives the hidden states of the student encoder's first forward."""
        captured = {}

        def hook(module, args, output):
            if "hidden_states" not in captured:
                captured["hidden_states"] = getattr(output, "hidden_states", None)

        # The current model's encoder: with `model_init` (hyperparameter search) each trial has a new model.
        handle = image_encoder(self.accelerator.unwrap_model(self.model)).register_forward_hook(hook)
        try:
            yield captured
        finally:
            handle.remove()

    def _task_loss_is_scaled_for_ga(self, num_items_in_batch) -> bool:
        # The rule `Trainer.training_step` applies before dividing by the accumulation steps.
        if getattr(self, "loss_is_scaled_for_ga", None) is not None:
            return self.loss_is_scaled_for_ga
        return (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        metrics = self._metrics[mode]
        need_hidden = self.regularizer == "ldifs"
        user_hidden = bool(inputs.get("output_hidden_states"))
        teacher_inputs = {k: v for k, v in inputs.items() if k in self._teacher_inputs} if need_hidden else None
        call_inputs = {**inputs, "output_hidden_states": True} if need_hidden else inputs
        with self._first_encoder_output() if need_hidden else contextlib.nullcontext({}) as captured:
            if self.loss_objective == "ce":
                result = super().compute_loss(model, call_inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
                task_loss, outputs = result if return_outputs else (result, None)
            else:
                task_loss, outputs = OBJECTIVES[self.loss_objective](model, inputs, need_hidden)
        steps = 1
        if model.training and self._task_loss_is_scaled_for_ga(num_items_in_batch):
            steps = getattr(self, "current_gradient_accumulation_steps", 1)
        # Logged per step: a loss already divided over the accumulated batch is scaled back.
        metrics["loss_task"].append(task_loss.detach() * steps)
        loss = task_loss
        if need_hidden:
            student = captured.get("hidden_states")
            if student is None:
                raise ValueError(f"{type(self.accelerator.unwrap_model(model)).__name__} returned no hidden_states; LDIFS needs them")
            teacher = self._teacher_hidden_states(teacher_inputs)
            mask = teacher_inputs.get("attention_mask") if self._masks_tokens else None
            distance = ldifs_distance(student, teacher, self.ldifs_layers, self.args.ldifs_normalization, mask)
            metrics["loss_ldifs"].append(distance.detach())
            loss = loss + self.args.ldifs_lambda * distance / steps
            if return_outputs and not user_hidden and not getattr(getattr(model, "config", None), "output_hidden_states", False):
                outputs = _without_hidden_states(outputs)
        elif self.regularizer == "l2sp":
            penalty = self._l2sp_penalty(self.accelerator.unwrap_model(model))
            metrics["loss_l2sp"].append(penalty.detach())
            loss = loss + self.args.l2sp_lambda * penalty / steps
        return (loss, outputs) if return_outputs else loss

    def _teacher_hidden_states(self, teacher_inputs: dict):
        if not teacher_inputs:
            raise ValueError(
                f"the batch has none of the teacher's inputs {sorted(self._teacher_inputs)}; LDIFS runs the teacher "
                "on the student's batch"
            )
        if isinstance(self.teacher, nn.Module):
            dtype = next(self.teacher.parameters()).dtype
            teacher_inputs = {
                k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in teacher_inputs.items()
            }
        with torch.no_grad():
            return self.teacher(**teacher_inputs, output_hidden_states=True).hidden_states

    def _l2sp_penalty(self, model: nn.Module) -> torch.Tensor:
        named = named_encoder_parameters(model)
        penalty = None
        if self._l2sp_names:
            penalty = l2sp_penalty([named[n] for n in self._l2sp_names], self._l2sp_reference)
        if self._peft:
            lora = sum(delta.float().pow(2).sum() for delta in lora_delta_weights(image_encoder(model), model))
            penalty = lora if penalty is None else penalty + lora
        return penalty

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        prefix = "eval_" if mode == "eval" else ""
        for name in TERMS:
            values = self._metrics[mode].pop(name, None)
            if values:
                mean = self.accelerator.gather_for_metrics(torch.stack(values).mean().reshape(1)).mean()
                logs[prefix + name] = mean.item()
        super().log(logs, start_time)


class LDIFSTrainer(LDIFSMixin, Trainer):
    """`transformers.Trainer` with the paper's methods: `LDIFSMixin` on `Trainer` (see the module docstring)."""
