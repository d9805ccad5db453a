"""The frontier: points per (method, λ, α), mean ± std over seeds, the Pareto set, paired claims."""

import csv
import math

import pytest

from ldifs_hf.evaluation.frontier import frontier_points, paired_claim, run_scores, write_frontier


def _record(method, seed, a_ft, zs, lp, *, alpha=None, lam=None, percent=100.0, task="t0"):
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
    return record


def test_run_scores_average_the_other_tasks_only():
    scores = run_scores(_record("ce", 0, 0.5, (-0.1, -0.3), (0.2, 0.0)))
    assert scores == pytest.approx({"a_ft": 0.5, "delta_zs": -0.2, "delta_lp": 0.1})
    assert run_scores({**_record("ce", 0, None, (0, 0), (0, 0))}) is None


def test_points_use_the_last_checkpoint_and_mean_std_over_seeds():
    records = [
        _record("ce", 0, 0.1, (0.0, 0.0), (0.0, 0.0), percent=50.0),  # an earlier checkpoint: ignored
        _record("ce", 0, 0.6, (-0.2, -0.4), (0.0, 0.0)),
        _record("ce", 1, 0.8, (-0.4, -0.6), (0.2, 0.2)),
        {"method": "ce", "checkpoint": "pretrained", "seed": 0, "a_ft": 0.0, "eval": {}},
        {**_record("ce", 2, 0.9, (0, 0), (0, 0)), "status": "failed"},  # failed records have no scores
    ]
    (point,) = frontier_points(records)
    assert (point.method, point.lam, point.alpha) == ("ce", None, 1.0)
    assert point.values("a_ft") == pytest.approx([0.6, 0.8])
    mean, std = point.mean_std("delta_zs")  # seeds: -0.3, -0.5
    assert mean == pytest.approx(-0.4) and std == pytest.approx(math.sqrt(0.02))
    assert point.mean_std("delta_lp") == pytest.approx((0.1, math.sqrt(0.02)))


def test_pareto_set_by_hand():
    # (A_FT, mean Δ_ZS): a = (0.9, -0.5), b = (0.5, -0.1), c = (0.4, -0.3) is dominated by b, d = (0.9, -0.6) by a.
    records = [
        _record("a", 0, 0.9, (-0.5, -0.5), (0, 0)),
        _record("b", 0, 0.5, (-0.1, -0.1), (0, 0)),
        _record("c", 0, 0.4, (-0.3, -0.3), (0, 0)),
        _record("d", 0, 0.9, (-0.6, -0.6), (0, 0)),
    ]
    pareto = {p.method: p.pareto["delta_zs"] for p in frontier_points(records)}
    assert pareto == {"a": True, "b": True, "c": False, "d": False}
    # With equal Δ_LP everywhere, only the highest A_FT (a tie between a and d) is on the Δ_LP set.
    assert {p.method for p in frontier_points(records) if p.pareto["delta_lp"]} == {"a", "d"}


def test_alpha_and_lambda_make_separate_points(tmp_path):
    records = []
    for seed in (0, 1):
        for alpha in (0.0, 0.5, 1.0):
            records.append(_record("ce", seed, 0.2 + 0.5 * alpha, (-0.3 * alpha,) * 2, (0.0, 0.0), alpha=alpha))
        for lam in (1.0, 10.0):
            records.append(_record("ldifs", seed, 0.6 - 0.01 * lam, (-0.01 * lam,) * 2, (0.0, 0.0), lam=lam))
    points = frontier_points(records)
    assert [(p.method, p.lam, p.alpha) for p in points] == [
        ("ce", None, 0.0), ("ce", None, 0.5), ("ce", None, 1.0), ("ldifs", 1.0, 1.0), ("ldifs", 10.0, 1.0)]
    paths = write_frontier(records, str(tmp_path))
    with open(paths["frontier_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and rows[1]["alpha"] == "0.5" and float(rows[1]["a_ft_mean"]) == pytest.approx(0.45)
    with open(paths["frontier_plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert write_frontier([], str(tmp_path / "none")) == {}


def test_paired_claim_inside_and_beyond_the_noise():
    records = []
    for seed, (a, b) in enumerate([(0.50, 0.40), (0.52, 0.41), (0.49, 0.40)]):
        records.append(_record("x", seed, a, (0, 0), (0, 0)))
        records.append(_record("y", seed, b, (0, 0), (0, 0)))
    for seed, (a, b) in enumerate([(0.5, 0.4), (0.3, 0.6), (0.5, 0.4)]):
        records.append(_record("u", seed, a, (0, 0), (0, 0)))
        records.append(_record("v", seed, b, (0, 0), (0, 0)))
    points = frontier_points(records)
    clear = paired_claim(points, ("x", None, 1.0), ("y", None, 1.0), "a_ft")
    assert clear.differences == pytest.approx([0.10, 0.11, 0.09])
    assert clear.holds and clear.exceeds_noise and clear.seeds_agreeing == 3
    assert "exceeds its seed-to-seed spread" in clear.sentence()
    noisy = paired_claim(points, ("u", None, 1.0), ("v", None, 1.0), "a_ft")
    assert noisy.mean == pytest.approx(-0.1 / 3) and not noisy.exceeds_noise and noisy.seeds_agreeing == 2
    assert "inside the noise" in noisy.sentence()
    with pytest.raises(ValueError, match="no frontier point"):
        paired_claim(points, ("z", None, 1.0), ("y", None, 1.0), "a_ft")
