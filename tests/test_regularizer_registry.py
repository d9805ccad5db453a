"""The regularizer registry: the built-ins, its errors, and a new regularizer as one definition plus this test."""

import dataclasses
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import CLIPModel, CLIPProcessor

from ldifs_hf import LDIFSTrainer, LDIFSTrainingArguments, get_method
from ldifs_hf.cli import parse_finetune_args
from ldifs_hf.cards import _regularizer_text
from ldifs_hf.modeling import named_encoder_parameters
from ldifs_hf.records import RunRecord
from ldifs_hf.testing import save_benchmark_like_dataset
from ldifs_hf.training import methods, terms
from ldifs_hf.training.build import build_collator, build_model
from ldifs_hf.training.guards import NonFiniteGuard
from ldifs_hf.training.run import run_finetune
from ldifs_hf.training.terms import Regularizer, get_regularizer, list_regularizers, register_regularizer

CLASSES = ["cat", "dog", "bird"]
TEMPLATES = ["a photo of a {}.", "a photo of the {}."]


class L1SP(Regularizer):
    """Test-only: λ·Σ|θ−θ0| over the encoder's trainable weights, anchored where the trainer was built."""

    name = "l1sp"
    log_name = "loss_l1sp"
    lam = 0.25

    def setup(self, trainer, teacher_model, settings):
        model = trainer.accelerator.unwrap_model(trainer.model)
        source = teacher_model if teacher_model is not None else model
        names = [n for n, p in named_encoder_parameters(model).items() if p.requires_grad]
        reference = named_encoder_parameters(source)
        return SimpleNamespace(settings=settings, names=names, reference=[reference[n].detach().clone() for n in names])

    def penalty(self, state, model, taps, inputs):
        named = named_encoder_parameters(model)
        return sum((named[n] - r).abs().sum() for n, r in zip(state.names, state.reference))

    def weight(self, settings):
        return self.lam

    def describe(self, settings, state=None):
        return f"L1-SP, λ = {self.lam}"


@pytest.fixture
def l1sp():
    regularizer = register_regularizer(L1SP())
    yield regularizer
    terms._REGISTRY.pop("l1sp")


def _args(tmp_path, **kw):
    defaults = dict(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=8, learning_rate=1e-3,
        warmup_steps=0, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0,
    )
    defaults.update(kw)
    return LDIFSTrainingArguments(**defaults)


def test_the_registry_lists_the_four_built_ins_in_order():
    assert list_regularizers() == ["none", "l2sp", "ldifs", "kl"]
    assert list_regularizers("l*") == ["l2sp", "ldifs"]
    assert methods.REGULARIZERS == ("none", "l2sp", "ldifs", "kl")
    assert [get_regularizer(n).log_name for n in list_regularizers()] == [None, "loss_l2sp", "loss_ldifs", "loss_kl"]
    assert [get_regularizer(n).needs_hidden_states for n in list_regularizers()] == [False, False, True, False]
    assert [get_regularizer(n).needs_outputs for n in list_regularizers()] == [False, False, False, True]
    assert [get_regularizer(n).weight_field for n in list_regularizers()] == [None, "l2sp_lambda", "ldifs_lambda", "kl_lambda"]


def test_built_in_card_texts_match_the_records_fallback(tmp_path):
    args = _args(tmp_path, method="lp-init-ldifs", ldifs_lambda=10, l2sp_lambda=0.5)
    ldifs = get_regularizer("ldifs")
    settings = dataclasses.replace(ldifs.settings(args), ldifs_layers=[0, 3, 6, 9, 12])
    assert ldifs.describe(settings) == "LDIFS, λ = 10, token normalisation, taps [0, 3, 6, 9, 12]"
    assert get_regularizer("l2sp").describe(get_regularizer("l2sp").settings(args)) == "L2SP, λ = 0.5"
    assert get_regularizer("none").describe(None) == "none"
    # A record written before `regularizer_text` existed gets the same text from its fields when read.
    old = RunRecord.from_dict(dict(method="lp-init-ldifs", dataset="eurosat", base_model="m", regularizer="ldifs", ldifs_lambda=10,
                                   ldifs_layers=[0, 3, 6, 9, 12], ldifs_normalization="token"))
    assert _regularizer_text(old) == ldifs.describe(settings)
    old = RunRecord.from_dict(dict(method="x", dataset="d", base_model="m", regularizer="l2sp", l2sp_lambda=0.5))
    assert _regularizer_text(old) == "L2SP, λ = 0.5"


