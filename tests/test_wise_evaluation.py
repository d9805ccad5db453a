"""`ldifs-hf evaluate --wise_alphas`: every checkpoint scored at each WiSE-FT weight α in memory, on tiny offline
runs of a ZS-init, an LP-init and a FLYP method; α = 0 is the pretrained encoder exactly (every Δ and distance 0),
α = 1 the plain evaluation's record; the report tells the α apart and writes the frontier."""

import csv
import json
import os
import shutil

import pytest

import ldifs_hf
from ldifs_hf.cli import parse_finetune_args
from ldifs_hf.evaluation import ConceptForgettingEvaluator, EvaluationArguments
from ldifs_hf.evaluation.report import CSV_COLUMNS
from ldifs_hf.run_folder import START_HEAD_FILE
from ldifs_hf.testing import save_benchmark_like_dataset
from ldifs_hf.training import run as run_module
from conftest import finetune_argv, one_line_error

METHODS = ("zs-init-ce", "lp-init-ce", "flyp")
ALPHAS = (0.0, 0.5, 1.0)
SCORES = ("zs_acc", "lp_acc", "delta_zs", "delta_lp", "feature_distance")


@pytest.fixture(scope="module")
def runs(tiny_clip_dir, eurosat_dir, tmp_path_factory):
    """{method: run_dir} of 2-step runs that move the weights; the zs-init run also keeps checkpoint-1."""
    root = tmp_path_factory.mktemp("runs")
    result = {}
    for method in METHODS:
        extra = ("--save_strategy", "steps", "--save_steps", "1") if method == "zs-init-ce" else ()
        argv = finetune_argv(tiny_clip_dir, eurosat_dir, root / method, method, "--learning_rate", "1e-3", "--seed", "7", *extra)
        run_module.run_finetune(*parse_finetune_args(argv))
        result[method] = str(root / method)
    return result


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    return save_benchmark_like_dataset("mnist", tmp_path_factory.mktemp("mnist"), num_train=20, num_test=8)


def _options(runs, eurosat_dir, mnist_dir, out, **extra):
    return dict(
        checkpoint=[f"{m}={runs[m]}" for m in METHODS], datasets="eurosat,mnist",
        dataset_path=[f"eurosat={eurosat_dir}", f"mnist={mnist_dir}"], output_dir=str(out),
        lp_iterations=20, feature_distance_samples=8, device="cpu", num_workers=0, **extra,
    )


@pytest.fixture(scope="module")
def plain(runs, eurosat_dir, mnist_dir, tmp_path_factory):
    return ldifs_hf.evaluate(**_options(runs, eurosat_dir, mnist_dir, tmp_path_factory.mktemp("plain") / "report"))


@pytest.fixture(scope="module")
def wise(runs, eurosat_dir, mnist_dir, tmp_path_factory):
    return ldifs_hf.evaluate(**_options(runs, eurosat_dir, mnist_dir, tmp_path_factory.mktemp("wise") / "report", wise_alphas=list(ALPHAS)))


def _record(result, method, alpha, *, final=True):
    (record,) = [r for r in result.records if r["method"] == method and r.get("alpha") == alpha and (r["percent"] == 100.0) == final]
    return record


# -- refused before anything loads ------------------------------------------------------------------


@pytest.mark.parametrize(
    "alphas, needle",
    [("0,1.5", "'1.5' is not a number in [0, 1]"), ("0,-0.1", "'-0.1'"), ("0,half", "'half' is not a number"),
     ("0.5,1,0.5", "lists 0.5 more than once"), ("", "takes interpolation weights"), ("nan", "'nan'")],
)
def test_cli_refuses_bad_alphas_in_one_line(runs, tmp_path, capsys, monkeypatch, alphas, needle):
    monkeypatch.setattr(ConceptForgettingEvaluator, "from_pretrained", _must_not_load)
    one_line_error(capsys, ["evaluate", "--checkpoint", runs["flyp"], "--datasets", "mnist", "--output_dir", str(tmp_path / "r"),
                            "--wise_alphas", alphas], needle)


