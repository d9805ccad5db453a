"""A regularizer with its own weight from one user file: registered by importing the file, its λ set through
`regularizer_options` (API) and `--regularizer_options` (CLI), validated into its settings dataclass; and a new one
first-class end to end from its file alone: trained from a script, recorded, refused on a rerun with another weight,
swept by the study, searched, drawn on the frontier and described on the card."""

import csv
import importlib.util
import json
import subprocess
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


# -- a new regularizer is first-class end to end, from its one file ------------------------------------------------

L2ZERO = '''
"""L2 to zero: λ·Σ‖θ‖² over the encoder's trainable weights (weight decay as a loss term), its weight `l2zero_lambda`."""
from dataclasses import dataclass, field

from ldifs_hf.modeling import named_encoder_parameters
from ldifs_hf.training.terms import Regularizer, RegularizerSettings, check_weight, register_regularizer


@dataclass
class L2ZeroSettings(RegularizerSettings):
    l2zero_lambda: float = field(default=0.01, metadata={"help": "Weight of the L2-to-zero penalty."})

    def __post_init__(self):
        super().__post_init__()
        check_weight("l2zero_lambda", self.l2zero_lambda)


class L2Zero(Regularizer):
    name = "l2zero"
    settings_class = L2ZeroSettings
    weight_field = "l2zero_lambda"
    log_name = "loss_l2zero"

    def penalty(self, state, model, taps, inputs):
        return sum(p.float().pow(2).sum() for p in named_encoder_parameters(model).values() if p.requires_grad)

    def describe(self, settings, state=None):
        return f"L2 to zero, λ = {settings.l2zero_lambda}"


register_regularizer(L2Zero())
'''
SCRIPT = '''
import sys

sys.path.insert(0, {folder!r})
import my_l2zero  # noqa: F401,E402  (registers "l2zero")
from ldifs_hf.cli import main  # noqa: E402

sys.exit(main())
'''


@pytest.fixture
def l2zero_plugin(tmp_path):
    path = tmp_path / "plugin" / "my_l2zero.py"
    path.parent.mkdir()
    path.write_text(L2ZERO)
    spec = importlib.util.spec_from_file_location("my_l2zero", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield path
    terms._REGISTRY.pop("l2zero", None)
    sys.modules.pop("my_l2zero", None)


@pytest.mark.slow
def test_a_new_regularizer_from_one_file_is_recorded_refused_swept_searched_drawn_and_described(
        l2zero_plugin, tiny_clip_dir, eurosat_dir, tmp_path, capsys, monkeypatch):
    from ldifs_hf.evaluation.frontier import point_label
    from ldifs_hf.study import lambda_search
    from ldifs_hf.testing import save_benchmark_like_dataset
    from conftest import finetune_argv, one_line_error

    # 1. Trained from the command line: a script that imports the file and calls ldifs_hf.cli.main.
    script = tmp_path / "my_ldifs_hf.py"
    script.write_text(SCRIPT.format(folder=str(l2zero_plugin.parent)))
    out = tmp_path / "run"
    argv = finetune_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce+l2zero", "--regularizer_options", '{"l2zero_lambda": 0.01}')
    done = subprocess.run([sys.executable, str(script), "finetune", *argv], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    # 2. Recorded as the regularizer reports itself, and described on the card.
    record = json.loads((out / "ldifs_run.json").read_text())
    assert (record["regularizer"], record["regularizer_settings"], record["regularizer_weight"]) == ("l2zero", {"l2zero_lambda": 0.01}, 0.01)
    assert record["regularizer_text"] == "L2 to zero, λ = 0.01" and record["settings"]["l2zero_lambda"] == 0.01
    assert "| regularizer | L2 to zero, λ = 0.01 |" in (out / "README.md").read_text()
    # 3. A rerun with another weight into the same folder is refused, the way out named.
    other = finetune_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ce+l2zero", "--regularizer_options", '{"l2zero_lambda": 0.02}')
    line = one_line_error(capsys, ["finetune", *other], "other settings (l2zero_lambda 0.01 -> 0.02)")
    assert "--overwrite_output_dir" in line
    # 4. Swept by the study, keyed by its name, and drawn on the frontier.
    mnist = save_benchmark_like_dataset("mnist", tmp_path / "mnist", num_train=30, num_test=10)
    study = tmp_path / "study"
    assert main([
        "study", "--output_dir", str(study), "--methods", "zs-init-ce+l2zero", "--lambdas", "l2zero=0.01,0.1",
        "--finetune_tasks", "eurosat", "--eval_tasks", "eurosat,mnist", "--dataset_path", f"eurosat={eurosat_dir}", f"mnist={mnist}",
        "--model_name_or_path", str(tiny_clip_dir), "--max_steps", "2", "--checkpoint_every_percent", "0", "--lp_iterations", "20",
        "--eval_max_train_samples", "16", "--eval_num_workers", "0", "--distances", "false",
        "--finetune_options", '{"per_device_train_batch_size": 8, "warmup_steps": 0, "use_cpu": true}',
    ]) == 0
    cell = json.loads((study / "cells" / "zs-init-ce+l2zero" / "lambda-0.1" / "eurosat" / "seed-0" / "cell.json").read_text())
    assert cell["config"]["finetune"]["regularizer_options"] == {"l2zero_lambda": 0.1} and all(r["lambda"] == 0.1 for r in cell["records"])
    rows = list(csv.DictReader(open(study / "frontier.csv")))
    assert [(r["method"], r["lambda"]) for r in rows] == [("zs-init-ce+l2zero", "0.01"), ("zs-init-ce+l2zero", "0.1")]
    assert point_label("zs-init-ce+l2zero", 0.1) == "zs-init-ce+l2zero (λ = 0.1)" and "zs-init-ce+l2zero@λ=0.1" in (study / "results.md").read_text()
    # 5. Searched by lambda-search: each trial trains with its own weight, set through regularizer_options.
    used, original = [], lambda_search.LDIFSTrainer.compute_loss

    def recording(self, *args, **kwargs):
        used.append(self.regularizer_weight)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(lambda_search.LDIFSTrainer, "compute_loss", recording)
    search = tmp_path / "search"
    assert main(["lambda-search", *finetune_argv(tiny_clip_dir, eurosat_dir, search, "zs-init-ce+l2zero"), "--lambda_grid", "0.01,1",
                 "--validation_fraction", "0.25", "--per_device_eval_batch_size", "8"]) == 0
    saved = json.loads((search / "lambda_search.json").read_text())
    assert saved["parameter"] == "l2zero_lambda" and saved["grid"] == [0.01, 1.0] and sorted(set(used)) == [0.01, 1.0]
    assert open(search / "lambda_search.csv").readline().startswith("l2zero_lambda,validation_accuracy")
