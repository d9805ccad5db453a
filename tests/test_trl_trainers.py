"""LDIFSMixin on trl's trainers (SFT, DPO, KTO, GRPO, Reward) with a tiny GPT-2 on CPU: each is built as it is
alone (positional arguments included: DPO's and KTO's second is `ref_model`, GRPO's `reward_funcs`), trains
2 steps, and logs the LDIFS term, 0 at step 1 (the student's dropout is off) and > 0 after an update."""

from dataclasses import dataclass

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, PreTrainedTokenizerFast

from ldifs_hf.training.arguments import LDIFSArgumentsMixin
from ldifs_hf.training.trainer import LDIFSMixin

trl = pytest.importorskip("trl")

WORDS = "the a cat dog bird sat ran sang on in mat park today and is good bad yes no".split()


def _tokenizer():
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<eos>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


def _gpt2(tokenizer, head=GPT2LMHeadModel, **kw):
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=len(tokenizer), n_positions=64,
                        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                        bos_token_id=tokenizer.eos_token_id, **kw)
    return head(config)


def _common(tmp_path):
    return dict(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1,
                report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, bf16=False, regularizer="ldifs",
                ldifs_lambda=1.0)


def _mixed(trainer_cls, config_cls):
    config = dataclass(type(f"LDIFS{config_cls.__name__}", (LDIFSArgumentsMixin, config_cls), {}))
    trainer = type(f"LDIFS{trainer_cls.__name__}", (LDIFSMixin, trainer_cls), {})
    return trainer, config


def _prompts():
    return ["the cat", "a dog", "the bird", "a cat and"]


def _build(name, tmp_path):
    tokenizer = _tokenizer()
    if name == "sft":
        trainer_cls, config_cls = _mixed(trl.SFTTrainer, trl.SFTConfig)
        data = Dataset.from_dict({"text": ["the cat sat on the mat", "a dog ran in the park today", "the bird sang", "a cat and a dog"]})
        return trainer_cls(_gpt2(tokenizer), config_cls(**_common(tmp_path)), train_dataset=data, processing_class=tokenizer)
    if name == "dpo":
        trainer_cls, config_cls = _mixed(trl.DPOTrainer, trl.DPOConfig)
        data = Dataset.from_dict({"prompt": _prompts(), "chosen": [" sat on the mat"] * 4, "rejected": [" ran"] * 4})
        # Positional as DPOTrainer itself takes them: (model, ref_model, args); the reference is the tiny model
        # itself (without one, trl would load it by the model's Hub id).
        return trainer_cls(_gpt2(tokenizer), _gpt2(tokenizer), config_cls(**_common(tmp_path)), train_dataset=data,
                           processing_class=tokenizer)
    if name == "kto":
        trainer_cls, config_cls = _mixed(trl.KTOTrainer, trl.KTOConfig)
        data = Dataset.from_dict({"prompt": _prompts() * 2, "completion": [" sat on the mat", " ran"] * 4,
                                  "label": [True, False] * 4})
        return trainer_cls(_gpt2(tokenizer), _gpt2(tokenizer), config_cls(**_common(tmp_path)), train_dataset=data,
                           processing_class=tokenizer)
    if name == "grpo":
        trainer_cls, config_cls = _mixed(trl.GRPOTrainer, trl.GRPOConfig)

        def length_reward(completions, **kwargs):
            return [float(len(c)) for c in completions]

        config = config_cls(**_common(tmp_path), num_generations=2, max_completion_length=4, generation_batch_size=4)
        data = Dataset.from_dict({"prompt": _prompts()})
        # Positional as GRPOTrainer itself takes them: (model, reward_funcs, args).
        return trainer_cls(_gpt2(tokenizer), length_reward, config, train_dataset=data, processing_class=tokenizer)
    if name == "reward":
        trainer_cls, config_cls = _mixed(trl.RewardTrainer, trl.RewardConfig)
        data = Dataset.from_dict({"chosen": ["the cat sat on the mat"] * 4, "rejected": ["the cat ran"] * 4})
        model = _gpt2(tokenizer, GPT2ForSequenceClassification, num_labels=1)
        return trainer_cls(model, config_cls(**_common(tmp_path)), train_dataset=data, processing_class=tokenizer)
    raise ValueError(name)


@pytest.mark.parametrize("name", ["sft", "dpo", "kto", "grpo", "reward"])
def test_the_mixin_trains_every_trl_trainer_with_its_term(name, tmp_path):
    trainer = _build(name, tmp_path)
    assert trainer.regularizer == "ldifs" and trainer.ldifs_layers == [0, 1, 2]
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss_ldifs" in h]
    assert len(logged) == 2, trainer.state.log_history
    assert logged[0]["loss_ldifs"] == pytest.approx(0.0, abs=1e-7) and logged[1]["loss_ldifs"] > 0


def test_without_args_a_trl_trainer_with_the_mixin_asks_for_its_config():
    tokenizer = _tokenizer()
    trainer_cls, _ = _mixed(trl.SFTTrainer, trl.SFTConfig)
    with pytest.raises(TypeError, match="LDIFSSFTTrainer needs args=: its parent's config class combined with LDIFSArgumentsMixin"):
        trainer_cls(_gpt2(tokenizer), train_dataset=Dataset.from_dict({"text": ["the cat"]}), processing_class=tokenizer)
