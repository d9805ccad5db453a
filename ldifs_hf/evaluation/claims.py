"""What a report claims, on what evidence: the frontier of its records, λ and α chosen on validation, and
each claim tested and corrected with the report's others (`ldifs_hf.evidence`); written as claims.json
and as plain sentences for results.md. The demo, the study and the evaluate command all report through
`build_evidence`.

Which claims: a preset names its own (`ClaimSpec`s: the demo's list); any other report makes the
generic ones (`regularizer_claims`): for each pair of methods that differ only in the regularizer (the
same head init, objective and trained towers, as their runs recorded them), their main points (α = 1
at the main λ) on A_FT and on each forgetting axis, and, when a choice was made on validation, their
chosen points on the same metrics. Every claim of one report is Holm-corrected with the others.

A side of a claim is (method, where): `where` is an α (the point at the method's main λ), "mid" (the
middle interior α of its WiSE-FT sweep) or "chosen" (its point chosen on validation, `choice.choose`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ..evidence import ALPHA, LEVEL, NO_DIFFERENCE, TEST_NAME, Claim, correct, min_p, natural_key
from .choice import CHOICE_RULES, Choice, choose
from .frontier import CLIP_AXES, FrontierAxes, FrontierPoint, frontier_points, frontier_table, point_label, write_frontier

CLAIMS_JSON = "claims.json"
CHOSEN, MIDDLE = "chosen", "mid"
GENERIC_RULE = ("for each pair of methods that differ only in the regularizer (same head init, objective and trained towers), "
                "their main points (α = 1, main λ) and, where λ or α was chosen on validation, their chosen points, on A_FT and "
                "on each forgetting axis")


@dataclass(frozen=True)
class ClaimSpec:
    """"`a` against `b` on `metric`", each side (method, where): where an α, "mid" or "chosen"."""

    a: tuple[str, object]
    b: tuple[str, object]
    metric: str


@dataclass
class Evidence:
    """A report's frontier (test scores), its choices on validation, its corrected claims, the rule that
    picked the claims and the sources of noise its intervals cover (and those they do not)."""

    axes: FrontierAxes
    points: list[FrontierPoint]
    choices: dict[str, Choice] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    claim_rule: str = GENERIC_RULE
    choice_rule: str = "balanced"
    sources: list[str] = field(default_factory=list)
    not_covered: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> dict[str, tuple]:
        """method -> its chosen point's key, for the methods that had more than one candidate."""
        return {m: c.key for m, c in self.choices.items() if len(c.candidates) > 1}

    @property
    def units(self) -> list[str]:
        return sorted({u for p in self.points for u in p.per_unit}, key=natural_key)


def build_evidence(records: Sequence[Mapping], *, axes: FrontierAxes = CLIP_AXES, specs: Sequence[ClaimSpec] | None = None,
                   main_lambda: Mapping[str, float | None] | None = None, choice_rule: str = "balanced",
                   claim_rule: str | None = None, sources: Sequence[str] = (), not_covered: Sequence[str] = ()) -> Evidence:
    """The evidence of a report from its records: frontier points on test, choices on the records'
    validation scores (none without them), and the claims (`specs`, else `regularizer_claims`), corrected."""
    points = frontier_points(records, axes)
    validation = frontier_points(records, axes, split="validation")
    choices = choose(validation, axes, choice_rule) if validation else {}
    evidence = Evidence(axes, points, choices, choice_rule=choice_rule, sources=list(sources), not_covered=list(not_covered))
    if specs is not None:
        evidence.claims = claims_from_specs(specs, points, main_lambda or {}, choices)
        evidence.claim_rule = claim_rule or "the report's own list"
    else:
        evidence.claims = regularizer_claims(points, axes, main_lambda, choices)
        evidence.claim_rule = claim_rule or GENERIC_RULE
    correct(evidence.claims)
    return evidence


