"""LDIFSTrainer against the stock `transformers.Trainer` on the same tiny model and data: what a Trainer user
observes is the stock behaviour, plus the term.

A matrix of model families (vision encoders, text encoders and decoders, encoder-decoders, SigLIP and the
paper's CLIP classifier) x regularizers (none, L2SP λ = 0, LDIFS λ = 0 and 1, KL λ = 0 and 1): loss and weights after
3 steps equal to the stock Trainer's where the term is off; the predictions' type and shape; `evaluate()`'s
keys; the log entries' keys and count. Then one test per behaviour: summaries, resumes, λ = 0, no `args`, stochastic
depth, encoder-decoder taps, unused weights' gradients and the warm-up warning.
"""

import logging
import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForSequenceClassification,
    CLIPModel,
    CLIPProcessor,
    ConvNextConfig,
    ConvNextForImageClassification,
    Dinov2Config,
    Dinov2ForImageClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    SiglipConfig,
    SiglipForImageClassification,
    SwinConfig,
    SwinForImageClassification,
    T5Config,
    T5ForConditionalGeneration,
    Trainer,
    TrainingArguments,
    ViTConfig,
    ViTForImageClassification,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

from ldifs_hf import LDIFSTrainer, LDIFSTrainingArguments, get_method
from ldifs_hf.training.build import build_model

VOCAB = 40
N = 8  # examples: two batches of 4


def _images(size=16):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(N) % 3
    pixels = torch.randn(N, 3, size, size, generator=g) + labels.view(-1, 1, 1, 1).float()
    return Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": labels.numpy()}).with_format("torch")


def _tokens(kind):
    """Rows of 3..6 tokens (so batches are padded), with class labels, LM labels or target sequences."""
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(N):
        ids = torch.randint(3, VOCAB, (3 + i % 4,), generator=g).tolist()
        label = {"class": i % 3, "lm": ids, "seq2seq": ids[::-1][:4]}[kind]
        rows.append({"input_ids": ids, "labels": label})
    return Dataset.from_list(rows)


def token_collator(examples):
    """Right-pads with 0; list labels are padded with -100 (LM labels also where the input is padding)."""
    def pad(rows, value):
        width = max(len(r) for r in rows)
        return torch.tensor([r + [value] * (width - len(r)) for r in rows])

    ids = pad([e["input_ids"] for e in examples], 0)
    batch = {"input_ids": ids, "attention_mask": (pad([[1] * len(e["input_ids"]) for e in examples], 0))}
    labels = [e["labels"] for e in examples]
    batch["labels"] = pad(labels, -100) if isinstance(labels[0], list) else torch.tensor(labels)
    return batch


def _audio():
    g = torch.Generator().manual_seed(2)
    features = torch.randn(N, 4, 16, generator=g)  # [B, mel bins, 2 x max_source_positions]
    labels = torch.randint(3, VOCAB, (N, 3), generator=g)
    return Dataset.from_dict({"input_features": features.numpy(), "labels": labels.numpy()}).with_format("torch")


_TEXT = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
_IMAGE = dict(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
_SEQ2SEQ = dict(vocab_size=VOCAB, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, pad_token_id=0, bos_token_id=1,
                eos_token_id=2, decoder_start_token_id=1)


def family(name, tiny_clip_dir=None):
    """(model factory, dataset, collator) of a tiny model of the family."""
    if name == "vit":
        return lambda: ViTForImageClassification(ViTConfig(**_IMAGE, num_labels=3)), _images(), None
    if name == "dinov2":
        return lambda: Dinov2ForImageClassification(Dinov2Config(**_IMAGE, num_labels=3)), _images(), None
    if name == "convnext":
        config = ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=16, num_labels=3, drop_path_rate=0.2)
        return lambda: ConvNextForImageClassification(config), _images(), None
    if name == "swin":
        config = SwinConfig(image_size=16, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=2,
                            num_labels=3, drop_path_rate=0.2)
        return lambda: SwinForImageClassification(config), _images(), None
    if name == "bert":
        config = BertConfig(**_TEXT, max_position_embeddings=16, num_labels=3)
        return lambda: BertForSequenceClassification(config), _tokens("class"), token_collator
    if name == "gpt2":
        config = GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=VOCAB, n_positions=16)
        return lambda: GPT2LMHeadModel(config), _tokens("lm"), token_collator
    if name == "llama":
        config = LlamaConfig(**_TEXT, num_key_value_heads=1, max_position_embeddings=16, attention_dropout=0.1)
        return lambda: LlamaForCausalLM(config), _tokens("lm"), token_collator
    if name == "t5":
        config = T5Config(vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, decoder_start_token_id=0)
        return lambda: T5ForConditionalGeneration(config), _tokens("seq2seq"), token_collator
    if name == "bart":
        config = BartConfig(**_SEQ2SEQ, max_position_embeddings=16)
        return lambda: BartForConditionalGeneration(config), _tokens("seq2seq"), token_collator
    if name == "whisper":
        config = WhisperConfig(**_SEQ2SEQ, num_mel_bins=4, max_source_positions=8, max_target_positions=16)
        return lambda: WhisperForConditionalGeneration(config), _audio(), None
    if name == "siglip":
        text = dict(_TEXT, max_position_embeddings=16)
        config = SiglipConfig(vision_config=_IMAGE, text_config=text, num_labels=3)
        return lambda: SiglipForImageClassification(config), _images(), None
    if name == "clip-classifier":
        clip = CLIPModel.from_pretrained(tiny_clip_dir)
        tokenizer = CLIPProcessor.from_pretrained(tiny_clip_dir).tokenizer
        data = _images(32)
        return lambda: build_model(get_method("zs-init-ce"), clip, tokenizer, ["cat", "dog", "bird"], ["a photo of a {}."]), data, None
    raise ValueError(name)


