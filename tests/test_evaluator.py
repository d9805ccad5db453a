"""Concept-forgetting evaluation on a tiny CLIP and generated benchmarks: ZS/LP accuracy, Δ, A_FT,
distances, feature caching, sequences (eq. 5), the local `evaluate` metric and the error cases."""

import copy
import json
import os

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPProcessor

from ldifs_hf.benchmarks import BenchmarkError, LoadedBenchmark, load_benchmark
from ldifs_hf.evaluation import (
    CheckpointError,
    ConceptForgettingEvaluator,
    EvaluatorSettings,
    evaluate_sequence,
    feature_distance,
    load_checkpoint,
    parameter_distance,
    sequence_deltas,
)
from ldifs_hf.evaluation import evaluator as evaluation_module
from ldifs_hf.evaluation.evaluator import accuracy_deltas
from ldifs_hf.records import RunRecord
from ldifs_hf.heads import fit_linear_probe
from ldifs_hf.modeling import CLIPVisionClassifier, encode_texts
from ldifs_hf.testing import save_benchmark_like_dataset

BENCHMARKS = ["eurosat", "mnist"]


@pytest.fixture(scope="module")
def dataset_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    return {name: save_benchmark_like_dataset(name, root / name, num_train=20, num_test=10) for name in BENCHMARKS}


@pytest.fixture(scope="module")
def evaluator(tiny_clip_dir, dataset_paths):
    settings = EvaluatorSettings(dataset_paths=dataset_paths, device="cpu", lp_iterations=100, feature_distance_samples=8)
    return ConceptForgettingEvaluator.from_pretrained(tiny_clip_dir, settings)


def _moved(model, scale=0.05, seed=1):
    """A copy whose vision tower has moved away from `model`'s."""
    moved = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in moved.vision_model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return moved


@pytest.fixture(scope="module")
def classifier_dir(evaluator, tmp_path_factory):
    """A saved CLIPVisionClassifier fine-tuned on eurosat (a ZS head, moved tower) with its run record."""
    head = evaluator.zero_shot_weights("eurosat") * evaluator.pretrained.logit_scale.exp().item()
    classifier = CLIPVisionClassifier.from_clip(evaluator.pretrained, head, id2label=dict(enumerate(evaluator.benchmark("eurosat").class_names)))
    path = tmp_path_factory.mktemp("classifier")
    _moved(classifier).save_pretrained(path)
    with open(path / "ldifs_run.json", "w") as f:
        json.dump({"method": "zs-init-ce", "dataset": "eurosat", "base_model": "some/base"}, f)
    return str(path)


def test_zero_shot_accuracy_matches_an_independent_computation(evaluator, tiny_clip_dir, dataset_paths):
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    bench = load_benchmark("eurosat", data_path=dataset_paths["eurosat"])
    test = bench.splits["test"]
    with torch.no_grad():
        pixels = processor.image_processor(images=[im.convert("RGB") for im in test["image"]], return_tensors="pt")["pixel_values"]
        image = F.normalize(model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output), dim=-1)
        heads = []
        for c in range(bench.num_classes):
            tokens = processor.tokenizer(bench.prompts(c), padding=True, truncation=True, return_tensors="pt")
            heads.append(F.normalize(F.normalize(encode_texts(model, tokens["input_ids"], tokens["attention_mask"]), dim=-1).mean(0), dim=-1))
    expected = ((image @ torch.stack(heads).T).argmax(-1) == torch.tensor(test["label"])).float().mean().item()
    assert evaluator.zero_shot_accuracy(load_checkpoint(tiny_clip_dir), "eurosat") == pytest.approx(expected, abs=1e-6)


def test_linear_probe_accuracy_is_the_probe_fitted_on_train_features(evaluator):
    accuracy = evaluator.linear_probe_accuracy(evaluator.pretrained, "mnist")
    train_features, train_labels = evaluator.features(evaluator.pretrained, "mnist", "train", "pretrained")
    test_features, test_labels = evaluator.features(evaluator.pretrained, "mnist", "test", "pretrained")
    weight, bias = fit_linear_probe(train_features, train_labels, 10, iterations=100)
    assert accuracy == pytest.approx(((test_features @ weight.T + bias).argmax(-1) == test_labels).float().mean().item())
    assert accuracy > 0.5  # the generated classes are colours: separable even for a random tower


def test_pretrained_against_itself_has_exactly_zero_delta_and_distance(evaluator, tiny_clip_dir):
    for checkpoint in (evaluator.pretrained, load_checkpoint(tiny_clip_dir), evaluator.load(tiny_clip_dir)):
        record = evaluator.evaluate(checkpoint, BENCHMARKS)
        for values in record["eval"].values():
            assert values["delta_zs"] == 0.0 and values["delta_lp"] == 0.0 and values["feature_distance"] == 0.0
        assert record["param_distance"] == 0.0 and record["feature_distance"] == 0.0


