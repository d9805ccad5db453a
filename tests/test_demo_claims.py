"""The demo's claims: which are checked, how each is paired over seeds, and the Markdown section they print."""

import pytest

from ldifs_hf.evaluation.frontier import FrontierPoint
from ldifs_hf.study.demo import claims_section, demo_claims


def _point(method, lam, alpha, per_seed):
    return FrontierPoint(method, lam, alpha, per_seed={s: {"a_ft": a, "delta_zs": zs, "delta_lp": lp} for s, (a, zs, lp) in per_seed.items()})


POINTS = [
    _point("lp-init-ce", None, 1.0, {0: (0.50, -0.10, -0.04), 1: (0.52, -0.12, -0.05), 2: (0.51, -0.11, -0.03)}),
    _point("lp-init-ldifs", 10.0, 1.0, {0: (0.49, -0.02, -0.01), 1: (0.50, -0.03, -0.06), 2: (0.50, -0.02, -0.02)}),
    _point("lp-init-ce", None, 0.5, {0: (0.40, -0.01, -0.01), 1: (0.41, -0.02, -0.01), 2: (0.40, -0.01, 0.0)}),
    _point("lp-init-ldifs", 10.0, 0.5, {0: (0.41, 0.0, 0.0), 1: (0.40, -0.01, 0.0), 2: (0.42, 0.0, -0.01)}),
]
MAIN_LAMBDA = {"lp-init-ce": None, "lp-init-ldifs": 10.0}


def test_claims_about_methods_not_run_are_left_out_and_the_middle_alpha_is_used():
    claims = demo_claims(POINTS, MAIN_LAMBDA, [0.0, 0.5, 1.0])
    assert [(c.better, c.worse, c.metric) for c in claims] == [
        ("lp-init-ldifs (λ = 10)", "lp-init-ce", "delta_lp"), ("lp-init-ldifs (λ = 10)", "lp-init-ce", "delta_zs"),
        ("lp-init-ldifs (λ = 10) at α = 0.5", "lp-init-ce at α = 0.5", "delta_lp"),
        ("lp-init-ldifs (λ = 10)", "lp-init-ce at α = 0.5", "delta_lp"), ("lp-init-ldifs (λ = 10)", "lp-init-ce at α = 0.5", "a_ft"),
    ]
    # Paired per seed: LDIFS - CE on Δ_LP is +0.03, -0.01, +0.01: mean +0.01, sample std 0.02, inside the noise.
    lp = claims[0]
    assert lp.differences == pytest.approx([0.03, -0.01, 0.01]) and lp.std == pytest.approx(0.02)
    assert lp.holds and not lp.exceeds_noise
    # Δ_ZS: +0.08, +0.09, +0.09: beyond the spread.
    assert claims[1].holds and claims[1].exceeds_noise
    # Without an α sweep, only the claims at α = 1.
    assert len(demo_claims([p for p in POINTS if p.alpha == 1.0], MAIN_LAMBDA, [1.0])) == 2


def test_claims_section_format():
    claims = demo_claims(POINTS, MAIN_LAMBDA, [0.0, 0.5, 1.0])
    text = claims_section(claims, [0, 1, 2])
    lines = text.splitlines()
    assert lines[0].startswith("Claims, paired over seeds 0, 1, 2: ") and "exceeds the noise when |mean| > std" in lines[0]
    assert lines[2] == ("- lp-init-ldifs (λ = 10) vs lp-init-ce on mean Δ_LP on the other tasks: holds (mean difference +1.0 ± 2.0 points, "
                        "better in 2 of 3 seeds); the difference is inside the noise.")
    assert lines[3].endswith("holds (mean difference +8.7 ± 0.6 points, better in 3 of 3 seeds); the difference exceeds its seed-to-seed spread.")
    bullets = [line for line in lines if line.startswith("- ")]
    assert len(bullets) == len(claims) == 5
    held = sum(c.holds and c.exceeds_noise for c in claims)
    inside = sum(c.holds and not c.exceeds_noise for c in claims)
    assert lines[-1] == f"Of 5 claims: {held} hold beyond the seed-to-seed spread, {inside} inside the noise; {5 - held - inside} do not hold."
    assert claims_section([], [0]) == ""


def test_the_kl_claims_compare_kl_with_ce_and_with_ldifs():
    kl = [_point("lp-init-kl", 1.0, 1.0, {0: (0.51, -0.05, -0.02), 1: (0.51, -0.06, -0.04), 2: (0.52, -0.05, -0.02)}),
          _point("lp-init-kl", 1.0, 0.5, {0: (0.41, -0.01, 0.0), 1: (0.40, -0.01, -0.01), 2: (0.41, 0.0, 0.0)})]
    claims = demo_claims(POINTS + kl, {**MAIN_LAMBDA, "lp-init-kl": 1.0}, [0.0, 0.5, 1.0])
    kl_claims = [(c.better, c.worse, c.metric) for c in claims if "kl" in c.better + c.worse]
    assert kl_claims == [
        ("lp-init-kl (λ = 1)", "lp-init-ce", "delta_lp"), ("lp-init-kl (λ = 1)", "lp-init-ce", "delta_zs"),
        ("lp-init-kl (λ = 1)", "lp-init-ldifs (λ = 10)", "delta_lp"), ("lp-init-kl (λ = 1)", "lp-init-ldifs (λ = 10)", "a_ft"),
        ("lp-init-kl (λ = 1) at α = 0.5", "lp-init-ce at α = 0.5", "delta_lp"),
    ]
    # Paired per seed: KL - CE on Δ_ZS is +0.05, +0.06, +0.06.
    zs = next(c for c in claims if c.better == "lp-init-kl (λ = 1)" and c.worse == "lp-init-ce" and c.metric == "delta_zs")
    assert zs.differences == pytest.approx([0.05, 0.06, 0.06]) and zs.holds and zs.exceeds_noise
    # The claims without KL are those of a demo without it, in the same order.
    assert [c for c in claims if "kl" not in c.better + c.worse] == demo_claims(POINTS, MAIN_LAMBDA, [0.0, 0.5, 1.0])