FAMILIES = ["vit", "dinov2", "convnext", "swin", "bert", "gpt2", "llama", "t5", "bart", "whisper", "siglip", "clip-classifier"]
REGULARIZERS = {
    "none": dict(regularizer="none"),
    "l2sp-0": dict(regularizer="l2sp", l2sp_lambda=0.0),
    "ldifs-0": dict(regularizer="ldifs", ldifs_lambda=0.0),
    "ldifs-1": dict(regularizer="ldifs", ldifs_lambda=1.0),
    "kl-0": dict(regularizer="kl", kl_lambda=0.0),
    "kl-1": dict(regularizer="kl", kl_lambda=1.0),
}
TERMS_ON = {"ldifs-1": "loss_ldifs", "kl-1": "loss_kl"}  # the cases whose term is on, and its logged name


def _common(tmp_path, **kw):
    common = dict(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, per_device_eval_batch_size=4,
        learning_rate=1e-3, weight_decay=0.1, lr_scheduler_type="linear", warmup_steps=0, logging_steps=1,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, remove_unused_columns=False,
    )
    return common | kw


def _run(trainer_cls, args, make, data, collator):
    """Train 3 steps, then evaluate and predict on the training data: (trainer, model, metrics, predictions)."""
    torch.manual_seed(0)
    model = make()

    def accuracy(prediction):
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return {"mean_logit": float(np.mean(logits))}

    trainer = trainer_cls(model=model, args=args, train_dataset=data, eval_dataset=data, data_collator=collator,
                          compute_metrics=accuracy)
    trainer.train()
    metrics = trainer.evaluate()
    predictions = trainer.predict(data).predictions
    return trainer, model, metrics, predictions


def _structure(value):
    """Type and shape of predictions, recursively (a tuple of arrays for models with several outputs)."""
    if isinstance(value, (tuple, list)):
        return type(value).__name__, [_structure(v) for v in value]
    return type(value).__name__, getattr(value, "shape", None)


_STOCK = {}


def _stock(name, tiny_clip_dir, tmp_path_factory):
    if name not in _STOCK:
        make, data, collator = family(name, tiny_clip_dir)
        args = TrainingArguments(**_common(tmp_path_factory.mktemp(f"stock-{name}")))
        _STOCK[name] = _run(Trainer, args, make, data, collator)
    return _STOCK[name]