def _side(points: Sequence[FrontierPoint], method: str, where, main_lambda: Mapping, choices: Mapping[str, Choice]):
    """The point a side names and its label, or None when the report has no such point."""
    found = {p.key: p for p in points}
    if where == CHOSEN:
        choice = choices.get(method)
        point = found.get(choice.key) if choice else None
        return (point, f"{method} (chosen on validation)") if point else None
    lam = main_lambda.get(method)
    if where == MIDDLE:
        interior = sorted(p.alpha for p in points if p.method == method and p.lam == lam and 0.0 < p.alpha < 1.0)
        if not interior:
            return None
        where = interior[len(interior) // 2]
    point = found.get((method, lam, float(where)))
    return (point, point_label(method, lam, float(where))) if point else None


def paired_claim(a: tuple[FrontierPoint, str], b: tuple[FrontierPoint, str], metric: str) -> Claim:
    """A claim comparing two points on `metric` over the units both have (unit -> (a's value, b's))."""
    values = a[0].paired(b[0], metric)
    if not values:
        raise ValueError(f"points {a[1]!r} and {b[1]!r} share no unit")
    return Claim(a[1], b[1], metric, values)


def claims_from_specs(specs: Sequence[ClaimSpec], points: Sequence[FrontierPoint], main_lambda: Mapping[str, float | None],
                      choices: Mapping[str, Choice]) -> list[Claim]:
    """One claim per spec whose two sides the report has (a method it did not run, or a WiSE-FT weight it
    did not sweep, leaves the spec out)."""
    claims = []
    for spec in specs:
        a, b = (_side(points, method, where, main_lambda, choices) for method, where in (spec.a, spec.b))
        if a and b:
            claims.append(paired_claim(a, b, spec.metric))
    return claims


def _family(point: FrontierPoint) -> tuple | None:
    spec = point.spec or {}
    if not spec.get("regularizer"):
        return None
    return spec.get("head_init"), spec.get("objective"), spec.get("trained")


def regularizer_claims(points: Sequence[FrontierPoint], axes: FrontierAxes, main_lambda: Mapping[str, float | None] | None,
                       choices: Mapping[str, Choice]) -> list[Claim]:
    """The generic rule (`GENERIC_RULE`): main points at α = 1 (at `main_lambda[method]` when given,
    else every λ a method has) of methods with the same family and different regularizers, on every
    metric of `axes`; then their chosen points, for pairs where either side had a choice."""
    mains = [p for p in points if p.alpha == 1.0 and _family(p) is not None
             and (main_lambda is None or p.method not in main_lambda or p.lam == main_lambda[p.method])]
    claims = []
    for i, first in enumerate(mains):
        for second in mains[i + 1:]:
            if _family(first) != _family(second) or first.spec["regularizer"] == second.spec["regularizer"]:
                continue
            # The unregularised method second ("ldifs vs ce"), else in name order ("l2sp vs ldifs").
            a, b = sorted((first, second), key=lambda p: (p.spec["regularizer"] == "none", p.method))
            sides = [((a, point_label(*a.key)), (b, point_label(*b.key)))]
            # Chosen points when either side had candidates to choose from, and both sides were scored on validation.
            picked = [c for c in (choices.get(a.method), choices.get(b.method)) if c and len(c.candidates) > 1]
            if picked and a.method in choices and b.method in choices:
                found = {p.key: p for p in points}
                chosen = [(found.get(choices[p.method].key), f"{p.method} (chosen on validation)") for p in (a, b)]
                if all(point for point, _ in chosen):
                    sides.append(tuple(chosen))
            for side_a, side_b in sides:
                claims += [paired_claim(side_a, side_b, metric) for metric in axes.names]
    return claims


# -- words and files -----------------------------------------------------------------------------


def _weight(lam: float | None) -> str:
    return "–" if lam is None else f"{lam:g}"


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.2g}"


def claim_sentence(claim: Claim, axes: FrontierAxes) -> str:
    """One claim in plain words, its numbers in points, e.g. "lp-init-ldifs vs lp-init-ce, mean Δ_LP on the
    other tasks: **lp-init-ldifs better than lp-init-ce** (forgot less): +1.3 points (95 % CI +0.4 to +2.2),
    p = 0.002, corrected p = 0.02."; a claim on one unit says "one seed: no test"."""
    metric = axes.metric_name(claim.metric)
    head = f"{claim.a} vs {claim.b}, {metric}"
    if not claim.tested:
        return f"{head}: one seed: no test ({claim.a} − {claim.b} = {100 * claim.mean:+.1f} points)."
    low, high = claim.interval
    verdict = claim.verdict
    why = "" if verdict == NO_DIFFERENCE else (" (higher accuracy on the task)" if claim.metric == "a_ft" else " (forgot less)")
    return (f"{head}: **{verdict}**{why}: {100 * claim.mean:+.1f} points (95 % CI {100 * low:+.1f} to {100 * high:+.1f}), "
            f"p = {_p(claim.p)}, corrected p = {_p(claim.p_corrected)}.")


