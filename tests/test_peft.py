"""LDIFS, KL and L2SP on a LoRA (peft) model: the teacher is the model with adapters disabled, L2SP is Σ‖scale·B·A‖²."""

import copy

import pytest
import torch
from datasets import Dataset
from transformers import ViTConfig, ViTForImageClassification

from ldifs_hf import LDIFSTrainer, LDIFSTrainingArguments
from ldifs_hf.modeling import image_encoder

peft = pytest.importorskip("peft")


def _lora_vit(seed=0, **lora):
    torch.manual_seed(seed)
    base = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=64, num_labels=3))
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], modules_to_save=["classifier"], **lora)
    return peft.get_peft_model(base, config)


def _batch():
    g = torch.Generator().manual_seed(0)
    return {"pixel_values": torch.randn(4, 3, 32, 32, generator=g), "labels": torch.tensor([0, 1, 2, 0])}


def _args(tmp_path, **kw):
    return LDIFSTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], **kw)


def _set_lora(model, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def test_adapter_disabled_teacher_is_no_copy_and_matches_a_deep_copied_teacher(tmp_path):
    model = _lora_vit()
    snapshot = copy.deepcopy(model)  # B = 0: the deep copy's encoder computes the base features
    trainer = LDIFSTrainer(model=model, args=_args(tmp_path / "a", regularizer="ldifs"))
    copied = LDIFSTrainer(model=model, args=_args(tmp_path / "b", regularizer="ldifs"), teacher_model=snapshot)
    # No second copy: every tensor the teacher runs with is one of the model's own.
    assert trainer.teacher.module is image_encoder(model)
    own = {p.data_ptr() for p in model.parameters()}
    assert {p.data_ptr() for p in trainer.teacher.module.parameters()} <= own
    assert not {p.data_ptr() for p in copied.teacher.parameters()} & own  # the other way does copy
    _set_lora(model)
    model.train()
    values = []
    for t in (trainer, copied):
        t.compute_loss(model, _batch())
        values.append(t._metrics["train"]["loss_ldifs"][-1].item())
    assert values[0] > 0 and values[0] == pytest.approx(values[1], rel=1e-6)
    # The shared teacher left the adapters on and the student in training mode.
    assert not model.base_model.model.vit.layers[0].attention.q_proj.disable_adapters
    assert all(m.training for m in model.modules())


def test_the_kl_teacher_of_a_lora_model_is_the_model_with_adapters_disabled(tmp_path):
    model = _lora_vit()
    snapshot = copy.deepcopy(model.get_base_model())  # B = 0: the base model itself, head included
    trainer = LDIFSTrainer(model=model, args=_args(tmp_path / "a", regularizer="kl"))
    copied = LDIFSTrainer(model=model, args=_args(tmp_path / "b", regularizer="kl"), teacher_model=snapshot)
    assert trainer.teacher.module is model  # no second copy
    _set_lora(model)
    model.train()
    values = []
    for t in (trainer, copied):
        t.compute_loss(model, _batch())
        values.append(t._metrics["train"]["loss_kl"][-1].item())
    assert values[0] > 0 and values[0] == pytest.approx(values[1], rel=1e-5)
    assert not model.base_model.model.vit.layers[0].attention.q_proj.disable_adapters
    assert all(m.training for m in model.modules())


def test_l2sp_under_lora_is_the_squared_norm_of_scale_b_a(tmp_path):
    model = _lora_vit()
    trainer = LDIFSTrainer(model=model, args=_args(tmp_path, regularizer="l2sp"))
    _set_lora(model)
    # By hand: scale = lora_alpha / r = 2 for every adapted query/value of both blocks.
    expected = 0.0
    for layer in model.base_model.model.vit.layers:
        for proj in (layer.attention.q_proj, layer.attention.v_proj):
            a, b = proj.lora_A["default"].weight, proj.lora_B["default"].weight
            expected += ((2.0 * b @ a) ** 2).sum().item()
    trainer.compute_loss(model, _batch())
    assert trainer._metrics["train"]["loss_l2sp"][-1].item() == pytest.approx(expected, rel=1e-5)
    # The head (modules_to_save) is never anchored: moving it changes nothing.
    assert not [n for n in trainer.regularizer_state.names if "classifier" in n or "lora_" in n]
    with torch.no_grad():
        for p in model.base_model.model.classifier.parameters():
            p.add_(5.0)
    trainer.compute_loss(model, _batch())
    assert trainer._metrics["train"]["loss_l2sp"][-1].item() == pytest.approx(expected, rel=1e-5)


def test_l2sp_under_lora_gives_the_lora_factors_their_gradient(tmp_path):
    model = _lora_vit()
    trainer = LDIFSTrainer(model=model, args=_args(tmp_path, regularizer="l2sp", l2sp_lambda=1.0))
    _set_lora(model)
    query = model.base_model.model.vit.layers[0].attention.q_proj
    a, b = query.lora_A["default"].weight, query.lora_B["default"].weight
    trainer.regularizer_penalty(model).backward()
    # d/dB ||2 B A||^2 = 8 B A A^T
    assert torch.allclose(b.grad, 8 * b.detach() @ a.detach() @ a.detach().T, rtol=1e-4, atol=1e-6)


def test_lora_model_trains_with_both_terms(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = Dataset.from_dict({"pixel_values": torch.randn(8, 3, 32, 32, generator=g).numpy(), "labels": [0, 1, 2, 0, 1, 2, 0, 1]})
    for regularizer, term in (("ldifs", "loss_ldifs"), ("l2sp", "loss_l2sp"), ("kl", "loss_kl")):
        model = _lora_vit()
        args = _args(tmp_path / regularizer, regularizer=regularizer, max_steps=2, per_device_train_batch_size=4,
                     learning_rate=1e-2, warmup_steps=0, logging_steps=1, save_strategy="no", disable_tqdm=True)
        trainer = LDIFSTrainer(model=model, args=args, train_dataset=data.with_format("torch"))
        trainer.train()
        logged = [h[term] for h in trainer.state.log_history if term in h]
        assert logged[0] == 0.0 and logged[1] > 0


def test_dora_teacher_model_and_prompt_learning_are_refused(tmp_path):
    with pytest.raises(ValueError, match="plain LoRA adapters only, got adapter 'default' of type DoRA"):
        LDIFSTrainer(model=_lora_vit(use_dora=True), args=_args(tmp_path, regularizer="l2sp"))
    with pytest.raises(ValueError, match="teacher_model is not supported there"):
        LDIFSTrainer(model=_lora_vit(), args=_args(tmp_path, regularizer="l2sp"), teacher_model=_lora_vit())
    from transformers import GPT2Config, GPT2LMHeadModel

    prompt_tuned = peft.get_peft_model(GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=40)),
                                       peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
    with pytest.raises(ValueError, match="prompt-learning adapter 'default' .*use regularizer 'none'"):
        LDIFSTrainer(model=prompt_tuned, args=_args(tmp_path, regularizer="ldifs"))