def test_api_takes_a_list_or_a_comma_string_and_refuses_bad_values(runs, tmp_path, monkeypatch):
    assert EvaluationArguments(checkpoint=runs["flyp"], wise_alphas=[0, 0.25, 1]).alphas() == [0.0, 0.25, 1.0]
    assert EvaluationArguments(checkpoint=runs["flyp"], wise_alphas="0, 0.25,1").alphas() == [0.0, 0.25, 1.0]
    assert EvaluationArguments(checkpoint=runs["flyp"]).alphas() is None
    monkeypatch.setattr(ConceptForgettingEvaluator, "from_pretrained", _must_not_load)
    for bad, needle in (([0, 2], "2 is not a number in"), ([0, True], "True"), ([1, 1.0], "more than once"), ([], "takes interpolation weights")):
        with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
            ldifs_hf.evaluate(checkpoint=runs["flyp"], datasets="mnist", output_dir=str(tmp_path / "r"), wise_alphas=bad)


def _must_not_load(*args, **kwargs):
    raise AssertionError("a model was loaded before the arguments were checked")


def test_checkpoints_without_a_rebuildable_start_are_refused_by_name_before_loading(runs, tiny_clip_dir, tmp_path, capsys, monkeypatch):
    old_run = tmp_path / "old_run"  # a classifier run from before runs recorded their starting head
    shutil.copytree(runs["lp-init-ce"], old_run)
    os.remove(old_run / START_HEAD_FILE)
    monkeypatch.setattr(ConceptForgettingEvaluator, "from_pretrained", _must_not_load)
    line = one_line_error(capsys, ["evaluate", "--checkpoint", runs["flyp"], str(old_run), f"clip={tiny_clip_dir}", "--datasets", "mnist",
                                   "--pretrained", str(tiny_clip_dir), "--output_dir", str(tmp_path / "r"), "--wise_alphas", "0,1"])
    assert "2 checkpoint(s)" in line and START_HEAD_FILE in line and str(old_run) in line and f"{tiny_clip_dir!s}" in line, line
    assert runs["flyp"] not in line.replace(str(old_run), "")


# -- the scores at each α -----------------------------------------------------------------------------


def test_one_record_per_checkpoint_and_alpha(wise):
    got = [(r["method"], r["percent"], r["alpha"], r["status"]) for r in wise.records]
    expected = [("zs-init-ce", 50.0, a, "ok") for a in ALPHAS] + [(m, 100.0, a, "ok") for m in METHODS for a in ALPHAS]
    assert sorted(got) == sorted(expected)


@pytest.mark.parametrize("method", METHODS)
def test_alpha_0_is_the_pretrained_encoder_exactly(wise, method):
    for final in (True, False) if method == "zs-init-ce" else (True,):
        record = _record(wise, method, 0.0, final=final)
        assert record["param_distance"] == 0.0 and record["feature_distance"] == 0.0
        for bench, scores in record["eval"].items():
            assert (scores["delta_zs"], scores["delta_lp"], scores["feature_distance"]) == (0.0, 0.0, 0.0), (bench, scores)
            assert (scores["zs_acc"], scores["lp_acc"]) == (wise.pretrained_accuracy[bench]["zs"], wise.pretrained_accuracy[bench]["lp"])
        moved = _record(wise, method, 1.0, final=final)
        assert moved["param_distance"] > 0, "the run did not move: the test proves nothing"


@pytest.mark.parametrize("method", METHODS)
def test_alpha_1_is_the_plain_evaluations_record(wise, plain, method):
    for final in (True, False) if method == "zs-init-ce" else (True,):
        at_one = {k: v for k, v in _record(wise, method, 1.0, final=final).items() if k != "alpha"}
        assert at_one == _record(plain, method, None, final=final)


