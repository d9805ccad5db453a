"""The claims of a report: which are made (the demo's list, the generic rule), how each is paired over units,
tested and corrected, and the words and files that carry them."""

import json

import pytest

from ldifs_hf import evidence
from ldifs_hf.evaluation.choice import Choice
from ldifs_hf.evaluation.claims import (
    ClaimSpec, Evidence, build_evidence, claim_sentence, claims_from_specs, claims_section, load_claims, regularizer_claims, write_evidence,
)
from ldifs_hf.evaluation.frontier import CLIP_AXES, FrontierPoint
from ldifs_hf.study.demo import demo_claims

SPEC = {"none": {"head_init": "linear-probe", "objective": "ce", "regularizer": "none", "trained": "vision"}}
SPEC["ldifs"] = {**SPEC["none"], "regularizer": "ldifs"}
SPEC["l2sp"] = {**SPEC["none"], "regularizer": "l2sp"}
SPEC["zs-ldifs"] = {**SPEC["ldifs"], "head_init": "zero-shot"}


def _point(method, lam, alpha, per_unit, spec=None):
    return FrontierPoint(method, lam, alpha, spec=spec,
                         per_unit={f"seed {s}": {"a_ft": a, "delta_zs": zs, "delta_lp": lp} for s, (a, zs, lp) in per_unit.items()})


TEN = range(10)
POINTS = [
    _point("lp-init-ce", None, 1.0, {s: (0.50, -0.10, -0.04 - 0.002 * s) for s in TEN}, SPEC["none"]),
    _point("lp-init-ldifs", 10.0, 1.0, {s: (0.50 + (0.01 if s % 2 else -0.01), -0.02, -0.01) for s in TEN}, SPEC["ldifs"]),
    _point("lp-init-ce", None, 0.5, {s: (0.40, -0.01, -0.01) for s in TEN}, SPEC["none"]),
    _point("lp-init-ldifs", 10.0, 0.5, {s: (0.41, 0.0, 0.0) for s in TEN}, SPEC["ldifs"]),
    _point("lp-init-ldifs", 1.0, 1.0, {s: (0.52, -0.05, -0.03) for s in TEN}, SPEC["ldifs"]),
    _point("lp-init-l2sp", 0.5, 1.0, {s: (0.49, -0.03, -0.02) for s in TEN}, SPEC["l2sp"]),
    _point("zs-init-ldifs", 10.0, 1.0, {s: (0.30, -0.3, -0.02) for s in TEN}, SPEC["zs-ldifs"]),
]
MAIN_LAMBDA = {"lp-init-ce": None, "lp-init-ldifs": 10.0, "lp-init-l2sp": 0.5, "zs-init-ldifs": 10.0}
CHOICES = {"lp-init-ldifs": Choice("lp-init-ldifs", 1.0, 1.0, "balanced", 0.45, [{}, {}]),
           "lp-init-ce": Choice("lp-init-ce", None, 0.5, "balanced", 0.39, [{}, {}])}


def test_the_demos_list_pairs_points_and_leaves_out_what_was_not_run():
    claims = claims_from_specs(demo_claims(), POINTS, MAIN_LAMBDA, CHOICES)
    named = [(c.a, c.b, c.metric) for c in claims]
    assert named[:3] == [("lp-init-ldifs (λ = 10)", "lp-init-ce", "delta_lp"), ("lp-init-ldifs (λ = 10)", "lp-init-ce", "delta_zs"),
                         ("lp-init-ldifs (λ = 10)", "lp-init-ce", "a_ft")]
    # The middle α of the sweep (0.5 is the only interior one) and the points chosen on validation.
    assert ("lp-init-ldifs (λ = 10) at α = 0.5", "lp-init-ce at α = 0.5", "delta_lp") in named
    assert ("lp-init-ldifs (chosen on validation)", "lp-init-ce (chosen on validation)", "delta_lp") in named
    # No zs-init-ce, and lp-init-l2sp has no choice: their claims are left out.
    assert not any("zs-init-ce" in a + b for a, b, _ in named)
    assert ("lp-init-ldifs (chosen on validation)", "lp-init-l2sp (chosen on validation)", "a_ft") not in named
    chosen = next(c for c in claims if c.a == "lp-init-ldifs (chosen on validation)" and c.metric == "delta_lp")
    assert chosen.differences == pytest.approx([-0.03 + 0.01] * 10)  # λ = 1 at α = 1 against CE at α = 0.5
    assert ClaimSpec(("x", 1.0), ("y", 1.0), "a_ft") not in demo_claims()


