"""A regularizer with its own weight from one user file: registered by importing the file, its λ set through
`regularizer_options` (API) and `--regularizer_options` (CLI), validated into its settings dataclass."""

import importlib.util
import json
import sys

import pytest
import torch
from datasets import Dataset
from transformers import ViTConfig, ViTForImageClassification

from ldifs_hf import LDIFSTrainer, LDIFSTrainingArguments
from ldifs_hf.cli import main
from ldifs_hf.training import terms

PLUGIN = '''
"""L1-SP: λ·Σ|θ−θ0| over the encoder's trainable weights, with its own weight `l1_lambda`."""
from dataclasses import dataclass, field

from ldifs_hf.modeling import named_encoder_parameters
from ldifs_hf.training.terms import Regularizer, RegularizerSettings, RegularizerState, check_weight, register_regularizer


@dataclass
class L1Settings(RegularizerSettings):
    l1_lambda: float = field(default=0.1, metadata={"help": "Weight of the L1 penalty."})

    def __post_init__(self):
        super().__post_init__()
        check_weight("l1_lambda", self.l1_lambda)


@dataclass
class L1State(RegularizerState):
    names: list = field(default_factory=list)
    reference: list = field(default_factory=list)


class L1(Regularizer):
    name = "l1"
    settings_class = L1Settings
    log_name = "loss_l1"

    def setup(self, trainer, teacher_model, settings):
        model = trainer.accelerator.unwrap_model(trainer.model)
        named = {n: p for n, p in named_encoder_parameters(model).items() if p.requires_grad}
        return L1State(settings, names=list(named), reference=[p.detach().clone() for p in named.values()])

    def penalty(self, state, model, taps, inputs):
        named = named_encoder_parameters(model)
        return sum((named[n] - r).abs().sum() for n, r in zip(state.names, state.reference))

    def weight(self, settings):
        return settings.l1_lambda

    def describe(self, settings, state=None):
        return f"L1, λ = {settings.l1_lambda}"


register_regularizer(L1())
'''


@pytest.fixture
def l1_plugin(tmp_path):
    path = tmp_path / "my_l1.py"
    path.write_text(PLUGIN)
    spec = importlib.util.spec_from_file_location("my_l1", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    terms._REGISTRY.pop("l1", None)
    sys.modules.pop("my_l1", None)


def _pixels():
    g = torch.Generator().manual_seed(0)
    labels = [i % 3 for i in range(8)]
    pixels = torch.randn(8, 3, 16, 16, generator=g)
    return Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": labels}).with_format("torch")


def _vit():
    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=32, num_labels=3)
    return ViTForImageClassification(config)


def _args(tmp_path, **kw):
    return LDIFSTrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, warmup_steps=0,
        logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, **kw,
    )


@pytest.mark.parametrize("options", [{"l1_lambda": 0.3}, '{"l1_lambda": 0.3}'])
def test_a_plugin_with_its_own_lambda_trains_through_the_api(options, l1_plugin, tmp_path):
    args = _args(tmp_path, regularizer="l1", regularizer_options=options)
    assert args.regularizer_settings == l1_plugin.L1Settings(l1_lambda=0.3)
    trainer = LDIFSTrainer(model=_vit(), args=args, train_dataset=_pixels())
    assert trainer.regularizer_state.settings.l1_lambda == 0.3
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss_l1" in h]
    assert len(logged) == 2
    assert logged[0]["loss_l1"] == 0.0 and logged[1]["loss_l1"] > 0
    for h in logged:  # the loss is the task's plus the plug-in's own λ times its penalty
        assert h["loss"] == pytest.approx(h["loss_task"] + 0.3 * h["loss_l1"], rel=1e-4)
    assert trainer.regularizer_description() == "L1, λ = 0.3"
    # Unset, the plug-in's default weight applies.
    assert _args(tmp_path, regularizer="l1").regularizer_settings.l1_lambda == 0.1


@pytest.mark.parametrize("options,needle", [
    ({"l1_lambda": -1}, "l1_lambda must be a number >= 0, got -1"),
    ({"l1_lambda": "big"}, "l1_lambda must be a number >= 0, got 'big'"),
    ({"l2_lambda": 1}, "regularizer_options: unknown setting 'l2_lambda' for regularizer 'l1'; accepted: l1_lambda"),
    ({"ldifs_lambda": 1}, "regularizer_options: 'ldifs_lambda' has its own flag; set it with --ldifs_lambda"),
    ("{l1_lambda: 1}", "regularizer_options must be a JSON object, got '{l1_lambda: 1}'"),
    ("[1]", "regularizer_options must be a JSON object (a dict), got [1]"),
])
def test_bad_plugin_options_are_one_line_errors(options, needle, l1_plugin, tmp_path):
    with pytest.raises(ValueError) as err:
        _args(tmp_path, regularizer="l1", regularizer_options=options)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_options_for_a_regularizer_without_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown setting 'l1_lambda' for regularizer 'none'; accepted: none"):
        _args(tmp_path, regularizer="none", regularizer_options={"l1_lambda": 1})


def test_a_plugin_with_its_own_lambda_trains_through_the_cli(l1_plugin, tiny_clip_dir, eurosat_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "finetune", "--method", "zs-init-ce+l1", "--regularizer_options", '{"l1_lambda": 0.3}', "--dataset", "eurosat",
        "--dataset_path", str(eurosat_dir), "--model_name_or_path", str(tiny_clip_dir), "--output_dir", str(out),
        "--max_steps", "2", "--per_device_train_batch_size", "8", "--use_cpu", "--report_to", "none", "--warmup_steps", "0",
        "--logging_steps", "1", "--save_strategy", "no", "--disable_tqdm", "true",
    ]
    assert main(argv) == 0
    assert json.loads((out / "ldifs_run.json").read_text())["regularizer_text"] == "L1, λ = 0.3"
    logged = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss_l1" in h]
    assert len(logged) == 2 and logged[0]["loss_l1"] == 0.0 and logged[1]["loss_l1"] > 0
    assert logged[1]["loss"] == pytest.approx(logged[1]["loss_task"] + 0.3 * logged[1]["loss_l1"], rel=1e-4)
    capsys.readouterr()
    # A bad value is the CLI's one-line error, exit 2.
    assert main(argv[:4] + ['{"l1_lambda": -2}'] + argv[5:]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "l1_lambda must be a number >= 0, got -2" in err[0], err
