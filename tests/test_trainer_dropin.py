"""LDIFSTrainer as a drop-in for the stock `Trainer`, where the last seams were: the log stream and the callbacks'
events where the term is off, `eval_loss` where it is on, `torch.compile`, and a model that draws random numbers in
its `forward` (ViT-MAE's patch mask)."""

import copy

import pytest
import torch
from transformers import (
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    ViTMAEConfig,
    ViTMAEForPreTraining,
)

from ldifs_hf import LDIFSTrainer, LDIFSTrainingArguments
from test_trainer_transparency import _common, _images, family

TIMINGS = ("_runtime", "_per_second")


class EventRecorder(TrainerCallback):
    """Every callback event in order, with the keys and values of the logs and metrics it carried (timings aside)."""

    def __init__(self):
        self.events = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            def record(args, state, control, logs=None, metrics=None, **kwargs):
                carried = logs if logs is not None else metrics
                kept = None if carried is None else {k: v for k, v in carried.items() if not k.endswith(TIMINGS)}
                self.events.append((name, kept))
            return record
        return super().__getattribute__(name)


def _timeless(history):
    return [{k: v for k, v in h.items() if not k.endswith(TIMINGS) and k not in ("train_loss", "total_flos")} for h in history]


def _trained(trainer_cls, args, name="vit", **kwargs):
    make, data, collator = family(name)
    recorder = EventRecorder()
    torch.manual_seed(0)
    trainer = trainer_cls(model=make(), args=args, train_dataset=data, eval_dataset=data, data_collator=collator,
                          callbacks=[recorder, *kwargs.pop("callbacks", [])], **kwargs)
    trainer.train()
    return trainer, recorder.events


EVERY_STEP = dict(eval_strategy="steps", eval_steps=1)


@pytest.mark.parametrize("regularizer", [dict(regularizer="none"), dict(regularizer="ldifs", ldifs_lambda=0.0),
                                         dict(regularizer="l2sp", l2sp_lambda=0.0)], ids=["none", "ldifs-0", "l2sp-0"])
def test_where_the_term_is_off_the_log_history_and_every_callback_event_are_the_stock_ones(regularizer, tmp_path):
    stock, stock_events = _trained(Trainer, TrainingArguments(**_common(tmp_path / "stock", **EVERY_STEP)), "llama")
    ours, events = _trained(LDIFSTrainer, LDIFSTrainingArguments(**_common(tmp_path / "ours", **EVERY_STEP), **regularizer), "llama")
    assert [name for name, _ in events] == [name for name, _ in stock_events]
    assert events == stock_events  # the same logs and metrics, key for key and value for value
    assert _timeless(ours.state.log_history) == _timeless(stock.state.log_history)
    assert sum(name == "on_log" for name, _ in events) == 7  # 3 steps, 3 evaluations, the summary


def test_with_the_term_on_eval_loss_is_the_stock_value_and_the_term_has_its_own_key(tmp_path):
    kw = dict(**EVERY_STEP, metric_for_best_model="eval_loss", save_strategy="steps", save_steps=1, load_best_model_at_end=True)
    ours, events = _trained(LDIFSTrainer, LDIFSTrainingArguments(**_common(tmp_path / "ours", **kw), regularizer="ldifs",
                                                                 ldifs_lambda=10.0), "llama",
                            callbacks=[EarlyStoppingCallback(early_stopping_patience=5)])
    stock, stock_events = _trained(Trainer, TrainingArguments(**_common(tmp_path / "stock", **kw)), "llama",
                                   callbacks=[EarlyStoppingCallback(early_stopping_patience=5)])
    # One log event per evaluation, as stock: the term rides in the evaluation's own metrics.
    assert [name for name, _ in events] == [name for name, _ in stock_events]
    evaluations = [h for h in ours.state.log_history if "eval_loss" in h]
    assert len(evaluations) == 3 and all(h["eval_loss_ldifs"] >= 0 and "eval_loss_task" not in h for h in evaluations)
    assert evaluations[-1]["eval_loss_ldifs"] > 0  # the term is on and measured, but not in eval_loss
    # The best model is chosen on the logged eval_loss (early stopping reads the same key) ...
    assert ours.state.best_metric == min(h["eval_loss"] for h in evaluations)
    # ... which is what the stock Trainer reports on the same weights; predict() too.
    _, data, collator = family("llama")
    metrics = ours.evaluate()
    twin = Trainer(model=copy.deepcopy(ours.model), args=TrainingArguments(**_common(tmp_path / "twin")), data_collator=collator)
    assert metrics["eval_loss"] == pytest.approx(twin.evaluate(data)["eval_loss"], rel=1e-6)
    assert ours.predict(data).metrics["test_loss"] == pytest.approx(twin.predict(data).metrics["test_loss"], rel=1e-6)
    assert metrics["eval_loss_ldifs"] > 0 and set(metrics) == set(stock.evaluate()) | {"eval_loss_ldifs"}