def test_verdicts_are_tested_and_corrected_over_the_report():
    claims = evidence.correct(claims_from_specs(demo_claims(), POINTS, MAIN_LAMBDA, CHOICES))
    lp = claims[0]  # LDIFS - CE on Δ_LP: +0.03 + 0.002 s in all 10 units: p = 2/1024, times the claims (Holm, tied at the top)
    assert lp.p == pytest.approx(2 / 1024) and lp.p_corrected == pytest.approx(min(1.0, 2 / 1024 * len(claims)))
    assert lp.verdict == "lp-init-ldifs (λ = 10) better than lp-init-ce"
    a_ft = claims[2]  # ±0.01 alternating: p = 1
    assert a_ft.p == 1.0 and a_ft.verdict == evidence.NO_DIFFERENCE
    assert claim_sentence(lp, CLIP_AXES).startswith(
        "lp-init-ldifs (λ = 10) vs lp-init-ce, mean Δ_LP on the other tasks: **lp-init-ldifs (λ = 10) better than lp-init-ce** (forgot less): +3.9 points (95 % CI +3.5 to +4.3), p = 0.002, corrected p = ")
    assert claim_sentence(a_ft, CLIP_AXES) == ("lp-init-ldifs (λ = 10) vs lp-init-ce, A_FT: **no difference shown**: +0.0 points "
                                               "(95 % CI -0.8 to +0.8), p = 1, corrected p = 1.")


def test_one_unit_says_no_test():
    one = [_point("a", None, 1.0, {0: (0.5, 0.0, 0.0)}, SPEC["ldifs"]), _point("b", None, 1.0, {0: (0.4, 0.0, 0.0)}, SPEC["none"])]
    found = build_evidence([], specs=[])  # an empty report: no points, no claims
    assert found.claims == [] and claims_section(found) == ""
    claim = evidence.correct(regularizer_claims(one, CLIP_AXES, None, {}))[0]
    assert claim_sentence(claim, CLIP_AXES) == "a vs b, A_FT: one seed: no test (a − b = +10.0 points)."
    assert "nan" not in claims_section(Evidence(CLIP_AXES, one, claims=[claim]))


def test_the_generic_rule_pairs_methods_that_differ_only_in_the_regularizer():
    claims = regularizer_claims(POINTS, CLIP_AXES, MAIN_LAMBDA, {})
    pairs = sorted({(c.a, c.b) for c in claims})
    # lp-init: LDIFS (main λ 10) and L2SP against CE, and L2SP against LDIFS; zs-init-ldifs has no partner; λ = 1 is no main point.
    assert pairs == [("lp-init-l2sp (λ = 0.5)", "lp-init-ce"), ("lp-init-l2sp (λ = 0.5)", "lp-init-ldifs (λ = 10)"),
                     ("lp-init-ldifs (λ = 10)", "lp-init-ce")]
    assert len(claims) == 3 * 3  # each pair on A_FT, Δ_ZS and Δ_LP
    # Without a main λ every λ is a main point; with choices, the chosen points are compared too.
    assert len(regularizer_claims(POINTS, CLIP_AXES, None, {})) == 5 * 3
    with_choices = regularizer_claims(POINTS, CLIP_AXES, MAIN_LAMBDA, CHOICES)
    assert ("lp-init-ldifs (chosen on validation)", "lp-init-ce (chosen on validation)") in {(c.a, c.b) for c in with_choices}


