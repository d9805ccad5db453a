"""The KL anchor, τ²·KL(p_teacher ‖ p_student): its formula and gradient by hand, the term the trainer logs for a
classifier, a padded causal-LM batch and an encoder-decoder's decoder tokens (each against the formula written
out), its teacher for a CLIP classifier, and what it refuses."""

import math

import pytest
import torch
from datasets import Dataset
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    CLIPModel,
    CLIPProcessor,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
    ViTConfig,
    ViTForImageClassification,
)

from ldifs_hf import LDIFSTrainer, LDIFSTrainingArguments, get_method
from ldifs_hf.regularizers import kl_anchor
from ldifs_hf.training.build import build_model
from ldifs_hf.training.terms.kl import counted_rows

VOCAB = 30


def _args(tmp_path, **kw):
    return LDIFSTrainingArguments(
        output_dir=str(tmp_path), max_steps=1, learning_rate=1e-3, warmup_steps=0, logging_steps=1, report_to=[],
        save_strategy="no", use_cpu=True, disable_tqdm=True, seed=0, regularizer="kl", **kw,
    )


def _kl_by_hand(student_rows, teacher_rows, tau=1.0):
    """Σ_c p_t (log p_t − log p_s) of each row, p = softmax(z / τ), times τ², written out in float64."""
    student_rows, teacher_rows = student_rows.double(), teacher_rows.double()
    p_t = torch.exp(teacher_rows / tau) / torch.exp(teacher_rows / tau).sum(-1, keepdim=True)
    p_s = torch.exp(student_rows / tau) / torch.exp(student_rows / tau).sum(-1, keepdim=True)
    return tau**2 * (p_t * (torch.log(p_t) - torch.log(p_s))).sum(-1)


def _logged_term(trainer):
    trainer.train()
    return next(h["loss_kl"] for h in trainer.state.log_history if "loss_kl" in h)


# -- the formula ------------------------------------------------------------------------------------------


def test_the_formula_by_hand_with_and_without_temperature():
    student = torch.zeros(2, 3)
    teacher = torch.log(torch.tensor([[2.0, 1.0, 1.0], [1.0, 1.0, 1.0]]))
    # Row 0: p_t = (1/2, 1/4, 1/4) against a uniform p_s: ½ ln(3/2) + 2 · ¼ ln(3/4) = ½ ln(9/8). Row 1: equal, 0.
    assert kl_anchor(student, teacher).tolist() == pytest.approx([0.5 * math.log(9 / 8), 0.0], abs=1e-7)
    # τ = 2 halves the logits, p_t ∝ (√2, 1, 1), and the KL is multiplied by τ² = 4.
    p_t = [math.sqrt(2) / (math.sqrt(2) + 2), 1 / (math.sqrt(2) + 2), 1 / (math.sqrt(2) + 2)]
    assert kl_anchor(student, teacher, 2.0)[0].item() == pytest.approx(4 * sum(p * math.log(3 * p) for p in p_t), rel=1e-5)
    # The same logits give exactly 0, in float32 whatever the inputs' dtype.
    assert kl_anchor(teacher, teacher).tolist() == [0.0, 0.0]
    assert kl_anchor(student.bfloat16(), teacher.bfloat16()).dtype == torch.float32
    with pytest.raises(ValueError, match=r"logits \[N, C\] of the same shape, got student \(2, 3\) and teacher \(2, 4\)"):
        kl_anchor(student, torch.zeros(2, 4))


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_the_gradient_is_tau_times_p_student_minus_p_teacher_over_the_rows(tau):
    g = torch.Generator().manual_seed(0)
    student = torch.randn(4, 5, generator=g).requires_grad_()
    teacher = torch.randn(4, 5, generator=g).requires_grad_()
    kl_anchor(student, teacher, tau).mean().backward()
    p_s, p_t = torch.softmax(student.detach() / tau, -1), torch.softmax(teacher.detach() / tau, -1)
    # d/dz_s of τ²·Σ p_t (log p_t − log p_s) is τ² (p_s − p_t) / τ; the mean over 4 rows divides by 4.
    assert torch.allclose(student.grad, tau * (p_s - p_t) / 4, atol=1e-7)
    assert teacher.grad is None  # the teacher takes no gradient


