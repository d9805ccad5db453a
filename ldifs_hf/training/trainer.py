"""`LDIFSMixin`: adds an L2SP, LDIFS or KL term (or a plug-in's) to any `transformers.Trainer`'s loss; `LDIFSTrainer`
is it on `Trainer`.

The task loss is the parent trainer's own `compute_loss` (for `Trainer`: the model's loss from
`model(**inputs)`, the label smoother, `compute_loss_func`; for trl's trainers: their own losses); the
CLIP objectives of the paper's methods (FLYP, FLYP-CE) keep their own losses (`training/objectives.py`).
So any HF model and any Trainer subclass:

    class LDIFSSFTTrainer(LDIFSMixin, SFTTrainer): ...   # with a config (LDIFSArgumentsMixin, SFTConfig)

The trainer adds its term and changes nothing else a user of `Trainer` can observe: `evaluate()` and
`predict()` return the stock metrics and outputs (`eval_loss` is the task loss alone, the value the stock
Trainer reports on the same weights, which `metric_for_best_model`, early stopping and
`hyperparameter_search` read; the hidden states LDIFS asked for are removed from the outputs whatever
their name), plus each term under its own key (`eval_loss_ldifs`, ...), in the same dict and the same log
event. In training, `loss` is the loss that was optimised (task + λ·term), logged beside `loss_task` and
the term in the step's own entry. The end-of-training summary carries no process-local means. At λ = 0
and with regularizer "none" the term is off: nothing is built or added, gradients are `None` wherever the
stock Trainer's are, and the log history, the callbacks' events and the logged keys are the stock ones.
`LDIFSTrainer(model)` without `args` is the stock Trainer's defaults with regularizer "none".

The regularizer is the registered object that `args.regularizer` names (`training/terms/`, one file
each): its `setup` runs at the end of `__init__` and returns the run's state, held as
`trainer.regularizer_state` (the LDIFS or KL teacher, the taps, the L2SP anchor, ...); `compute_loss` adds
`weight(settings) * penalty`. Snapshots are taken when the trainer is built: for a sequence of tasks that
is the model after the previous task, as in the official code; pass `teacher_model=` (e.g. the pretrained
model) to anchor elsewhere. Neither is a submodule of the trained model, so they never enter the
optimizer, the DDP wrapper or a checkpoint.

A regularizer that needs hidden states gets those of the first forward of each module it taps (the
encoder; an encoder-decoder's decoder on request) in `compute_loss`, whoever calls it (a parent loss
that never returns the outputs, trl's DPO/GRPO/KTO batches): the module is asked for them by a forward
pre-hook, and the teacher runs on the inputs that forward received, drawing the random numbers that
forward drew (a model with randomness in `forward`, such as ViT-MAE's patch mask, gives both the same).
A regularizer that needs outputs (KL: the logits) gets the first forward of the whole model the same way,
without hidden states. Under `torch.compile` the same holds (dynamo's code caches are cleared once, so no
graph traced without the hooks is reused); there a forward that draws random numbers is refused by name,
since the compiled graph draws its own way.

Terms are batch means; when the parent's task loss is already scaled for gradient accumulation (the
Trainer's `loss_is_scaled_for_ga` rule) they are divided by the accumulation steps to match.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import HPSearchBackend
from transformers.utils import ModelOutput, logging

from ..clip_classifier import CLIPVisionClassifier
from ..modeling import is_peft_model
from .arguments import LDIFSArgumentsMixin
from .objectives import get_objective
from .distributed import is_compiled, plain_model
from .terms import TASK_LOG_NAME, RegularizerState, TappedCall, generator_states, get_regularizer, log_names
from .terms.teacher import disable_dropout  # noqa: F401  (importable from here, as before the registry)

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
        teacher_model: model whose encoder is the LDIFS teacher and the L2SP anchor, and the KL teacher (head included)
            (default: a frozen copy of `model` as given; for a PeftModel, the model with adapters disabled).
        objective: a registered objective, "ce" (the parent trainer's loss), "clip-contrastive" or "clip-ce"
            (default: the method's, else "ce").

    Logged per term, unrounded, while a term is on: `loss_task` (the objective), `loss_ldifs` (the unweighted
    feature distance), `loss_l2sp` (the unweighted squared parameter distance), `loss_kl` (the unweighted KL), or
    another registered regularizer's `loss_<name>`; in training in the step's entry (beside `loss`, the optimised total), in
    evaluation among the evaluation's metrics with its prefix (`eval_loss_ldifs`; its task loss is `eval_loss`).

    Attributes:
        regularizer_term: the registered `Regularizer`; regularizer_state: what its `setup` returned (its
        settings for the run included); regularizer_active: False at λ = 0 (the term is then off).
    """

    _predicting = False  # within prediction_step (evaluate, predict): the loss returned is the task loss
    _regularizer_built = False  # the regularizer's `setup` ran (its λ was > 0 when the trainer was built)
    _compiled_caches_cleared = False

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
        self.regularizer_term = term
        self._set_regularizer_settings(term.settings(args))  # once; a hyperparameter trial sets its own
        super().__init__(**call)
        unwrapped = plain_model(self.accelerator, self.model)
        if self.loss_objective != "ce" or isinstance(unwrapped, CLIPVisionClassifier):
            # These losses are batch means that ignore num_items_in_batch: the Trainer divides them by
            # the accumulation steps.
            self.model_accepts_loss_kwargs = False
        if not hasattr(self, "_metrics"):
            self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        if not self.regularizer_active:
            return
        if is_peft_model(unwrapped) and teacher_model is None:
            config = unwrapped.peft_config[unwrapped.active_adapter]
            if config.is_prompt_learning:
                raise ValueError(
                    f"a regularizer on a PeftModel needs adapter layers in the model; prompt-learning adapter "
                    f"{unwrapped.active_adapter!r} ({config.peft_type}) changes the inputs instead; use regularizer 'none'"
                )
        self.regularizer_state = term.setup(self, teacher_model, self.regularizer_state.settings)
        self._regularizer_built = True

    def _set_regularizer_settings(self, settings) -> None:
        """The run's regularizer settings, read from the arguments; the term is on while its λ > 0."""
        self.regularizer_active = self.regularizer_term.log_name is not None and self.regularizer_term.weight(settings) > 0
        self.regularizer_state = RegularizerState(settings)

    # -- read-only views of the regularizer's state --------------------------------------------

    @property
    def regularizer(self) -> str:
        """The regularizer's registry name (`args.regularizer`)."""
        return self.args.regularizer

    @property
    def teacher(self):
        """The LDIFS or KL teacher (None for other regularizers and at λ = 0)."""
        return getattr(self.regularizer_state, "teacher", None)

    @property
    def ldifs_layers(self) -> list[int] | None:
        """The LDIFS taps (None for other regularizers and at λ = 0)."""
        return getattr(self.regularizer_state, "layers", None)

    @property
    def regularizer_weight(self) -> float:
        """λ of the run's regularizer (0 for "none")."""
        return self.regularizer_term.weight(self.regularizer_state.settings)

    def regularizer_penalty(self, model: nn.Module | None = None) -> torch.Tensor:
        """The unweighted penalty of the run's regularizer on `model` (default: the trained one), for a
        regularizer that reads nothing of a forward (L2SP, ...)."""
        term = self.regularizer_term
        if not self.regularizer_active or term.needs_hidden_states or term.needs_outputs:
            raise ValueError(
                f"regularizer {self.regularizer!r} {'is off (λ = 0)' if not self.regularizer_active else 'reads a forward'}; "
                "its penalty comes with a batch, in compute_loss"
            )
        model = plain_model(self.accelerator, self.model if model is None else model)
        return term.penalty(self.regularizer_state, model, {}, {})

    def regularizer_description(self) -> str:
        """The model card's text for this run's regularizer."""
        return self.regularizer_term.describe(self.regularizer_state.settings, self.regularizer_state)

    def regularizer_record(self) -> dict:
        """What a `RunRecord` keeps of the run's regularizer: `regularizer`, `regularizer_settings` (its `record`),
        `regularizer_weight` (λ, None without a weighted term) and `regularizer_text` (its card text)."""
        term, settings = self.regularizer_term, self.regularizer_state.settings
        return {
            "regularizer": term.name, "regularizer_settings": term.record(settings, self.regularizer_state),
            "regularizer_weight": term.weight(settings) if term.weight_field is not None or term.log_name is not None else None,
            "regularizer_text": self.regularizer_description(),
        }

    # -- set-up ----------------------------------------------------------------------------------

    def call_model_init(self, trial=None):
        """A trial's fresh model (hyperparameter search) gets the same treatment as the first: stochastic
        layers off while LDIFS is on. The teacher and the L2SP anchor stay those of the model given at
        construction (`model_init` returns the same pretrained model every time)."""
        model = super().call_model_init(trial)
        # Trainer.__init__ calls this before our own __init__ has run on: the settings are already read.
        if self.regularizer_term.disables_student_dropout(self.regularizer_state.settings):
            disable_dropout(model)
        return model

    def _hp_search_setup(self, trial) -> None:
        """A hyperparameter trial's values, as the Trainer sets them on `args`, with a plug-in regularizer's settings
        (fields of its settings without a flag) into `args.regularizer_options`; then the run's settings read anew.
        A trial may change the regularizer's weight, not what its state was built from (teacher, taps, anchor)."""
        params = {}
        if trial is not None and self.hp_search_backend is not None:
            params = self.hp_space(trial) if self.hp_search_backend == HPSearchBackend.OPTUNA else dict(trial)
        term = self.regularizer_term
        fields = {f.name for f in dataclasses.fields(term.settings_class)} if term.settings_class else set()
        routed = {k: v for k, v in params.items() if k in fields and not hasattr(self.args, k)}
        if routed:
            self.args.regularizer_options = {**self.args.regularizer_options, **routed}
            hp_space = self.hp_space
            self.hp_space = lambda t: {k: v for k, v in hp_space(t).items() if k not in routed}
            trial = {k: v for k, v in trial.items() if k not in routed} if isinstance(trial, dict) else trial
        try:
            super()._hp_search_setup(trial)
        finally:
            if routed:
                self.hp_space = hp_space
        if trial is not None and self.hp_search_backend is not None:
            self._trial_regularizer(term.settings(self.args))

    def _trial_regularizer(self, settings) -> None:
        term, state = self.regularizer_term, self.regularizer_state
        weight, before = term.weight_field, state.settings
        same = settings == before if weight is None or settings is None else (
            dataclasses.replace(settings, **{weight: getattr(before, weight)}) == before)
        active = term.log_name is not None and term.weight(settings) > 0
        if not same or (active and not self._regularizer_built):
            raise ValueError(
                f"a hyperparameter trial set regularizer {self.regularizer!r} to {settings}; a trial may change its weight "
                f"{weight} only, and not from 0 (its state is built once, from the model given): set it > 0 when building the trainer"
            )
        state.settings, self.regularizer_active = settings, active

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
        plain = plain_model(self.accelerator, model)
        # The current model's modules: with `model_init` (hyperparameter search) each trial has a new model.
        taps = {}
        if term is not None and (term.needs_hidden_states or term.needs_outputs):
            taps = {name: TappedCall(module, hidden_states=term.needs_hidden_states)
                    for name, module in term.tapped_modules(self.regularizer_state, plain).items()}
        with contextlib.ExitStack() as hooks, self._compiled_forward_checks(model, bool(taps)):
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
        # Kept per step (a loss already divided over the accumulated batch is scaled back) for the logs and the
        # non-finite guard; logged only while a term is on.
        metrics[TASK_LOG_NAME].append(task_loss.detach() * steps)
        loss = task_loss
        if term is not None:
            state = self.regularizer_state
            penalty = term.penalty(state, plain, taps, inputs)
            metrics[term.log_name].append(penalty.detach())
            if not self._predicting:  # evaluate() and predict() report the task loss, as the stock Trainer does
                loss = loss + term.weight(state.settings) * penalty / steps
        user_hidden = bool(inputs.get("output_hidden_states")) or getattr(getattr(plain, "config", None), "output_hidden_states", False)
        if taps and term.needs_hidden_states and return_outputs and not user_hidden:
            outputs = _without_hidden_states(outputs)
        return (loss, outputs) if return_outputs else loss

    @contextlib.contextmanager
    def _compiled_forward_checks(self, model, tapped: bool):
        """Around a forward whose taps a teacher reads, on a model `torch.compile` runs: the first time, dynamo's
        code caches are cleared, since a graph traced without the taps' hooks (an earlier compiled run of the same
        model class in this process: dynamo does not guard on module hooks) would be reused and skip them; then,
        while the student's stochastic layers are off, a forward that draws random numbers (a random mask) is
        refused: the teacher replays the student's draws in eager mode (`TappedCall.replayed_randomness`), but a
        compiled graph draws its own way."""
        state = self.regularizer_state
        if not (tapped and is_compiled(self.accelerator.unwrap_model(model))):
            yield
            return
        if not self._compiled_caches_cleared:
            torch._dynamo.reset_code_caches()
            self._compiled_caches_cleared = True
            logger.info("torch.compile: dynamo's code caches cleared once, so the compiled graphs include the regularizer's taps")
        before = generator_states(self.args.device) if self.regularizer_term.disables_student_dropout(state.settings) else None
        yield
        after = generator_states(self.args.device) if before is not None else None
        if before is not None and any(not torch.equal(before[k], after[k]) for k in before):
            raise ValueError(
                f"{type(plain_model(self.accelerator, model)).__name__} draws random numbers in its forward (e.g. a random "
                "patch mask) with its stochastic layers off; under torch_compile the teacher cannot draw the same ones: "
                "pass them as an input (ViT-MAE: noise=) or train without torch_compile"
            )

    def prediction_step(self, *args, **kwargs):
        # compute_loss keeps the regularizer's term out of the loss it returns here (it still logs the term).
        self._predicting = True
        try:
            return super().prediction_step(*args, **kwargs)
        finally:
            self._predicting = False

    def _get_grad_norm(self, model, grad_norm=None):
        """The Trainer's gradient norm of this step, also kept as `_step_grad_norm` for `NonFiniteGuard`,
        which checks it every optimizer step, not only on the logged ones."""
        self._step_grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        return self._step_grad_norm

    # -- logs -----------------------------------------------------------------------------------

    def _term_means(self, mode: str, prefix: str) -> dict[str, float]:
        """Each term's mean since the last log, over the processes, under `prefix + name`; the lists emptied. The task
        loss is named only while a term is on (at λ = 0 and with regularizer "none" the logs are the stock ones)."""
        means = {}
        for name in log_names():
            values = self._metrics[mode].pop(name, None)
            if values and self.regularizer_active:
                mean = self.accelerator.gather(torch.stack(values).float().mean().reshape(1)).mean()
                means[prefix + name] = mean.item()
        return means

    def evaluation_loop(self, *args, **kwargs):
        # Terms left by an earlier compute_loss outside an evaluation are not this one's.
        self._term_means("eval", "")
        output = super().evaluation_loop(*args, **kwargs)
        bound = inspect.signature(super().evaluation_loop).bind(*args, **kwargs)
        bound.apply_defaults()
        prefix = bound.arguments.get("metric_key_prefix") or "eval"
        terms = self._term_means("eval", f"{prefix}_")
        terms.pop(f"{prefix}_{TASK_LOG_NAME}", None)  # the task loss is `{prefix}_loss` itself
        output.metrics.update(terms)
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """The Trainer's log, with the terms' means since the last log in the training step's own entry (evaluation
        puts its terms among its metrics). The end-of-training summary gets no terms: their means over the steps this
        process ran would differ between a resumed run and an uninterrupted one."""
        if "train_runtime" in logs:  # the summary after training: no terms
            self._term_means("train", "")
        elif self.model.training:
            logs.update(self._term_means("train", ""))
        else:  # a log in evaluation mode outside an evaluation loop: its terms are no evaluation's
            self._term_means("eval", "")
        return super().log(logs, start_time)


class LDIFSTrainer(LDIFSMixin, Trainer):
    """`transformers.Trainer` with the paper's methods: `LDIFSMixin` on `Trainer` (see the module docstring)."""
