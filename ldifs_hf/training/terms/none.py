"""No regularizer: the task loss alone."""

from __future__ import annotations

from . import Regularizer, register_regularizer


class NoRegularizer(Regularizer):
    name = "none"

    def describe(self, settings, state=None) -> str:
        return "none"


register_regularizer(NoRegularizer())
