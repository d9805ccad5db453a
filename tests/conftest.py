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


@pytest.fixture(scope="session")
def eurosat_dir(tmp_path_factory):
    """A local copy in EuroSAT's schema: 30 training and 10 test images."""
    from ldifs_hf.testing import save_benchmark_like_dataset

    return save_benchmark_like_dataset("eurosat", tmp_path_factory.mktemp("eurosat"), num_train=30, num_test=10)


def finetune_argv(model_dir, data_dir, out_dir, method, *extra):
    """The arguments of a short CPU fine-tuning run on a local eurosat copy (`out_dir` None: no --output_dir).
    Flags in `extra` come last, so they override these."""
    return [
        "--method", method, "--dataset", "eurosat", "--dataset_path", str(data_dir), "--model_name_or_path", str(model_dir),
        *(["--output_dir", str(out_dir)] if out_dir is not None else []), "--max_steps", "2", "--per_device_train_batch_size", "8",
        "--use_cpu", "--report_to", "none", "--lp_iterations", "20", "--warmup_steps", "0", "--save_strategy", "no",
        "--disable_tqdm", "true", *extra,
    ]
