"""Weight-space interpolation (WiSE-FT) of a run with its starting point: on disk (`interpolate`, `ldifs-hf
interpolate`) and in memory (`wise_sweep`), on tiny offline runs of a ZS-init, an LP-init and a FLYP method."""

import copy
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel, pipeline

import ldifs_hf
from ldifs_hf.cli import main, parse_finetune_args
from ldifs_hf.evaluation.checkpoints import load_checkpoint
from ldifs_hf.interpolation import (
    START_HEAD_FILE, interpolate, interpolated_state_dict, interpolated_weights, load_start_model, wise_sweep,
)
from ldifs_hf.records import RunRecord
from ldifs_hf.training import run as run_module
from conftest import finetune_argv

METHODS = ("zs-init-ce", "lp-init-ce", "flyp")
PATCH = "vision_model.embeddings.patch_embedding.weight"


@pytest.fixture(scope="module")
def runs(tiny_clip_dir, eurosat_dir, tmp_path_factory):
    """{method: (run_dir, the model's state as the run built it, before training)}; every run saves checkpoint-1."""
    built = {}
    original = run_module.build_model

    def spy(spec, *args, **kwargs):
        model = original(spec, *args, **kwargs)
        built[spec.name] = copy.deepcopy(model.state_dict())
        return model

    root = tmp_path_factory.mktemp("runs")
    result = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_module, "build_model", spy)
        for method in METHODS:
            out = root / method
            argv = finetune_argv(tiny_clip_dir, eurosat_dir, out, method, "--learning_rate", "1e-3", "--save_strategy", "steps", "--save_steps", "1")
            run_module.run_finetune(*parse_finetune_args(argv))
            result[method] = (str(out), built[method])
    return result


def _weights(directory) -> dict:
    return load_file(os.path.join(directory, "model.safetensors"))


def _assert_equal_states(got: dict, expected: dict):
    assert got.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(got[k], expected[k])]
    assert not different, different[:5]


@pytest.mark.parametrize("method", METHODS)
def test_alpha_1_is_the_run_bit_for_bit(runs, method, tmp_path):
    run_dir, _ = runs[method]
    interpolate(run_dir, 1.0, tmp_path / "wise")
    _assert_equal_states(_weights(tmp_path / "wise"), _weights(run_dir))
    _assert_equal_states(_weights(tmp_path / "wise" / "clip"), _weights(os.path.join(run_dir, "clip")))


@pytest.mark.parametrize("method", METHODS)
def test_alpha_0_is_the_model_the_run_started_from_bit_for_bit(runs, method, tmp_path):
    run_dir, initial = runs[method]
    interpolate(run_dir, 0, tmp_path / "wise")
    saved = _weights(tmp_path / "wise")
    _assert_equal_states({k: saved[k] for k in initial}, initial)
    assert not all(torch.equal(initial[k], _weights(run_dir)[k]) for k in initial), "the run did not move: the test proves nothing"


def test_the_run_saves_its_starting_head_only_for_classifiers(runs):
    for method in ("zs-init-ce", "lp-init-ce"):
        run_dir, initial = runs[method]
        head = load_file(os.path.join(run_dir, START_HEAD_FILE))
        assert torch.equal(head["weight"], initial["head.weight"]) and torch.equal(head["bias"], initial["head.bias"])
    assert not os.path.exists(os.path.join(runs["flyp"][0], START_HEAD_FILE))


@pytest.mark.parametrize("method", ("zs-init-ce", "lp-init-ce"))
def test_alpha_half_is_the_midpoint_of_encoder_and_head(runs, method, tmp_path):
    run_dir, initial = runs[method]
    interpolate(run_dir, 0.5, tmp_path / "wise")
    mixed, end = _weights(tmp_path / "wise"), _weights(run_dir)
    for name in (PATCH, "head.weight", "head.bias"):
        assert not torch.equal(initial[name], end[name]), name
        torch.testing.assert_close(mixed[name], (initial[name] + end[name]) / 2, rtol=0, atol=1e-7)


