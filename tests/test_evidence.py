"""The claims' test, pinned by hand: the exact sign-flip p, the t interval, Holm's correction, the verdicts."""

import itertools
import math
import random

import pytest

from ldifs_hf import evidence
from ldifs_hf.evidence import Claim, contradictions, correct, holm, min_p, sign_flip_p, t_interval


def _brute_force_p(differences):
    """The definition, pattern by pattern: the share of sign patterns with |sum| >= the observed |sum|."""
    observed = abs(sum(differences))
    hits = sum(abs(sum(s * abs(d) for s, d in zip(signs, differences))) >= observed - 1e-12
               for signs in itertools.product((-1, 1), repeat=len(differences)))
    return hits / 2 ** len(differences)


def test_sign_flip_p_by_hand():
    # All three positive: only the all-plus and all-minus patterns reach |sum| = 6: p = 2/8.
    assert sign_flip_p([1.0, 2.0, 3.0]) == 0.25
    # [3, -1, 1]: observed |sum| 3. Patterns of (±3, ±1, ±1) with |sum| >= 3: 3+1+1, 3+1-1, 3-1+1 and their
    # negatives = 6 of 8.
    assert sign_flip_p([3.0, -1.0, 1.0]) == 0.75
    # Ten positive differences: 2 / 1024.
    assert sign_flip_p([0.1 * (i + 1) for i in range(10)]) == pytest.approx(2 / 1024)
    assert sign_flip_p([0.0, 0.0]) == 1.0
    # A zero difference changes no sum: the same p as without it.
    assert sign_flip_p([1.0, 2.0, 3.0, 0.0]) == 0.25


def test_sign_flip_p_matches_the_definition_on_random_differences():
    rng = random.Random(1)
    for n in range(1, 9):
        differences = [rng.uniform(-1, 1) for _ in range(n)]
        assert sign_flip_p(differences) == pytest.approx(_brute_force_p(differences))


def test_float_rounding_counts_as_a_tie():
    # Accuracies on a 500-image set: sums of the same magnitudes in another order must still tie.
    differences = [0.404666672 - 0.404666662, -(0.404666672 - 0.404666662)]
    assert sign_flip_p(differences) == 1.0


def test_sampled_p_beyond_the_exact_range(monkeypatch):
    monkeypatch.setattr(evidence, "EXACT_MAX_UNITS", 4)
    p = sign_flip_p([1.0] * 8)  # exact value 2/256
    assert p == pytest.approx(2 / 256, abs=0.003) and p > 0


def test_min_p():
    assert min_p(3) == 0.25 and min_p(5) == 0.0625 and min_p(0) == 1.0


def test_t_interval_by_hand():
    # mean 2, sd 1, n 3: half width t(0.975, 2) * 1 / sqrt(3) = 4.302652729911275 / 1.7320508 = 2.4841377
    low, high = t_interval([1.0, 2.0, 3.0])
    assert low == pytest.approx(2 - 2.4841377, abs=1e-6) and high == pytest.approx(2 + 2.4841377, abs=1e-6)
    assert t_interval([0.5]) == (-math.inf, math.inf)


def test_holm_by_hand():
    # Sorted 0.01, 0.02, 0.04 -> x3, x2, x1 = 0.03, 0.04, 0.04 (made non-decreasing), back in the given order.
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_verdicts_three_ways():
    ten = {seed: (0.5 + 0.01 * seed, 0.4) for seed in range(10)}
    a_wins = correct([Claim("ldifs", "ce", "delta_lp", ten)])[0]
    assert a_wins.verdict == "ldifs better than ce" and a_wins.winner == "ldifs"
    b_wins = correct([Claim("ce", "ldifs", "delta_lp", {s: (b, a) for s, (a, b) in ten.items()})])[0]
    assert b_wins.verdict == "ldifs better than ce" and b_wins.mean < 0
    # Three seeds all agreeing: p = 0.25, never "better".
    three = correct([Claim("x", "y", "a_ft", {0: (0.9, 0.1), 1: (0.8, 0.2), 2: (0.7, 0.3)})])[0]
    assert three.p == 0.25 and three.verdict == evidence.NO_DIFFERENCE and three.winner is None


