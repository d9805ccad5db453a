"""LDIFSMixin on trl's SFTTrainer: a tiny causal LM fine-tuned with SFT + LDIFS and SFT + KL (under trl's fused LM
head), the logged terms checked by hand; the README's trl snippet and `examples/sft_ldifs.py` as written on a CPU; at
λ = 0 the logs and the weights are stock trl's."""

import copy
import os
import re
import sys
import types
from dataclasses import dataclass

import pytest
import torch
from datasets import Dataset, DatasetDict
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback

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


def _sft_on_gpt2(tmp_path, **regularizer):
    """An SFT trainer with the mixin on a tiny GPT-2 (dropout on), 2 steps of one batch of the 4 texts: (trainer, its
    batch, the starting model in eval mode, a callback holding the model after the first update)."""
    tokenizer = _word_tokenizer(TEXTS)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tokenizer), n_positions=32,
                                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                       bos_token_id=tokenizer.eos_token_id))
    pretrained = copy.deepcopy(model).eval()  # the teacher: no dropout
    args = LDIFSSFTConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, bf16=False, **regularizer,
    )
    snapshot = _SnapshotAfterFirstUpdate()
    trainer = LDIFSSFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": TEXTS}),
                              processing_class=tokenizer, callbacks=[snapshot])
    batch = next(iter(trainer.get_train_dataloader()))  # the one batch of every epoch (row order aside)
    assert (batch["attention_mask"] == 0).any()  # padded
    return trainer, batch, pretrained, snapshot


def test_sft_trainer_with_the_mixin_logs_ldifs_equal_to_the_formula(tmp_path):
    trainer, batch, pretrained, snapshot = _sft_on_gpt2(tmp_path, regularizer="ldifs", ldifs_lambda=1.0)
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



def test_sft_trainer_with_the_mixin_logs_kl_equal_to_the_formula_under_the_fused_lm_head(tmp_path):
    trainer, batch, pretrained, snapshot = _sft_on_gpt2(tmp_path, regularizer="kl", kl_lambda=1.0)
    model = trainer.model
    assert (batch["labels"] == -100).any()  # the padding is not counted
    forwards = []
    model.register_forward_pre_hook(lambda module, args, kwargs: forwards.append(kwargs.get("fused_lm_head")), with_kwargs=True)
    trainer.train()
    assert forwards == [True, True]  # trl's fused head: the student's forward returns no logits

    logged = [h for h in trainer.state.log_history if "loss_kl" in h]
    assert logged[0]["loss_kl"] == 0.0 and logged[1]["loss_kl"] > 0
    assert logged[1]["loss"] == pytest.approx(logged[1]["loss_task"] + logged[1]["loss_kl"], rel=1e-5)
    with torch.no_grad():
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        # Not snapshot.model(...): its copied forward is trl's fused one, bound to the original model's own forward.
        trained = snapshot.model
        student = trained.lm_head(trained.transformer(**inputs).last_hidden_state).double()
        teacher = pretrained(**inputs).logits.double()
    counted = batch["labels"][:, 1:] != -100  # position i predicts token i + 1
    p_t, log_s = torch.softmax(teacher[:, :-1][counted], -1), torch.log_softmax(student[:, :-1][counted], -1)
    expected = (p_t * (torch.log(p_t) - log_s)).sum(-1).mean()
    assert logged[1]["loss_kl"] == pytest.approx(expected.item(), rel=1e-4)


def test_padding_free_batches_are_refused_for_ldifs(tmp_path):
    tokenizer = _word_tokenizer(TEXTS)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tokenizer), n_positions=32,
                                       pad_token_id=tokenizer.pad_token_id))
    args = LDIFSSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to=[], bf16=False, padding_free=True, max_length=None)
    with pytest.raises(ValueError, match="padding_free=True packs into one row; set padding_free=False"):
        LDIFSSFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": TEXTS}), processing_class=tokenizer)


# -- drop-in: the README's snippet, the script, the log stream at λ = 0 -----------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    """A tiny Llama and its tokenizer in a folder, as a Hub model would be downloaded."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = _word_tokenizer(TEXTS)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=32, max_position_embeddings=32,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _readme_trl_snippet() -> str:
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    return next(b for b in blocks if "LDIFSSFTTrainer" in b)