def test_claims_json_and_section(tmp_path):
    records = []
    for seed in range(6):
        for method, spec, a_ft in (("lp-init-ce", SPEC["none"], 0.5), ("lp-init-ldifs", SPEC["ldifs"], 0.6)):
            records.append({"method": method, "seed": seed, "finetune_task": "t0", "percent": 100.0, "a_ft": a_ft + 0.01 * seed,
                            "lambda": 10.0 if method.endswith("ldifs") else None, "method_spec": spec,
                            "eval": {"t1": {"delta_zs": -0.1, "delta_lp": -0.02 * (seed % 2)}}})
    found = build_evidence(records, sources=["training seed"], not_covered=["the test sample"])
    # The generic rule: LDIFS against CE on A_FT, Δ_ZS, Δ_LP. A_FT is +10 points in all 6 units: p = 2/64 = 0.031 alone,
    # but 0.094 once corrected over the 3 claims: no difference shown. The Δs are equal: p = 1.
    assert [(c.a, c.b, c.metric) for c in found.claims] == [("lp-init-ldifs (λ = 10)", "lp-init-ce", m) for m in ("a_ft", "delta_zs", "delta_lp")]
    assert [c.p for c in found.claims] == pytest.approx([2 / 64, 1.0, 1.0])
    assert found.claims[0].p_corrected == pytest.approx(3 * 2 / 64) and all(c.verdict == evidence.NO_DIFFERENCE for c in found.claims)
    paths = write_evidence(found, str(tmp_path))
    document = json.loads(open(paths["claims_json"]).read())
    assert document["test"] == evidence.TEST_NAME and document["noise_sources_covered"] == ["training seed"]
    assert document["units"] == [f"seed {s}" for s in range(6)] and document["smallest_possible_p"] == pytest.approx(2 / 64)
    entry = document["claims"][0]
    assert set(entry) >= {"a", "b", "metric", "units", "mean_difference", "ci95", "p", "p_corrected", "verdict", "sentence"}
    assert entry["mean_difference"] == pytest.approx(10.0) and len(entry["units"]) == 6
    # Read back, the claims are the same (their verdicts too): two reports' claims compare this way.
    loaded = load_claims(paths["claims_json"])
    assert [(c.a, c.b, c.metric, c.verdict, c.p_corrected) for c in loaded] == [(c.a, c.b, c.metric, c.verdict, c.p_corrected) for c in found.claims]
    assert evidence.contradictions(loaded, found.claims) == []
    text = claims_section(found)
    assert "Intervals cover: training seed. They do not cover: the test sample." in text
    assert text.count("\n- ") == 3 and "Of 3 claims:" in text


def test_the_kl_claims_compare_kl_with_ce_and_with_ldifs():
    kl_spec = {**SPEC["none"], "regularizer": "kl"}
    kl = [_point("lp-init-kl", 1.0, 1.0, {s: (0.51, -0.05 + 0.001 * s, -0.02) for s in TEN}, kl_spec),
          _point("lp-init-kl", 1.0, 0.5, {s: (0.41, 0.0, 0.0) for s in TEN}, kl_spec)]
    claims = claims_from_specs(demo_claims(), POINTS + kl, {**MAIN_LAMBDA, "lp-init-kl": 1.0}, CHOICES)
    kl_claims = [(c.a, c.b, c.metric) for c in claims if "kl" in c.a + c.b]
    assert kl_claims == [
        ("lp-init-kl (λ = 1)", "lp-init-ce", "delta_lp"), ("lp-init-kl (λ = 1)", "lp-init-ce", "delta_zs"),
        ("lp-init-kl (λ = 1)", "lp-init-ldifs (λ = 10)", "delta_lp"), ("lp-init-kl (λ = 1)", "lp-init-ldifs (λ = 10)", "a_ft"),
        ("lp-init-kl (λ = 1) at α = 0.5", "lp-init-ce at α = 0.5", "delta_lp"),
    ]
    # Paired unit by unit: KL - CE on Δ_ZS is +0.05 + 0.001 s.
    zs = next(c for c in claims if c.a == "lp-init-kl (λ = 1)" and c.b == "lp-init-ce" and c.metric == "delta_zs")
    assert zs.differences == pytest.approx([0.05 + 0.001 * s for s in TEN])
    # The claims without KL are those of a report without it, in the same order.
    without = claims_from_specs(demo_claims(), POINTS, MAIN_LAMBDA, CHOICES)
    assert [(c.a, c.b, c.metric) for c in claims if "kl" not in c.a + c.b] == [(c.a, c.b, c.metric) for c in without]
