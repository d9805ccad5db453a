"""LDIFSTrainer over every registered method, a non-CLIP model, and its errors."""

import math
import os

import pytest
import torch
from safetensors import safe_open
from torch import nn
from transformers import CLIPModel, CLIPProcessor, ViTConfig, ViTForImageClassification

from ldifs_hf import LDIFSTrainer, LDIFSTrainingArguments, get_method, list_methods
from ldifs_hf.training.build import build_collator, build_model
from ldifs_hf.training.terms import get_regularizer

CLASSES = ["cat", "dog", "bird"]
TEMPLATES = ["a photo of a {}.", "a photo of the {}."]


def _args(tmp_path, **kw):
    defaults = dict(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=8, learning_rate=1e-3,
        warmup_steps=0, logging_steps=1, report_to=[], save_strategy="steps", save_steps=2, use_cpu=True,
        disable_tqdm=True, seed=0,
    )
    defaults.update(kw)
    return LDIFSTrainingArguments(**defaults)


def _safetensors_keys(directory):
    with safe_open(os.path.join(directory, "model.safetensors"), "pt") as f:
        return set(f.keys())


@pytest.mark.parametrize("method", list_methods())
def test_every_method_trains_logs_terms_and_keeps_teacher_frozen(method, tiny_clip_dir, pixel_dataset, tmp_path):
    spec = get_method(method)
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    tokenizer = CLIPProcessor.from_pretrained(tiny_clip_dir).tokenizer
    model = build_model(spec, clip, tokenizer, CLASSES, TEMPLATES, pixel_dataset, lp_iterations=20)
    trainer = LDIFSTrainer(
        model=model, args=_args(tmp_path, method=method), train_dataset=pixel_dataset,
        data_collator=build_collator(spec, tokenizer, CLASSES, TEMPLATES),
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    teacher_before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()} if trainer.teacher else None
    l2sp_reference = [r.clone() for r in trainer.regularizer_state.reference] if spec.regularizer == "l2sp" else None

    trainer.train()

    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2
    term = get_regularizer(spec.regularizer).log_name
    for entry in logged:
        assert math.isfinite(entry["loss"])
        if term:
            assert math.isfinite(entry[term]) and math.isfinite(entry["loss_task"])
        # Without a term the entries are the stock ones: no task loss beside the loss.
        assert set(entry) & {"loss_task", "loss_ldifs", "loss_l2sp", "loss_kl"} == ({"loss_task", term} if term else set())
    if term:
        # At step 1 the student equals its anchor; after one update it has moved away.
        assert logged[0][term] == pytest.approx(0.0, abs=1e-6)
        assert logged[1][term] > 0
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p.detach(), before[n])]
    assert not unchanged, f"parameters not updated: {unchanged[:5]}"
    if spec.trained == "both":
        assert any(n.startswith("text_model") for n in before)
    if teacher_before is not None:
        for k, v in trainer.teacher.state_dict().items():
            assert torch.equal(v, teacher_before[k]), k
        assert all(not p.requires_grad for p in trainer.teacher.parameters())
        assert not trainer.teacher.training
        optimizer_params = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
        assert not optimizer_params & {id(p) for p in trainer.teacher.parameters()}
    if l2sp_reference is not None:
        assert all(torch.equal(a, b) for a, b in zip(l2sp_reference, trainer.regularizer_state.reference))
    checkpoint = os.path.join(trainer.args.output_dir, "checkpoint-2")
    keys = _safetensors_keys(checkpoint)
    assert keys == set(model.state_dict().keys())
    assert not any("teacher" in k for k in keys)


def test_ldifs_uses_one_student_forward(tiny_clip_dir, pixel_dataset, tmp_path):
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    tokenizer = CLIPProcessor.from_pretrained(tiny_clip_dir).tokenizer
    model = build_model(get_method("zs-init-ldifs"), clip, tokenizer, CLASSES, TEMPLATES)
    trainer = LDIFSTrainer(model=model, args=_args(tmp_path, method="zs-init-ldifs", max_steps=1), train_dataset=pixel_dataset,
                           data_collator=build_collator(get_method("zs-init-ldifs"), tokenizer, CLASSES, TEMPLATES))
    calls = {"student": 0, "teacher": 0}
    model.vision_model.register_forward_hook(lambda *a: calls.__setitem__("student", calls["student"] + 1))
    trainer.teacher.register_forward_hook(lambda *a: calls.__setitem__("teacher", calls["teacher"] + 1))
    trainer.train()
    assert calls == {"student": 1, "teacher": 1}
    assert trainer.ldifs_layers == [0, 1, 2, 3, 4]