def claims_section(evidence: Evidence) -> str:
    """The claims as Markdown: how they were picked and tested, which noise their intervals cover, one
    sentence per claim, the tally, and the choices made on validation ("" without claims or choices)."""
    parts = [choices_section(evidence)] if evidence.chosen else []
    claims, units = evidence.claims, evidence.units
    if claims:
        n = max(len(c.values) for c in claims)
        lines = [
            f"Claims ({evidence.claim_rule}), each paired over {n} unit(s) ({', '.join(units)}): the difference is the first "
            f"side minus the second, in points. Test: {TEST_NAME} (here {len(claims)} claims; family-wise error {ALPHA:g}); "
            f"with {n} units the smallest possible p is {min_p(n):.2g}. Interval: t-based {100 * LEVEL:g} % CI of the mean difference.",
            "",
            "Intervals cover: " + ("; ".join(evidence.sources) or "the units' spread") + "."
            + (" They do not cover: " + "; ".join(evidence.not_covered) + "." if evidence.not_covered else ""),
            "",
        ]
        lines += [f"- {claim_sentence(c, evidence.axes)}" for c in claims]
        better = sum(c.winner is not None for c in claims)
        lines += ["", f"Of {len(claims)} claims: {better} with a \"better than\" verdict, {len(claims) - better} no difference shown."]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def choices_section(evidence: Evidence) -> str:
    """λ and α chosen on validation: the rule, and per method its chosen point among its candidates."""
    rule = CHOICE_RULES[evidence.choice_rule]
    lines = [f"λ and α chosen on the validation splits, never on test (rule \"{rule.name}\": {rule.text}; mean over units):", "",
             "| method | chosen λ | chosen α | validation score | candidates (λ, α: score) |", "|---|---|---|---|---|"]
    for method, choice in sorted(evidence.choices.items()):
        if len(choice.candidates) < 2:
            continue
        candidates = ", ".join(f"({_weight(c['lambda'])}, {c['alpha']:g}: {100 * c['validation_score']:.1f})" for c in choice.candidates)
        lam = _weight(choice.lam)
        lines.append(f"| {method} | {lam} | {choice.alpha:g} | {100 * choice.score:.1f} | {candidates} |")
    return "\n".join(lines)


def claims_document(evidence: Evidence) -> dict:
    """claims.json: what it holds, the test, the noise sources, the choices and every claim (values in points)."""
    n = max((len(c.values) for c in evidence.claims), default=0)
    return {
        "what": "The claims this report makes, each paired over units, with its test, 95 % interval, p, Holm-corrected p and "
                "verdict; and λ and α as chosen on validation. Values and differences are in percentage points.",
        "test": TEST_NAME, "family_wise_error": ALPHA, "interval": f"t-based {100 * LEVEL:g} % interval of the mean difference",
        "units": evidence.units, "smallest_possible_p": min_p(n) if n else None,
        "noise_sources_covered": evidence.sources, "noise_sources_not_covered": evidence.not_covered,
        "claim_rule": evidence.claim_rule,
        "choice_rule": {"name": evidence.choice_rule, "text": CHOICE_RULES[evidence.choice_rule].text},
        "choices": [c.as_dict(scale=100) for _, c in sorted(evidence.choices.items())],
        "claims": [{**c.as_dict(scale=100), "metric_name": evidence.axes.metric_name(c.metric), "tested": c.tested,
                    "sentence": claim_sentence(c, evidence.axes)} for c in evidence.claims],
    }


def write_evidence(evidence: Evidence, output_dir: str, *, title: str = "", plot: bool = True) -> dict[str, str]:
    """frontier.csv, frontier.png (with `plot`) and claims.json in `output_dir`; their paths ({} without points)."""
    paths = write_frontier(evidence.points, output_dir, axes=evidence.axes, title=title, plot=plot, chosen=evidence.chosen)
    if paths:
        paths["claims_json"] = os.path.join(output_dir, CLAIMS_JSON)
        with open(paths["claims_json"], "w") as f:
            json.dump(_finite(claims_document(evidence)), f, indent=2)
    return paths


def load_claims(path: str) -> list[Claim]:
    """The claims a claims.json holds, as `Claim`s with their corrected p (values back from points to fractions): two
    reports' claims compare with `evidence.contradictions(load_claims(a), load_claims(b))`."""
    with open(path) as f:
        entries = json.load(f)["claims"]
    return [Claim(e["a"], e["b"], e["metric"], {u["unit"]: (u["a"] / 100, u["b"] / 100) for u in e["units"]}, p_corrected=e["p_corrected"])
            for e in entries]


def evidence_markdown(evidence: Evidence) -> str:
    """The frontier table and the claims section, for a report's results.md."""
    return frontier_table(evidence.points, evidence.axes, evidence.chosen) + ("\n\n" + claims_section(evidence) if claims_section(evidence) else "")


def _finite(value):
    """JSON without NaN or infinity (None instead)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
