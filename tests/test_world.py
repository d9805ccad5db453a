"""The embedded concept world: what is drawn matches the labels, captions tell the truth, the cache works."""

import dataclasses
import re

import numpy as np
import pytest
import torch
from transformers import CLIPModel, CLIPProcessor

from ldifs_hf.benchmarks import get_benchmark, registry
from ldifs_hf.benchmarks import image_transform, load_benchmark
from ldifs_hf.world import (
    CACHE_ENV,
    CONCEPTS,
    ConceptWorld,
    WorldSettings,
    describe,
    get_concept,
    pixel_values,
    prepare_world,
    pretrained_world_clip,
    world_cache_dir,
    world_task_names,
)
from ldifs_hf.world import pretrain as pretrain_module
from ldifs_hf.world.concepts import BACKGROUND_GREY, COLOUR, COLOUR_RGB, DIGIT, POSITION, TEXTURE, TEXTURE_GREY
from ldifs_hf.world.generator import _glyph_pool

N = 60


@pytest.fixture(scope="module")
def samples():
    return ConceptWorld(seed=0).sample(N, split="train", stream=0)


def _foreground(image: np.ndarray) -> np.ndarray:
    """Pixels that are neither of the two background greys: the glyph and its blended edge."""
    grey = (image == image[:, :, :1]).all(axis=2) & np.isin(image[:, :, 0], (BACKGROUND_GREY, TEXTURE_GREY))
    return ~grey


def _consistent_colours(image: np.ndarray) -> list[int]:
    """Colours c such that every foreground pixel is a blend of a background grey and c (up to rounding)."""
    pixels = image[_foreground(image)].astype(np.float64)
    consistent = []
    for index, rgb in enumerate(COLOUR_RGB):
        colour = np.asarray(rgb, dtype=np.float64)
        residuals = []
        for grey in (BACKGROUND_GREY, TEXTURE_GREY):
            direction = colour - grey
            alpha = np.clip((pixels - grey) @ direction / (direction @ direction), 0.0, 1.0)
            residuals.append(np.linalg.norm(pixels - (grey + alpha[:, None] * direction), axis=1))
        if np.min(residuals, axis=0).max() <= 1.5:
            consistent.append(index)
    return consistent


def _quadrant(row: float, col: float, size: int) -> str:
    return f"{'top' if row < size / 2 else 'bottom'} {'left' if col < size / 2 else 'right'}"


def _classify_texture(patch: np.ndarray) -> str:
    """Name the texture of a glyph-free 16x16 background patch from its pixels alone."""
    marks = patch[:, :, 0] == TEXTURE_GREY
    if not marks.any():
        return "plain"
    if (marks == marks[:, :1]).all() and (marks[2:] != marks[:-2]).all():
        return "striped"
    if (marks[:, 4:] != marks[:, :-4]).all() and (marks[4:] != marks[:-4]).all():
        return "checkered"
    if marks.mean() == 0.25 and (marks[:, 4:] == marks[:, :-4]).all() and (marks[4:] == marks[:-4]).all():
        return "dotted"
    return "noisy"


def test_glyph_colour_matches_label(samples):
    for image, colour in zip(samples.images, samples.labels["colour"]):
        assert _consistent_colours(image) == [colour], COLOUR.values[colour]
        # The most inked pixels show (nearly) the colour itself, not a faint blend.
        rgb = np.asarray(COLOUR_RGB[colour], dtype=np.float64)
        assert np.linalg.norm(image - rgb, axis=2).min() < 0.25 * np.linalg.norm(rgb - TEXTURE_GREY)


def test_glyph_mass_lies_in_labelled_quadrant(samples):
    for image, position in zip(samples.images, samples.labels["position"]):
        rows, cols = np.nonzero(_foreground(image))
        assert _quadrant(rows.mean(), cols.mean(), image.shape[0]) == POSITION.values[position]
        assert {_quadrant(r, c, image.shape[0]) for r, c in zip(rows, cols)} == {POSITION.values[position]}


def test_background_texture_matches_label(samples):
    for image, texture, position in zip(samples.images, samples.labels["texture"], samples.labels["position"]):
        # The quadrant diagonally opposite the glyph holds only background.
        opposite = 3 - position
        row, col = (0 if opposite < 2 else 16), (16 if opposite % 2 else 0)
        assert _classify_texture(image[row : row + 16, col : col + 16]) == TEXTURE.values[texture]


