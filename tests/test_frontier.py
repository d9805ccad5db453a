"""The frontier: points per (method, λ, α) over paired units, their mean and 95 % interval, the Pareto set by
the paired test (never by float noise), CLIP and language-model records through one axis description."""

import csv
import math

import pytest

from ldifs_hf.evaluation.claims import paired_claim
from ldifs_hf.evaluation.frontier import (
    CLIP_AXES, LANGUAGE_AXES, FrontierPoint, dominates, frontier_points, frontier_table, run_scores, unit_of, write_frontier,
)


def _record(method, seed, a_ft, zs, lp, *, alpha=None, lam=None, percent=100.0, task="t0", world=None):
    """A final record fine-tuned on `task`, with Δs on two other tasks given as (zs1, zs2), (lp1, lp2)."""
    record = {
        "method": method, "finetune_task": task, "seed": seed, "percent": percent, "step": int(percent),
        "checkpoint": f"{method}/{seed}/{percent}", "a_ft": a_ft,
        "eval": {
            task: {"delta_zs": 9.0, "delta_lp": 9.0},  # the fine-tune task itself never counts
            "t1": {"delta_zs": zs[0], "delta_lp": lp[0]},
            "t2": {"delta_zs": zs[1], "delta_lp": lp[1]},
        },
    }
    if alpha is not None:
        record["alpha"] = alpha
    if lam is not None:
        record["lambda"] = lam
    if world is not None:
        record["world"] = world
    return record


def test_run_scores_average_the_other_tasks_only():
    scores = run_scores(_record("ce", 0, 0.5, (-0.1, -0.3), (0.2, 0.0)))
    assert scores == pytest.approx({"a_ft": 0.5, "delta_zs": -0.2, "delta_lp": 0.1})
    assert run_scores({**_record("ce", 0, None, (0, 0), (0, 0))}) is None
    # The validation split reads the record's "validation" scores and nothing else.
    record = {**_record("ce", 0, 0.5, (-0.1, -0.3), (0.2, 0.0)), "validation": {"a_ft": 0.4, "eval": {"t1": {"delta_zs": 0.0, "delta_lp": -0.1}}}}
    assert run_scores(record, split="validation") == pytest.approx({"a_ft": 0.4, "delta_zs": 0.0, "delta_lp": -0.1})
    assert run_scores(_record("ce", 0, 0.5, (0, 0), (0, 0)), split="validation") is None
    with pytest.raises(ValueError, match="split must be one of"):
        run_scores(record, split="train")


def test_points_use_the_last_checkpoint_and_pair_units_of_world_and_seed():
    records = [
        _record("ce", 0, 0.1, (0.0, 0.0), (0.0, 0.0), percent=50.0),  # an earlier checkpoint: ignored
        _record("ce", 0, 0.6, (-0.2, -0.4), (0.0, 0.0)),
        _record("ce", 1, 0.8, (-0.4, -0.6), (0.2, 0.2)),
        {"method": "ce", "checkpoint": "pretrained", "seed": 0, "a_ft": 0.0, "eval": {}},
        {**_record("ce", 2, 0.9, (0, 0), (0, 0)), "status": "failed"},  # failed records have no scores
    ]
    (point,) = frontier_points(records)
    assert (point.method, point.lam, point.alpha, point.units) == ("ce", None, 1.0, ["seed 0", "seed 1"])
    assert point.values("a_ft") == pytest.approx([0.6, 0.8])
    mean, std = point.mean_std("delta_zs")  # units: -0.3, -0.5
    assert mean == pytest.approx(-0.4) and std == pytest.approx(math.sqrt(0.02))
    # 95 % interval of the mean: -0.4 ± t(0.975, 1) * sqrt(0.02) / sqrt(2) = -0.4 ± 12.7062 * 0.1.
    low, high = point.interval("delta_zs")
    assert low == pytest.approx(-0.4 - 1.270620, abs=1e-5) and high == pytest.approx(-0.4 + 1.270620, abs=1e-5)
    # The same seed in two worlds is two units; units sort as numbers ("seed 2" before "seed 10").
    worlds = [_record("ce", s, 0.5, (0, 0), (0, 0), world=w) for w in (0, 1) for s in (2, 10)]
    assert frontier_points(worlds)[0].units == ["world 0 seed 2", "world 0 seed 10", "world 1 seed 2", "world 1 seed 10"]
    assert unit_of({"seed": 3}) == "seed 3" and unit_of({}) == "one run"


def _paired(method, a_fts, zss, lam=None):
    """Records of one method over units 0..n-1: per unit A_FT and mean Δ_ZS (Δ_LP 0)."""
    return [_record(method, u, a, (z, z), (0.0, 0.0), lam=lam) for u, (a, z) in enumerate(zip(a_fts, zss))]