def test_the_readme_trl_snippet_runs_as_written_on_a_cpu_with_a_teacher_that_starts_at_0(tiny_llama_dir, tmp_path, monkeypatch):
    import datasets

    snippet = _readme_trl_snippet()
    # Offline: the snippet's Hub model is the tiny local one, and its Hub dataset a local one; nothing else changes.
    assert snippet.count('"Qwen/Qwen2.5-0.5B"') == 1 and snippet.count('load_dataset("trl-lib/Capybara", split="train")') == 1
    snippet = snippet.replace('"Qwen/Qwen2.5-0.5B"', repr(tiny_llama_dir))
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: Dataset.from_dict({"text": TEXTS}))
    monkeypatch.chdir(tmp_path)
    setup, last = snippet.rstrip().rsplit("\n", 1)
    assert last.startswith("trainer.train()")
    module = types.ModuleType("readme_trl_snippet")  # a module, as a user's script is: its classes pickle by name
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    exec(setup, namespace)
    trainer = namespace["trainer"]
    assert not trainer.args.bf16  # this machine has no bf16 GPU
    assert {p.dtype for p in trainer.teacher.parameters()} == {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.compute_loss(trainer.model.train(), batch)
    assert trainer._metrics["train"]["loss_ldifs"][-1].item() == 0.0
    trainer._metrics["train"].clear()
    exec(last, namespace)
    assert trainer.state.global_step > 0 and (tmp_path / "out").is_dir()


def test_the_sft_script_trains_on_a_save_to_disk_folder_on_a_cpu(tiny_llama_dir, tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        import sft_ldifs
    finally:
        sys.path.pop(0)
    DatasetDict({"train": Dataset.from_dict({"text": TEXTS})}).save_to_disk(tmp_path / "data")
    trainer = sft_ldifs.main([
        "--model_name_or_path", tiny_llama_dir, "--dataset_name", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out"),
        "--max_steps", "2", "--logging_steps", "1", "--per_device_train_batch_size", "4", "--report_to", "none",
        "--ldifs_lambda", "1", "--disable_tqdm", "true",
    ])
    logged = [h["loss_ldifs"] for h in trainer.state.log_history if "loss_ldifs" in h]
    assert logged[0] == 0.0 and logged[1] > 0 and not trainer.args.bf16
    assert (tmp_path / "out" / "model.safetensors").exists()
    with pytest.raises(SystemExit, match="has no split 'validation'; it has train"):
        sft_ldifs.load_train_split(str(tmp_path / "data"), "validation")


class _Events(TrainerCallback):
    def __init__(self):
        self.events = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.events.append(sorted(logs))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.events.append(("evaluate", sorted(metrics)))


@pytest.mark.parametrize("regularizer", [dict(regularizer="none"), dict(regularizer="ldifs", ldifs_lambda=0.0),
                                         dict(regularizer="kl", kl_lambda=0.0)], ids=["none", "ldifs-0", "kl-0"])
def test_at_lambda_0_the_sft_logs_events_and_weights_are_stock_trls(regularizer, tmp_path):
    data = Dataset.from_dict({"text": TEXTS})
    tokenizer = _word_tokenizer(TEXTS)

    def run(trainer_cls, config_cls, **kw):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=len(tokenizer), n_positions=32,
                                           pad_token_id=tokenizer.pad_token_id))
        events = _Events()
        args = config_cls(output_dir=str(tmp_path / trainer_cls.__name__), max_steps=2, per_device_train_batch_size=2,
                          logging_steps=1, eval_strategy="steps", eval_steps=1, report_to=[], save_strategy="no",
                          use_cpu=True, disable_tqdm=True, bf16=False, **kw)
        trainer = trainer_cls(model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer,
                              callbacks=[events])
        trainer.train()
        timeless = [{k: v for k, v in h.items() if not k.endswith(("_runtime", "_per_second"))} for h in trainer.state.log_history]
        return events.events, timeless, model.state_dict()

    stock_events, stock_history, stock_weights = run(trl.SFTTrainer, trl.SFTConfig)
    events, history, weights = run(LDIFSSFTTrainer, LDIFSSFTConfig, **regularizer)
    assert list(weights) == list(stock_weights) and all(torch.equal(weights[k], stock_weights[k]) for k in weights)
    assert events == stock_events and len(events) == 7  # 2 steps, 2 evaluations (a log and an evaluate each), the summary
    assert [set(h) for h in history] == [set(h) for h in stock_history]
    assert [{k: v for k, v in h.items() if k != "train_loss"} for h in history] == \
        [{k: v for k, v in h.items() if k != "train_loss"} for h in stock_history]


def test_a_teacher_copied_from_a_model_with_trls_fused_head_runs_its_own_weights(tmp_path):
    trainer, batch, pretrained, _ = _sft_on_gpt2(tmp_path, regularizer="kl", kl_lambda=1.0)
    assert "forward" in trainer.model.__dict__  # trl patched the student's forward before the teacher was copied
    assert "forward" not in trainer.teacher.__dict__  # the copy runs its class's forward, not the student's
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(1.0)  # the student moves; the teacher must not follow
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        assert torch.equal(trainer.teacher(**inputs).logits, pretrained(**inputs).logits)
