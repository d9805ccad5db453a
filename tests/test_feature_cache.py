"""A damaged evaluation-cache entry is named in one warning line, deleted and computed again."""

import logging
import os

import pytest
import torch

from ldifs_hf.evaluation import ConceptForgettingEvaluator, EvaluatorSettings
from ldifs_hf.evaluation import evaluator as evaluation_module
from ldifs_hf.evaluation.cache import EvaluationCache, key_digest
from ldifs_hf.testing import save_benchmark_like_dataset

KEY = {"kind": "features", "benchmark": "mnist"}


def _damage_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ldifs_hf.evaluation.cache" and r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: b"\xff" * 64, id="garbage"),
    ],
)
def test_damaged_features_entry_is_named_dropped_and_rewritable(tmp_path, caplog, damage):
    cache = EvaluationCache(tmp_path)
    cache.save_features(KEY, torch.ones(2, 3), torch.tensor([0, 1]))
    path = tmp_path / (key_digest(KEY) + ".safetensors")
    path.write_bytes(damage(path.read_bytes()))

    with caplog.at_level(logging.WARNING, logger="ldifs_hf.evaluation.cache"):
        assert cache.load_features(KEY) is None
    (message,) = _damage_warnings(caplog)
    assert str(path) in message and "damaged" in message and "\n" not in message
    assert not path.exists()
    cache.save_features(KEY, torch.zeros(2, 3), torch.tensor([1, 0]))
    features, labels = cache.load_features(KEY)
    assert torch.equal(features, torch.zeros(2, 3)) and labels.tolist() == [1, 0]


def test_features_entry_with_wrong_shapes_is_dropped(tmp_path, caplog):
    cache = EvaluationCache(tmp_path)
    cache.save_features(KEY, torch.ones(3, 2), torch.tensor([0, 1]))  # 3 features, 2 labels
    with caplog.at_level(logging.WARNING, logger="ldifs_hf.evaluation.cache"):
        assert cache.load_features(KEY) is None
    (message,) = _damage_warnings(caplog)
    assert "(3, 2)" in message and "(2,)" in message
    assert not (tmp_path / (key_digest(KEY) + ".safetensors")).exists()


@pytest.mark.parametrize("content", ['{"key": "x", "value": {"zs": 0.', "[1, 2]", '{"key": "x", "value": 3}', "\udcff"], ids=["truncated", "list", "value", "not-utf8"])
def test_damaged_accuracies_entry_is_named_and_dropped(tmp_path, caplog, content):
    cache = EvaluationCache(tmp_path)
    cache.save_accuracies(KEY, {"zs": 0.5})
    path = tmp_path / (key_digest(KEY) + ".json")
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with caplog.at_level(logging.WARNING, logger="ldifs_hf.evaluation.cache"):
        assert cache.load_accuracies(KEY) is None
    (message,) = _damage_warnings(caplog)
    assert str(path) in message and "\n" not in message
    assert not path.exists()


def test_evaluator_recomputes_a_damaged_entry(tiny_clip_dir, tmp_path, caplog, monkeypatch):
    paths = {"mnist": save_benchmark_like_dataset("mnist", tmp_path / "mnist", num_train=20, num_test=10)}
    cache_dir = tmp_path / "cache"
    settings = EvaluatorSettings(dataset_paths=paths, device="cpu", lp_iterations=20, feature_cache_dir=str(cache_dir))
    first = ConceptForgettingEvaluator.from_pretrained(tiny_clip_dir, settings)
    expected = first.pretrained_accuracies(["mnist"])
    for name in os.listdir(cache_dir):  # truncate every entry, features and accuracies
        data = (cache_dir / name).read_bytes()
        (cache_dir / name).write_bytes(data[: len(data) // 3])

    calls = []  # features computed, by either path: streamed from the dataset, or from pixels kept in memory (small splits)
    for name in ("extract_features", "_encode_pixels"):
        real = getattr(evaluation_module, name)
        monkeypatch.setattr(evaluation_module, name, lambda *a, real=real, **k: calls.append(1) or real(*a, **k))
    second = ConceptForgettingEvaluator.from_pretrained(tiny_clip_dir, settings)
    with caplog.at_level(logging.WARNING, logger="ldifs_hf.evaluation.cache"):
        assert second.pretrained_accuracies(["mnist"]) == expected
    assert len(calls) == 2  # train and test features computed again
    assert len(_damage_warnings(caplog)) == 3  # the accuracies and both features entries
    # The recomputed entries were written back and read without warnings.
    caplog.clear()
    third = ConceptForgettingEvaluator.from_pretrained(tiny_clip_dir, settings)
    with caplog.at_level(logging.WARNING, logger="ldifs_hf.evaluation.cache"):
        assert third.pretrained_accuracies(["mnist"]) == expected
    assert _damage_warnings(caplog) == []