# -- torch.compile --------------------------------------------------------------------------------------------


def _losses(trainer):
    """Each step's loss and term, one flat list."""
    return [v for h in trainer.state.log_history if "loss" in h for v in (h["loss"], h.get("loss_ldifs", h.get("loss_l2sp")))]


@pytest.mark.parametrize("name", ["vit", "llama"])
def test_compiled_ldifs_and_l2sp_train_as_eager_also_after_a_compiled_stock_run(name, tmp_path):
    # The condition found: a stock (or λ = 0) compiled run of the same model class leaves graphs traced without
    # the taps' hooks, which dynamo reused (it does not guard on hooks): "encoder returned no hidden_states".
    compiled = dict(torch_compile=True, torch_compile_backend="eager")
    _trained(Trainer, TrainingArguments(**_common(tmp_path / "stock", **compiled)), name)
    for regularizer in (dict(regularizer="ldifs", ldifs_lambda=1.0), dict(regularizer="l2sp", l2sp_lambda=1.0, l2sp_scope="all")):
        eager, _ = _trained(LDIFSTrainer, LDIFSTrainingArguments(**_common(tmp_path / "eager"), **regularizer), name)
        ours, _ = _trained(LDIFSTrainer, LDIFSTrainingArguments(**_common(tmp_path / "compiled", **compiled), **regularizer), name)
        assert type(ours.model_wrapped).__name__ == "OptimizedModule"
        assert _losses(ours) == pytest.approx(_losses(eager), rel=1e-5, abs=1e-7)
        assert _losses(ours)[1] == pytest.approx(0.0, abs=1e-7) and _losses(ours)[-1] > 0


@pytest.mark.slow  # inductor on a CPU: about a minute
def test_inductor_compiled_ldifs_trains_a_padded_llama_as_eager(tmp_path):
    _trained(Trainer, TrainingArguments(**_common(tmp_path / "stock", torch_compile=True)), "llama")
    eager, _ = _trained(LDIFSTrainer, LDIFSTrainingArguments(**_common(tmp_path / "eager"), regularizer="ldifs", ldifs_lambda=1.0), "llama")
    ours, _ = _trained(LDIFSTrainer, LDIFSTrainingArguments(**_common(tmp_path / "ours", torch_compile=True), regularizer="ldifs",
                                                            ldifs_lambda=1.0), "llama")
    assert _losses(ours) == pytest.approx(_losses(eager), rel=1e-4, abs=1e-6)


# -- randomness in forward ------------------------------------------------------------------------------------


def _mae():
    config = ViTMAEConfig(image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=32, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                          decoder_num_attention_heads=2, decoder_intermediate_size=32)
    torch.manual_seed(0)
    return ViTMAEForPreTraining(config)


def test_a_random_patch_mask_is_shared_with_the_teacher_and_the_students_randomness_is_unchanged(tmp_path):
    data = _images().remove_columns("labels")
    args = LDIFSTrainingArguments(**_common(tmp_path), regularizer="ldifs", ldifs_lambda=1.0)
    trainer = LDIFSTrainer(model=_mae(), args=args, train_dataset=data)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss_ldifs" in h]
    assert logged[0]["loss_ldifs"] == 0.0 and logged[-1]["loss_ldifs"] > 0  # the teacher masked the same patches

    # The generators after the term's step are where the stock forward leaves them: the teacher's draws are undone.
    pixels = data[:4]["pixel_values"]
    stock = _mae().train()
    torch.manual_seed(1)
    stock_loss = stock(pixel_values=pixels).loss
    stock_state = torch.get_rng_state()
    trainer = LDIFSTrainer(model=_mae(), args=args)
    torch.manual_seed(1)
    loss = trainer.compute_loss(trainer.model.train(), {"pixel_values": pixels})
    assert torch.equal(torch.get_rng_state(), stock_state)
    assert loss.item() == stock_loss.item()  # the same mask, and a term of exactly 0


def test_a_random_patch_mask_under_torch_compile_is_refused_by_name_before_an_update(tmp_path):
    model = _mae()
    before = copy.deepcopy(model.state_dict())
    args = LDIFSTrainingArguments(**_common(tmp_path, torch_compile=True, torch_compile_backend="eager"), regularizer="ldifs",
                                  ldifs_lambda=1.0)
    trainer = LDIFSTrainer(model=model, args=args, train_dataset=_images().remove_columns("labels"))
    with pytest.raises(ValueError, match=r"^ViTMAEForPreTraining draws random numbers in its forward .* \(ViT-MAE: noise=\)"):
        trainer.train()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
