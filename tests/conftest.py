"""Shared offline fixtures and helpers: a tiny CLIP (tokenizer trained on the fly), schema-exact tiny data, a
learnable pixel dataset, the arguments of a short fine-tuning run, and the CLI's one-line error contract.
Test files import the plain helpers with `from conftest import ...`."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402

# The tests' models are tiny: a second intra-op thread buys little and, on a busy 2-core machine,
# spins against other processes (steps measured up to 40x slower).
torch.set_num_threads(1)

from ldifs_hf.cli import main  # noqa: E402
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


def class_shifted_pixels(n=16, num_classes=3):
    """`n` random 3x32x32 images (seed 0) whose mean is their class, so the task is learnable, and the classes
    (image i is class i % num_classes)."""
    classes = torch.arange(n) % num_classes
    pixels = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)) + classes.view(-1, 1, 1, 1).float()
    return pixels, classes


@pytest.fixture(scope="session")
def pixel_dataset():
    """16 class-shifted images of 3 classes as a torch-formatted `Dataset` (`pixel_values`, `labels`)."""
    pixels, classes = class_shifted_pixels()
    return Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": classes.numpy()}).with_format("torch")


def one_line_error(capsys, argv, needle=None, *, code=2, after_work=False):
    """Run `ldifs-hf ARGV` in this process and check the CLI's contract for a refused input: exit code `code`
    and a stderr of exactly one non-empty line, starting with `error: `, with no traceback, that contains
    `needle` when given. Returns that line.

    `after_work=True` is for a fault met after work began (a diverged run, a full disk, checkpoints that
    could not be scored): the progress bars and logs of that work may come first, but the error is still the
    only `error: ` line, the last line, and there is no traceback."""
    capsys.readouterr()  # what earlier commands of the test printed is not this command's output
    returned = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert returned == code, (returned, lines[-5:])
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and (after_work or len(lines) == 1), lines[-5:]
    assert needle is None or needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(autouse=True)
def _benchmark_registry_restored():
    """Each test sees the benchmark registry as the package defines it: a `name=path` entry a test
    registers (e.g. `--datasets eurosat=PATH`) must not change `eurosat` for the tests after it."""
    from ldifs_hf.benchmarks import registry

    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


@pytest.fixture(scope="session")
def quick_skills_cache(tmp_path_factory):
    """A cache root holding the quick skills world (its tiny Llama pre-trained once, about 10 s): the language
    runs, studies and the skills demo's tests share it."""
    from ldifs_hf.language.skills import prepare_skills, skills_settings

    root = tmp_path_factory.mktemp("skills-cache")
    prepare_skills(skills_settings("quick"), root, progress=False)
    return root