@pytest.mark.slow  # 72 cases of 3 steps: about 110 s
@pytest.mark.parametrize("regularizer", list(REGULARIZERS))
@pytest.mark.parametrize("name", FAMILIES)
def test_the_trainer_is_the_stock_trainer_plus_its_term(name, regularizer, tiny_clip_dir, tmp_path, tmp_path_factory):
    stock_trainer, stock_model, stock_metrics, stock_predictions = _stock(name, tiny_clip_dir, tmp_path_factory)
    make, data, collator = family(name, tiny_clip_dir)
    args = LDIFSTrainingArguments(**_common(tmp_path), **REGULARIZERS[regularizer])
    trainer, model, metrics, predictions = _run(LDIFSTrainer, args, make, data, collator)

    term = TERMS_ON.get(regularizer)
    term_on = term is not None
    steps = [h for h in trainer.state.log_history if "loss" in h]
    stock_steps = [h for h in stock_trainer.state.log_history if "loss" in h]
    if not term_on:  # the term is off: the stock run, step for step and weight for weight
        assert [h["loss"] for h in steps] == [h["loss"] for h in stock_steps]
        for (key, p), q in zip(model.state_dict().items(), stock_model.state_dict().values()):
            assert torch.equal(p, q), key
        # So evaluate()'s numbers are the stock ones too (hyperparameter_search's default objective sums them).
        timeless = lambda m: {k: v for k, v in m.items() if not k.endswith(("_runtime", "_per_second"))}  # noqa: E731
        assert timeless(metrics) == timeless(stock_metrics)
    # Predictions: the stock type and shape, whatever hidden states LDIFS asked for.
    assert _structure(predictions) == _structure(stock_predictions)
    # evaluate() returns the stock metrics, and the term under its own key while it is on; the log history has the
    # stock entries (no more of them), the steps' with the task loss and the term beside the loss while it is on.
    assert set(metrics) == set(stock_metrics) | ({f"eval_{term}"} if term_on else set())
    term_keys = {"loss_task", term} if term_on else set()
    assert [set(h) for h in steps] == [set(h) | term_keys for h in stock_steps]
    assert len(trainer.state.log_history) == len(stock_trainer.state.log_history)
    if term_on:  # stochastic layers off: the term starts at 0, then the weights move
        assert steps[0][term] == pytest.approx(0.0, abs=1e-7) and steps[-1][term] > 0
        assert all(math.isfinite(h["loss"]) for h in steps)


# -- one behaviour each ---------------------------------------------------------------------------------

_RUN_TIMES = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos"}


def _history(trainer):
    return [{k: v for k, v in h.items() if k not in _RUN_TIMES} for h in trainer.state.log_history]


def test_the_summary_has_no_terms_and_a_resumed_run_logs_what_an_uninterrupted_one_does(tmp_path):
    make, data, collator = family("gpt2")
    # Step 5 is not logged: its terms must not surface as a summary's means.
    kw = dict(max_steps=5, logging_steps=2, save_strategy="steps", save_steps=2, per_device_train_batch_size=2)
    args = LDIFSTrainingArguments(**_common(tmp_path / "whole", **kw), regularizer="ldifs", ldifs_lambda=1.0)
    torch.manual_seed(0)
    whole = LDIFSTrainer(model=make(), args=args, train_dataset=data, data_collator=collator)
    whole.train()
    summary = whole.state.log_history[-1]
    assert "train_runtime" in summary and not [k for k in summary if k.startswith("loss_")]

    args = LDIFSTrainingArguments(**_common(tmp_path / "resumed", **kw), regularizer="ldifs", ldifs_lambda=1.0)
    torch.manual_seed(0)
    first = LDIFSTrainer(model=make(), args=args, train_dataset=data, data_collator=collator)
    first.train()
    torch.manual_seed(0)
    resumed = LDIFSTrainer(model=make(), args=args, train_dataset=data, data_collator=collator)
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-2"))
    resumed_history, whole_history = _history(resumed), _history(whole)
    assert [set(h) for h in resumed_history] == [set(h) for h in whole_history]
    for got, want in zip(resumed_history, whole_history):
        assert got == pytest.approx(want)


