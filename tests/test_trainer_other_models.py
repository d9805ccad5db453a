"""LDIFSTrainer on other Hugging Face models: the task loss is stock Trainer's, the terms train and log.

Models: a causal LM on padded batches, a text classifier, a multi-label, a regression and a
label-smoothed ViT, and the CLIP classifier of the paper's methods.
"""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    CLIPModel,
    CLIPProcessor,
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
)

from ldifs_hf import LDIFSTrainer, LDIFSTrainingArguments, get_method
from ldifs_hf.training.build import build_model
from ldifs_hf.training.trainer import disable_dropout
from conftest import class_shifted_pixels

VOCAB, PAD = 40, 0


def _token_rows(n, with_labels):
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(n):
        length = 3 + i % 5  # lengths 3..7: every batch is padded
        row = {"input_ids": torch.randint(1, VOCAB, (length,), generator=g).tolist()}
        if with_labels == "lm":
            row["labels"] = row["input_ids"]
        elif with_labels == "class":
            row["labels"] = i % 3
        rows.append(row)
    return rows


def pad_collator(examples):
    """Right-pads input_ids; LM labels are -100 at padding."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), PAD)
    mask = torch.zeros(len(examples), width, dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
        mask[i, : len(e["input_ids"])] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if isinstance(examples[0]["labels"], list):
        batch["labels"] = ids.masked_fill(mask == 0, -100)
    else:
        batch["labels"] = torch.tensor([e["labels"] for e in examples])
    return batch


def _vit(**config):
    return ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4,
                                               num_attention_heads=2, intermediate_size=64, **config))


def _case(name, tiny_clip_dir=None):
    """(model factory, train dataset, collator, extra arguments, number of classes for accuracy)."""
    if name == "gpt2":
        config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=16)
        return (lambda: GPT2LMHeadModel(config)), Dataset.from_list(_token_rows(16, "lm")), pad_collator, {}, None
    if name == "bert":
        config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=16, num_labels=3)
        return (lambda: BertForSequenceClassification(config)), Dataset.from_list(_token_rows(16, "class")), pad_collator, {}, 3
    pixels, classes = class_shifted_pixels()
    if name == "vit-multilabel":
        labels = torch.nn.functional.one_hot(classes, 3).float()
        labels[::4, 0] = 1.0  # some images carry two labels
        data = Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": labels.numpy()}).with_format("torch")
        return (lambda: _vit(num_labels=3, problem_type="multi_label_classification")), data, None, {}, None
    if name == "vit-regression":
        data = Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": classes.float().numpy()}).with_format("torch")
        return (lambda: _vit(num_labels=1)), data, None, {}, None
    data = Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": classes.numpy()}).with_format("torch")
    if name == "vit-label-smoothing":
        return (lambda: _vit(num_labels=3)), data, None, {"label_smoothing_factor": 0.1}, 3
    if name == "clip-classifier":
        clip = CLIPModel.from_pretrained(tiny_clip_dir)
        tokenizer = CLIPProcessor.from_pretrained(tiny_clip_dir).tokenizer
        spec = get_method("zs-init-ce")

        def make():
            return build_model(spec, clip, tokenizer, ["cat", "dog", "bird"], ["a photo of a {}."])

        return make, data, None, {}, 3
    raise ValueError(name)


CASES = ["gpt2", "bert", "vit-multilabel", "vit-regression", "vit-label-smoothing", "clip-classifier"]


def _common(tmp_path, **kw):
    common = dict(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, per_device_eval_batch_size=4,
        learning_rate=1e-3, weight_decay=0.1, lr_scheduler_type="linear", warmup_steps=0, logging_steps=1,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, remove_unused_columns=False,
    )
    common.update(kw)
    return common


def _train(trainer_cls, make, data, collator, args, **kwargs):
    torch.manual_seed(0)
    model = make()
    trainer = trainer_cls(model=model, args=args, train_dataset=data, data_collator=collator, **kwargs)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return trainer, model, losses


@pytest.mark.parametrize("regularizer", ["none", "ldifs", "l2sp"])
@pytest.mark.parametrize("case", CASES)
def test_zero_lambda_trains_exactly_like_stock_trainer(case, regularizer, tiny_clip_dir, tmp_path):
    make, data, collator, extra, _ = _case(case, tiny_clip_dir)
    stock_trainer, stock_model, stock_losses = _train(Trainer, make, data, collator, TrainingArguments(**_common(tmp_path / "stock", **extra)))
    args = LDIFSTrainingArguments(**_common(tmp_path / "ldifs", **extra), regularizer=regularizer, ldifs_lambda=0.0, l2sp_lambda=0.0)
    trainer, model, losses = _train(LDIFSTrainer, make, data, collator, args)
    assert len(losses) == 3 and losses == stock_losses
    for (name, p), q in zip(model.named_parameters(), stock_model.parameters()):
        assert torch.equal(p, q), name
    # Nothing is logged beside the stock entries: no `loss_task`, no term.
    stock_keys = [set(h) for h in stock_trainer.state.log_history]
    assert [set(h) for h in trainer.state.log_history] == stock_keys and not any("loss_task" in keys for keys in stock_keys)


@pytest.mark.parametrize("regularizer,term", [("ldifs", "loss_ldifs"), ("l2sp", "loss_l2sp")])
@pytest.mark.parametrize("case", CASES)
def test_ldifs_and_l2sp_train_with_finite_terms_zero_at_the_start(case, regularizer, term, tiny_clip_dir, tmp_path):
    make, data, collator, extra, _ = _case(case, tiny_clip_dir)
    args = LDIFSTrainingArguments(**_common(tmp_path, max_steps=2, **extra), regularizer=regularizer, ldifs_lambda=1.0, l2sp_lambda=1.0)
    trainer, model, _ = _train(LDIFSTrainer, make, data, collator, args)
    logged = [h for h in trainer.state.log_history if term in h]
    assert len(logged) == 2
    assert all(math.isfinite(h[term]) and math.isfinite(h["loss_task"]) and math.isfinite(h["loss"]) for h in logged)
    # Student dropout is off while LDIFS is on (GPT-2 and BERT have dropout 0.1), so both terms start at exactly 0.
    assert logged[0][term] == 0.0
    assert logged[1][term] > 0


@pytest.mark.parametrize("case", ["bert", "vit-label-smoothing", "clip-classifier"])
def test_compute_metrics_gets_plain_logits_in_evaluation(case, tiny_clip_dir, tmp_path):
    make, data, collator, extra, num_classes = _case(case, tiny_clip_dir)
    seen = {}

    def accuracy(prediction):
        seen["shape"] = np.shape(prediction.predictions)
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    torch.manual_seed(0)
    args = LDIFSTrainingArguments(**_common(tmp_path, **extra), regularizer="ldifs", ldifs_lambda=1.0)
    trainer = LDIFSTrainer(model=make(), args=args, eval_dataset=data, data_collator=collator, compute_metrics=accuracy)
    metrics = trainer.evaluate()
    assert seen["shape"] == (len(data), num_classes)  # logits only: no hidden states gathered
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    # The term has its own key among the metrics, logged in the same entry; eval_loss is the task loss alone.
    assert metrics["eval_loss_ldifs"] == 0.0 and "eval_loss_task" not in metrics and math.isfinite(metrics["eval_loss"])
    assert {k: v for k, v in trainer.state.log_history[-1].items() if k != "step"} == metrics


def test_logged_terms_are_not_rounded(tmp_path):
    make, data, collator, extra, _ = _case("vit-label-smoothing")
    args = LDIFSTrainingArguments(**_common(tmp_path, max_steps=2, learning_rate=1e-7, **extra), regularizer="l2sp")
    trainer, _, _ = _train(LDIFSTrainer, make, data, collator, args)
    # One AdamW step of 1e-7 moves each weight by about 1e-7: a tiny distance, that 6 decimals would log as 0.
    tiny = [h["loss_l2sp"] for h in trainer.state.log_history if "loss_l2sp" in h][1]
    assert 0 < tiny < 1e-6 and round(tiny, 6) == 0.0


def _perturb(module, scale=0.05, seed=3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def test_padding_leaves_ldifs_unchanged(tmp_path):
    make, data, _, _, _ = _case("gpt2")
    torch.manual_seed(0)
    model = make()
    args = LDIFSTrainingArguments(**_common(tmp_path), regularizer="ldifs", ldifs_lambda=1.0)
    trainer = LDIFSTrainer(model=model, args=args)
    _perturb(model.transformer)  # the student now differs from its teacher
    rows = [data[i] for i in range(4)]
    tight = pad_collator(rows)
    wide = pad_collator(rows + [{"input_ids": [1] * 12, "labels": [1] * 12}])  # pads the first four to 12
    wide = {k: v[:4] for k, v in wide.items()}
    assert wide["input_ids"].shape[1] == 12 > tight["input_ids"].shape[1]
    values = []
    for batch in (tight, wide):
        trainer.compute_loss(model, batch)
        values.append(trainer._metrics["train"]["loss_ldifs"][-1].item())
    assert values[0] > 0
    assert values[1] == pytest.approx(values[0], rel=1e-5)


def test_keep_student_dropout_leaves_dropout_on(tmp_path):
    make, _, _, _, _ = _case("gpt2")
    kept = LDIFSTrainer(model=make(), args=LDIFSTrainingArguments(**_common(tmp_path), keep_student_dropout=True))
    assert kept.model.transformer.drop.p == 0.1
    off = LDIFSTrainer(model=make(), args=LDIFSTrainingArguments(**_common(tmp_path)))
    assert off.model.transformer.drop.p == 0.0
    assert all(m.p == 0.0 for m in off.model.modules() if isinstance(m, torch.nn.Dropout))


def test_disable_dropout_zeroes_modules_and_attention_floats():
    model = _vit(num_labels=3, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.3)
    disable_dropout(model)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert all(getattr(m, "dropout_prob", 0.0) == 0.0 for m in model.modules())


def test_stock_training_arguments_are_refused_with_the_fix(tmp_path):
    make, _, _, _, _ = _case("vit-regression")
    with pytest.raises(TypeError, match="needs arguments with the LDIFS fields .*got TrainingArguments"):
        LDIFSTrainer(model=make(), args=TrainingArguments(output_dir=str(tmp_path)))


def test_gradient_accumulation_matches_stock_trainer_and_logs_the_step_loss(tmp_path):
    # GPT-2's loss is normalised over the tokens of the whole accumulated batch (num_items_in_batch).
    make, data, collator, _, _ = _case("gpt2")
    kw = dict(gradient_accumulation_steps=2, per_device_train_batch_size=2)
    _, stock_model, stock_losses = _train(Trainer, make, data, collator, TrainingArguments(**_common(tmp_path / "stock", **kw)))
    args = LDIFSTrainingArguments(**_common(tmp_path / "ldifs", **kw), regularizer="ldifs", ldifs_lambda=0.0)
    trainer, model, losses = _train(LDIFSTrainer, make, data, collator, args)
    assert losses == stock_losses
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), stock_model.parameters()))
    # With the term on, the logged task loss is the step's loss scaled back: at step 1 (the stock weights, dropout kept
    # as stock has it) the stock loss, and at every step the logged total is task + λ·term.
    args = LDIFSTrainingArguments(**_common(tmp_path / "ldifs-1", **kw), regularizer="ldifs", ldifs_lambda=1.0,
                                  keep_student_dropout=True)
    trainer, _, _ = _train(LDIFSTrainer, make, data, collator, args)
    logged = [h for h in trainer.state.log_history if "loss_task" in h]
    assert len(logged) == 3 and logged[0]["loss_task"] == pytest.approx(stock_losses[0], rel=1e-5)
    assert all(h["loss"] == pytest.approx(h["loss_task"] + h["loss_ldifs"], rel=1e-5) for h in logged)


def test_compute_loss_func_is_used_like_stock_trainer(tmp_path):
    make, data, collator, _, _ = _case("bert")
    calls = []

    def margin_loss(outputs, labels, num_items_in_batch=None):
        calls.append(labels.shape)
        return torch.nn.functional.multi_margin_loss(outputs.logits, labels)

    _, _, own_losses = _train(Trainer, make, data, collator, TrainingArguments(**_common(tmp_path / "own")))
    _, stock_model, stock_losses = _train(Trainer, make, data, collator, TrainingArguments(**_common(tmp_path / "stock")),
                                          compute_loss_func=margin_loss)
    args = LDIFSTrainingArguments(**_common(tmp_path / "ldifs"), regularizer="ldifs", ldifs_lambda=0.0)
    trainer, model, losses = _train(LDIFSTrainer, make, data, collator, args, compute_loss_func=margin_loss)
    assert len(calls) == 6 and stock_losses != own_losses  # the function replaced the model's cross-entropy
    assert losses == stock_losses
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), stock_model.parameters()))


@pytest.mark.slow  # a fresh interpreter imports the package: about 11 s
def test_package_imports_without_trl():
    code = "import sys; sys.modules['trl'] = None; import ldifs_hf, ldifs_hf.training.trainer; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_ldifs_on_conv_feature_maps_trains(tmp_path):
    # ConvNeXt's hidden states are [B, C, H, W]; LDIFS treats the H*W positions as tokens.
    from transformers import ConvNextConfig, ConvNextForImageClassification

    _, data, _, _, _ = _case("vit-label-smoothing")
    config = ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32, num_labels=3)
    args = LDIFSTrainingArguments(**_common(tmp_path, max_steps=2), regularizer="ldifs", ldifs_lambda=1.0)
    trainer, _, _ = _train(LDIFSTrainer, lambda: ConvNextForImageClassification(config), data, None, args)
    logged = [h["loss_ldifs"] for h in trainer.state.log_history if "loss_ldifs" in h]
    assert trainer.ldifs_layers == [0, 1, 2]
    assert logged[0] == 0.0 and math.isfinite(logged[1]) and logged[1] > 0
