"""When a difference is real: paired tests over seeds with a stated error rate, for every claim a report makes.

A claim compares two sides (A, B) on one metric over paired units: the same training seed (and world,
and evaluation sample) gives each side one value, and the unit's difference is A − B. The test is the
exact sign-flip permutation test on those differences: under "no difference" every difference is as
likely to have either sign, so the p-value is the share of all 2^n sign patterns whose |sum| is at least
the observed |sum| (two-sided). It assumes no distribution (a paired t-test assumes normal differences,
which a handful of accuracy differences on small test sets need not be), it is exact at any n, and its
smallest p is 2 / 2^n: 0.25 at n = 3, 0.0625 at n = 5, 0.0020 at n = 10. So a report needs enough units
for its claims to be decidable, and says so (`min_p`). Beyond `EXACT_MAX_UNITS` units the patterns are
sampled (a fixed-seed Monte Carlo estimate, counted with the observed pattern, so p is never 0).
Differences within `RESOLUTION` of 0 are float rounding of equal scores (a float32 accuracy keeps about
seven digits) and count as 0: two models tied on every unit are never "better" by rounding.

The interval is the t-based 95 % interval of the mean difference (mean ± t(0.975, n−1)·sd/√n): a
description of the effect's size beside the test, not a second test.

The p-values of one report are corrected together by Holm's step-down method, which controls the
family-wise error rate (the chance of any wrong "better than" verdict among the report's claims) at
`ALPHA` with no assumption about how the claims depend on each other. A verdict says "A better than B"
or "B better than A" only when the corrected p is at most `ALPHA`; otherwise "no difference shown".

A frontier's Pareto set asks the same test of every pair of points (`better_by_test`): uncorrected,
because the set is a description of the frontier rather than a claim the report makes.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Iterable, Sequence

ALPHA = 0.05  # family-wise error rate of one report's verdicts
LEVEL = 0.95  # the confidence level of each interval
EXACT_MAX_UNITS = 24  # up to 2^24 sign patterns counted exactly (two halves of 2^12 sums); beyond, sampled
MONTE_CARLO_DRAWS = 100_000
TEST_NAME = "exact sign-flip permutation test (two-sided), Holm-corrected over the report's claims"
NO_DIFFERENCE = "no difference shown"
RESOLUTION = 1e-6  # |difference| at most this: float rounding of equal scores, a tie


def _tolerance(values: Sequence[float]) -> float:
    # Sums of the same magnitudes in another order differ in the last bits: those count as ties.
    return 1e-9 * max(1.0, sum(abs(v) for v in values))


def sign_flip_p(differences: Sequence[float]) -> float:
    """Two-sided p-value of the exact sign-flip permutation test of "the differences are symmetric about 0".

    differences: the paired differences (A − B per unit), at least one. A difference within `RESOLUTION`
    of 0 counts as 0 and changes no sum. Returns the share of the 2^n sign patterns (n = the non-zero
    differences) whose |sum| ≥ the observed |sum|; 1.0 when every difference is 0."""
    values = [float(d) for d in differences]
    if not values:
        raise ValueError("a paired test needs at least one difference, got none")
    bad = [d for d in values if not math.isfinite(d)]
    if bad:
        raise ValueError(f"paired differences must be finite numbers, got {bad[0]!r}")
    kept = [d for d in values if abs(d) > RESOLUTION]
    if not kept:
        return 1.0
    magnitudes = [abs(d) for d in kept]
    observed = abs(sum(kept)) - _tolerance(kept)
    if len(magnitudes) <= EXACT_MAX_UNITS:
        return _exact_share(magnitudes, observed)
    return _sampled_share(magnitudes, observed)


def _exact_share(magnitudes: list[float], observed: float) -> float:
    """The share of the 2^n sign patterns whose |signed sum| ≥ `observed`, counted exactly: the sums of
    the first half's patterns against the sorted sums of the second half's (2 · 2^(n/2) sums, not 2^n)."""
    import numpy as np

    half = len(magnitudes) // 2
    first, second = _pattern_sums(magnitudes[:half]), np.sort(_pattern_sums(magnitudes[half:]))
    if observed <= 0:
        return 1.0
    # |s1 + s2| ≥ observed: s2 ≥ observed − s1, or s2 ≤ −observed − s1 (disjoint, as observed > 0).
    upper = len(second) - np.searchsorted(second, observed - first, side="left")
    lower = np.searchsorted(second, -observed - first, side="right")
    return float(np.sum(upper) + np.sum(lower)) / 2 ** len(magnitudes)


def _pattern_sums(magnitudes: list[float]):
    """The signed sums of every sign pattern of `magnitudes` (2^n values; [0.0] for none)."""
    import numpy as np

    n = len(magnitudes)
    # Every pattern of signs as the rows of a ±1 matrix, built from the bits of 0 .. 2^n − 1.
    bits = (np.arange(2 ** n, dtype=np.int64)[:, None] >> np.arange(n, dtype=np.int64)) & 1
    return (1 - 2 * bits) @ np.asarray(magnitudes, dtype=np.float64)


def _sampled_share(magnitudes: list[float], observed: float) -> float:
    import numpy as np

    rng = np.random.default_rng(0)
    signs = rng.choice((-1.0, 1.0), size=(MONTE_CARLO_DRAWS, len(magnitudes)))
    hits = np.count_nonzero(np.abs(signs @ np.asarray(magnitudes, dtype=np.float64)) >= observed)
    return float(hits + 1) / (MONTE_CARLO_DRAWS + 1)


def min_p(units: int) -> float:
    """The smallest two-sided p the sign-flip test can give with `units` non-zero differences: 2 / 2^n."""
    return min(1.0, 2.0 / 2 ** units) if units > 0 else 1.0


def t_interval(differences: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """The t-based interval of the mean difference: mean ± t((1 + level)/2, n − 1)·sd/√n.
    With one difference the interval is unbounded (−inf, inf): one unit says nothing of the spread."""
    values = [float(d) for d in differences]
    if not values:
        raise ValueError("an interval needs at least one difference, got none")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return -math.inf, math.inf
    from scipy.stats import t

    half = float(t.ppf((1.0 + level) / 2.0, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return mean - half, mean + half


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the given order: the i-th smallest p times (m − i + 1), made
    non-decreasing along the sorted order, capped at 1. A claim is rejected at level α when its adjusted
    p ≤ α, which is Holm's step-down rule."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def natural_key(value) -> tuple:
    """A sort key that orders "seed 2" before "seed 10": the text with its numbers compared as numbers."""
    import re

    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(value)) if part)


def better_by_test(differences: Sequence[float], alpha: float = ALPHA) -> int:
    """+1 when the paired differences (A − B) say A is better by the sign-flip test at `alpha`
    (uncorrected), −1 when they say B is, 0 otherwise (also for fewer than two units)."""
    if len(differences) < 2:
        return 0
    mean = statistics.fmean(differences)
    if abs(mean) <= RESOLUTION or sign_flip_p(differences) > alpha:
        return 0
    return 1 if mean > 0 else -1


@dataclass
class Claim:
    """"`a` against `b` on `metric`", paired over units (seeds, worlds, evaluation samples).

    values: unit -> (value of a, value of b). After `correct`, `p_corrected` and `verdict` are set."""

    a: str
    b: str
    metric: str
    values: dict = field(default_factory=dict)
    p_corrected: float | None = None

    @property
    def units(self) -> list:
        return sorted(self.values, key=natural_key)

    @property
    def tested(self) -> bool:
        """Whether there is a test at all: one unit says nothing of the spread (its p is 1 by construction)."""
        return len(self.values) > 1

    @property
    def differences(self) -> list[float]:
        return [self.values[u][0] - self.values[u][1] for u in self.units]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.differences)

    @property
    def interval(self) -> tuple[float, float]:
        return t_interval(self.differences)

    @property
    def p(self) -> float:
        return sign_flip_p(self.differences)

    @property
    def verdict(self) -> str:
        """"A better than B", "B better than A" (better = a larger value of the metric) or "no difference
        shown": the first two only when the corrected p is at most `ALPHA`."""
        p = self.p if self.p_corrected is None else self.p_corrected
        if p > ALPHA or abs(self.mean) <= RESOLUTION:
            return NO_DIFFERENCE
        return f"{self.a} better than {self.b}" if self.mean > 0 else f"{self.b} better than {self.a}"

    @property
    def winner(self) -> str | None:
        """The side the verdict names as better, None for "no difference shown"."""
        verdict = self.verdict
        return None if verdict == NO_DIFFERENCE else (self.a if self.mean > 0 else self.b)

    def as_dict(self, scale: float = 1.0) -> dict:
        """The claim for `claims.json`: its sides, metric, the per-unit values, mean difference, 95 % interval,
        p, corrected p and verdict (values and differences multiplied by `scale`, e.g. 100 for points)."""
        low, high = self.interval
        return {
            "a": self.a, "b": self.b, "metric": self.metric,
            "units": [{"unit": u, "a": scale * self.values[u][0], "b": scale * self.values[u][1]} for u in self.units],
            "mean_difference": scale * self.mean,
            "ci95": [scale * low if math.isfinite(low) else None, scale * high if math.isfinite(high) else None],
            "p": self.p, "p_corrected": self.p_corrected, "verdict": self.verdict,
        }


def correct(claims: Iterable[Claim]) -> list[Claim]:
    """Set each claim's Holm-corrected p over all of `claims` (one report's family); returns them."""
    claims = list(claims)
    for claim, adjusted in zip(claims, holm([c.p for c in claims])):
        claim.p_corrected = adjusted
    return claims


def paired_values(a: dict, b: dict) -> dict:
    """unit -> (a's value, b's value) over the units both sides have (`a`, `b`: unit -> value)."""
    shared = set(a) & set(b)
    return {u: (float(a[u]), float(b[u])) for u in shared}


def contradictions(first: Iterable[Claim], second: Iterable[Claim]) -> list[tuple[Claim, Claim]]:
    """Pairs of the same claim (sides and metric) whose verdicts name opposite winners: one says A better,
    the other B better. "No difference shown" contradicts nothing."""
    index = {(c.a, c.b, c.metric): c for c in second}
    found = []
    for claim in first:
        other = index.get((claim.a, claim.b, claim.metric))
        if other is not None and claim.winner and other.winner and claim.winner != other.winner:
            found.append((claim, other))
    return found

