"""`LDIFSMixin`: adds an L2SP or LDIFS term to any `transformers.Trainer`'s loss; `LDIFSTrainer` is it on `Trainer`.

The task loss is the parent trainer's own `compute_loss` (for `Trainer`: the model's loss from
`model(**inputs)`, the label smoother, `compute_loss_func`; for trl's trainers: their own losses); the
CLIP objectives of the paper's methods (FLYP, FLYP-CE) keep their own losses (`training/objectives.py`).
So any HF model and any Trainer subclass:

    class LDIFSSFTTrainer(LDIFSMixin, SFTTrainer): ...   # with a config (LDIFSArgumentsMixin, SFTConfig)

The trainer adds its term and changes nothing else a user of `Trainer` can observe: `evaluate()` and
`predict()` return the stock metrics and outputs (the hidden states LDIFS asked for are removed from the
outputs whatever their name), the terms reach every logger and `log_history` in separate entries, the
end-of-training summary carries no process-local means, and at λ = 0 the term is off (nothing is built,
computed, logged or added, so gradients are `None` wherever the stock Trainer's are). `LDIFSTrainer(model)`
without `args` is the stock Trainer's defaults with regularizer "none".

The regularizer is the registered object that `args.regularizer` names (`training/terms/`, one file
each): its `setup` runs at the end of `__init__` and returns the run's state, held as
`trainer.regularizer_state` (the LDIFS teacher and taps, the L2SP anchor, ...); `compute_loss` adds
`weight(settings) * penalty`. Snapshots are taken when the trainer is built: for a sequence of tasks that
is the model after the previous task, as in the official code; pass `teacher_model=` (e.g. the pretrained
model) to anchor elsewhere. Neither is a submodule of the trained model, so they never enter the
optimizer, the DDP wrapper or a checkpoint.

A regularizer that needs hidden states gets those of the first forward of each module it taps (the
encoder; an encoder-decoder's decoder on request) in `compute_loss`, whoever calls it (a parent loss
that never returns the outputs, trl's DPO/GRPO/KTO batches): the module is asked for them by a forward
pre-hook, and the teacher runs on the inputs that forward received.

Terms are batch means; when the parent's task loss is already scaled for gradient accumulation (the
Trainer's `loss_is_scaled_for_ga` rule) they are divided by the accumulation steps to match.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.utils import ModelOutput, logging

from ..clip_classifier import CLIPVisionClassifier
from ..modeling import is_peft_model
from .arguments import LDIFSArgumentsMixin
from .objectives import get_objective
from .terms import TASK_LOG_NAME, RegularizerState, TappedCall, get_regularizer, log_names
from .terms.ldifs import disable_dropout  # noqa: F401  (importable from here, as before the registry)

logger = logging.get_logger(__name__)


@dataclass
class _StockDefaultArguments(LDIFSArgumentsMixin, TrainingArguments):
    """The arguments of `LDIFSTrainer(model)` without `args`: the stock Trainer's defaults, regularizer "none"."""


def _without_hidden_states(outputs):
    """`outputs` without any hidden states (`hidden_states`, `reshaped_hidden_states`, `encoder_hidden_states`,
    `decoder_hidden_states`, nested `vision_model_output.hidden_states`, ...), as the model returns them
    when nobody asks."""
    if not isinstance(outputs, ModelOutput):
        return outputs
    kept = {}
    for key, value in outputs.items():
        if key.endswith("hidden_states"):
            continue
        kept[key] = _without_hidden_states(value) if isinstance(value, ModelOutput) else value
    return type(outputs)(**kept)


def _keyword_arguments(init, positional: tuple, keywords: dict) -> dict:
    """`positional` and `keywords` bound to the parameters of `init` (the parent trainer's), all by keyword."""
    bound = inspect.signature(init).bind_partial(*positional, **keywords)
    call = {}
    for name, value in bound.arguments.items():
        kind = inspect.signature(init).parameters[name].kind
        if kind == inspect.Parameter.VAR_KEYWORD:
            call.update(value)
        elif kind == inspect.Parameter.VAR_POSITIONAL:
            raise TypeError(f"{init.__qualname__} takes *{name}; pass its arguments by keyword")
        else:
            call[name] = value
    return call


class WarmupLengthWarning:
    """The warning `LDIFSMixin.create_scheduler` logs when the warm-up is as long as the run or longer: the
    paper's 500 warm-up steps on a short run would train at a learning rate near 0 throughout."""

    @staticmethod
    def check(args, num_training_steps: int) -> None:
        warmup = args.get_warmup_steps(num_training_steps)
        if num_training_steps > 0 and warmup >= num_training_steps:
            logger.warning(
                "warm-up (%d steps) is as long as the whole run (%d steps): the learning rate never leaves the warm-up "
                "ramp; set --warmup_steps below the run's length (e.g. --warmup_steps 0)", warmup, num_training_steps,
            )


