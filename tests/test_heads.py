"""Zero-shot and linear-probe heads, and feature extraction, on a tiny offline CLIP."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPModel, CLIPProcessor, pipeline

from ldifs_hf.benchmarks import fill_templates
from ldifs_hf.heads import extract_features, fit_linear_probe, zero_shot_classifier
from ldifs_hf.tiny import make_tiny_clip

CLASS_NAMES = ["cat", "dog", "river", "forest"]
TEMPLATES = ["a photo of a {}.", "a blurry photo of a {}."]


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    texts = [t.format(c) for c in CLASS_NAMES for t in TEMPLATES]
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), texts=texts, seed=0)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(12)]


def _pixel_dataset(processor, images, labels):
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    return [{"pixel_values": pv, "labels": label} for pv, label in zip(pixel_values, labels)]


def test_zero_shot_head_matches_an_independent_computation(tiny_clip_dir):
    model = CLIPModel.from_pretrained(tiny_clip_dir)
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    head = zero_shot_classifier(model, processor.tokenizer, CLASS_NAMES, TEMPLATES)
    assert head.shape == (len(CLASS_NAMES), model.config.projection_dim) and head.dtype == torch.float32
    torch.testing.assert_close(head.norm(dim=-1), torch.ones(len(CLASS_NAMES)))
    with torch.no_grad():
        for c, name in enumerate(CLASS_NAMES):
            tokens = processor.tokenizer([t.format(name) for t in TEMPLATES], padding=True, return_tensors="pt")
            text = model.text_projection(model.text_model(**tokens).pooler_output)
            expected = F.normalize(F.normalize(text, dim=-1).mean(0), dim=-1)
            torch.testing.assert_close(head[c], expected, atol=1e-5, rtol=1e-5)


def test_zero_shot_argmax_equals_the_transformers_pipeline(tiny_clip_dir, images):
    model = CLIPModel.from_pretrained(tiny_clip_dir)
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    template = "a photo of a {}."
    head = zero_shot_classifier(model, processor.tokenizer, CLASS_NAMES, [template])
    features, _ = extract_features(model, _pixel_dataset(processor.image_processor, images, [0] * len(images)), batch_size=5)
    ours = [CLASS_NAMES[i] for i in (features @ head.T).argmax(-1).tolist()]

    classifier = pipeline("zero-shot-image-classification", model=tiny_clip_dir, device="cpu")
    theirs = [result[0]["label"] for result in classifier(images, candidate_labels=CLASS_NAMES, hypothesis_template=template)]
    assert ours == theirs


def test_extract_features_is_normalised_restores_mode_and_keeps_order(tiny_clip_dir, images):
    model = CLIPModel.from_pretrained(tiny_clip_dir).train()
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    labels = [i % 3 for i in range(len(images))]
    features, got_labels = extract_features(model, _pixel_dataset(processor.image_processor, images, labels), batch_size=5, desc="test")
    assert model.training
    assert features.shape == (len(images), model.config.projection_dim)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(len(images)))
    assert got_labels.tolist() == labels
    model.eval()
    with torch.no_grad():
        pixel_values = processor.image_processor(images=images[:2], return_tensors="pt")["pixel_values"]
        direct = F.normalize(model.visual_projection(model.vision_model(pixel_values=pixel_values).pooler_output), dim=-1)
    torch.testing.assert_close(features[:2], direct, atol=1e-5, rtol=1e-5)


def _separable(n=120, dim=16, classes=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(classes, dim, generator=generator), dim=-1) * 3
    labels = torch.arange(n) % classes
    return centres[labels] + 0.1 * torch.randn(n, dim, generator=generator), labels


@pytest.mark.parametrize("solver", ["adamw", "logistic"])
def test_linear_probe_separates_separable_features(solver):
    features, labels = _separable(n=240)
    weight, bias = fit_linear_probe(features[:120], labels[:120], 4, solver=solver, iterations=200)
    assert weight.shape == (4, 16) and bias.shape == (4,)
    held_out = F.normalize(features[120:], dim=-1)  # the probe expects unit-normalised features
    assert (F.linear(held_out, weight, bias).argmax(-1) == labels[120:]).float().mean() == 1.0


def test_linear_probe_on_shuffled_labels_is_near_chance():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 16, generator=generator)
    labels = torch.randint(0, 4, (400,), generator=generator)
    weight, bias = fit_linear_probe(features[:200], labels[:200], 4, iterations=200)
    accuracy = (F.linear(F.normalize(features[200:], dim=-1), weight, bias).argmax(-1) == labels[200:]).float().mean()
    assert 0.1 < accuracy < 0.45


def test_linear_probe_is_deterministic_and_handles_missing_and_binary_classes():
    features, labels = _separable(n=40, classes=2)
    first = fit_linear_probe(features, labels, 3, iterations=50)
    second = fit_linear_probe(features, labels, 3, iterations=50)
    torch.testing.assert_close(first, second)
    weight, bias = fit_linear_probe(features, labels, 3, solver="logistic")
    predictions = F.linear(F.normalize(features, dim=-1), weight, bias).argmax(-1)
    assert (predictions == labels).all()  # class 2 never appears, and never wins


def test_bad_inputs_are_clear_errors(tiny_clip_dir):
    features, labels = _separable(n=20)
    with pytest.raises(ValueError, match="unknown linear-probe solver 'svm'"):
        fit_linear_probe(features, labels, 4, solver="svm")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        fit_linear_probe(features, labels, 2)
    with pytest.raises(ValueError, match="must contain"):
        fill_templates("cat", ["a photo"])
    model = CLIPModel.from_pretrained(tiny_clip_dir)
    with pytest.raises(TypeError, match="text tower"):
        zero_shot_classifier(model.vision_model, None, ["cat"], ["{}"])


def test_vectorised_adamw_probe_equals_torch_adamw_with_the_chosen_lr():
    features, labels = _separable(n=60)
    features = F.normalize(features, dim=-1)
    # A single candidate lr skips selection, so the fit is plain AdamW on all the data, from the first
    # fresh nn.Linear drawn after torch.manual_seed(seed).
    weight, bias = fit_linear_probe(features, labels, 4, lrs=(0.05,), iterations=30, seed=3)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        init = torch.nn.Linear(16, 4)
    ref_weight, ref_bias = init.weight.detach().clone().requires_grad_(), init.bias.detach().clone().requires_grad_()
    optimizer = torch.optim.AdamW([ref_weight, ref_bias], lr=0.05)
    for _ in range(30):
        optimizer.zero_grad()
        F.cross_entropy(F.linear(features, ref_weight, ref_bias), labels).backward()
        optimizer.step()
    torch.testing.assert_close(weight, ref_weight.detach(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(bias, ref_bias.detach(), atol=1e-5, rtol=1e-4)