# -- the term the trainer logs, against the formula ---------------------------------------------------------


def _vit(seed):
    torch.manual_seed(seed)
    return ViTForImageClassification(ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=32, num_labels=3))


def test_a_classifier_compares_its_class_logits_one_row_per_example(tmp_path):
    g = torch.Generator().manual_seed(0)
    pixels, labels = torch.randn(6, 3, 16, 16, generator=g), torch.arange(6) % 3
    data = Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": labels.numpy()}).with_format("torch")
    student, teacher = _vit(0), _vit(1)
    with torch.no_grad():
        teacher.classifier.weight.mul_(20)  # a teacher far enough for float32's rounding to be small beside the term
        expected = _kl_by_hand(student(pixel_values=pixels).logits, teacher(pixel_values=pixels).logits, 2.0).mean()
    trainer = LDIFSTrainer(model=student, args=_args(tmp_path, per_device_train_batch_size=6, kl_temperature=2.0),
                           train_dataset=data, teacher_model=teacher)
    assert expected > 0.05 and _logged_term(trainer) == pytest.approx(expected.item(), rel=1e-5)  # one batch of all six: order aside


def _lm_batch(width):
    """Four sequences of 4..7 tokens, right-padded with 0 to `width`; the task loss counts tokens 3.. (a prompt of two
    tokens and the padding are -100)."""
    g = torch.Generator().manual_seed(0)
    ids, mask, labels = torch.zeros(4, width, dtype=torch.long), torch.zeros(4, width, dtype=torch.long), torch.full((4, width), -100)
    for row, length in enumerate((4, 7, 5, 6)):
        ids[row, :length] = torch.randint(3, VOCAB, (length,), generator=g)
        mask[row, :length] = 1
        labels[row, 2:length] = ids[row, 2:length]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _llama(seed):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=1, intermediate_size=32, max_position_embeddings=16))


