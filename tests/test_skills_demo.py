"""`ldifs-hf demo --world skills --quick` end to end on the tiny skills world: SFT on the new skill under no
regularizer, L2SP, LDIFS and KL over two seeds, every run scored on every skill, the report written; the concept
demo's options refused with it."""

import json

import pytest

from ldifs_hf.cli import main
from ldifs_hf.study.demo import DemoArguments

pytest.importorskip("trl")
pytest.importorskip("lm_eval")


@pytest.mark.slow  # 8 cells of the quick skills world (its pre-training shared with the other language tests)
def test_the_quick_skills_demo_writes_its_report(quick_skills_cache, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--world", "skills", "--quick", "--cache_dir", str(quick_skills_cache), "--output_dir", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "Generating" not in captured.err + printed  # lm_eval's loading of the tasks: in the study's log
    for name in ("results.md", "results.json", "summary.md", "timings.json"):
        assert (out / name).is_file(), name
    summary = (out / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| sft")]
    assert [row.split(" | ")[0].strip("| ") for row in rows] == ["sft", "sft+l2sp", "sft+ldifs", "sft+kl"]
    assert all(row.split(" | ")[2] == "2" for row in rows)  # two seeds each
    assert "Δ skills_add" in summary and "Δ skills_capital" in summary and summary in printed
    records = json.loads((out / "results.json").read_text())["records"]
    assert {(r["method"], r["seed"]) for r in records} == {(m, s) for m in ("sft", "sft+l2sp", "sft+ldifs", "sft+kl") for s in (0, 1)}
    assert all(r["status"] == "ok" and r["finetune_task"] == "skills_shift" and set(r["eval"]) >= {"skills_add", "skills_shift"} for r in records)
    assert {r["lambda"] for r in records if r["method"] == "sft+ldifs"} == {100.0}  # the main weight only, with --quick
    assert json.loads((out / "timings.json").read_text())["total_s"] > 0
    # The frontier and the demo's claims through the generic evidence: a claim per SKILLS_CLAIMS entry, paired over the two seeds.
    assert (out / "frontier.png").is_file() and (out / "frontier.csv").is_file()
    claims = json.loads((out / "claims.json").read_text())
    assert [(c["a"], c["b"], c["metric"]) for c in claims["claims"]] == [
        ("sft+l2sp (λ = 0.1)", "sft", "delta"), ("sft+l2sp (λ = 0.1)", "sft", "a_ft"), ("sft+ldifs (λ = 100)", "sft", "delta"),
        ("sft+ldifs (λ = 100)", "sft", "a_ft"), ("sft+kl (λ = 0.3)", "sft", "delta"), ("sft+kl (λ = 0.3)", "sft", "a_ft"),
        ("sft+ldifs (λ = 100)", "sft+l2sp (λ = 0.1)", "delta"), ("sft+kl (λ = 0.3)", "sft+ldifs (λ = 100)", "delta")]
    assert claims["units"] == ["seed 0", "seed 1"] and claims["smallest_possible_p"] == 0.5
    assert all(c["verdict"] == "no difference shown" for c in claims["claims"])  # two seeds cannot decide
    assert "Of 8 claims" in (out / "results.md").read_text() and "mean Δ on the other tasks" in printed


def test_the_concept_demo_s_options_are_refused_with_the_skills_world():
    with pytest.raises(ValueError, match="--methods, --max_steps belong to the concept demo"):
        DemoArguments(world="skills", max_steps=5, methods="all")
    with pytest.raises(ValueError, match="world must be one of concepts, skills, got 'skill'"):
        DemoArguments(world="skill")
    assert DemoArguments().seed_list() == [0, 1, 2, 3, 4] and DemoArguments(world="skills", seeds="3,4").seeds == "3,4"
