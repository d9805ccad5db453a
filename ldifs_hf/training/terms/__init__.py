"""The regularizer registry: each regularizer is one registered object, in one file of this package.

A `Regularizer` declares its hyperparameters in a small dataclass (`settings_class`, a
`RegularizerSettings`) and which of them is its weight λ (`weight_field`), builds its per-trainer state
once (`setup`, which returns a `RegularizerState` that the trainer holds as `trainer.regularizer_state`),
and knows what it reads of the student's forward (`needs_hidden_states`, `needs_outputs`), its
unweighted penalty (`penalty`), the name it is logged under (`log_name`), what a run record keeps of its
settings (`record`) and its model-card text (`describe`). `LDIFSMixin` calls the object that
`args.regularizer` names; the method registry and the arguments validate names against
`list_regularizers()`; the run record, resume, the study's sweeps, the λ search and the frontier read
λ through `weight_field` and the record. The formulas themselves stay pure functions in `ldifs_hf.regularizers`.

Settings come from the arguments: a built-in's settings dataclass is a base of `LDIFSArgumentsMixin`,
so its fields are the usual flags (`--ldifs_lambda`, `--kl_temperature`, ...); a plug-in's fields come
from `args.regularizer_options` (a dict, or JSON on the command line: `--regularizer_options
'{"l1_lambda": 0.1}'`). So a new regularizer, its own weight included, is one file with a `Regularizer`
subclass passed to `register_regularizer`, and its test (see `tests/test_regularizer_plugin.py`).
Nothing here imports the trainer, so `training/methods.py` can read the names without a cycle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import inspect
import json
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn
from transformers.utils import is_torchdynamo_compiling

from ...modeling import image_encoder

TASK_LOG_NAME = "loss_task"  # the objective's own term, logged beside the regularizer's


@dataclass
class RegularizerSettings:
    """Base of a regularizer's hyperparameters (a dataclass of fields with defaults and `help` metadata).

    Validation goes in the subclass's `__post_init__`, after `super().__post_init__()`: the chain is
    cooperative, so the built-ins' settings validate also as bases of `LDIFSArgumentsMixin` (and the
    `TrainingArguments` after them in the MRO still run their own `__post_init__`)."""

    def __post_init__(self):
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()


def check_weight(name: str, value) -> None:
    """A regularizer weight: a real number >= 0, not NaN (one-line error naming the field otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


@dataclass
class RegularizerState:
    """A regularizer's per-trainer state, returned by `setup` and held as `trainer.regularizer_state`.

    settings: the regularizer's settings for this run. Subclasses add what `penalty` reads (the L2SP
    anchor, the LDIFS teacher and taps, ...)."""

    settings: Any = None


def generator_states(device: torch.device | None = None) -> dict:
    """The states of the CPU random generator and of `device`'s (CUDA, XPU), to draw the same numbers again."""
    states = {"cpu": torch.get_rng_state()}
    if device is not None and device.type in ("cuda", "xpu"):
        states[device] = getattr(torch, device.type).get_rng_state(device)
    return states


def _set_generator_states(states: dict) -> None:
    for where, state in states.items():
        if where == "cpu":
            torch.set_rng_state(state)
        else:
            getattr(torch, where.type).set_rng_state(state, where)


def _first_device(values) -> torch.device | None:
    return next((v.device for v in values if torch.is_tensor(v)), None)


class TappedCall:
    """The first forward of a tapped module within one `compute_loss`: its output, with the inputs that forward
    received (by parameter name), so a teacher can run on exactly those, and with the random generators' states
    at its start, so a teacher can draw the same random numbers (`replayed_randomness`: ViT-MAE's patch mask,
    ...). With `hidden_states`, the module is also asked for them (a forward pre-hook adds
    `output_hidden_states=True`) and they are kept. Under `torch.compile` the states are not taken (the compiled
    graph draws its own way; the trainer checks that nothing is drawn)."""

    def __init__(self, module: nn.Module, hidden_states: bool = True):
        self.module = module
        self.asks_hidden_states = hidden_states
        self.hidden_states = None
        self.output = None
        self.inputs: dict | None = None
        self.generator_states: dict | None = None
        self._signature = inspect.signature(module.forward)
        self._var_keyword = next((n for n, p in self._signature.parameters.items() if p.kind == p.VAR_KEYWORD), None)

    def _pre_hook(self, module, args, kwargs):
        if self.inputs is not None:
            return None
        self.inputs = dict(self._signature.bind_partial(*args, **kwargs).arguments)
        self.inputs.update(self.inputs.pop(self._var_keyword, None) or {})
        if not is_torchdynamo_compiling():
            self.generator_states = generator_states(_first_device([*args, *kwargs.values()]))
        return (args, {**kwargs, "output_hidden_states": True}) if self.asks_hidden_states else None

    def _hook(self, module, args, output):
        if self.output is None:
            self.output = output
            self.hidden_states = getattr(output, "hidden_states", None) if self.asks_hidden_states else None

    @contextlib.contextmanager
    def attached(self):
        handles = [
            self.module.register_forward_pre_hook(self._pre_hook, with_kwargs=True),
            self.module.register_forward_hook(self._hook),
        ]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    @contextlib.contextmanager
    def replayed_randomness(self):
        """Within: the random generators as they were when the tapped forward began, so a teacher run here draws
        what the student drew; after: as they were before, so the student's own randomness goes on unchanged."""
        if self.generator_states is None:
            yield
            return
        device = next((where for where in self.generator_states if where != "cpu"), None)
        saved = generator_states(device)
        _set_generator_states(self.generator_states)
        try:
            yield
        finally:
            _set_generator_states(saved)


class Regularizer:
    """One regularizer. Subclass it, set the class attributes, override what applies, and register an instance.

    name: the registry name, used in `--regularizer` and in "METHOD+REGULARIZER".
    settings_class: its hyperparameters, a `RegularizerSettings` dataclass (None: it has none).
    weight_field: the field of `settings_class` that is its weight λ in the loss (`weight`); the study's λ
        sweeps, the λ search and the frontier set and read λ through it (None: no weight to sweep).
    needs_hidden_states: whether `penalty` reads hidden states of the student: the trainer then records the
        first forward of each module `tapped_modules` names (a `TappedCall`: its hidden states and inputs).
    needs_outputs: whether `penalty` reads the outputs of those forwards (their logits, ...) without their hidden
        states (KL taps the whole model this way).
    log_name: the logged per-step term, "loss_<name>" (None: nothing is added to the loss).

    One instance serves every trainer: a run's state (anchor, teacher, taps) is the object `setup` returns.
    """

    name: str = ""
    settings_class: type | None = None
    weight_field: str | None = None
    needs_hidden_states: bool = False
    needs_outputs: bool = False
    log_name: str | None = None

    def settings(self, args) -> RegularizerSettings | None:
        """This regularizer's settings read from `args`: each field from the argument of the same name
        (the built-ins' flags), else from `args.regularizer_options`, else its default."""
        if self.settings_class is None:
            return None
        options = getattr(args, "regularizer_options", None) or {}
        values = {}
        for f in dataclasses.fields(self.settings_class):
            if f.name in options:
                values[f.name] = options[f.name]
            elif hasattr(args, f.name):
                values[f.name] = getattr(args, f.name)
        return self.settings_class(**values)

    def setup(self, trainer, teacher_model, settings) -> RegularizerState:
        """The run's state, built once at the end of `LDIFSMixin.__init__` (`trainer.model` is the model to train;
        `teacher_model` the user's anchor model, or None)."""
        return RegularizerState(settings)

    def check_model_config(self, settings, config) -> None:
        """Refuse, from the model's config alone (before anything is loaded), a model these settings cannot serve
        (a one-line error); nothing is refused by default."""

    def tapped_modules(self, state, model: nn.Module) -> dict[str, nn.Module]:
        """The modules whose first forward `penalty` reads (with `needs_hidden_states` or `needs_outputs`): the
        encoder by default."""
        return {"encoder": image_encoder(model)}

    def penalty(self, state, model, taps: Mapping[str, TappedCall], inputs):
        """The unweighted penalty of this batch, a 0-dim tensor. `state` is what `setup` returned; `model` the
        unwrapped model; `taps` the `TappedCall` of each of `tapped_modules` (empty unless `needs_hidden_states` or
        `needs_outputs`);
        `inputs` the batch as `compute_loss` received it."""
        raise NotImplementedError(f"regularizer {self.name!r} adds no penalty")

    def weight(self, settings) -> float:
        """The penalty's weight in the loss (λ): the settings' `weight_field`, 0 without one."""
        if settings is None or self.weight_field is None:
            return 0.0
        return getattr(settings, self.weight_field)

    def record(self, settings, state=None) -> dict:
        """What a run record keeps of `settings` (its `regularizer_settings`): every field, as JSON values. `state`,
        after `setup`, may settle some (LDIFS's default taps); resume compares the settings without it."""
        if settings is None:
            return {}
        return json.loads(json.dumps(dataclasses.asdict(settings), default=str))

    def disables_student_dropout(self, settings) -> bool:
        """Whether the student's stochastic layers are switched off (also for `model_init`'s fresh models)."""
        return False

    def describe(self, settings, state=None) -> str:
        """The model card's text for this regularizer with these settings (and, after `setup`, its state)."""
        return self.name


_REGISTRY: dict[str, Regularizer] = {}


def register_regularizer(regularizer: Regularizer, overwrite: bool = False) -> Regularizer:
    """Register `regularizer` under its `name`; returns it (usable on an instance at module level)."""
    if isinstance(regularizer, type):
        regularizer = regularizer()
    name = regularizer.name
    if not name or name != name.strip().lower() or "+" in name:
        raise ValueError(f"a regularizer's name must be a non-empty lower-case word without '+', got {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"regularizer {name!r} is already registered (pass overwrite=True to replace it)")
    settings_class = regularizer.settings_class
    if settings_class is not None:
        if not (dataclasses.is_dataclass(settings_class) and issubclass(settings_class, RegularizerSettings)):
            raise ValueError(f"regularizer {name!r}: settings_class must be a RegularizerSettings dataclass, got {settings_class!r}")
        no_default = [f.name for f in dataclasses.fields(settings_class)
                      if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if no_default:
            raise ValueError(f"regularizer {name!r}: setting {no_default[0]!r} needs a default (unset flags and options take it)")
    fields = [f.name for f in dataclasses.fields(settings_class)] if settings_class is not None else []
    if regularizer.weight_field is not None and regularizer.weight_field not in fields:
        raise ValueError(f"regularizer {name!r}: weight_field {regularizer.weight_field!r} is not a field of its settings_class {fields}")
    _REGISTRY[name] = regularizer
    return regularizer


def list_regularizers(pattern: str | None = None) -> list[str]:
    """Registered names, in registration order (the built-ins first: none, l2sp, ldifs, kl)."""
    names = list(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_regularizer(name: str) -> Regularizer:
    if name in _REGISTRY:
        return _REGISTRY[name]
    raise ValueError(f"unknown regularizer {name!r}; valid regularizers: {', '.join(_REGISTRY)}")


def log_names() -> tuple[str, ...]:
    """Every per-step term a trainer can log: the task loss, then each registered regularizer's `log_name`."""
    return (TASK_LOG_NAME,) + tuple(r.log_name for r in _REGISTRY.values() if r.log_name is not None)


# The built-ins, registered in this order. Their modules import torch, `modeling` and `regularizers`,
# never the trainer, so `methods.py` can read the names without a cycle.
from . import none as _none  # noqa: E402,F401
from . import l2sp as _l2sp  # noqa: E402,F401
from . import ldifs as _ldifs  # noqa: E402,F401
from . import kl as _kl  # noqa: E402,F401

__all__ = [
    "Regularizer", "RegularizerSettings", "RegularizerState", "TappedCall", "check_weight", "generator_states", "get_regularizer",
    "list_regularizers", "log_names", "register_regularizer",
]
