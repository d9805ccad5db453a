"""Draw the world's images and write their captions, deterministically for a seed.

An image is a handwritten digit (scikit-learn's bundled 8x8 digits, upscaled) in one colour, on a grey
textured background, in one quadrant. A caption names a random non-empty subset of those concepts in
one of several phrasings, so a single-concept prompt ("a photo of a red digit.") is in distribution.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from .concepts import BACKGROUND_GREY, COLOUR, COLOUR_RGB, CONCEPTS, DIGIT, POSITION, TEXTURE, TEXTURE_GREY

SPLITS = ("train", "test")
# Handwriting is split once, independently of the world's seed, so a test image never reuses a
# training glyph: the digit task measures recognition of unseen handwriting.
_GLYPH_SPLIT_SEED = 0
_GLYPH_TEST_FRACTION = 0.2


@dataclass
class WorldSamples:
    """A batch of world images with the value of every concept and a caption each.

    Attributes:
        images: uint8 array [N, H, W, 3].
        labels: concept name -> int64 array [N] of value indices (into `Concept.values`).
        captions: N captions, each naming only values the image really has.
        glyph_indices: index of each image's glyph in `sklearn.datasets.load_digits()`.
    """

    images: np.ndarray
    labels: dict[str, np.ndarray]
    captions: list[str]
    glyph_indices: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def pil_images(self) -> list[Image.Image]:
        return [Image.fromarray(image, mode="RGB") for image in self.images]

    def labels_of(self, index: int) -> dict[str, int]:
        return {name: int(values[index]) for name, values in self.labels.items()}


@functools.lru_cache(maxsize=4)
def _glyphs(glyph_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All bundled digits as alpha masks in [0, 1] of shape [N, glyph_size, glyph_size], and their digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    masks = np.stack(
        [
            np.asarray(Image.fromarray((image / 16.0).astype(np.float32), mode="F").resize((glyph_size, glyph_size), Image.BILINEAR))
            for image in digits.images
        ]
    )
    return np.clip(masks, 0.0, 1.0), digits.target.astype(np.int64)


@functools.lru_cache(maxsize=4)
def _glyph_pool(split: str) -> tuple[np.ndarray, ...]:
    """Per digit, the indices of the glyphs reserved for `split` (a stratified 80/20 split)."""
    if split not in SPLITS:
        raise ValueError(f"unknown world split {split!r}; valid: {list(SPLITS)}")
    _, targets = _glyphs(8)
    rng = np.random.default_rng(_GLYPH_SPLIT_SEED)
    pools = []
    for digit in range(len(DIGIT.values)):
        indices = rng.permutation(np.flatnonzero(targets == digit))
        n_test = int(round(len(indices) * _GLYPH_TEST_FRACTION))
        pools.append(np.sort(indices[:n_test] if split == "test" else indices[n_test:]))
    return tuple(pools)


def texture_mask(texture: int, size: int, phase: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean [size, size] mask of where the texture's marks are drawn (phase shifts the pattern)."""
    y, x = np.mgrid[0:size, 0:size]
    y, x = y + phase, x + phase
    name = TEXTURE.values[texture]
    if name == "plain":
        return np.zeros((size, size), dtype=bool)
    if name == "striped":
        return y % 4 < 2
    if name == "checkered":
        return (y // 4 + x // 4) % 2 == 0
    if name == "dotted":
        return (y % 4 < 2) & (x % 4 < 2)
    if name == "noisy":
        return rng.random((size, size)) < 0.35
    raise AssertionError(f"texture {name!r} has no drawing")


def quadrant_origin(position: int, image_size: int) -> tuple[int, int]:
    """(row, column) of the top-left corner of the quadrant named by POSITION.values[position]."""
    vertical, horizontal = POSITION.values[position].split()
    half = image_size // 2
    return (0 if vertical == "top" else half, 0 if horizontal == "left" else half)


def render(
    labels: Mapping[str, int],
    glyph: np.ndarray,
    *,
    image_size: int = 32,
    offset: tuple[int, int] = (0, 0),
    phase: int = 0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Draw one image (uint8 [H, W, 3]) for the given concept values.

    `glyph` is an alpha mask in [0, 1]; it is placed `offset` pixels into the quadrant of
    `labels["position"]` and blended in the colour of `labels["colour"]` over the textured background.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    background = np.full((image_size, image_size), BACKGROUND_GREY, dtype=np.float32)
    background[texture_mask(labels["texture"], image_size, phase, rng)] = TEXTURE_GREY
    image = np.repeat(background[:, :, None], 3, axis=2)
    row, col = quadrant_origin(labels["position"], image_size)
    row, col = row + offset[0], col + offset[1]
    size = glyph.shape[0]
    alpha = glyph[:, :, None]
    colour = np.asarray(COLOUR_RGB[labels["colour"]], dtype=np.float32)
    patch = image[row : row + size, col : col + size]
    image[row : row + size, col : col + size] = patch * (1.0 - alpha) + colour * alpha
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou8" else "a"


def describe(labels: Mapping[str, int], rng: np.random.Generator, mention_probability: float | Mapping[str, float] = 0.5) -> str:
    """A caption that names a random non-empty subset of the image's concept values.

    Each concept is mentioned with its `mention_probability` (one number for all, or one per concept
    name; at least one concept always is); its phrasing and the order of the trailing phrases are
    random too.
    """
    mentioned = {c.name for c in CONCEPTS if rng.random() < _probability(mention_probability, c.name)}
    if not mentioned:
        mentioned = {CONCEPTS[int(rng.integers(len(CONCEPTS)))].name}
    digit = DIGIT.values[labels["digit"]] if "digit" in mentioned else None
    colour = COLOUR.values[labels["colour"]] if "colour" in mentioned else None
    colour_as_adjective = colour is not None and rng.random() < 0.7

    noun = str(rng.choice(["digit", "number"]))
    if digit is not None:
        form = int(rng.integers(3))
        if form == 0:
            phrase, article = f"{noun} {digit}", "the"
        elif form == 1:
            phrase, article = f"handwritten {digit}", None
        else:
            phrase, article = digit, None
    else:
        phrase, article = noun, None
    if colour_as_adjective:
        phrase = f"{colour} {phrase}"
    if article is None:
        article = _article(phrase)
    subject = f"{article} {phrase}"

    trailing = []
    if colour is not None and not colour_as_adjective:
        trailing.append(str(rng.choice([f"in {colour}", f"coloured {colour}", f"drawn in {colour}"])))
    if "texture" in mentioned:
        texture = TEXTURE.values[labels["texture"]]
        trailing.append(str(rng.choice([f"on a {texture} background", f"over a {texture} background", f"with a {texture} background"])))
    if "position" in mentioned:
        position = POSITION.values[labels["position"]]
        trailing.append(str(rng.choice([f"in the {position}", f"in the {position} corner", f"at the {position}"])))
    rng.shuffle(trailing)
    prefix = str(rng.choice(["a photo of ", "an image of ", "a picture of ", ""]))
    return prefix + " ".join([subject, *trailing]) + "."


def _probability(mention_probability: float | Mapping[str, float], concept: str) -> float:
    return mention_probability if isinstance(mention_probability, (int, float)) else mention_probability[concept]


class ConceptWorld:
    """The image-caption world: `sample(n, split, stream)` gives the same samples for the same arguments.

    Args:
        seed: base seed; every stream of samples is derived from it.
        image_size: side of the square RGB images (even).
        glyph_size: side of the upscaled digit; at most half the image, the rest of the quadrant is the
            room the digit is randomly shifted in.
        mention_probability: chance that a caption names a concept: one for all, or concept name -> chance.
    """

    def __init__(self, seed: int = 0, image_size: int = 32, glyph_size: int = 16, mention_probability: float | Mapping[str, float] = 0.5):
        if image_size % 2 or not 8 <= glyph_size <= image_size // 2:
            raise ValueError(
                f"need an even image_size and 8 <= glyph_size <= image_size // 2; got image_size={image_size}, glyph_size={glyph_size}"
            )
        for concept in CONCEPTS:
            if not 0.0 <= _probability(mention_probability, concept.name) <= 1.0:
                raise ValueError(f"mention probabilities must be in [0, 1], got {mention_probability}")
        self.seed = seed
        self.image_size = image_size
        self.glyph_size = glyph_size
        self.mention_probability = mention_probability

    def sample(self, n: int, split: str = "train", stream: int = 0) -> WorldSamples:
        """`n` images with independent uniformly drawn concept values, their labels and captions.

        `split` picks the handwriting pool ("train" or "test"); `stream` tells apart independent
        draws from the same split (pre-training pairs vs. a task's training set, say).
        """
        pools = _glyph_pool(split)
        masks, _ = _glyphs(self.glyph_size)
        rng = np.random.default_rng([self.seed, SPLITS.index(split), stream])
        labels = {c.name: rng.integers(len(c.values), size=n) for c in CONCEPTS}
        room = self.image_size // 2 - self.glyph_size
        images = np.empty((n, self.image_size, self.image_size, 3), dtype=np.uint8)
        glyph_indices = np.empty(n, dtype=np.int64)
        captions = []
        for i in range(n):
            values = {name: int(v[i]) for name, v in labels.items()}
            pool = pools[values["digit"]]
            glyph_indices[i] = pool[rng.integers(len(pool))]
            offset = (int(rng.integers(room + 1)), int(rng.integers(room + 1)))
            images[i] = render(
                values, masks[glyph_indices[i]], image_size=self.image_size, offset=offset, phase=int(rng.integers(4)), rng=rng
            )
            captions.append(describe(values, rng, self.mention_probability))
        return WorldSamples(images=images, labels=labels, captions=captions, glyph_indices=glyph_indices)

    def captions(self, labels: Mapping[str, Sequence[int]], rng: np.random.Generator) -> list[str]:
        """Fresh captions for already drawn images (pre-training re-captions its pairs every epoch)."""
        n = len(next(iter(labels.values())))
        return [describe({name: int(v[i]) for name, v in labels.items()}, rng, self.mention_probability) for i in range(n)]
