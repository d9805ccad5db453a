"""The settings that determine the skills world, its pre-trained tiny LM and its task files, and where
they are cached: `<cache root>/skills/<fingerprint>/model`, and beside it `tasks-<task fingerprint>/`,
so that changing how the tasks are drawn never pre-trains again and no setting reads a stale cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...world.settings import cache_root, settings_fingerprint
from .generator import SkillsWorld

# Bump when the generator or the training loop changes what a given set of settings produces.
FORMAT_VERSION = 1
# Settings that change only the task files, the SFT data and the retain set, not the pre-trained model.
TASK_FIELDS = ("test_size", "sft_size", "retain_size")
SKILLS_SIZES = ("default", "quick")


@dataclass(frozen=True)
class SkillsSettings:
    """Everything that determines the skills world, its tiny LM and its tasks (hashed into the cache path).

    Args:
        seed (`int`, defaults to 0): seed of the atlas, every draw, the initialisation and the batch order.
        modulus (`int`, defaults to 10): the modulus of "add" (its table has modulus² facts; 10 is learnt to 100 % in the
            default budget, 13 and 11 to about 80 %).
        min_length / max_length (`int`, defaults to 3 / 5): lengths of the strings copy, reverse and shift read.
        num_countries (`int`, defaults to 40): facts in the atlas.
        num_layers, hidden_size, num_heads: the tiny Llama (rotary positions; a 4 x 64 model learns the
            four old skills to 100 % exact match in 1,200 steps, about 100 s of one CPU thread).
        pretrain_pool (`int`, defaults to 20000): pre-training lines drawn per old skill (the test items excluded).
        pretrain_steps (`int`, defaults to 1200) / batch_size (`int`, defaults to 64): steps over the mixture.
        learning_rate (`float`, defaults to 3e-3), warmup_steps (`int`, defaults to 100): AdamW, linear
            warm-up then cosine decay, clipping at 1.0.
        test_size (`int`, defaults to 200): items of each skill's test set (a finite skill's whole table when
            it has fewer facts); 200 items give a standard error of 3.5 points at 50 % accuracy.
        sft_size (`int`, defaults to 2000): prompt/completion rows of the new skill's SFT set.
        retain_size (`int`, defaults to 100): lines per old skill in the retain set (the held-out loss).
    """

    seed: int = 0
    modulus: int = 10
    min_length: int = 3
    max_length: int = 5
    num_countries: int = 40
    num_layers: int = 4
    hidden_size: int = 64
    num_heads: int = 4
    pretrain_pool: int = 20000
    pretrain_steps: int = 1200
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    test_size: int = 200
    sft_size: int = 2000
    retain_size: int = 100

    def __post_init__(self):
        for name in ("modulus", "min_length", "num_countries", "num_layers", "hidden_size", "num_heads", "pretrain_pool",
                     "pretrain_steps", "batch_size", "test_size", "sft_size", "retain_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SkillsSettings.{name} must be > 0, got {getattr(self, name)}")
        if self.max_length < self.min_length:
            raise ValueError(f"SkillsSettings.max_length={self.max_length} must be >= min_length={self.min_length}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"SkillsSettings.hidden_size={self.hidden_size} must be a multiple of num_heads={self.num_heads}")

    def fingerprint(self) -> str:
        """A short hash of the pre-training settings and the format version: the model's cache folder."""
        return settings_fingerprint(self, FORMAT_VERSION, leave_out=TASK_FIELDS)

    def task_fingerprint(self) -> str:
        """A short hash of everything that determines the task files: their cache folder's suffix."""
        return settings_fingerprint(self, FORMAT_VERSION)

    def world(self) -> SkillsWorld:
        return SkillsWorld(seed=self.seed, modulus=self.modulus, min_length=self.min_length, max_length=self.max_length,
                           num_countries=self.num_countries)


def skills_cache_dir(settings: SkillsSettings | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of the pre-trained model and the tasks for `settings`: `<root>/skills/<fingerprint>`."""
    settings = settings or SkillsSettings()
    return cache_root(cache_dir) / "skills" / settings.fingerprint()


def skills_settings(size: str = "default", seed: int = 0) -> SkillsSettings:
    """The settings of a skills world of one of `SKILLS_SIZES`, drawn with `seed`. "quick" is scaled down
    for tests (about 10 s: the atlas above chance, copy and reverse not yet learnt): never for numbers."""
    if size not in SKILLS_SIZES:
        raise ValueError(f"skills world size must be one of {', '.join(SKILLS_SIZES)}, got {size!r}")
    if size == "quick":
        return SkillsSettings(seed=seed, num_layers=2, pretrain_pool=2000, pretrain_steps=300, batch_size=32, test_size=40, sft_size=64,
                              retain_size=20)
    return SkillsSettings(seed=seed)
