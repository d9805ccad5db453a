"""The regularizer registry: each regularizer is one registered object, in one file of this package.

A `Regularizer` knows its set-up on the trainer (`setup`), whether it needs the student's hidden
states (`needs_hidden_states`), its unweighted penalty (`penalty`), its weight in the loss (`weight`),
the name it is logged under (`log_name`) and its model-card text (`describe`). `LDIFSMixin` calls the
object that `args.regularizer` names; the method registry and the arguments validate names against
`list_regularizers()`. The formulas themselves stay pure functions in `ldifs_hf.regularizers`.

A new regularizer is one file with a `Regularizer` subclass passed to `register_regularizer`, and its
test (see `tests/test_regularizer_registry.py`). Nothing here imports the trainer, so
`training/methods.py` can read the names without a cycle.
"""

from __future__ import annotations

import fnmatch


class Regularizer:
    """One regularizer. Subclass it, set the class attributes, override what applies, and register an instance.

    name: the registry name, used in `--regularizer` and in "METHOD+REGULARIZER".
    needs_hidden_states: whether `penalty` reads the student encoder's hidden states (the trainer then asks
        for them and passes those of the encoder's first forward, and the teacher's inputs from the batch).
    log_name: the logged per-step term, "loss_<name>" (None: nothing is added to the loss).

    One instance serves every trainer: keep a run's state (anchor, teacher, taps) on the trainer. Before
    `setup` of a regularizer that needs hidden states, the trainer sets `trainer._teacher_inputs` (the
    encoder's forward inputs, which it takes from each batch for `penalty`).
    """

    name: str = ""
    needs_hidden_states: bool = False
    log_name: str | None = None

    def setup(self, trainer, teacher_model) -> None:
        """Prepare the trainer (references, teacher, ...) once, at the end of `LDIFSMixin.__init__`."""

    def penalty(self, trainer, model, captured_hidden_states, teacher_inputs):
        """The unweighted penalty of this batch, a 0-dim tensor. `model` is the unwrapped model;
        `captured_hidden_states` the student encoder's hidden states (None unless `needs_hidden_states`);
        `teacher_inputs` the batch filtered to the encoder's forward inputs (None unless `needs_hidden_states`)."""
        raise NotImplementedError(f"regularizer {self.name!r} adds no penalty")

    def weight(self, args) -> float:
        """The penalty's weight in the loss (λ)."""
        return 0.0

    def disables_student_dropout(self, args) -> bool:
        """Whether the student's dropout is switched off (also for `model_init`'s fresh models)."""
        return False

    def describe(self, args, layers=None) -> str:
        """The model card's text for this regularizer with these arguments."""
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
    _REGISTRY[name] = regularizer
    return regularizer


def list_regularizers(pattern: str | None = None) -> list[str]:
    """Registered names, in registration order (the built-ins first: none, l2sp, ldifs)."""
    names = list(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_regularizer(name: str) -> Regularizer:
    if name in _REGISTRY:
        return _REGISTRY[name]
    raise ValueError(f"unknown regularizer {name!r}; valid regularizers: {', '.join(_REGISTRY)}")


# The built-ins, registered in this order. Their modules import torch, `modeling` and `regularizers`,
# never the trainer, so `methods.py` can read the names without a cycle.
from . import none as _none  # noqa: E402,F401
from . import l2sp as _l2sp  # noqa: E402,F401
from . import ldifs as _ldifs  # noqa: E402,F401

__all__ = ["Regularizer", "get_regularizer", "list_regularizers", "register_regularizer"]