def test_correction_can_turn_a_verdict_into_no_difference():
    # Alone, p = 2/64 = 0.03125 <= 0.05; corrected over two claims (x2) it is 0.0625: no difference shown.
    six = {seed: (1.0 + seed, 0.0) for seed in range(6)}
    alone = correct([Claim("a", "b", "a_ft", six)])[0]
    assert alone.verdict == "a better than b"
    family = correct([Claim("a", "b", "a_ft", six), Claim("c", "d", "a_ft", {0: (1.0, 0.0), 1: (0.0, 1.0)})])
    assert family[0].p_corrected == pytest.approx(0.0625) and family[0].verdict == evidence.NO_DIFFERENCE


def test_claims_json_entry():
    claim = correct([Claim("a", "b", "delta_lp", {0: (0.5, 0.25), 1: (0.5, 0.0)})])[0]
    entry = claim.as_dict(scale=100)
    assert entry["units"] == [{"unit": 0, "a": 50.0, "b": 25.0}, {"unit": 1, "a": 50.0, "b": 0.0}]
    assert entry["mean_difference"] == pytest.approx(37.5) and entry["p"] == 0.5 and entry["p_corrected"] == 0.5
    assert entry["verdict"] == evidence.NO_DIFFERENCE and len(entry["ci95"]) == 2


def test_contradictions_only_between_opposite_winners():
    strong = {s: (1.0 + s, 0.0) for s in range(10)}
    reverse = {s: (0.0, 1.0 + s) for s in range(10)}
    weak = {0: (1.0, 0.0), 1: (0.0, 0.5)}
    first = correct([Claim("a", "b", "m", strong), Claim("c", "d", "m", strong)])
    second = correct([Claim("a", "b", "m", reverse), Claim("c", "d", "m", weak)])
    found = contradictions(first, second)
    assert [(x.a, x.b) for x, _ in found] == [("a", "b")]


def test_bad_differences_refused():
    with pytest.raises(ValueError, match="at least one"):
        sign_flip_p([])
    with pytest.raises(ValueError, match="finite"):
        sign_flip_p([1.0, float("nan")])


def test_exact_count_matches_the_definition_up_to_twelve_units():
    # The exact count splits the patterns into two halves; the brute force enumerates all 2^n.
    rng = random.Random(7)
    for n in (9, 11, 12):
        differences = [rng.uniform(-1, 1) for _ in range(n)]
        assert sign_flip_p(differences) == pytest.approx(_brute_force_p(differences))
    # Equal magnitudes tie exactly: ten +1s and ten -1s sum to 0, so every pattern counts.
    assert sign_flip_p([1.0] * 10 + [-1.0] * 10) == 1.0


def test_differences_below_the_resolution_are_ties():
    assert sign_flip_p([1e-8] * 12) == 1.0  # float rounding of equal scores, in every unit: no evidence
    # A rounding-sized difference beside real ones changes nothing (it is dropped, not counted against them).
    assert sign_flip_p([0.1, 0.1, 1e-8]) == sign_flip_p([0.1, 0.1]) == 0.5
    tied = correct([Claim("a", "b", "a_ft", {s: (0.404666672, 0.404666662) for s in range(10)})])[0]
    assert tied.verdict == evidence.NO_DIFFERENCE


def test_better_by_test_is_uncorrected_and_needs_two_units():
    from ldifs_hf.evidence import better_by_test

    assert better_by_test([0.1] * 6) == 1 and better_by_test([-0.1] * 6) == -1  # p = 2/64 <= 0.05
    assert better_by_test([0.1] * 4) == 0  # p = 2/16 = 0.125
    assert better_by_test([0.5]) == 0 and better_by_test([1e-9] * 8) == 0


def test_units_sort_as_numbers():
    from ldifs_hf.evidence import natural_key

    assert sorted(["seed 10", "seed 2", "world 1 seed 0", "world 0 seed 11"], key=natural_key) == [
        "seed 2", "seed 10", "world 0 seed 11", "world 1 seed 0"]
    assert Claim("a", "b", "m", {"seed 10": (1.0, 0.0), "seed 9": (2.0, 0.0)}).units == ["seed 9", "seed 10"]