def test_alpha_half_lies_between_its_ends(wise):
    for method in METHODS:
        distances = [_record(wise, method, a)["param_distance"] for a in ALPHAS]
        # ‖θ(α) − θ0‖² = α²‖θ1 − θ0‖² on the encoder, which starts at the pretrained one.
        assert distances[1] == pytest.approx(distances[2] / 4, rel=1e-4)


# -- the report ------------------------------------------------------------------------------------


def test_report_tells_the_alphas_apart(wise):
    out = os.path.dirname(wise.paths["json"])
    with open(wise.paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert "alpha" in rows[0] and {row["alpha"] for row in rows} == {"0.0", "0.5", "1.0"}
    assert len(rows) == len(wise.records) * 2
    table = open(wise.paths["markdown"]).read()
    header = table.splitlines()[2]
    for method in METHODS:
        for label in ("@α=0", "@α=0.5", "@α=1"):
            assert f" {method}{label} |" in header, header
    assert [r["alpha"] for r in json.load(open(wise.paths["json"]))["records"]] == [r["alpha"] for r in wise.records]
    for name in ("deltas_over_training.png", "distances_over_training.png", "frontier.csv", "frontier.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name


def test_frontier_has_a_point_per_method_and_alpha(wise):
    with open(wise.paths["frontier_csv"]) as f:
        points = list(csv.DictReader(f))
    assert sorted((p["method"], float(p["alpha"])) for p in points) == sorted((m, a) for m in METHODS for a in ALPHAS)
    for point in points:
        assert point["units"] == "1"
        if float(point["alpha"]) == 0.0:
            assert float(point["delta_zs_mean"]) == 0.0 and float(point["delta_lp_mean"]) == 0.0
    assert os.path.getsize(wise.paths["frontier_plot"]) > 0


def test_records_carry_the_runs_lambda_and_seed(plain, wise):
    for record in plain.records + wise.records:
        assert record["seed"] == 7 and record["lambda"] is None  # ce and flyp have no regularizer


def test_without_alphas_the_report_is_todays_plus_the_frontier(plain):
    out = os.path.dirname(plain.paths["json"])
    assert sorted(os.listdir(out)) == sorted(
        ["results.json", "results.csv", "results.md", "deltas_over_training.png", "distances_over_training.png", "frontier.csv", "frontier.png",
         "claims.json"]
    )
    assert all("alpha" not in r for r in plain.records)
    with open(plain.paths["csv"]) as f:
        assert tuple(next(csv.reader(f))) == CSV_COLUMNS
    assert "@α" not in open(plain.paths["markdown"]).read()
    with open(plain.paths["frontier_csv"]) as f:
        assert sorted((p["method"], p["alpha"]) for p in csv.DictReader(f)) == sorted((m, "1.0") for m in METHODS)


def test_cli_counts_checkpoint_alpha_pairs(runs, eurosat_dir, mnist_dir, tmp_path, capsys):
    from ldifs_hf.cli import main

    argv = ["evaluate", "--checkpoint", runs["flyp"], "--datasets", "eurosat,mnist", "--dataset_path", f"eurosat={eurosat_dir}",
            f"mnist={mnist_dir}", "--output_dir", str(tmp_path / "r"), "--lp_iterations", "20", "--device", "cpu", "--num_workers", "0",
            "--distances", "false", "--wise_alphas", "0,1"]
    assert main(argv) == 0
    assert "scored 2 (checkpoint, α) pair(s) on 2 benchmark(s)" in capsys.readouterr().out


def test_a_frontier_is_a_report_a_rerun_must_not_overwrite_silently(runs, eurosat_dir, mnist_dir, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "frontier.csv").write_text("method\n")  # left by an earlier evaluation
    options = _options(runs, eurosat_dir, mnist_dir, out, distances=False)
    with pytest.raises(FileExistsError, match=r"already holds a report \(frontier.csv\)"):
        ldifs_hf.evaluate(**options)
    (out / "frontier.png").write_bytes(b"stale")
    # Replaced by a report that has no frontier point (no other task than the fine-tuning one): no stale frontier stays.
    result = ldifs_hf.evaluate(**{**options, "datasets": "eurosat", "dataset_path": [f"eurosat={eurosat_dir}"], "overwrite_report": True})
    assert "frontier_csv" not in result.paths and not (out / "frontier.csv").exists() and not (out / "frontier.png").exists()
    result = ldifs_hf.evaluate(**{**options, "overwrite_report": True})
    assert result.paths["frontier_csv"] == str(out / "frontier.csv") and (out / "frontier.png").stat().st_size > 100


@pytest.mark.parametrize(
    "fields, expected",
    # Records of the earlier format (the built-ins' weights as fields of their own), then of today's.
    [({"regularizer": "ldifs", "ldifs_lambda": 3.0, "l2sp_lambda": 0.5, "settings": {"seed": 5}}, {"lambda": 3.0, "seed": 5}),
     ({"regularizer": "l2sp", "ldifs_lambda": 3.0, "l2sp_lambda": 0.5, "settings": {"seed": 0}}, {"lambda": 0.5, "seed": 0}),
     ({"regularizer": "none", "ldifs_lambda": 3.0}, {"lambda": None}),  # a record without settings knows no seed
     ({"regularizer": "kl", "regularizer_settings": {"kl_lambda": 0.3}, "regularizer_weight": 0.3, "settings": {"seed": 1}},
      {"lambda": 0.3, "seed": 1})],
)
def test_run_facts_are_the_runs_own_lambda_and_seed(tmp_path, fields, expected):
    import json

    from ldifs_hf.evaluation.run import run_facts

    (tmp_path / "ldifs_run.json").write_text(json.dumps({"method": "m", "dataset": "eurosat", "base_model": "clip", **fields}))
    (tmp_path / "checkpoint-3").mkdir()
    assert run_facts(str(tmp_path)) == expected == run_facts(str(tmp_path / "checkpoint-3"))
    assert run_facts(str(tmp_path / "checkpoint-3" / "nowhere")) == {}


def test_an_interpolated_folder_is_scored_as_the_run_at_its_alpha(runs, wise, eurosat_dir, mnist_dir, tmp_path):
    folder = tmp_path / "half"
    ldifs_hf.interpolate(runs["lp-init-ce"], 0.5, folder)
    options = {**_options(runs, eurosat_dir, mnist_dir, tmp_path / "r"), "checkpoint": [f"lp-init-ce={folder}"]}
    (record,) = ldifs_hf.evaluate(**options).records
    where = ("checkpoint", "step")  # the folder is not the run's, and it has no trainer state
    expected = {k: v for k, v in _record(wise, "lp-init-ce", 0.5).items() if k not in where}
    assert {k: v for k, v in record.items() if k not in where} == expected  # same weights, same scores, same α
    swept = ldifs_hf.evaluate(**{**options, "output_dir": str(tmp_path / "s"), "wise_alphas": "0.5,1"}).records
    assert [r["alpha"] for r in swept] == [0.25, 0.5]  # θ(0.5) of θ(0.5) is the run's θ(0.25)


def test_alpha_0_reuses_the_pretrained_features(runs, eurosat_dir, mnist_dir, tmp_path, monkeypatch):
    from ldifs_hf.evaluation import evaluator as evaluator_module

    extracted = []
    original = evaluator_module.extract_features
    monkeypatch.setattr(evaluator_module, "extract_features", lambda *a, **k: extracted.append(k.get("desc")) or original(*a, **k))
    monkeypatch.setattr(evaluator_module, "MAX_SPLIT_BYTES", 0)  # every split streamed, so every extraction is counted here
    options = {**_options(runs, eurosat_dir, mnist_dir, tmp_path / "r"), "checkpoint": [runs["lp-init-ce"]], "distances": False}
    (record,) = ldifs_hf.evaluate(**options, wise_alphas="0").records
    assert sorted(extracted) == ["eurosat/test features", "eurosat/train features", "mnist/test features", "mnist/train features"]  # the pretrained model's only
    assert all(s["delta_zs"] == s["delta_lp"] == 0.0 for s in record["eval"].values())
    extracted.clear()
    ldifs_hf.evaluate(**{**options, "output_dir": str(tmp_path / "s")}, wise_alphas="0.5")
    assert len(extracted) == 8  # a moved encoder has its own features


def test_a_checkpoint_that_fails_or_is_not_finite_gives_a_record_per_alpha(runs, eurosat_dir, mnist_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    nan_start = tmp_path / "nan_start"  # its starting head holds a NaN, so every θ(α) does
    shutil.copytree(runs["lp-init-ce"], nan_start)
    head = load_file(nan_start / START_HEAD_FILE)
    head["weight"][0, 0] = float("nan")
    save_file(head, nan_start / START_HEAD_FILE)
    original = ConceptForgettingEvaluator.load
    monkeypatch.setattr(ConceptForgettingEvaluator, "load",
                        lambda self, path: (_ for _ in ()).throw(OSError("disk gone")) if path == runs["flyp"] else original(self, path))
    options = {**_options(runs, eurosat_dir, mnist_dir, tmp_path / "r"), "distances": False, "wise_alphas": "0,1",
               "checkpoint": [runs["flyp"], f"nan={nan_start}", runs["zs-init-ce"]], "include_intermediate": False}
    result = ldifs_hf.evaluate(**options)
    assert [(r["method"], r["alpha"], r["status"]) for r in result.records] == [
        ("flyp", 0.0, "failed"), ("flyp", 1.0, "failed"), ("nan", 0.0, "non_finite"), ("nan", 1.0, "non_finite"),
        ("zs-init-ce", 0.0, "ok"), ("zs-init-ce", 1.0, "ok"),
    ]
    assert "OSError: disk gone" in result.records[0]["error"] and "head.weight" in result.records[2]["error"]
    assert "| nan@α=0 | non-finite |" in open(result.paths["markdown"]).read()


def test_validation_scores_choices_and_claims_in_the_report(runs, eurosat_dir, mnist_dir, tmp_path, tiny_clip_dir):
    import json

    result = ldifs_hf.evaluate(**_options(runs, eurosat_dir, mnist_dir, tmp_path / "report", wise_alphas="0,1", validation=True))
    final = _record(result, "zs-init-ce", 1.0)
    # Each run's facts, as its record holds them: what the claims pair methods by.
    assert final["method_spec"] == {"head_init": "zero-shot", "objective": "ce", "regularizer": "none", "trained": "vision"}
    assert set(final["validation"]) == {"a_ft", "eval"} and set(final["validation"]["eval"]) == {"eurosat", "mnist"}
    document = json.loads((tmp_path / "report" / "claims.json").read_text())
    # α 0 or 1 chosen per method on validation; no two methods differ only in their regularizer: no claims.
    assert {c["method"] for c in document["choices"]} == set(METHODS) and document["claims"] == []
    markdown = (tmp_path / "report" / "results.md").read_text()
    assert "λ and α chosen on the validation splits, never on test" in markdown and "| zs-init-ce | – |" in markdown
    # A run that held out another validation split is refused, before anything is scored.
    other = tmp_path / "other"
    run_module.run_finetune(*parse_finetune_args(finetune_argv(tiny_clip_dir, eurosat_dir, other, "zs-init-ce", "--validation_fraction", "0.2")))
    with pytest.raises(ValueError, match=r"--validation scores the validation split a run holds out by default \(0.1 of train, seed 0\); .*validation_fraction=0.2"):
        ldifs_hf.evaluate(**_options({**runs, "zs-init-ce": str(other)}, eurosat_dir, mnist_dir, tmp_path / "refused", validation=True))
    assert not (tmp_path / "refused" / "results.json").exists()