class _NoHiddenStates(nn.Module):
    """A model the stock Trainer takes: no config, no hidden states, its own loss."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * 16 * 16, 3)

    def forward(self, pixel_values, labels=None):
        logits = self.linear(pixel_values.flatten(1))
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def test_without_args_the_trainer_takes_any_model_with_the_stock_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output_dir is relative, as the stock Trainer's
    data = _images()
    losses = {}
    for trainer_cls in (Trainer, LDIFSTrainer):
        torch.manual_seed(0)
        trainer = trainer_cls(_NoHiddenStates(), train_dataset=data)
        trainer.args.use_cpu, trainer.args.report_to, trainer.args.disable_tqdm = True, [], True
        trainer.train()
        losses[trainer_cls] = [h["loss"] for h in trainer.state.log_history if "loss" in h] + [trainer.state.global_step]
    assert trainer.args.regularizer == "none" and trainer.args.output_dir == "tmp_trainer"
    defaults = TrainingArguments(output_dir="x")
    assert (trainer.args.learning_rate, trainer.args.warmup_steps, trainer.args.per_device_train_batch_size) == (
        defaults.learning_rate, defaults.warmup_steps, defaults.per_device_train_batch_size)
    assert losses[LDIFSTrainer] == losses[Trainer]


def test_lambda_zero_needs_nothing_and_a_positive_lambda_refuses_loudly(tmp_path):
    data = _images()
    # LDIFS at λ = 0 on a model without hidden states: no teacher, nothing asked of the model.
    args = LDIFSTrainingArguments(**_common(tmp_path / "ldifs"), regularizer="ldifs", ldifs_lambda=0.0)
    trainer = LDIFSTrainer(model=_NoHiddenStates(), args=args, train_dataset=data)
    assert trainer.teacher is None and not trainer.regularizer_active
    trainer.train()
    with pytest.raises(ValueError, match="LDIFS needs a model that returns hidden_states"):
        LDIFSTrainer(model=_NoHiddenStates(), args=LDIFSTrainingArguments(**_common(tmp_path), regularizer="ldifs", ldifs_lambda=1.0))
    # L2SP at λ = 0 on a model whose encoder is frozen: trains as the stock Trainer.
    make, data, _ = family("vit")

    def frozen_encoder():
        model = make()
        model.vit.requires_grad_(False)
        return model

    _, stock_model, _, _ = _run(Trainer, TrainingArguments(**_common(tmp_path / "stock")), frozen_encoder, data, None)
    args = LDIFSTrainingArguments(**_common(tmp_path / "l2sp"), regularizer="l2sp", l2sp_lambda=0.0)
    _, model, _, _ = _run(LDIFSTrainer, args, frozen_encoder, data, None)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), stock_model.parameters()))
    args = LDIFSTrainingArguments(**_common(tmp_path), regularizer="l2sp", l2sp_lambda=1.0)
    with pytest.raises(ValueError, match="L2SP found no trainable parameter in the encoder of ViTForImageClassification"):
        LDIFSTrainer(model=frozen_encoder(), args=args)


def _grads_none(trainer_cls, args, model, batch):
    trainer = trainer_cls(model=model, args=args)
    trainer.compute_loss(model, batch).backward()
    return {n for n, p in model.named_parameters() if p.grad is None}


def test_gradients_are_none_where_the_stock_trainers_are(tmp_path):
    # SigLIP's classifier mean-pools: the vision tower's attention-pooling head takes no part in the loss.
    make, data, _ = family("siglip")
    batch = {"pixel_values": torch.stack([data[i]["pixel_values"] for i in range(4)]), "labels": torch.tensor([0, 1, 2, 0])}
    stock = _grads_none(Trainer, TrainingArguments(**_common(tmp_path)), make(), batch)
    assert any(".head." in n for n in stock)
    args = LDIFSTrainingArguments(**_common(tmp_path), regularizer="l2sp", l2sp_lambda=0.0)
    assert _grads_none(LDIFSTrainer, args, make(), batch) == stock
    # With λ > 0 the anchored head gets its gradient 2λ(θ−θ0), as L2SP defines it.
    args = LDIFSTrainingArguments(**_common(tmp_path), regularizer="l2sp", l2sp_lambda=1.0)
    assert not {n for n in _grads_none(LDIFSTrainer, args, make(), batch) if ".head." in n}


@pytest.mark.parametrize("keep", [False, True])
def test_every_stochastic_layer_is_off_while_ldifs_is_on_unless_kept(keep, tmp_path):
    def probabilities(model):
        return [getattr(m, "drop_prob", None) or getattr(m, "p", 0.0) for m in model.modules()
                if hasattr(m, "drop_prob") or isinstance(m, nn.Dropout)]

    config = SwinConfig(image_size=16, patch_size=4, embed_dim=8, depths=[2, 2], num_heads=[1, 2], window_size=2,
                        num_labels=3, drop_path_rate=0.3, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    model = SwinForImageClassification(config)
    before = probabilities(model)
    assert max(before) > 0 and any(hasattr(m, "drop_prob") and m.drop_prob > 0 for m in model.modules())
    args = LDIFSTrainingArguments(**_common(tmp_path), regularizer="ldifs", ldifs_lambda=1.0, keep_student_dropout=keep)
    LDIFSTrainer(model=model, args=args)
    assert probabilities(model) == (before if keep else [0.0] * len(before))


@pytest.mark.parametrize("name", ["t5", "bart", "whisper"])
def test_encoder_decoders_are_tapped_at_the_encoder_and_l2sp_scope_is_chosen(name, tmp_path):
    make, data, collator = family(name)
    model = make()
    trainer = LDIFSTrainer(model=model, args=LDIFSTrainingArguments(**_common(tmp_path), regularizer="ldifs", ldifs_lambda=1.0))
    assert type(trainer.teacher) is type(model.get_encoder()) and trainer.ldifs_layers == [0, 1, 2]
    encoder_only = LDIFSTrainer(model=model, args=LDIFSTrainingArguments(**_common(tmp_path), regularizer="l2sp", l2sp_lambda=1.0))
    everything = LDIFSTrainer(model=model, args=LDIFSTrainingArguments(**_common(tmp_path), regularizer="l2sp", l2sp_lambda=1.0,
                                                                       l2sp_scope="all"))
    encoder_names = {f"encoder.{n}" for n, p in model.get_encoder().named_parameters() if p.requires_grad}
    assert set(encoder_only.regularizer_state.names) == encoder_names
    assert len(everything.regularizer_state.names) == len([p for p in model.parameters() if p.requires_grad])
    assert any("decoder" in n for n in everything.regularizer_state.names)
    assert encoder_only.regularizer_description() == "L2SP, λ = 1.0"
    assert everything.regularizer_description() == "L2SP, λ = 1.0, scope all"
    with pytest.raises(ValueError, match=r"l2sp_scope must be one of \('encoder', 'all'\), got 'decoder'"):
        LDIFSTrainingArguments(**_common(tmp_path), l2sp_scope="decoder")


@pytest.mark.parametrize("warmup,warned", [(500, True), (0, False)])
def test_warmup_as_long_as_the_run_is_warned_through_the_api(warmup, warned, tmp_path, caplog):
    make, data, _ = family("vit")
    args = LDIFSTrainingArguments(**_common(tmp_path, warmup_steps=warmup), regularizer="none")
    with caplog.at_level(logging.WARNING, logger="ldifs_hf"):
        LDIFSTrainer(model=make(), args=args, train_dataset=data).train()
    messages = [r.getMessage() for r in caplog.records if "warm-up" in r.getMessage()]
    assert messages == (["warm-up (500 steps) is as long as the whole run (3 steps): the learning rate never leaves the "
                         "warm-up ramp; set --warmup_steps below the run's length (e.g. --warmup_steps 0)"] if warned else [])


@pytest.mark.parametrize("name", ["t5", "bart", "whisper"])
def test_the_decoder_or_both_stacks_are_tapped_on_request(name, tmp_path):
    make, data, collator = family(name)
    logged = {}
    for tap in ("encoder", "decoder", "both"):
        args = LDIFSTrainingArguments(**_common(tmp_path / tap, max_steps=2), regularizer="ldifs", ldifs_lambda=1.0, ldifs_tap=tap)
        trainer, _, _, predictions = _run(LDIFSTrainer, args, make, data, collator)
        logged[tap] = [h["loss_ldifs"] for h in trainer.state.log_history if "loss_ldifs" in h]
        assert logged[tap][0] == pytest.approx(0.0, abs=1e-7) and logged[tap][1] > 0
        assert (trainer.ldifs_layers, trainer.regularizer_state.decoder_layers) == {
            "encoder": ([0, 1, 2], None), "decoder": (None, [0, 1, 2]), "both": ([0, 1, 2], [0, 1, 2])}[tap]
    # The term's gradient is 0 at the teacher, so step 2 starts from the same weights in the three runs:
    # "both" is the mean over the six taps, three of each stack.
    assert logged["both"][1] == pytest.approx((logged["encoder"][1] + logged["decoder"][1]) / 2, rel=1e-4)
    assert trainer.regularizer_description() == "LDIFS, λ = 1.0, token normalisation, taps [0, 1, 2], decoder taps [0, 1, 2]"


def test_decoder_taps_are_refused_on_a_model_with_one_stack(tmp_path):
    make, _, _ = family("gpt2")
    args = LDIFSTrainingArguments(**_common(tmp_path), regularizer="ldifs", ldifs_lambda=1.0, ldifs_tap="decoder")
    with pytest.raises(ValueError, match="ldifs_tap='decoder' needs an encoder-decoder model .* GPT2LMHeadModel has one stack"):
        LDIFSTrainer(model=make(), args=args)
    with pytest.raises(ValueError, match=r"ldifs_tap must be one of \('encoder', 'decoder', 'both'\), got 'middle'"):
        LDIFSTrainingArguments(**_common(tmp_path), ldifs_tap="middle")