def test_digit_label_is_the_glyphs_digit_and_test_handwriting_is_unseen(samples):
    from sklearn.datasets import load_digits

    targets = load_digits().target
    np.testing.assert_array_equal(targets[samples.glyph_indices], samples.labels["digit"])
    test = ConceptWorld(seed=0).sample(N, split="test")
    np.testing.assert_array_equal(targets[test.glyph_indices], test.labels["digit"])
    train_pool = set(np.concatenate(_glyph_pool("train")).tolist())
    assert not set(test.glyph_indices.tolist()) & train_pool
    assert set(samples.glyph_indices.tolist()) <= train_pool


def test_glyph_is_drawn_from_the_digit_image():
    world = ConceptWorld(seed=0, glyph_size=16)
    s = world.sample(5)
    from sklearn.datasets import load_digits

    for image, index in zip(s.images, s.glyph_indices):
        drawn = _foreground(image)
        ink = load_digits().images[index] > 0
        # Downsampled back to 8x8, the drawn mask covers the glyph's inked pixels.
        rows, cols = np.nonzero(drawn)
        r0, c0 = rows.min() // 16 * 16, cols.min() // 16 * 16
        coarse = drawn[r0 : r0 + 16, c0 : c0 + 16].reshape(8, 2, 8, 2).any(axis=(1, 3))
        assert (coarse[ink]).mean() > 0.95


def _mentions(caption: str, value: str) -> bool:
    return re.search(rf"\b{re.escape(value)}\b", caption) is not None


def test_captions_mention_only_true_values(samples):
    mentioned_any = 0
    for i, caption in enumerate(samples.captions):
        truth = samples.labels_of(i)
        said = 0
        for concept in CONCEPTS:
            for v, value in enumerate(concept.values):
                if _mentions(caption, value):
                    assert v == truth[concept.name], (caption, concept.name, truth)
                    said += 1
        mentioned_any += said > 0
    assert mentioned_any == len(samples)


def test_every_value_is_named_when_every_concept_is_mentioned():
    world = ConceptWorld(seed=1, mention_probability=1.0)
    s = world.sample(40)
    for i, caption in enumerate(s.captions):
        for concept in CONCEPTS:
            assert _mentions(caption, concept.values[s.labels_of(i)[concept.name]]), caption


@pytest.mark.parametrize("concept", CONCEPTS, ids=lambda c: c.name)
def test_single_concept_prompts_are_in_distribution(concept):
    """Each zero-shot template, filled with the image's value, is itself a caption the world writes."""
    only = {c.name: float(c is concept) for c in CONCEPTS}
    rng = np.random.default_rng(0)
    seen = set()
    for value in range(len(concept.values)):
        labels = {c.name: 0 for c in CONCEPTS} | {concept.name: value}
        seen |= {describe(labels, rng, only) for _ in range(200)}
    for template in concept.templates:
        for value in concept.values:
            assert template.format(value) in seen


def test_sampling_is_deterministic_and_streams_differ():
    a = ConceptWorld(seed=3).sample(10, stream=2)
    b = ConceptWorld(seed=3).sample(10, stream=2)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.captions == b.captions
    for name in a.labels:
        np.testing.assert_array_equal(a.labels[name], b.labels[name])
    assert not np.array_equal(a.images, ConceptWorld(seed=3).sample(10, stream=3).images)
    assert not np.array_equal(a.images, ConceptWorld(seed=4).sample(10, stream=2).images)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="glyph_size"):
        ConceptWorld(glyph_size=20)
    with pytest.raises(ValueError, match="mention"):
        ConceptWorld(mention_probability=1.5)
    with pytest.raises(ValueError, match="split"):
        ConceptWorld().sample(2, split="validation")
    with pytest.raises(ValueError, match="colour"):
        get_concept("shape")
    with pytest.raises(ValueError, match="mention_probabilities"):
        WorldSettings(mention_probabilities=(0.5,))
    with pytest.raises(ValueError, match="pretrain_steps"):
        WorldSettings(pretrain_steps=0)


def test_pixel_values_match_the_processor_path(tiny_clip_dir, samples):
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir).image_processor
    expected = image_transform(processor)({"image": samples.pil_images()[:4], "label": [0] * 4})["pixel_values"]
    got = pixel_values(samples.images[:4], processor.image_mean, processor.image_std)
    torch.testing.assert_close(got, torch.stack(expected))


TINY = WorldSettings(
    pretrain_images=48,
    pretrain_steps=3,
    batch_size=16,
    warmup_steps=1,
    hidden_size=16,
    projection_dim=16,
    vision_layers=2,
    text_layers=1,
    vocab_size=600,
    task_train_size=24,
    task_test_size=12,
)


