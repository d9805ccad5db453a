"""λ and α are chosen on validation data only: the rules by hand, the chooser refusing anything but
validation scores, choices that test scores cannot move, and validation scores that test labels cannot move."""

import copy

import datasets
import numpy as np
import pytest
import torch

from ldifs_hf.benchmarks import load_benchmark
from ldifs_hf.evaluation import ConceptForgettingEvaluator, EvaluatorSettings
from ldifs_hf.evaluation import evaluator as evaluation_module
from ldifs_hf.evaluation.choice import choose
from ldifs_hf.evaluation.claims import build_evidence
from ldifs_hf.evaluation.frontier import CLIP_AXES, FrontierPoint, frontier_points
from ldifs_hf.testing import save_benchmark_like_dataset


def _point(method, lam, alpha, a_ft, zs, lp, split="validation"):
    return FrontierPoint(method, lam, alpha, per_unit={"seed 0": {"a_ft": a_ft, "delta_zs": zs, "delta_lp": lp}}, split=split)


def test_rules_by_hand():
    points = [
        _point("ldifs", 10.0, 1.0, 0.60, -0.20, -0.02),  # balanced: 0.60 - 0.11 = 0.49
        _point("ldifs", 10.0, 0.5, 0.55, -0.05, 0.00),  # 0.55 - 0.025 = 0.525: the balanced choice
        _point("ldifs", 100.0, 1.0, 0.58, -0.10, -0.01),  # 0.58 - 0.055 = 0.525: a tie, and α = 1 beats α = 0.5
        _point("ce", None, 1.0, 0.62, -0.30, -0.04),  # 0.62 - 0.17 = 0.45
        _point("ce", None, 0.0, 0.40, 0.0, 0.0),  # 0.40
    ]
    balanced = choose(points, CLIP_AXES, "balanced")
    assert balanced["ldifs"].key == ("ldifs", 100.0, 1.0) and balanced["ldifs"].score == pytest.approx(0.525)
    assert balanced["ce"].key == ("ce", None, 1.0)
    paper = choose(points, CLIP_AXES, "a_ft")  # the highest validation A_FT, blind to forgetting
    assert paper["ldifs"].key == ("ldifs", 10.0, 1.0) and paper["ce"].key == ("ce", None, 1.0)
    assert [(c["lambda"], c["alpha"]) for c in balanced["ldifs"].candidates] == [(10.0, 0.5), (10.0, 1.0), (100.0, 1.0)]
    with pytest.raises(ValueError, match="choice rule must be one of balanced, a_ft"):
        choose(points, CLIP_AXES, "best")


def test_the_chooser_refuses_test_scores():
    with pytest.raises(ValueError, match="chosen on validation scores only; got points scored on test"):
        choose([_point("ce", None, 1.0, 0.6, 0.0, 0.0, split="test")], CLIP_AXES)


def _records(test_shift: float, validation_shift: float = 0.0) -> list[dict]:
    """Two seeds of LDIFS at λ 1 and 10 and CE at α 0.5 and 1, test and validation scores apart."""
    records = []
    for seed in (0, 1):
        for method, lam, alpha, a_ft, delta in (("ldifs", 1.0, None, 0.60, -0.10), ("ldifs", 10.0, None, 0.55, -0.01),
                                                 ("ce", None, None, 0.62, -0.20), ("ce", None, 0.5, 0.50, -0.05)):
            record = {"method": method, "lambda": lam, "seed": seed, "finetune_task": "t0", "percent": 100.0,
                      "a_ft": a_ft + test_shift * (seed + 1), "eval": {"t1": {"delta_zs": delta - test_shift, "delta_lp": delta + test_shift}},
                      "validation": {"a_ft": a_ft + validation_shift * (lam or 0.0), "eval": {"t1": {"delta_zs": delta, "delta_lp": delta}}}}
            if alpha is not None:
                record["alpha"] = alpha
            records.append(record)
    return records