def test_an_unknown_regularizer_is_a_clear_error_that_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown regularizer 'l3'; valid regularizers: none, l2sp, ldifs, kl"):
        get_regularizer("l3")
    with pytest.raises(ValueError, match=r"regularizer must be one of \('none', 'l2sp', 'ldifs', 'kl'\), got 'l3'"):
        _args(tmp_path, regularizer="l3")
    with pytest.raises(ValueError, match=r"unknown regularizer 'l3' in method 'zs-init-ce\+l3'; valid regularizers: none, l2sp, ldifs, kl"):
        get_method("zs-init-ce+l3")
    with pytest.raises(ValueError, match="already registered"):
        register_regularizer(type(get_regularizer("l2sp"))())


def test_a_new_regularizer_is_one_definition_it_trains_logs_and_describes_itself(l1sp, tiny_clip_dir, pixel_dataset, tmp_path):
    assert "l1sp" in list_regularizers() and "l1sp" in methods.REGULARIZERS
    spec = get_method("zs-init-ce+l1sp")
    assert (spec.name, spec.head_init, spec.objective, spec.regularizer) == ("zs-init-ce+l1sp", "zero-shot", "ce", "l1sp")

    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    tokenizer = CLIPProcessor.from_pretrained(tiny_clip_dir).tokenizer
    model = build_model(spec, clip, tokenizer, CLASSES, TEMPLATES, pixel_dataset, lp_iterations=20)
    args = _args(tmp_path, method="zs-init-ce+l1sp")
    assert args.regularizer == "l1sp"
    trainer = LDIFSTrainer(model=model, args=args, train_dataset=pixel_dataset,
                           data_collator=build_collator(spec, tokenizer, CLASSES, TEMPLATES))
    assert trainer.regularizer_term is l1sp
    trainer.add_callback(NonFiniteGuard(trainer))
    trainer.train()

    logged = [h for h in trainer.state.log_history if "loss_task" in h]
    assert len(logged) == 2
    assert all(math.isfinite(h["loss_l1sp"]) and not {"loss_ldifs", "loss_l2sp"} & set(h) for h in logged)
    # Step 1 at the anchor; after an update the weights moved, and the logged loss is task + λ·penalty.
    assert logged[0]["loss_l1sp"] == pytest.approx(0.0, abs=1e-6) and logged[1]["loss_l1sp"] > 0
    for h in logged:
        assert h["loss"] == pytest.approx(h["loss_task"] + l1sp.lam * h["loss_l1sp"], rel=1e-3)

    # Also by name alone, on any method, and its card text comes from itself.
    assert LDIFSTrainer(model=model, args=_args(tmp_path, regularizer="l1sp"), train_dataset=pixel_dataset).regularizer_term is l1sp
    assert l1sp.describe(args) == "L1-SP, λ = 0.25"


def test_a_new_regularizer_runs_end_to_end_and_its_text_reaches_the_model_card(l1sp, tiny_clip_dir, tmp_path):
    data = save_benchmark_like_dataset("eurosat", tmp_path / "eurosat", num_train=30, num_test=10)
    out = tmp_path / "run"
    record = run_finetune(*parse_finetune_args([
        "--method", "lp-init-ce+l1sp", "--dataset", "eurosat", "--dataset_path", str(data), "--model_name_or_path",
        str(tiny_clip_dir), "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "8",
        "--use_cpu", "--report_to", "none", "--lp_iterations", "20", "--warmup_steps", "0", "--logging_steps", "1",
        "--save_strategy", "no", "--disable_tqdm", "true",
    ]))
    assert record.regularizer == "l1sp" and record.regularizer_text == "L1-SP, λ = 0.25"
    assert json.loads((out / "ldifs_run.json").read_text())["regularizer_text"] == "L1-SP, λ = 0.25"
    state = json.loads((out / "trainer_state.json").read_text())
    assert any("loss_l1sp" in h for h in state["log_history"])
    assert "| regularizer | L1-SP, λ = 0.25 |" in (out / "README.md").read_text()


def test_outside_the_regularizers_the_built_ins_weights_are_named_only_by_the_reader_of_earlier_records():
    """`ldifs_lambda` / `l2sp_lambda` appear in the package only in training/terms (the regularizers themselves), the
    fine-tuning arguments (their flags) and run_folder/record.py (the reader of records of the earlier format); the
    examples name them only as flags. Everything else asks the registry (`weight_field`) or the record."""
    root = Path(__file__).resolve().parent.parent
    pattern = re.compile(r"\b(ldifs|l2sp)_lambda\b")
    allowed = ("ldifs_hf/training/terms/", "ldifs_hf/training/arguments.py", "ldifs_hf/run_folder/record.py")
    found = []
    for path in sorted(root.glob("ldifs_hf/**/*.py")) + sorted(root.glob("examples/*.py")):
        name = path.relative_to(root).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            flags_only = all(line[max(0, m.start() - 2):m.start()] == "--" for m in pattern.finditer(line))
            if pattern.search(line) and not name.startswith(allowed) and not flags_only:
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
