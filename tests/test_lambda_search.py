"""λ selection through Trainer.hyperparameter_search (optuna GridSampler) on a tiny CLIP: the table, the
plot, the chosen λ handed to a final run, and clear errors for grids and methods that cannot be searched."""

import csv
import json

import pytest

from ldifs_hf.records import RunRecord
import ldifs_hf.study.lambda_search as search_module
from ldifs_hf.study.lambda_search import DEFAULT_LAMBDA_GRID, check_lambda_grid, search_lambda
from ldifs_hf.testing import save_benchmark_like_dataset
from conftest import one_line_error


@pytest.fixture(scope="module")
def eurosat_dir(tmp_path_factory):
    return save_benchmark_like_dataset("eurosat", tmp_path_factory.mktemp("eurosat"), num_train=40, num_test=10)


def _search(model_dir, data_dir, out, method, grid, **extra):
    return search_lambda(
        grid=grid, method=method, dataset="eurosat", dataset_path=str(data_dir), model_name_or_path=str(model_dir),
        output_dir=str(out), max_steps=2, per_device_train_batch_size=8, per_device_eval_batch_size=8, learning_rate=1e-3,
        warmup_steps=0, lp_iterations=20, validation_fraction=0.25, use_cpu=True, report_to="none", disable_tqdm=True, **extra,
    )


def test_the_default_grid_is_the_papers_and_bad_grids_are_clear_errors():
    assert DEFAULT_LAMBDA_GRID == (0.01, 0.05, 0.1, 0.5, 1.0, 10.0, 100.0)
    assert check_lambda_grid([10, 0.5]) == [0.5, 10.0]
    with pytest.raises(ValueError, match="the λ grid is empty"):
        check_lambda_grid([])
    with pytest.raises(ValueError, match=r"finite values > 0, got 0.0 in \[1, 0\]"):
        check_lambda_grid([1, 0])
    with pytest.raises(ValueError, match="finite values > 0, got -1.0"):
        check_lambda_grid([-1])
    with pytest.raises(ValueError, match="repeats a value"):
        check_lambda_grid([1, 1.0])


@pytest.mark.parametrize(
    "method, message",
    [("zs-init-ce", "regularizer 'none': there is no λ to search"), ("flyp+ldifs", "objective 'clip-contrastive', which has no class logits")],
)
def test_methods_without_a_searchable_lambda_are_refused(method, message, tiny_clip_dir, eurosat_dir, tmp_path):
    with pytest.raises(ValueError, match=message):
        _search(tiny_clip_dir, eurosat_dir, tmp_path, method, [0.1, 1.0])
    with pytest.raises(ValueError, match="the λ grid is empty"):
        _search(tiny_clip_dir, eurosat_dir, tmp_path, "lp-init-ldifs", [])


@pytest.mark.parametrize("method, parameter", [("lp-init-ldifs", "ldifs_lambda"), ("zs-init-l2sp", "l2sp_lambda")])
def test_search_scores_every_lambda_on_validation_and_hands_the_winner_on(method, parameter, tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch):
    used = []
    original = search_module.LDIFSTrainer.compute_loss

    def recording(self, *args, **kwargs):  # the λ the loss is weighted with, as the trainer holds it
        used.append(self.regularizer_term.weight(self.regularizer_state.settings))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(search_module.LDIFSTrainer, "compute_loss", recording)
    result = _search(tiny_clip_dir, eurosat_dir, tmp_path / "search", method, [0.1, 100.0], final_run=True)
    assert result.parameter == parameter and set(result.scores) == {0.1, 100.0}
    # Each trial trained (2 steps) and was scored with its own λ: the loss saw both values.
    assert sorted(set(used)) == [0.1, 100.0]
    assert all(0.0 <= s <= 1.0 for s in result.scores.values())
    assert result.scores[result.best_lambda] == max(result.scores.values())
    # The validation split holds 25 % of 40 = 10 images: every score is a multiple of 1/10.
    assert all(abs(10 * s - round(10 * s)) < 1e-6 for s in result.scores.values())
    rows = list(csv.DictReader(open(tmp_path / "search" / "lambda_search.csv")))
    assert [float(r[parameter]) for r in rows] == [0.1, 100.0]
    assert [r["chosen"] for r in rows].count("True") == 1
    table = (tmp_path / "search" / "lambda_search.md").read_text()
    assert f"| {parameter} | validation accuracy | chosen |" in table and f"chosen {result.best_lambda:g}" in table
    assert (tmp_path / "search" / "lambda_search.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "search" / "lambda_search.json").read_text())
    assert saved["best_lambda"] == result.best_lambda and saved["grid"] == [0.1, 100.0]
    # The final run trained with the chosen λ.
    final = RunRecord.load(tmp_path / "search" / "final")
    assert final.completed and final.regularizer_settings[parameter] == result.best_lambda == result.final.regularizer_weight


def _cli_argv(model_dir, data_dir, out, *extra):
    return [
        "lambda-search", "--method", "lp-init-ldifs", "--dataset", "eurosat", "--dataset_path", str(data_dir),
        "--model_name_or_path", str(model_dir), "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "8",
        "--per_device_eval_batch_size", "8", "--learning_rate", "1e-3", "--warmup_steps", "0", "--lp_iterations", "20",
        "--validation_fraction", "0.25", "--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--lambda_grid", "0.1,10", *extra,
    ]


@pytest.mark.slow
def test_cli_lambda_search_runs_and_a_rerun_reuses_the_search(tiny_clip_dir, eurosat_dir, tmp_path, capsys, monkeypatch):
    from ldifs_hf.cli import main

    out = tmp_path / "search"
    assert main(_cli_argv(tiny_clip_dir, eurosat_dir, out, "--final_run")) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "lambda_search.json").read_text())
    assert f"ldifs_lambda = {saved['best_lambda']:g}" in printed and "final run:" in printed and saved["grid"] == [0.1, 10.0]
    assert RunRecord.load(out / "final").regularizer_settings["ldifs_lambda"] == saved["best_lambda"]

    # The same command again: the search is read back, not rerun, and the finished final run is returned as recorded.
    def no_trials(*args, **kwargs):
        raise AssertionError("the search ran again")

    monkeypatch.setattr(search_module.LDIFSTrainer, "hyperparameter_search", no_trials)
    before = (out / "lambda_search.md").read_text()
    assert main(_cli_argv(tiny_clip_dir, eurosat_dir, out, "--final_run")) == 0
    assert f"ldifs_lambda = {saved['best_lambda']:g}" in capsys.readouterr().out
    assert (out / "lambda_search.md").read_text() == before

    # Other settings in the same folder: refused in one line, the earlier search untouched.
    line = one_line_error(capsys, _cli_argv(tiny_clip_dir, eurosat_dir, out, "--learning_rate", "5e-4"), "already holds a λ search")
    assert "learning_rate" in line, line
    assert (out / "lambda_search.md").read_text() == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lambda_grid", "0.1,x"], "lambda_grid must be comma-separated numbers, got '0.1,x'"),
        (["--lambda_grid", "0,1"], "the λ grid must hold finite values > 0"),
        (["--method", "zs-init-ce"], "there is no λ to search"),
        (["--max_steps", "0"], "max_steps must be a positive number"),
    ],
)
def test_cli_lambda_search_refuses_bad_input_before_loading(extra, message, tiny_clip_dir, eurosat_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(search_module, "load_benchmark", lambda *a, **k: pytest.fail("data was loaded before the check"))
    out = tmp_path / "search"
    one_line_error(capsys, _cli_argv(tiny_clip_dir, eurosat_dir, out, *extra), message)
    assert not out.exists()