def test_test_scores_never_move_a_choice():
    keys = {m: c.key for m, c in build_evidence(_records(0.0)).choices.items()}
    assert keys == {"ldifs": ("ldifs", 10.0, 1.0), "ce": ("ce", None, 0.5)}
    # Test scores moved every way (the test split's labels corrupted would do that): the same choices.
    for shift in (-0.3, 0.05, 0.4):
        assert {m: c.key for m, c in build_evidence(_records(shift)).choices.items()} == keys
    # Validation scores moved: the choice follows them (λ = 1 gains 0.2 of validation A_FT, λ = 10 gains 2).
    assert build_evidence(_records(0.0, validation_shift=-0.02)).choices["ldifs"].key == ("ldifs", 1.0, 1.0)
    # Without validation scores nothing is chosen.
    plain = [{k: v for k, v in r.items() if k != "validation"} for r in _records(0.0)]
    assert build_evidence(plain).choices == {} and frontier_points(plain, split="validation") == []


@pytest.fixture(scope="module")
def eurosat_copies(tmp_path_factory):
    """A eurosat copy (40 training, 12 test images) and the same copy with its test labels permuted."""
    root = tmp_path_factory.mktemp("validation")
    path = save_benchmark_like_dataset("eurosat", root / "plain", num_train=40, num_test=12)
    data = datasets.load_from_disk(path)
    labels = np.asarray(data["test"]["label"])
    shuffled = data["test"].remove_columns("label").add_column("label", list(np.roll(labels, 1)))
    shuffled = shuffled.cast_column("label", data["test"].features["label"])
    datasets.DatasetDict({"train": data["train"], "test": shuffled}).save_to_disk(str(root / "shuffled"))
    return path, str(root / "shuffled")


def _scored(tiny_clip_dir, data_path):
    settings = EvaluatorSettings(dataset_paths={"eurosat": data_path}, device="cpu", lp_iterations=50, validation=True)
    evaluator = ConceptForgettingEvaluator.from_pretrained(tiny_clip_dir, settings)
    model = copy.deepcopy(evaluator.pretrained)
    with torch.no_grad():
        for p in model.vision_model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    return evaluator.evaluate(model, ["eurosat"], key="moved", finetune_benchmark="eurosat", distances=False)


def test_validation_scores_never_read_the_test_split(tiny_clip_dir, eurosat_copies):
    plain, shuffled = (_scored(tiny_clip_dir, path) for path in eurosat_copies)
    assert set(plain["validation"]) == {"a_ft", "eval"} and set(plain["validation"]["eval"]["eurosat"]) == {"zs_acc", "lp_acc", "delta_zs", "delta_lp"}
    # The test labels differ, so may the test scores; the validation scores are the same, bit for bit.
    assert plain["validation"] == shuffled["validation"]
    assert plain["eval"] != shuffled["eval"] or plain["a_ft"] != shuffled["a_ft"]


def test_pixels_kept_in_memory_give_the_streamed_features(tiny_clip_dir, eurosat_copies, monkeypatch):
    kept = _scored(tiny_clip_dir, eurosat_copies[0])
    monkeypatch.setattr(evaluation_module, "MAX_SPLIT_BYTES", 0)  # every split streamed from its dataset
    assert _scored(tiny_clip_dir, eurosat_copies[0]) == kept


def _images(split) -> list[bytes]:
    return [np.asarray(row["image"]).tobytes() for row in split]


def test_a_validation_seed_of_its_own_keeps_the_hold_out_while_the_seed_draws_the_subsamples(tmp_path):
    # Validation scoring reads the fine-tuning runs' hold-out (seed 0); each unit draws its own probe and test sample.
    path = save_benchmark_like_dataset("eurosat", tmp_path / "eurosat", num_train=40, num_test=20)
    held_out = _images(load_benchmark("eurosat", data_path=path, seed=0).splits["validation"])
    units = [load_benchmark("eurosat", data_path=path, seed=seed, validation_seed=0, max_train_samples=10, max_eval_samples=8) for seed in (3, 4)]
    assert all(_images(unit.splits["validation"]) == held_out for unit in units)
    trains = [set(_images(unit.splits["train"])) for unit in units]
    assert not trains[0] & set(held_out) and not trains[1] & set(held_out)  # the probe never sees the validation rows
    assert trains[0] != trains[1] and _images(units[0].splits["test"]) != _images(units[1].splits["test"])
    # validation_seed equal to seed (or unset) is the split as before.
    assert _images(load_benchmark("eurosat", data_path=path, seed=2, validation_seed=2).splits["train"]) == _images(
        load_benchmark("eurosat", data_path=path, seed=2).splits["train"])