def test_distances_grow_as_weights_move(evaluator):
    pretrained = evaluator.pretrained
    test = evaluator.benchmark("eurosat").splits["test"]
    assert parameter_distance(pretrained, pretrained) == 0.0
    near, far = _moved(pretrained, 0.01), _moved(pretrained, 0.05)
    assert 0 < parameter_distance(near, pretrained) < parameter_distance(far, pretrained)
    assert 0 < feature_distance(near, pretrained, test, batch_size=10) < feature_distance(far, pretrained, test, batch_size=10)
    # Only the image encoder counts: moving the text tower changes nothing.
    text_moved = copy.deepcopy(pretrained)
    with torch.no_grad():
        text_moved.text_projection.weight.add_(1.0)
    assert parameter_distance(text_moved, pretrained) == 0.0


def test_features_are_extracted_once_per_checkpoint_and_split(evaluator, classifier_dir, monkeypatch):
    calls = []
    original = evaluation_module.extract_features

    def counting(model, dataset, **kwargs):
        calls.append(kwargs.get("desc"))
        return original(model, dataset, **kwargs)

    evaluator.pretrained_accuracies(BENCHMARKS)  # the reference's features, whichever test asked first
    monkeypatch.setattr(evaluation_module, "extract_features", counting)
    monkeypatch.setattr(evaluation_module, "MAX_SPLIT_BYTES", 0)  # every split streamed from its dataset
    record = evaluator.evaluate(load_checkpoint(classifier_dir), BENCHMARKS, finetune_benchmark="eurosat", distances=False)
    assert sorted(calls) == ["eurosat/test features", "eurosat/train features", "mnist/test features", "mnist/train features"]
    assert set(record["eval"]) == set(BENCHMARKS) and record["a_ft"] is not None
    # Small splits kept as pixels: the same scores, and one forward pass per set of images. The generated
    # eurosat and mnist copies hold the same images (the same seed draws them), so each split's pass serves both.
    encoded, encode = [], evaluation_module._encode_pixels
    monkeypatch.setattr(evaluation_module, "_encode_pixels", lambda model, pixels, *a: encoded.append(len(pixels)) or encode(model, pixels, *a))
    monkeypatch.setattr(evaluation_module, "MAX_SPLIT_BYTES", 2 ** 30)
    calls.clear()
    kept = evaluator.evaluate(load_checkpoint(classifier_dir), BENCHMARKS, finetune_benchmark="eurosat", distances=False)
    assert calls == [] and sorted(encoded) == [10, 20] and kept == record


def test_classifier_checkpoint_a_ft_and_deltas(evaluator, classifier_dir):
    model = load_checkpoint(classifier_dir)
    assert isinstance(model, CLIPVisionClassifier)
    record = evaluator.evaluate(model, ["eurosat"], finetune_benchmark="eurosat")
    # A_FT from cached features and the head equals the classifier's own forward pass.
    test = evaluator.benchmark("eurosat").splits["test"]
    batch = [test[i] for i in range(len(test))]
    with torch.no_grad():
        logits = model(pixel_values=torch.stack([b["pixel_values"] for b in batch])).logits
    expected = (logits.argmax(-1) == torch.tensor([b["labels"] for b in batch])).float().mean().item()
    assert record["a_ft"] == pytest.approx(expected)
    pretrained = evaluator.pretrained_accuracies(["eurosat"])["eurosat"]
    assert record["eval"]["eurosat"]["delta_lp"] == pytest.approx(record["eval"]["eurosat"]["lp_acc"] - pretrained["lp"])
    assert record["param_distance"] > 0
    assert RunRecord.find(classifier_dir).method == "zs-init-ce"


def test_checkpoint_text_tower_option_uses_the_checkpoints_own_text_tower(evaluator):
    flyp = copy.deepcopy(evaluator.pretrained)
    with torch.no_grad():
        flyp.text_projection.weight.mul_(-1)  # flips every text embedding: the own-tower head flips too
    own = evaluator.zero_shot_weights("eurosat", flyp)
    torch.testing.assert_close(own, -evaluator.zero_shot_weights("eurosat"))
    features, labels = evaluator.features(evaluator.pretrained, "eurosat", "test", "pretrained")
    expected = ((features @ own.T).argmax(-1) == labels).float().mean().item()
    assert evaluator.zero_shot_accuracy(flyp, "eurosat", text_tower="checkpoint") == pytest.approx(expected)
    assert evaluator.zero_shot_accuracy(flyp, "eurosat") == evaluator.pretrained_accuracies(["eurosat"])["eurosat"]["zs"]