def test_flyp_interpolates_both_towers(runs, tiny_clip_dir, tmp_path):
    run_dir, _ = runs["flyp"]
    pretrained = CLIPModel.from_pretrained(tiny_clip_dir).state_dict()
    end = _weights(run_dir)
    interpolate(run_dir, 0.5, tmp_path / "wise")
    for folder in (tmp_path / "wise", tmp_path / "wise" / "clip"):
        mixed = _weights(folder)
        for name in ("text_model.embeddings.token_embedding.weight", "text_projection.weight", PATCH):
            assert not torch.equal(pretrained[name], end[name]), name
            torch.testing.assert_close(mixed[name], (pretrained[name] + end[name]) / 2, rtol=0, atol=1e-7)


@pytest.mark.parametrize("method", ("zs-init-ce", "flyp"))
def test_the_interpolated_clip_runs_in_the_zero_shot_pipeline(runs, method, tmp_path):
    interpolate(runs[method][0], 0.5, tmp_path / "wise")
    clip_dir = str(tmp_path / "wise" / "clip")
    classifier = pipeline(
        "zero-shot-image-classification", model=clip_dir, tokenizer=AutoTokenizer.from_pretrained(clip_dir),
        image_processor=AutoImageProcessor.from_pretrained(clip_dir), device="cpu",
    )
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    result = classifier(image, candidate_labels=["forest", "river"])
    assert {r["label"] for r in result} == {"forest", "river"}
    assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-4)


def test_the_folder_is_run_like_and_names_alpha_and_source(runs, tmp_path):
    run_dir, _ = runs["lp-init-ce"]
    record = ldifs_hf.interpolate(run_dir, 0.25, tmp_path / "wise")
    saved = RunRecord.load(tmp_path / "wise")
    assert saved == record
    assert (saved.alpha, saved.source_run, saved.completed, saved.results) == (0.25, os.path.realpath(run_dir), True, {})
    assert (saved.method, saved.dataset) == ("lp-init-ce", "eurosat")
    assert type(load_checkpoint(str(tmp_path / "wise"))).__name__ == "CLIPVisionClassifier"
    for card in (tmp_path / "wise" / "README.md", tmp_path / "wise" / "clip" / "README.md"):
        assert "α = 0.25" in card.read_text() and os.path.realpath(run_dir) in card.read_text()


def test_an_interpolation_keeps_the_runs_start_so_it_interpolates_further(runs, tmp_path):
    run_dir, initial = runs["lp-init-ce"]
    interpolate(run_dir, 0.5, tmp_path / "half")
    interpolate(tmp_path / "half", 0, tmp_path / "back")  # the start of the interpolation is the run's start
    saved = _weights(tmp_path / "back")
    _assert_equal_states({k: saved[k] for k in initial}, initial)


def test_finetune_refuses_to_write_into_an_interpolation(runs, tiny_clip_dir, eurosat_dir, tmp_path):
    run_dir, _ = runs["zs-init-ce"]
    interpolate(run_dir, 0.5, tmp_path / "wise")
    settings = RunRecord.load(run_dir).settings
    with pytest.raises(ValueError, match=r"holds a weight interpolation \(alpha 0.5\)"):
        run_module.plan_output_dir(str(tmp_path / "wise"), "zs-init-ce", "eurosat", settings=settings)


@pytest.mark.parametrize("method", METHODS)
def test_wise_sweep_in_memory_matches_the_folder_and_restores_the_model(runs, method, tmp_path):
    run_dir, _ = runs[method]
    interpolate(run_dir, 0.5, tmp_path / "wise")
    on_disk = _weights(tmp_path / "wise")
    model = load_checkpoint(run_dir)
    own = {k: v.clone() for k, v in model.state_dict().items()}
    start = load_start_model(run_dir)
    files_before = sorted(os.listdir(run_dir))
    seen = []
    for alpha, at_alpha in wise_sweep(model, start, [0, 0.5, 1]):
        state = at_alpha.state_dict()
        seen.append(alpha)
        if alpha == 0.5:
            _assert_equal_states({k: state[k] for k in on_disk}, on_disk)
        if alpha == 1:
            _assert_equal_states(state, own)
    assert seen == [0.0, 0.5, 1.0]
    _assert_equal_states(model.state_dict(), own)
    assert sorted(os.listdir(run_dir)) == files_before  # nothing written to disk


