"""Choosing each method's λ and α on validation data, never on the test split.

The paper picks λ on a held-out validation split of the fine-tuning task. Here every candidate point of
a method (each λ of its sweep, each WiSE-FT α) is scored on the validation splits of all the tasks
(`evaluator` with validation scoring: the fine-tuning runs' own hold-out of the fine-tuning task, and a
hold-out of each other task's training data that its probe never sees), and a rule picks one point per
method from those scores alone; that point is then reported on test. `choose` takes frontier points
built from the records' "validation" scores (`frontier_points(..., split="validation")`) and refuses any
other: the test split cannot enter a choice.

The rules (`CHOICE_RULES`): "balanced" (the default) adds the validation A_FT and the mean, over the
forgetting axes, of the mean Δ on the other tasks: a point of accuracy on the new task weighs as much as
a point of forgetting, on average, on the old ones. "a_ft" is the paper's rule for λ: the highest
validation A_FT alone, blind to forgetting. Ties go to the larger α (less interpolation), then to the
smaller λ (scores within float rounding, `evidence.RESOLUTION`, are ties).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from ..evidence import RESOLUTION
from .frontier import FrontierAxes, FrontierPoint


@dataclass(frozen=True)
class ChoiceRule:
    """A rule for a method's point: `score` maps a point's mean validation scores to a number, highest wins."""

    name: str
    text: str
    score: Callable[[Mapping[str, float], FrontierAxes], float]


CHOICE_RULES = {rule.name: rule for rule in (
    ChoiceRule("balanced", "the highest validation A_FT plus the mean over the forgetting axes of the mean Δ on the other tasks' "
               "validation splits", lambda s, axes: s["a_ft"] + statistics.fmean(s[a.key] for a in axes.forgetting)),
    ChoiceRule("a_ft", "the highest validation A_FT (the paper's rule for λ; blind to forgetting)", lambda s, axes: s["a_ft"]),
)}


def check_choice_rule(name: str) -> str:
    if name not in CHOICE_RULES:
        raise ValueError(f"choice rule must be one of {', '.join(CHOICE_RULES)}, got {name!r}")
    return name


@dataclass
class Choice:
    """The point chosen for `method` on validation, its validation score, and every candidate's."""

    method: str
    lam: float | None
    alpha: float
    rule: str
    score: float
    candidates: list[dict] = field(default_factory=list)  # {"lambda", "alpha", "validation_score"} per candidate

    @property
    def key(self) -> tuple[str, float | None, float]:
        return self.method, self.lam, self.alpha

    def as_dict(self, scale: float = 1.0) -> dict:
        return {"method": self.method, "lambda": self.lam, "alpha": self.alpha, "rule": self.rule, "validation_score": scale * self.score,
                "candidates": [{**c, "validation_score": scale * c["validation_score"]} for c in self.candidates]}


def choose(validation_points: Sequence[FrontierPoint], axes: FrontierAxes, rule: str = "balanced") -> dict[str, Choice]:
    """method -> its chosen point among its points in `validation_points` (each scored on validation
    splits only: points of any other split are refused), by `CHOICE_RULES[rule]` on the mean over units."""
    scorer = CHOICE_RULES[check_choice_rule(rule)]
    foreign = sorted({p.split for p in validation_points if p.split != "validation"})
    if foreign:
        raise ValueError(f"λ and α are chosen on validation scores only; got points scored on {', '.join(foreign)}")
    by_method: dict[str, list[FrontierPoint]] = {}
    for point in validation_points:
        by_method.setdefault(point.method, []).append(point)
    choices = {}
    for method, candidates in sorted(by_method.items()):
        scored = [(scorer.score({name: p.mean(name) for name in axes.names}, axes), p) for p in candidates]
        # The highest score; ties (within float rounding): the larger α, then the smaller λ (no λ counts as the smallest).
        top = max(score for score, _ in scored)
        tied = [sp for sp in scored if sp[0] >= top - RESOLUTION]
        score, best = max(tied, key=lambda sp: (sp[1].alpha, -(sp[1].lam if sp[1].lam is not None else float("-inf"))))
        choices[method] = Choice(method, best.lam, best.alpha, rule, score, [
            {"lambda": p.lam, "alpha": p.alpha, "validation_score": s} for s, p in sorted(scored, key=lambda sp: (sp[1].lam or 0.0, sp[1].alpha))])
    return choices