def test_cache_dir_follows_argument_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert world_cache_dir(TINY) == tmp_path / "env" / "world" / TINY.fingerprint()
    assert world_cache_dir(TINY, tmp_path / "arg").parent.parent == tmp_path / "arg"
    assert WorldSettings(seed=1).fingerprint() != WorldSettings().fingerprint()
    # How tasks are drawn is not part of the model's key: changing it does not pre-train again.
    assert WorldSettings(task_noise=0.1).fingerprint() == WorldSettings().fingerprint()
    assert WorldSettings(task_noise=0.1).task_fingerprint() != WorldSettings().task_fingerprint()


def test_task_noise_is_added_to_task_images_only(tmp_path, monkeypatch, isolated_registry):
    import datasets

    from ldifs_hf.world import build_world_tasks

    clean = build_world_tasks(dataclasses.replace(TINY, task_noise=0.0), tmp_path / "clean")
    noisy = build_world_tasks(dataclasses.replace(TINY, task_noise=0.3), tmp_path / "noisy")
    for name in clean:
        a = np.stack([np.asarray(im, dtype=np.float32) for im in datasets.load_from_disk(str(clean[name]))["test"]["image"]])
        b = np.stack([np.asarray(im, dtype=np.float32) for im in datasets.load_from_disk(str(noisy[name]))["test"]["image"]])
        assert a.shape == b.shape
        assert 0.2 * 255 < (b - a).std() < 0.35 * 255  # about σ = 0.3 of the pixel range, less where clipped
    assert datasets.load_from_disk(str(clean["world-digit"]))["test"]["label"] == datasets.load_from_disk(str(noisy["world-digit"]))["test"]["label"]
    with pytest.raises(ValueError, match="task_noise must be in"):
        WorldSettings(task_noise=1.5)


@pytest.fixture
def isolated_registry(monkeypatch):
    # Registering world tasks must not leak into other tests that list the registry.
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_scaled_down_pretraining_writes_reloads_and_skips_the_cache(tmp_path, monkeypatch, isolated_registry):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    threads = torch.get_num_threads()
    world = prepare_world(TINY, progress=False)
    assert torch.get_num_threads() == threads
    assert world.model_dir == world_cache_dir(TINY) / "model"
    model = CLIPModel.from_pretrained(world.model_dir)
    processor = CLIPProcessor.from_pretrained(world.model_dir)
    assert model.config.vision_config.num_hidden_layers == 2 and model.config.text_config.num_hidden_layers == 1
    prompts = processor.tokenizer([t.format(v) for c in CONCEPTS for t in c.templates for v in c.values], padding=True)
    assert max(len(ids) for ids in prompts.input_ids) <= model.config.text_config.max_position_embeddings

    def must_not_train(*args, **kwargs):
        raise AssertionError("the cached model should have been reused")

    train = pretrain_module.pretrain_world_clip
    monkeypatch.setattr(pretrain_module, "pretrain_world_clip", must_not_train)
    assert pretrained_world_clip(TINY) == world.model_dir

    # Same settings and seed, trained again elsewhere: the same weights.
    monkeypatch.setattr(pretrain_module, "pretrain_world_clip", train)
    retrained = pretrained_world_clip(TINY, tmp_path / "other", progress=False)
    for (name, p), q in zip(model.state_dict().items(), CLIPModel.from_pretrained(retrained).state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)


def test_world_tasks_load_as_benchmarks(tmp_path, isolated_registry):
    from ldifs_hf.world import register_world_benchmarks

    # Without pixel noise, so that each image's colours can be checked against its label.
    names = register_world_benchmarks(dataclasses.replace(TINY, task_noise=0.0), tmp_path)
    assert names == world_task_names() == ["world-digit", "world-colour", "world-texture", "world-position"]
    spec = get_benchmark("world-colour")
    assert spec.hub_id is None and spec.class_names == COLOUR.values and spec.templates == COLOUR.templates
    colour = load_benchmark("world-colour", validation_fraction=0.25)
    assert {k: len(v) for k, v in colour.splits.items()} == {"train": 18, "validation": 6, "test": 12}
    assert colour.splits["test"].features["label"].names == list(COLOUR.values)
    for row in colour.splits["test"]:
        assert _consistent_colours(np.asarray(row["image"])) == [row["label"]]
    digit = load_benchmark("world-digit")
    assert digit.class_names == list(DIGIT.values) and digit.prompts(3) == ["a photo of the digit 3.", "a photo of the number 3."]
    # All tasks label the same images, each by its own concept.
    position = load_benchmark("world-position")
    assert np.array_equal(np.asarray(position.splits["test"][0]["image"]), np.asarray(colour.splits["test"][0]["image"]))