def test_ldifs_and_l2sp_work_on_a_non_clip_hf_model(pixel_dataset, tmp_path):
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                       intermediate_size=64, num_labels=3)
    for regularizer, term in (("ldifs", "loss_ldifs"), ("l2sp", "loss_l2sp")):
        torch.manual_seed(0)
        model = ViTForImageClassification(config)
        args = _args(tmp_path / regularizer, regularizer=regularizer, save_strategy="no")
        trainer = LDIFSTrainer(model=model, args=args, train_dataset=pixel_dataset)
        teacher_before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()} if trainer.teacher else {}
        trainer.train()
        logged = [h for h in trainer.state.log_history if term in h]
        assert len(logged) == 2 and logged[1][term] > 0
        for k, v in teacher_before.items():
            assert torch.equal(trainer.teacher.state_dict()[k], v)
    # The ViT teacher is the base ViTModel, tapped at 0 and every L/4 blocks.
    assert type(trainer.teacher).__name__ in ("ViTModel",) or trainer.regularizer == "l2sp"


def test_l2sp_gradient_is_added_to_the_task_gradient(tiny_clip_dir, pixel_dataset, tmp_path):
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    tokenizer = CLIPProcessor.from_pretrained(tiny_clip_dir).tokenizer
    model = build_model(get_method("zs-init-l2sp"), clip, tokenizer, CLASSES, TEMPLATES)
    trainer = LDIFSTrainer(model=model, args=_args(tmp_path, method="zs-init-l2sp", l2sp_lambda=2.0), train_dataset=pixel_dataset)
    p = model.visual_projection.weight
    with torch.no_grad():
        p.add_(0.1)  # move away from the anchor so the penalty has a gradient
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    total = p.grad.clone()
    p.grad = None
    torch.nn.functional.cross_entropy(model(pixel_values=batch["pixel_values"]).logits.float(), batch["labels"]).backward()
    assert torch.allclose(total - p.grad, 2 * 2.0 * torch.full_like(p, 0.1), atol=1e-5)


def test_unknown_method_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown method 'lp-init-magic'.*lp-init-ldifs"):
        _args(tmp_path, method="lp-init-magic")


@pytest.mark.parametrize("field,value", [("ldifs_lambda", -1.0), ("l2sp_lambda", -0.5), ("ldifs_lambda", float("nan")), ("l2sp_lambda", float("inf"))])
def test_negative_lambda_is_rejected(tmp_path, field, value):
    # NaN and inf are named by the check every float setting gets, before the regularizer's own range check.
    expected = f"{field} must be a number >= 0, got" if math.isfinite(value) else f"{field} must be a finite number, got {value}"
    with pytest.raises(ValueError, match=expected):
        _args(tmp_path, **{field: value})


def test_bad_normalization_regularizer_and_layers_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="ldifs_normalization must be one of"):
        _args(tmp_path, ldifs_normalization="layer")
    with pytest.raises(ValueError, match="regularizer must be one of"):
        _args(tmp_path, regularizer="ewc")
    with pytest.raises(ValueError, match="ldifs_layers must be hidden-state indices >= 0, got -1"):
        _args(tmp_path, ldifs_layers=[0, -1])


def test_layer_index_out_of_range_fails_before_training(tiny_clip_dir, pixel_dataset, tmp_path):
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    model = build_model(get_method("zs-init-ce"), clip, CLIPProcessor.from_pretrained(tiny_clip_dir).tokenizer, CLASSES, TEMPLATES)
    with pytest.raises(ValueError, match=r"ldifs layer index 9 out of range: the model has 4 blocks, so hidden_states indices are 0..4"):
        LDIFSTrainer(model=model, args=_args(tmp_path, method="zs-init-ldifs", ldifs_layers=[0, 9]), train_dataset=pixel_dataset)


class _NoHiddenStates(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * 32 * 32, 3)

    def forward(self, pixel_values):
        return {"logits": self.linear(pixel_values.flatten(1))}


def test_model_without_hidden_states_is_rejected_for_ldifs(pixel_dataset, tmp_path):
    with pytest.raises(ValueError, match="LDIFS needs a model that returns hidden_states"):
        LDIFSTrainer(model=_NoHiddenStates(), args=_args(tmp_path, regularizer="ldifs"), train_dataset=pixel_dataset)


def test_method_plus_regularizer_combinations(tmp_path):
    spec = get_method("flyp+ldifs")
    assert (spec.objective, spec.regularizer, spec.trained) == ("clip-contrastive", "ldifs", "both")
    assert _args(tmp_path, method="flyp+ldifs").regularizer == "ldifs"
    assert _args(tmp_path, method="lp-init-ldifs", regularizer="none").regularizer == "none"
    with pytest.raises(ValueError, match="unknown regularizer 'ewc'"):
        get_method("flyp+ewc")
