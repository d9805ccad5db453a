"""The settings that determine the world, its pre-trained CLIP and its tasks, and where they are cached.

A folder per hash of the pre-training settings (`<cache root>/world/<fingerprint>`) holds the pre-trained
model, and in it a folder per hash of the task settings holds the task datasets: changing any setting
never reads a stale cache, and changing only how tasks are drawn does not pre-train again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .concepts import CONCEPTS
from .generator import ConceptWorld

logger = logging.getLogger(__name__)

CACHE_ENV = "LDIFS_HF_CACHE"
# Bump when the generator or the training loop changes what a given set of settings produces.
FORMAT_VERSION = 2
# Settings that change only the task datasets, not the pre-trained model.
TASK_FIELDS = ("task_train_size", "task_test_size", "task_noise")


# The world's sizes: "default" (the demo's numbers) and "quick" (scaled down, for tests; not for numbers).
WORLD_SIZES = ("default", "quick")


@dataclass(frozen=True)
class WorldSettings:
    """Everything that determines the world, its pre-trained CLIP and its tasks (hashed into the cache path).

    Args:
        seed (`int`, defaults to 0): seed of the images, captions, initialisation and batch order.
        image_size (`int`, defaults to 32) / glyph_size (`int`, defaults to 16): see `ConceptWorld`; a glyph
            filling its quadrant sits on the patch grid, which the tiny ViT needs to learn digits in minutes.
        mention_probabilities (`tuple[float, ...]`, defaults to (0.8, 0.3, 0.3, 0.7)): chance a caption names
            each concept, in `CONCEPTS` order (digit, colour, texture, position). The easy concepts (colour,
            texture) are named less, or they starve the contrastive signal of the hard ones.
        patch_size, hidden_size, vision_layers, text_layers, num_heads, projection_dim: the tiny CLIP.
        vocab_size (`int`, defaults to 1024): BPE vocabulary learned on the captions.
        pretrain_images (`int`, defaults to 10000): distinct pre-training images (re-captioned every draw).
        pretrain_steps (`int`, defaults to 2500) / batch_size (`int`, defaults to 128): contrastive steps.
        learning_rate (`float`, defaults to 5e-4), weight_decay (`float`, defaults to 0.1),
        warmup_steps (`int`, defaults to 100): AdamW with linear warm-up and cosine decay, clipping at 1.0.
        task_train_size (`int`, defaults to 2000) / task_test_size (`int`, defaults to 5000): rows of each
            concept task's splits (all tasks share the images, each labels its own concept). The test split
            is a pool: an evaluation can draw its own sample from it (`max_eval_samples` with its seed), so
            that repeated runs vary the test sample as they vary the seed.
        task_noise (`float`, defaults to 0.3): standard deviation of Gaussian pixel noise (pixel values in
            [0, 1]) added to every task image, train and test, but not to the pre-training images. Noise
            keeps the easy concepts from being perfectly linearly separable, so that forgetting can lower
            their linear-probe accuracy.
    """

    seed: int = 0
    image_size: int = 32
    glyph_size: int = 16
    mention_probabilities: tuple[float, ...] = (0.8, 0.3, 0.3, 0.7)
    patch_size: int = 8
    hidden_size: int = 32
    vision_layers: int = 4
    text_layers: int = 2
    num_heads: int = 2
    projection_dim: int = 32
    vocab_size: int = 1024
    pretrain_images: int = 10000
    pretrain_steps: int = 2500
    batch_size: int = 128
    learning_rate: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 100
    task_train_size: int = 2000
    task_test_size: int = 5000
    task_noise: float = 0.3

    def __post_init__(self):
        for name in ("pretrain_images", "pretrain_steps", "batch_size", "task_train_size", "task_test_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"WorldSettings.{name} must be > 0, got {getattr(self, name)}")
        if len(self.mention_probabilities) != len(CONCEPTS):
            raise ValueError(
                f"WorldSettings.mention_probabilities needs one value per concept {[c.name for c in CONCEPTS]}, got {self.mention_probabilities}"
            )
        if not 0.0 <= self.task_noise <= 1.0:
            raise ValueError(f"WorldSettings.task_noise must be in [0, 1], got {self.task_noise}")
        if self.image_size % self.patch_size:
            raise ValueError(f"WorldSettings.image_size={self.image_size} must be a multiple of patch_size={self.patch_size}")

    def fingerprint(self) -> str:
        """A short hash of the pre-training settings and the format version: the model's cache folder."""
        return settings_fingerprint(self, FORMAT_VERSION, leave_out=TASK_FIELDS)

    def task_fingerprint(self) -> str:
        """A short hash of everything that determines the task datasets: their cache folder's suffix."""
        return settings_fingerprint(self, FORMAT_VERSION)

    def world(self) -> ConceptWorld:
        return ConceptWorld(
            seed=self.seed,
            image_size=self.image_size,
            glyph_size=self.glyph_size,
            mention_probability={c.name: p for c, p in zip(CONCEPTS, self.mention_probabilities)},
        )


def settings_fingerprint(settings, format_version: int, leave_out: tuple[str, ...] = ()) -> str:
    """A short hash (12 hex digits) of a settings dataclass's fields but `leave_out`, and `format_version`."""
    fields = {k: v for k, v in dataclasses.asdict(settings).items() if k not in leave_out}
    payload = json.dumps({"format": format_version, **fields}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else `$LDIFS_HF_CACHE`, else `~/.cache/ldifs_hf`."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ldifs_hf")


def world_cache_dir(settings: WorldSettings | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the pre-trained model and the tasks for `settings`: `<root>/world/<fingerprint>`."""
    settings = settings or WorldSettings()
    return cache_root(cache_dir) / "world" / settings.fingerprint()


def cached_folder(target: Path, build, *, force: bool = False, what: str = "the model") -> Path:
    """`target` when it is already there (and not `force`), else built by `build(tmp_dir)` and moved
    into place only once it finished (`write_atomically`): an interrupted build leaves no half cache."""
    if target.is_dir() and not force:
        return target
    logger.info("building %s into %s", what, target)
    return write_atomically(target, build)


def write_atomically(target: Path, write) -> Path:
    """Run `write(tmp_dir)` and move the result to `target` (replacing it) only once it finished."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as err:  # before any work: the cache itself is at fault, not the world
        raise OSError(
            f"the world cache cannot hold {target.name} in {str(target.parent)!r} ({err.strerror or err}); set --world_cache_dir "
            f"(or ${CACHE_ENV}) to a writable folder"
        ) from None
    try:
        write(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def world_settings(size: str = "default", seed: int = 0) -> WorldSettings:
    """The settings of a world of one of `WORLD_SIZES`, drawn with `seed`."""
    if size not in WORLD_SIZES:
        raise ValueError(f"world size must be one of {', '.join(WORLD_SIZES)}, got {size!r}")
    if size == "quick":
        return WorldSettings(seed=seed, pretrain_images=256, pretrain_steps=10, batch_size=32, task_train_size=64, task_test_size=32)
    return WorldSettings(seed=seed)