class LDIFSMixin:
    """Mixin for a `transformers.Trainer` subclass; `args.method`/`args.regularizer` choose objective and term.

    `args` must carry the regularizer fields (`LDIFSTrainingArguments`, or a config deriving from
    `LDIFSArgumentsMixin`); without `args`, `LDIFSTrainer` takes the stock Trainer's defaults and
    regularizer "none". Every other argument is the parent trainer's, positional or by keyword, and is
    passed on by keyword (trl's `DPOTrainer(model, ref_model, args=...)` works as it does alone).
    Extra keyword arguments:
        teacher_model: model whose encoder is the LDIFS teacher and the L2SP anchor
            (default: a frozen copy of `model` as given; for a PeftModel, the model with adapters disabled).
        objective: a registered objective, "ce" (the parent trainer's loss), "clip-contrastive" or "clip-ce"
            (default: the method's, else "ce").

    Logged per term, unrounded (in evaluation in a log entry of their own): `loss_task` (the objective), `loss_ldifs` (the
    unweighted feature distance), `loss_l2sp` (the unweighted squared parameter distance), or another
    registered regularizer's `loss_<name>`; prefixed as the evaluation's metrics (`eval_`) in evaluation.

    Attributes:
        regularizer_term: the registered `Regularizer`; regularizer_state: what its `setup` returned (its
        settings for the run included); regularizer_active: False at λ = 0 (the term is then off).
    """

    def __init__(self, *trainer_args, teacher_model=None, objective: str | None = None, **kwargs):
        call = _keyword_arguments(super().__init__, trainer_args, kwargs)
        args = call.get("args")
        if args is None:
            if getattr(super().__init__, "__func__", None) is not Trainer.__init__:
                raise TypeError(
                    f"{type(self).__name__} needs args=: its parent's config class combined with LDIFSArgumentsMixin "
                    "(only LDIFSTrainer has defaults of its own, the stock Trainer's)"
                )
            args = call["args"] = _StockDefaultArguments(output_dir="tmp_trainer", regularizer="none")
        if not isinstance(args, LDIFSArgumentsMixin):
            raise TypeError(
                f"{type(self).__name__} needs arguments with the LDIFS fields (LDIFSTrainingArguments, or a config "
                f"class deriving from LDIFSArgumentsMixin), got {type(args).__name__}"
            )
        spec = args.method_spec
        # Not `self.objective`: Trainer.hyperparameter_search keeps each trial's score under that name.
        self.loss_objective = get_objective(objective or (spec.objective if spec else "ce")).name
        term = get_regularizer(args.regularizer)
        settings = term.settings(args)
        self.regularizer_term = term
        self.regularizer_active = term.log_name is not None and term.weight(settings) > 0
        super().__init__(**call)
        unwrapped = self.accelerator.unwrap_model(self.model)
        if self.loss_objective != "ce" or isinstance(unwrapped, CLIPVisionClassifier):
            # These losses are batch means that ignore num_items_in_batch: the Trainer divides them by
            # the accumulation steps.
            self.model_accepts_loss_kwargs = False
        if not hasattr(self, "_metrics"):
            self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        if not self.regularizer_active:
            self.regularizer_state = RegularizerState(settings)
            return
        if is_peft_model(unwrapped) and teacher_model is None:
            config = unwrapped.peft_config[unwrapped.active_adapter]
            if config.is_prompt_learning:
                raise ValueError(
                    f"LDIFS/L2SP on a PeftModel need adapter layers in the encoder; prompt-learning adapter "
                    f"{unwrapped.active_adapter!r} ({config.peft_type}) changes the inputs instead; use regularizer 'none'"
                )
        self.regularizer_state = term.setup(self, teacher_model, settings)

    # -- read-only views of the regularizer's state --------------------------------------------

    @property
    def regularizer(self) -> str:
        """The regularizer's registry name (`args.regularizer`)."""
        return self.args.regularizer

    @property
    def teacher(self):
        """The LDIFS teacher (None for other regularizers and at λ = 0)."""
        return getattr(self.regularizer_state, "teacher", None)

    @property
    def ldifs_layers(self) -> list[int] | None:
        """The LDIFS taps (None for other regularizers and at λ = 0)."""
        return getattr(self.regularizer_state, "layers", None)

    def regularizer_penalty(self, model: nn.Module | None = None) -> torch.Tensor:
        """The unweighted penalty of the run's regularizer on `model` (default: the trained one), for a
        regularizer that reads no hidden states (L2SP, ...)."""
        if not self.regularizer_active or self.regularizer_term.needs_hidden_states:
            raise ValueError(
                f"regularizer {self.regularizer!r} {'is off (λ = 0)' if not self.regularizer_active else 'reads hidden states'}; "
                "its penalty comes with a batch, in compute_loss"
            )
        model = self.accelerator.unwrap_model(self.model if model is None else model)
        return self.regularizer_term.penalty(self.regularizer_state, model, {}, {})

    def regularizer_description(self) -> str:
        """The model card's text for this run's regularizer."""
        return self.regularizer_term.describe(self.regularizer_state.settings, self.regularizer_state)

    # -- set-up ----------------------------------------------------------------------------------

    def call_model_init(self, trial=None):
        """A trial's fresh model (hyperparameter search) gets the same treatment as the first: stochastic
        layers off while LDIFS is on. The teacher and the L2SP anchor stay those of the model given at
        construction (`model_init` returns the same pretrained model every time)."""
        model = super().call_model_init(trial)
        # From args: Trainer.__init__ calls this before our own __init__ has run on.
        term = get_regularizer(self.args.regularizer)
        if term.disables_student_dropout(term.settings(self.args)):
            disable_dropout(model)
        return model

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        WarmupLengthWarning.check(self.args, num_training_steps)
        return super().create_scheduler(num_training_steps, optimizer)

    # -- loss -----------------------------------------------------------------------------------

    def _task_loss_is_scaled_for_ga(self, num_items_in_batch) -> bool:
        # The rule `Trainer.training_step` applies before dividing by the accumulation steps.
        if getattr(self, "loss_is_scaled_for_ga", None) is not None:
            return self.loss_is_scaled_for_ga
        return (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        metrics = self._metrics["train" if model.training else "eval"]
        term = self.regularizer_term if self.regularizer_active else None
        unwrapped = self.accelerator.unwrap_model(model)
        # The current model's modules: with `model_init` (hyperparameter search) each trial has a new model.
        taps = {}
        if term is not None and term.needs_hidden_states:
            taps = {name: TappedCall(module) for name, module in term.tapped_modules(self.regularizer_state, unwrapped).items()}
        with contextlib.ExitStack() as hooks:
            for tap in taps.values():
                hooks.enter_context(tap.attached())
            objective = get_objective(self.loss_objective)
            if objective.loss is None:
                result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
                task_loss, outputs = result if return_outputs else (result, None)
            else:
                task_loss, outputs = objective.loss(model, inputs)
        steps = 1
        if model.training and self._task_loss_is_scaled_for_ga(num_items_in_batch):
            steps = getattr(self, "current_gradient_accumulation_steps", 1)
        # Logged per step: a loss already divided over the accumulated batch is scaled back.
        metrics[TASK_LOG_NAME].append(task_loss.detach() * steps)
        loss = task_loss
        if term is not None:
            state = self.regularizer_state
            penalty = term.penalty(state, unwrapped, taps, inputs)
            metrics[term.log_name].append(penalty.detach())
            loss = loss + term.weight(state.settings) * penalty / steps
        user_hidden = bool(inputs.get("output_hidden_states")) or getattr(getattr(unwrapped, "config", None), "output_hidden_states", False)
        if taps and return_outputs and not user_hidden:
            outputs = _without_hidden_states(outputs)
        return (loss, outputs) if return_outputs else loss

    def _get_grad_norm(self, model, grad_norm=None):
        """The Trainer's gradient norm of this step, also kept as `_step_grad_norm` for `NonFiniteGuard`,
        which checks it every optimizer step, not only on the logged ones."""
        self._step_grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        return self._step_grad_norm

    # -- logs -----------------------------------------------------------------------------------

    def evaluation_loop(self, *args, **kwargs):
        # Terms left by `predict()` (which logs nothing) are not this evaluation's.
        self._metrics["eval"].clear()
        return super().evaluation_loop(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """The Trainer's log with the terms' means since the last log: in the same entry in training, in an
        entry of their own in evaluation (so the dict `evaluate()` returns is the stock one). The end-of-training summary gets no terms: their means
        over the steps this process ran would differ between a resumed run and an uninterrupted one."""
        mode = "train" if self.model.training else "eval"
        if "train_runtime" in logs:  # the summary after training
            self._metrics["train"].clear()
            return super().log(logs, start_time)
        prefix = next((k[: -len("runtime")] for k in logs if k.endswith("_runtime")), "eval_") if mode == "eval" else ""
        terms = {}
        for name in log_names():
            values = self._metrics[mode].pop(name, None)
            if values:
                mean = self.accelerator.gather_for_metrics(torch.stack(values).mean().reshape(1)).mean()
                terms[prefix + name] = mean.item()
        if mode == "train":
            logs.update(terms)  # in the step's own entry: the loss beside its terms
            return super().log(logs, start_time)
        super().log(logs, start_time)
        if terms:
            super().log(terms)


class LDIFSTrainer(LDIFSMixin, Trainer):
    """`transformers.Trainer` with the paper's methods: `LDIFSMixin` on `Trainer` (see the module docstring)."""