def test_a_sweep_left_early_or_failing_restores_the_model(runs):
    run_dir, _ = runs["zs-init-ce"]
    model, start = load_checkpoint(run_dir), load_start_model(run_dir)
    own = {k: v.clone() for k, v in model.state_dict().items()}
    sweep = wise_sweep(model, start, [0.0, 1.0])
    next(sweep)
    sweep.close()
    _assert_equal_states(model.state_dict(), own)
    with pytest.raises(RuntimeError, match="scoring failed"):
        with interpolated_weights(model, start, 0.3):
            raise RuntimeError("scoring failed")
    _assert_equal_states(model.state_dict(), own)


def test_a_checkpoint_starts_where_its_run_started(runs):
    run_dir, initial = runs["lp-init-ce"]
    start = load_start_model(os.path.join(run_dir, "checkpoint-1")).state_dict()
    _assert_equal_states({k: start[k] for k in initial}, initial)


def test_interpolated_state_dict_refuses_mismatched_models_and_bad_alpha():
    a, b = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)
    with pytest.raises(ValueError, match="differ in their weights"):
        interpolated_state_dict(a, torch.nn.Linear(2, 3, bias=False), 0.5)
    with pytest.raises(ValueError, match="shape"):
        interpolated_state_dict(a, torch.nn.Linear(2, 4), 0.5)
    for alpha in (-0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="alpha must be a number in"):
            interpolated_state_dict(a, b, alpha)
    with pytest.raises(ValueError, match="alpha must be a number in"):
        list(wise_sweep(a, b, [0.5, 2]))  # every α checked before the first is applied


def _one_line_error(capsys, argv, needle):
    assert main(["interpolate", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and needle in err, err


def test_cli_writes_the_folder(runs, tmp_path, capsys):
    run_dir, _ = runs["zs-init-ce"]
    assert main(["interpolate", "--run", run_dir, "--alpha", "0.5", "--output_dir", str(tmp_path / "wise")]) == 0
    assert "alpha 0.5" in capsys.readouterr().out
    assert json.loads((tmp_path / "wise" / "ldifs_run.json").read_text())["alpha"] == 0.5


def test_cli_mistakes_are_one_line_and_exit_2(runs, tmp_path, capsys):
    run_dir, _ = runs["zs-init-ce"]
    out = str(tmp_path / "wise")
    _one_line_error(capsys, ["--run", run_dir, "--alpha", "1.5", "--output_dir", out], "alpha must be a number in [0, 1]")
    _one_line_error(capsys, ["--run", run_dir, "--alpha", "-0.5", "--output_dir", out], "got -0.5")
    _one_line_error(capsys, ["--run", run_dir, "--alpha", "0.5", "--output_dir", run_dir], "is the run's folder or inside it")
    _one_line_error(capsys, ["--run", run_dir, "--alpha", "0.5", "--output_dir", run_dir + "/wise"], "is the run's folder or inside it")
    _one_line_error(capsys, ["--run", str(tmp_path), "--alpha", "0.5", "--output_dir", out], "not an ldifs_hf run directory")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    _one_line_error(capsys, ["--run", run_dir, "--alpha", "0.5", "--output_dir", str(tmp_path / "full")], "is not empty")

    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_dir, unfinished)
    record = RunRecord.load(unfinished)
    record.completed = False
    record.save(unfinished)
    _one_line_error(capsys, ["--run", str(unfinished), "--alpha", "0.5", "--output_dir", out], "is not finished")

    older = tmp_path / "older"
    shutil.copytree(run_dir, older)
    os.remove(older / START_HEAD_FILE)
    _one_line_error(capsys, ["--run", str(older), "--alpha", "0.5", "--output_dir", out], f"did not record its starting head ({START_HEAD_FILE}")
    assert not os.path.exists(out)