def test_accuracy_and_sequence_deltas():
    pre, first, second = {"a": {"zs": 0.5, "lp": 0.9}}, {"a": {"zs": 0.7, "lp": 0.8}}, {"a": {"zs": 0.6, "lp": 0.85}}
    assert accuracy_deltas(first, pre) == {"a": pytest.approx({"zs": 0.2, "lp": -0.1})}
    deltas = sequence_deltas([pre, first, second])
    assert deltas[0]["a"] == pytest.approx({"zs": 0.2, "lp": -0.1})
    assert deltas[1]["a"] == pytest.approx({"zs": -0.1, "lp": -0.05})  # against max over f_0, f_1
    with pytest.raises(ValueError, match="at least one fine-tuned"):
        sequence_deltas([pre])


def test_evaluate_sequence_records(evaluator):
    records = evaluate_sequence(evaluator, [evaluator.pretrained, _moved(evaluator.pretrained)], ["mnist"], tasks=["mnist", None])
    assert [r["task_index"] for r in records] == [1, 2]
    assert records[0]["eval"]["mnist"]["sequence_delta_lp"] == 0.0
    first, second = records[0]["eval"]["mnist"], records[1]["eval"]["mnist"]
    assert second["sequence_delta_zs"] == pytest.approx(second["zs_acc"] - max(first["zs_acc"], evaluator.pretrained_accuracies(["mnist"])["mnist"]["zs"]))


def test_concept_forgetting_metric_loads_offline_by_path(monkeypatch):
    import socket

    import evaluate

    from ldifs_hf.metrics import CONCEPT_FORGETTING, load_concept_forgetting

    def no_network(*args, **kwargs):
        raise AssertionError("the local metric must not open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    metric = load_concept_forgetting()
    assert metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0], pretrained_predictions=[0, 0, 0, 0]) == {
        "accuracy": 0.75, "pretrained_accuracy": 0.75, "delta": 0.0,
    }
    by_dir = evaluate.load(os.path.dirname(CONCEPT_FORGETTING))
    result = by_dir.compute(predictions=[1, 1], references=[1, 0], pretrained_accuracy=1.0, previous_accuracies=[0.2, 0.6])
    assert result == pytest.approx({"accuracy": 0.5, "delta": -0.5, "sequence_delta": -0.1})


def test_bad_checkpoints_are_clear_errors(tmp_path, evaluator):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "missing"))
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(str(tmp_path))
    with pytest.raises(CheckpointError, match="(?s)as a Hub model id.*hf download"):
        load_checkpoint("someone/not-in-the-offline-cache")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is a file"):
        load_checkpoint(str(tmp_path / "weights.bin"))
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="'bert' model"):
        evaluator.load(str(tmp_path / "bert"))


def test_unknown_benchmark_is_the_registrys_error(evaluator):
    with pytest.raises(BenchmarkError, match="Unknown benchmark 'imagenet-xyz'.*eurosat"):
        evaluator.evaluate(evaluator.pretrained, ["imagenet-xyz"])


def _custom_benchmark(class_names, templates):
    images = [np.full((8, 8, 3), 40 * i, dtype=np.uint8) for i in range(4)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    split = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]}, features=features)
    from ldifs_hf.benchmarks import BenchmarkSpec

    return LoadedBenchmark(BenchmarkSpec("nameless", None), datasets.DatasetDict(train=split, validation=split, test=split), class_names, templates)


def test_classes_that_cannot_be_prompted_are_clear_errors(evaluator, tmp_path):
    with pytest.raises(ValueError, match=r"classes \[1\] have no usable name"):
        evaluator.benchmark(_custom_benchmark(["cat", " "], ["a photo of a {}."]))
    with pytest.raises(ValueError, match="must contain"):
        evaluator.benchmark(_custom_benchmark(["cat", "dog"], ["a photo"]))
    # A dataset whose labels are plain integers has no class names at all.
    plain = datasets.Dataset.from_dict({"image": [np.zeros((8, 8, 3), dtype=np.uint8)] * 2, "label": [0, 1]}).cast_column("image", datasets.Image())
    datasets.DatasetDict(train=plain, test=plain).save_to_disk(tmp_path / "plain")
    with pytest.raises(BenchmarkError, match="not a ClassLabel"):
        settings = EvaluatorSettings(dataset_paths={"custom": str(tmp_path / "plain")}, device="cpu")
        ConceptForgettingEvaluator(evaluator.pretrained, evaluator.processor, settings).benchmark("custom")
