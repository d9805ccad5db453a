"""LDIFSMixin on trl's SFTTrainer: a tiny causal LM fine-tuned with SFT + LDIFS, the logged term checked by hand."""

import copy
from dataclasses import dataclass

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, TrainerCallback

from ldifs_hf.training.arguments import LDIFSArgumentsMixin
from ldifs_hf.training.trainer import LDIFSMixin

trl = pytest.importorskip("trl")

TEXTS = ["the cat sat on the mat", "a dog ran in the park today", "the bird sang", "a cat and a dog"]


@dataclass
class LDIFSSFTConfig(LDIFSArgumentsMixin, trl.SFTConfig):
    pass


class LDIFSSFTTrainer(LDIFSMixin, trl.SFTTrainer):
    pass


def _word_tokenizer(texts):
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<eos>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


class _SnapshotAfterFirstUpdate(TrainerCallback):
    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 1:
            self.model = copy.deepcopy(model)


def _masked_token_ldifs(student, teacher, layers, mask):
    """docs/PROTOCOL.md's token-normalised LDIFS over the real tokens only, written out per sequence."""
    per_sample = []
    for b in range(mask.shape[0]):
        n = int(mask[b].sum())
        taps = []
        for i in layers:
            s, t = student[i][b, :n], teacher[i][b, :n]  # right padding: the real tokens come first
            s, t = s / s.norm(dim=0, keepdim=True), t / t.norm(dim=0, keepdim=True)
            taps.append(((s - t) ** 2).sum() / (n * s.shape[1]))
        per_sample.append(sum(taps) / len(taps))
    return sum(per_sample) / len(per_sample)


def test_sft_trainer_with_the_mixin_logs_ldifs_equal_to_the_formula(tmp_path):
    tokenizer = _word_tokenizer(TEXTS)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tokenizer), n_positions=32,
                                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                       bos_token_id=tokenizer.eos_token_id))
    pretrained = copy.deepcopy(model).eval()  # the teacher: no dropout
    args = LDIFSSFTConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, bf16=False, regularizer="ldifs", ldifs_lambda=1.0,
    )
    snapshot = _SnapshotAfterFirstUpdate()
    trainer = LDIFSSFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": TEXTS}),
                              processing_class=tokenizer, callbacks=[snapshot])
    batch = next(iter(trainer.get_train_dataloader()))  # the one batch of every epoch (row order aside)
    assert (batch["attention_mask"] == 0).any()  # padded
    trainer.train()

    logged = [h for h in trainer.state.log_history if "loss_ldifs" in h]
    assert logged[0]["loss_ldifs"] == 0.0 and logged[1]["loss_ldifs"] > 0
    assert logged[1]["loss"] == pytest.approx(logged[1]["loss_task"] + logged[1]["loss_ldifs"], rel=1e-5)
    assert "mean_token_accuracy" in logged[1]  # SFTTrainer's own metrics still log
    assert trainer.ldifs_layers == [0, 1, 2]
    with torch.no_grad():
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "output_hidden_states": True}
        student = snapshot.model.transformer(**inputs).hidden_states
        teacher = pretrained.transformer(**inputs).hidden_states
    expected = _masked_token_ldifs(student, teacher, [0, 1, 2], batch["attention_mask"])
    assert logged[1]["loss_ldifs"] == pytest.approx(expected.item(), rel=1e-4)



def test_padding_free_batches_are_refused_for_ldifs(tmp_path):
    tokenizer = _word_tokenizer(TEXTS)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tokenizer), n_positions=32,
                                       pad_token_id=tokenizer.pad_token_id))
    args = LDIFSSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], bf16=False, padding_free=True, max_length=None)
    with pytest.raises(ValueError, match="padding_free=True packs into one row; set padding_free=False"):
        LDIFSSFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": TEXTS}), processing_class=tokenizer)
