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

The regularizer is the registered object that `args.regularizer` names (`training/terms/`, one file
each): its `setup` runs at the end of `__init__`, and `compute_loss` adds its `weight(args) * penalty`.

Terms are batch means; when the parent's task loss is already scaled for gradient accumulation (the
Trainer's `loss_is_scaled_for_ga` rule) they are divided by the accumulation steps to match.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import defaultdict

import torch
from torch import nn
from transformers import Trainer
from transformers.utils import ModelOutput

from ..clip_classifier import CLIPVisionClassifier
from ..modeling import image_encoder, is_peft_model
from .arguments import LDIFSArgumentsMixin, LDIFSTrainingArguments
from .objectives import OBJECTIVES
from .terms import get_regularizer
from .terms.ldifs import disable_dropout  # noqa: F401  (importable from here, as before the registry)

TERMS = ("loss_task", "loss_ldifs", "loss_l2sp")  # the built-in regularizers' terms (each logs its `log_name`)
# Forward arguments the teacher never takes from the batch: targets, loss and output switches.
_NOT_TEACHER_INPUTS = {
    "labels", "return_loss", "num_items_in_batch", "output_hidden_states", "output_attentions", "return_dict",
    "use_cache", "past_key_values",
}


def _named_inputs(module: nn.Module) -> set[str]:
    params = inspect.signature(module.forward).parameters
    return {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - _NOT_TEACHER_INPUTS


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


class LDIFSMixin:
    """Mixin for a `transformers.Trainer` subclass; `args.method`/`args.regularizer` choose objective and term.

    `args` must carry the LDIFS fields (`LDIFSTrainingArguments`, or a config deriving from
    `LDIFSArgumentsMixin`). Extra keyword arguments:
        teacher_model: model whose encoder is the LDIFS teacher and the L2SP anchor
            (default: a frozen copy of `model` as given; for a PeftModel, the model with adapters disabled).
        objective: "ce" (the parent trainer's loss), "clip-contrastive" or "clip-ce"
            (default: the method's, else "ce").

    Logged per term, unrounded: `loss_task` (the objective), `loss_ldifs` (the unweighted feature
    distance), `loss_l2sp` (the unweighted squared parameter distance), or another registered
    regularizer's `loss_<name>`; prefixed `eval_` in evaluation.
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
        self.regularizer_term = get_regularizer(self.regularizer)
        if self.regularizer_term.needs_hidden_states:
            self._teacher_inputs = _named_inputs(image_encoder(unwrapped))
        self.regularizer_term.setup(self, teacher_model)

    # -- set-up (the regularizer's own is in training/terms/) ----------------------------------

    def call_model_init(self, trial=None):
        """A trial's fresh model (hyperparameter search) gets the same treatment as the first: dropout off
        while LDIFS is on. The teacher and the L2SP anchor stay those of the model given at construction
        (`model_init` returns the same pretrained model every time)."""
        model = super().call_model_init(trial)
        # From args: Trainer.__init__ calls this before our own __init__ has run on.
        if get_regularizer(self.args.regularizer).disables_student_dropout(self.args):
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
        term = self.regularizer_term
        need_hidden = term.needs_hidden_states
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
        if term.log_name is not None:
            penalty = term.penalty(self, self.accelerator.unwrap_model(model), captured.get("hidden_states"), teacher_inputs)
            metrics[term.log_name].append(penalty.detach())
            loss = loss + term.weight(self.args) * penalty / steps
        if need_hidden and return_outputs and not user_hidden and not getattr(getattr(model, "config", None), "output_hidden_states", False):
            outputs = _without_hidden_states(outputs)
        return (loss, outputs) if return_outputs else loss

    def _l2sp_penalty(self, model: nn.Module) -> torch.Tensor:
        """The unweighted L2SP term of `model` (the registered "l2sp" regularizer's penalty)."""
        return get_regularizer("l2sp").penalty(self, model, None, None)

    def _logged_terms(self) -> tuple[str, ...]:
        name = self.regularizer_term.log_name
        return TERMS if name is None or name in TERMS else TERMS + (name,)

    def _get_grad_norm(self, model, grad_norm=None):
        """The Trainer's gradient norm of this step, also kept as `_step_grad_norm` for `NonFiniteGuard`,
        which checks it every optimizer step, not only on the logged ones."""
        self._step_grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        return self._step_grad_norm

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        prefix = "eval_" if mode == "eval" else ""
        for name in self._logged_terms():
            values = self._metrics[mode].pop(name, None)
            if values:
                mean = self.accelerator.gather_for_metrics(torch.stack(values).mean().reshape(1)).mean()
                logs[prefix + name] = mean.item()
        super().log(logs, start_time)


class LDIFSTrainer(LDIFSMixin, Trainer):
    """`transformers.Trainer` with the paper's methods: `LDIFSMixin` on `Trainer` (see the module docstring)."""