def test_a_padded_causal_lm_batch_counts_the_tokens_the_task_loss_counts(tmp_path):
    student, teacher = _llama(0), _llama(1)
    batch = _lm_batch(7)
    with torch.no_grad():
        s, t = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, teacher(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # Position i predicts token i + 1: the logits of positions 0..T-2 against the labels of 1..T-1, where not -100.
    counted = batch["labels"][:, 1:] != -100
    per_token = _kl_by_hand(s[:, :-1][counted], t[:, :-1][counted])
    assert counted.sum() == 2 + 5 + 3 + 4  # the labelled tokens after the first position
    expected = per_token.mean()  # the mean over the counted tokens, as the task loss is; not a mean of sequence means
    by_sequence = torch.stack([v.mean() for v in per_token.split([2, 5, 3, 4])]).mean()
    assert not math.isclose(expected.item(), by_sequence.item(), rel_tol=1e-3)

    data = Dataset.from_dict({k: v.numpy() for k, v in batch.items()}).with_format("torch")
    trainer = LDIFSTrainer(model=student, args=_args(tmp_path, per_device_train_batch_size=4), train_dataset=data, teacher_model=teacher)
    assert trainer.regularizer_state.tokens == "causal"
    assert _logged_term(trainer) == pytest.approx(expected.item(), rel=1e-4)  # a term of 0.006 in float32
    # More padding changes nothing: the same rows are counted.
    wider = {k: torch.nn.functional.pad(v, (0, 3), value=-100 if k == "labels" else 0) for k, v in batch.items()}
    trainer.model.eval()
    for inputs in (batch, wider):
        trainer.compute_loss(trainer.model, dict(inputs))
    first, second = trainer._metrics["eval"]["loss_kl"][-2:]
    assert first.item() == pytest.approx(second.item(), rel=1e-6)


def test_an_encoder_decoders_decoder_tokens_count_where_labelled_without_a_shift(tmp_path):
    def t5(seed):
        torch.manual_seed(seed)
        return T5ForConditionalGeneration(T5Config(vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                                                   decoder_start_token_id=0, dropout_rate=0.0))

    student, teacher = t5(0), t5(1)
    batch = _lm_batch(7)
    with torch.no_grad():
        s, t = student(**batch).logits, teacher(**batch).logits  # decoder inputs: the labels shifted right, as in training
    counted = batch["labels"] != -100
    expected = _kl_by_hand(s[counted], t[counted]).mean()
    data = Dataset.from_dict({k: v.numpy() for k, v in batch.items()}).with_format("torch")
    trainer = LDIFSTrainer(model=student, args=_args(tmp_path, per_device_train_batch_size=4), train_dataset=data, teacher_model=teacher)
    assert trainer.regularizer_state.tokens == "aligned"
    assert _logged_term(trainer) == pytest.approx(expected.item(), rel=1e-4)


def test_a_clip_classifiers_teacher_is_its_starting_head_on_the_reference_clips_features(tiny_clip_dir, tmp_path):
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    tokenizer = CLIPProcessor.from_pretrained(tiny_clip_dir).tokenizer
    model = build_model(get_method("zs-init-kl"), clip, tokenizer, ["cat", "dog", "bird"], ["a photo of a {}."])
    reference = CLIPModel.from_pretrained(tiny_clip_dir)
    with torch.no_grad():
        for p in reference.vision_model.parameters():
            p.add_(0.01)
    trainer = LDIFSTrainer(model=model, args=_args(tmp_path, method="zs-init-kl"), teacher_model=reference)
    teacher = trainer.teacher
    assert torch.equal(teacher.head.weight, model.head.weight)  # the starting point's head
    for (name, p), q in zip(teacher.vision_model.named_parameters(), reference.vision_model.parameters()):
        assert torch.equal(p, q), name  # on the reference's features
    assert not torch.equal(teacher.vision_model.embeddings.patch_embedding.weight, model.vision_model.embeddings.patch_embedding.weight)
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training


# -- refusals ---------------------------------------------------------------------------------------------


def test_what_the_kl_anchor_cannot_serve_is_refused_by_name(tiny_clip_dir, tmp_path):
    with pytest.raises(ValueError, match="kl_temperature must be a finite number > 0, got 0"):
        _args(tmp_path, kl_temperature=0)
    with pytest.raises(ValueError, match="kl_lambda must be a number >= 0, got -1"):
        _args(tmp_path, kl_lambda=-1)
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    with pytest.raises(ValueError, match="objective 'clip-contrastive' scores image-text pairs of the batch instead: use ldifs or l2sp"):
        LDIFSTrainer(model=clip, args=_args(tmp_path, method="flyp+kl"))
    multi_label = BertForSequenceClassification(BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                           intermediate_size=16, num_labels=3, problem_type="multi_label_classification"))
    with pytest.raises(ValueError, match="a multi_label_classification head has none: use ldifs or l2sp"):
        LDIFSTrainer(model=multi_label, args=_args(tmp_path))
    bert = BertModel(BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16))
    with pytest.raises(ValueError, match="cannot be the KL teacher of ViTForImageClassification: it lacks every weight of the model's encoder"):
        LDIFSTrainer(model=_vit(0), args=_args(tmp_path), teacher_model=bert)
    logits = torch.zeros(2, 3, 5)
    with pytest.raises(ValueError, match="needs the tokens the task loss counts: `labels`"):
        counted_rows(logits, None, "causal", "M")
    with pytest.raises(ValueError, match="cannot tell whether M's token logits predict the next token"):
        counted_rows(logits, torch.zeros(2, 3, dtype=torch.long), None, "M")
    with pytest.raises(ValueError, match=r"token logits \(2, 2, 5\) do not match its labels \(2, 3\)"):
        counted_rows(logits, torch.zeros(2, 4, dtype=torch.long), "causal", "M")