def test_pareto_set_by_the_paired_test():
    n = 6  # the smallest two-sided p with 6 units is 2/64 = 0.031
    records = (
        _paired("a", [0.90 + 0.001 * u for u in range(n)], [-0.5] * n)  # best A_FT, worst Δ_ZS
        + _paired("b", [0.50] * n, [-0.1 + 0.001 * u for u in range(n)])  # best Δ_ZS
        + _paired("c", [0.40] * n, [-0.3] * n)  # below b on both, in every unit: dominated
        + _paired("d", [0.90 + 0.001 * u for u in range(n)], [-0.6] * n)  # a's A_FT, worse Δ_ZS in every unit: dominated by a
        + _paired("e", [0.50 + (0.02 if u % 2 else -0.02) for u in range(n)], [-0.1 + 0.001 * u for u in range(n)])  # b's twin, noisy
    )
    pareto = {p.method: p.pareto["delta_zs"] for p in frontier_points(records)}
    assert pareto == {"a": True, "b": True, "c": False, "d": False, "e": True}


def test_float_rounding_never_moves_a_point_off_the_set():
    # Two runs whose A_FT differs by float32 rounding (0.404666672 vs 0.404666662) in every unit, same Δ.
    records = _paired("ldifs", [0.404666672] * 8, [-0.1] * 8) + _paired("ce", [0.404666662] * 8, [-0.1] * 8)
    points = frontier_points(records)
    assert all(p.pareto["delta_zs"] for p in points)
    assert not dominates(points[1], points[0], "delta_zs")


def test_one_unit_dominates_nothing():
    records = [_record("x", 0, 0.9, (0.0, 0.0), (0.0, 0.0)), _record("y", 0, 0.1, (-0.5, -0.5), (-0.5, -0.5))]
    assert all(p.pareto["delta_zs"] and p.pareto["delta_lp"] for p in frontier_points(records))


def test_alpha_and_lambda_make_separate_points_and_files(tmp_path):
    records = []
    for seed in (0, 1):
        for alpha in (0.0, 0.5, 1.0):
            records.append(_record("ce", seed, 0.2 + 0.5 * alpha + 0.01 * seed, (-0.3 * alpha,) * 2, (0.0, 0.0), alpha=alpha))
        for lam in (1.0, 10.0):
            records.append(_record("ldifs", seed, 0.6 - 0.01 * lam, (-0.01 * lam,) * 2, (0.0, 0.0), lam=lam))
    points = frontier_points(records)
    assert [p.key for p in points] == [("ce", None, 0.0), ("ce", None, 0.5), ("ce", None, 1.0), ("ldifs", 1.0, 1.0), ("ldifs", 10.0, 1.0)]
    chosen = {"ce": ("ce", None, 0.5)}
    paths = write_frontier(points, str(tmp_path), chosen=chosen)
    with open(paths["frontier_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and rows[1]["alpha"] == "0.5" and float(rows[1]["a_ft_mean"]) == pytest.approx(0.455)
    assert [r["chosen"] for r in rows] == ["False", "True", "False", "False", "False"] and rows[1]["units"] == "2"
    assert float(rows[1]["a_ft_ci_low"]) < 0.455 < float(rows[1]["a_ft_ci_high"])
    with open(paths["frontier_plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert write_frontier([], str(tmp_path / "none")) == {}
    table = frontier_table(points, CLIP_AXES, chosen)
    assert "| ce | – | 0.5 | 2 | 45.5 [" in table and "| chosen |" in table and "| swept, not chosen |" in table
    # The legend names the sweeps drawn: both here, only λ without the α points, none for single points.
    from ldifs_hf.evaluation.frontier import sweep_kinds

    assert sweep_kinds(points) == (True, True)
    assert sweep_kinds([p for p in points if p.alpha == 1.0]) == (False, True)
    assert sweep_kinds([p for p in points if p.method == "ce"]) == (True, False) and sweep_kinds(points[2:4]) == (False, False)


def test_language_records_go_through_the_same_frontier_and_claims():
    # `ldifs_hf.language` records: per task {"score", "base", "delta"}, "a_ft" the fine-tuning task's score.
    def record(method, seed, a_ft, deltas):
        return {"method": method, "seed": seed, "finetune_task": "sft", "percent": 100.0, "a_ft": a_ft,
                "eval": {"sft": {"score": a_ft, "base": 0.1, "delta": a_ft - 0.1}, "mmlu": {"score": 0.5, "base": 0.5, "delta": deltas[0]},
                         "arc": {"score": 0.4, "base": 0.4, "delta": deltas[1]}}}

    records = [record("sft-ldifs", s, 0.6, (-0.01, -0.03)) for s in range(3)] + [record("sft", s, 0.61, (-0.05, -0.07)) for s in range(3)]
    points = frontier_points(records, LANGUAGE_AXES)
    assert [p.method for p in points] == ["sft", "sft-ldifs"] and points[1].mean("delta") == pytest.approx(-0.02)
    claim = paired_claim((points[1], "sft-ldifs"), (points[0], "sft"), "delta")
    assert claim.differences == pytest.approx([0.04, 0.04, 0.04])
    assert LANGUAGE_AXES.metric_name("delta") == "mean Δ on the other tasks" and LANGUAGE_AXES.names == ("a_ft", "delta")


def test_paired_claims_need_shared_units():
    first = FrontierPoint("x", None, 1.0, per_unit={"seed 0": {"a_ft": 0.5}})
    second = FrontierPoint("y", None, 1.0, per_unit={"seed 1": {"a_ft": 0.4}})
    with pytest.raises(ValueError, match="share no unit"):
        paired_claim((first, "x"), (second, "y"), "a_ft")
