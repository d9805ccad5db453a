"""Shared offline fixtures: a tiny CLIP (tokenizer trained on the fly) and schema-exact tiny data."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

# The tests' models are tiny: a second intra-op thread buys little and, on a busy 2-core machine,
# spins against other processes (steps measured up to 40x slower).
torch.set_num_threads(1)

from ldifs_hf.tiny import make_tiny_clip  # noqa: E402

# Words of the prompts the tests use, so the tiny tokenizer has real merges for them.
TEST_TEXTS = [
    "a photo of a cat.", "a photo of a dog.", "a photo of a bird.",
    "a centered satellite photo of annual crop land.", "a centered satellite photo of forest.",
    "a centered satellite photo of highway or road.", "a centered satellite photo of river.",
    "a photo of the number: 3.", "satellite imagery of an airport.",
]


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("tiny_clip"), texts=TEST_TEXTS, seed=0)
