"""The fast paths agree with the plain ones: L2SP's foreach gradient with autograd's on a model, the LDIFS
distance with a plain re-implementation on a model's hidden states, a bf16 teacher with a float32 one
(within the tolerance docs/PERFORMANCE.md states), and cached evaluation with uncached."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig

from ldifs_hf.evaluation import ConceptForgettingEvaluator, EvaluatorSettings
from ldifs_hf.evaluation import evaluator as evaluation_module
from ldifs_hf.evaluation.cache import EvaluationCache, key_digest, model_fingerprint
from ldifs_hf.modeling import CLIPClassifierConfig, CLIPVisionClassifier, encoder_parameters
from ldifs_hf.regularizers import default_ldifs_layers, l2sp_penalty, ldifs_distance
from ldifs_hf.testing import save_benchmark_like_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A bf16-weight teacher's LDIFS distance may differ from the float32 teacher's by at most
# BF16_RTOL * d + BF16_ATOL: bf16 keeps 8 significant bits (relative rounding 2**-9 ~ 0.2 %), which
# compounds over the blocks; the absolute floor covers a student still at the teacher (d ~ 0).
BF16_RTOL = 0.05
BF16_ATOL = 1e-4


def _classifier(seed=0, layers=4):
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=2, image_size=32, patch_size=8)
    return CLIPVisionClassifier(CLIPClassifierConfig(vision_config=vision.to_dict(), projection_dim=16, num_labels=3))


def _moved(model, scale, seed=1):
    moved = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=generator))
    return moved


def test_fast_l2sp_gradient_equals_autograd_on_a_model():
    anchor = _classifier()
    model = _moved(anchor, 0.1)
    reference = [p.detach().clone() for p in encoder_parameters(anchor)]
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])

    def loss_and_grads(penalty_fn):
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(pixel_values=x).logits, y) + 0.5 * penalty_fn()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    fast_loss, fast = loss_and_grads(lambda: l2sp_penalty(encoder_parameters(model), reference))
    plain_loss, plain = loss_and_grads(lambda: sum(((p - r) ** 2).sum() for p, r in zip(encoder_parameters(model), reference)))
    assert torch.allclose(fast_loss, plain_loss, rtol=1e-6)
    for a, b in zip(fast, plain):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    # The penalty's own gradient is 2 (θ − θ0) on the encoder and nothing on the head.
    model.zero_grad(set_to_none=True)
    l2sp_penalty(encoder_parameters(model), reference).backward()
    for p, r in zip(encoder_parameters(model), reference):
        assert torch.allclose(p.grad, 2 * (p.detach() - r))
    assert model.head.weight.grad is None


def _plain_ldifs(student, teacher, layers):
    """docs/PROTOCOL.md section 2 written out: per tap, divide each (example, channel) column by its norm over
    tokens, square the difference, average over tokens and channels; average taps, then examples."""
    per_example = []
    for b in range(student[0].shape[0]):
        taps = []
        for i in layers:
            s, t = student[i][b].double(), teacher[i][b].double()  # [T, D]
            s = s / s.pow(2).sum(dim=0, keepdim=True).sqrt().clamp_min(1e-10)
            t = t / t.pow(2).sum(dim=0, keepdim=True).sqrt().clamp_min(1e-10)
            taps.append((s - t).pow(2).sum() / s.numel())
        per_example.append(sum(taps) / len(taps))
    return sum(per_example) / len(per_example)


def _hidden_states(tower, x):
    return tower(pixel_values=x, output_hidden_states=True).hidden_states


def test_l2sp_keeps_no_copy_of_the_difference_for_its_backward():
    """Between forward and backward the node holds only the parameters themselves (no encoder-sized
    θ−θ0 buffer); the backward still gives exactly 2(θ−θ0)."""
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(64, 32, generator=g, requires_grad=True), torch.randn(32, generator=g, requires_grad=True)]
    reference = [p.detach() + 0.5 * torch.randn(p.shape, generator=g) for p in params]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        penalty = l2sp_penalty(params, reference)
    owned = {p.untyped_storage().data_ptr() for p in params}
    assert saved and all(t.untyped_storage().data_ptr() in owned for t in saved), "a new buffer was saved for the backward"
    penalty.backward()
    for p, r in zip(params, reference):
        torch.testing.assert_close(p.grad, 2 * (p.detach() - r))
    torch.testing.assert_close(penalty, sum(((p.detach() - r) ** 2).sum() for p, r in zip(params, reference)))


def test_ldifs_distance_equals_the_plain_formula_on_model_hidden_states():
    teacher = _classifier(layers=4).vision_model.eval()
    student = _moved(_classifier(layers=4), 0.2).vision_model.eval()
    x = torch.randn(3, 3, 32, 32)
    layers = default_ldifs_layers(4)
    s, t = _hidden_states(student, x), _hidden_states(teacher, x)
    got = ldifs_distance(s, t, layers)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(_plain_ldifs(s, t, layers).item(), rel=1e-5)
    # Half-precision taps are measured in float32: the same value from the rounded inputs.
    half = ldifs_distance([h.bfloat16() for h in s], [h.bfloat16() for h in t], layers)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(_plain_ldifs([h.bfloat16().float() for h in s], [h.bfloat16().float() for h in t], layers).item(), rel=1e-5)


@pytest.mark.parametrize("scale", [0.0, 0.01, 0.1, 0.5])
def test_bf16_teacher_distance_stays_within_the_stated_tolerance(scale):
    anchor = _classifier(layers=4)
    teacher32 = anchor.vision_model.eval()
    teacher16 = copy.deepcopy(teacher32).to(torch.bfloat16)
    student = _moved(anchor, scale).vision_model.eval()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    layers = default_ldifs_layers(4)
    with torch.no_grad():
        s = _hidden_states(student, x)
        d32 = ldifs_distance(s, _hidden_states(teacher32, x), layers).item()
        d16 = ldifs_distance(s, _hidden_states(teacher16, x.bfloat16()), layers).item()
    assert abs(d16 - d32) <= BF16_RTOL * d32 + BF16_ATOL, (scale, d32, d16)


@pytest.mark.parametrize(
    "flags, expected",
    [({}, torch.float32), ({"bf16": True}, torch.float32), ({"bf16": True, "teacher_dtype": "bfloat16"}, torch.bfloat16)],
)
def test_teacher_takes_the_students_dtype_unless_told(flags, expected, tmp_path, caplog):
    from ldifs_hf import LDIFSTrainer, LDIFSTrainingArguments

    args = LDIFSTrainingArguments(output_dir=str(tmp_path), regularizer="ldifs", use_cpu=True, report_to="none", **flags)
    with caplog.at_level("INFO", logger="ldifs_hf"):
        trainer = LDIFSTrainer(model=_classifier(layers=4), args=args)
    assert {p.dtype for p in trainer.teacher.parameters()} == {expected}
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}  # the student keeps its master weights
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("LDIFS teacher:")]
    assert said == [f"LDIFS teacher: a frozen copy in {str(expected)[6:]} ("
                    + ("teacher_dtype)" if "teacher_dtype" in flags else "the student's dtype; teacher_dtype= to change it)")]


@pytest.mark.parametrize("teacher_dtype", [None, "bfloat16"])
def test_under_bf16_autocast_the_default_teacher_starts_at_a_term_of_exactly_0(teacher_dtype, tmp_path):
    from datasets import Dataset

    from ldifs_hf import LDIFSTrainer, LDIFSTrainingArguments

    pixels = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    data = Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": [0, 1, 2, 0, 1, 2, 0, 1]}).with_format("torch")
    args = LDIFSTrainingArguments(output_dir=str(tmp_path), regularizer="ldifs", use_cpu=True, report_to="none", bf16=True,
                                  max_steps=1, logging_steps=1, per_device_train_batch_size=8, teacher_dtype=teacher_dtype,
                                  save_strategy="no", disable_tqdm=True)
    trainer = LDIFSTrainer(model=_classifier(layers=4), args=args, train_dataset=data)
    trainer.train()
    first = next(h["loss_ldifs"] for h in trainer.state.log_history if "loss_ldifs" in h)
    if teacher_dtype is None:
        assert first == 0.0
    else:  # bf16 teacher weights: the rounding the option trades for speed
        assert 0.0 < first < BF16_ATOL


# -- the evaluation cache ------------------------------------------------------------------------

BENCHMARKS = ["eurosat", "mnist"]


@pytest.fixture(scope="module")
def dataset_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("perf_benchmarks")
    return {name: save_benchmark_like_dataset(name, root / name, num_train=20, num_test=10) for name in BENCHMARKS}


def _evaluator(tiny_clip_dir, dataset_paths, cache_dir=None, **overrides):
    settings = dict(dataset_paths=dataset_paths, device="cpu", lp_iterations=50, feature_distance_samples=8, feature_cache_dir=cache_dir)
    return ConceptForgettingEvaluator.from_pretrained(tiny_clip_dir, EvaluatorSettings(**{**settings, **overrides}))


def test_cached_evaluation_gives_the_same_accuracies_as_uncached(tiny_clip_dir, dataset_paths, tmp_path, monkeypatch):
    uncached = _evaluator(tiny_clip_dir, dataset_paths)
    expected = uncached.pretrained_accuracies(BENCHMARKS)
    expected_features = uncached.features(uncached.pretrained, "mnist", "test", "pretrained")

    first = _evaluator(tiny_clip_dir, dataset_paths, tmp_path)
    assert first.pretrained_accuracies(BENCHMARKS) == expected
    # 2 benchmarks x (train, test) features and 2 accuracy entries.
    assert sorted(f.rsplit(".", 1)[1] for f in os.listdir(tmp_path)) == ["json"] * 2 + ["safetensors"] * 4

    calls = []
    real = evaluation_module.extract_features
    monkeypatch.setattr(evaluation_module, "extract_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = _evaluator(tiny_clip_dir, dataset_paths, tmp_path)
    assert second.pretrained_accuracies(BENCHMARKS) == expected
    features, labels = second.features(second.pretrained, "mnist", "test", "pretrained")
    assert calls == []  # everything came from the disk cache
    assert torch.equal(features, expected_features[0]) and torch.equal(labels, expected_features[1])

    # A checkpoint's record (its deltas use the pretrained accuracies) is the same either way.
    moved = copy.deepcopy(uncached.pretrained)
    with torch.no_grad():
        moved.visual_projection.weight.mul_(1.5).add_(0.05)
    record_uncached = uncached.evaluate(moved, BENCHMARKS, distances=False)
    record_cached = second.evaluate(moved, BENCHMARKS, distances=False)
    assert record_cached == record_uncached


def test_cache_is_not_reused_for_another_model_or_other_settings(tiny_clip_dir, dataset_paths, tmp_path):
    base = _evaluator(tiny_clip_dir, dataset_paths, tmp_path)
    base.pretrained_accuracies(["mnist"])
    n_files = len(os.listdir(tmp_path))
    # Fewer training samples, another linear-probe budget: new entries, not the old ones.
    capped = _evaluator(tiny_clip_dir, dataset_paths, tmp_path, max_train_samples=10)
    capped.pretrained_accuracies(["mnist"])
    assert capped.features(capped.pretrained, "mnist", "train", "pretrained")[0].shape[0] == 10
    assert len(os.listdir(tmp_path)) == n_files + 2  # new train features and accuracies; test features reused
    other_lp = _evaluator(tiny_clip_dir, dataset_paths, tmp_path, lp_iterations=51)
    other_lp.pretrained_accuracies(["mnist"])
    assert len(os.listdir(tmp_path)) == n_files + 3
    # Another model (one weight changed): a different fingerprint, so nothing is shared.
    other = _evaluator(tiny_clip_dir, dataset_paths, tmp_path)
    with torch.no_grad():
        other.pretrained.visual_projection.weight[0, 0] += 1.0
    assert model_fingerprint(other.pretrained) != model_fingerprint(base.pretrained)
    assert other._cache_key("mnist", "test") != base._cache_key("mnist", "test")
    other.pretrained_accuracies(["mnist"])
    assert len(os.listdir(tmp_path)) == n_files + 6  # its own train and test features and accuracies


def test_model_fingerprint_tracks_weights_and_dtype():
    model = _classifier()
    same = _classifier()
    assert model_fingerprint(model) == model_fingerprint(same)
    assert model_fingerprint(model) != model_fingerprint(copy.deepcopy(model).to(torch.bfloat16))
    with torch.no_grad():
        same.head.bias[0] += 1e-3
    assert model_fingerprint(model) != model_fingerprint(same)


def test_cache_entry_with_another_key_is_not_read(tmp_path):
    cache = EvaluationCache(tmp_path)
    key = {"kind": "features", "benchmark": "mnist"}
    cache.save_features(key, torch.ones(2, 3), torch.tensor([0, 1]))
    features, labels = cache.load_features(key)
    assert torch.equal(features, torch.ones(2, 3)) and labels.tolist() == [0, 1]
    assert cache.load_features({**key, "benchmark": "svhn"}) is None
    # An entry whose stored key differs from the asked one (a digest collision) is refused.
    other = {"kind": "features", "benchmark": "svhn"}
    os.replace(tmp_path / (key_digest(key) + ".safetensors"), tmp_path / (key_digest(other) + ".safetensors"))
    assert cache.load_features(other) is None
    cache.save_accuracies(key, {"zs": 0.5, "lp": 0.75})
    assert cache.load_accuracies(key) == {"zs": 0.5, "lp": 0.75}
    assert cache.load_accuracies(other) is None
    with pytest.raises(TypeError, match="JSON-serialisable"):
        cache.load_accuracies({"kind": object()})


@pytest.mark.slow
def test_benchmark_step_script_runs_and_writes_json(tmp_path):
    out = tmp_path / "step.json"
    command = [
        sys.executable, os.path.join(ROOT, "examples", "benchmark_step.py"), "--preset", "tiny", "--batch_size", "4",
        "--steps", "2", "--warmup", "1", "--threads", "1", "--output_json", str(out),
    ]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=300)
    report = json.loads(out.read_text())
    names = list(report["results"])
    assert names[0] == "CE, plain Trainer" and report["results"][names[0]]["vs_ce"] == 1.0
    assert {"CE, ours", "L2SP, ours", "LDIFS, ours", "LDIFS, official style (student twice, reference)"} <= set(names)
    for r in report["results"].values():
        assert r["ms"] > 0 and r["img_per_s"] > 0
    assert report["meta"]["peak_memory"] == "n/a on CPU" and report["results"]["LDIFS, ours"]["peak_gib"] is None


@pytest.mark.slow
def test_benchmark_eval_script_runs_and_cached_equals_uncached(tmp_path):
    out = tmp_path / "eval.json"
    command = [
        sys.executable, os.path.join(ROOT, "examples", "benchmark_eval.py"), "--preset", "tiny", "--num_train", "8", "--num_test", "4",
        "--lp_iterations", "5", "--model_batches", "1", "--batch_size", "16", "--threads", "1", "--output_json", str(out),
    ]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), "TQDM_DISABLE": "1"}
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=600)
    results = json.loads(out.read_text())["results"]
    assert results["cached_record_equals_uncached"] is True
    assert len(results["pipeline_per_benchmark"]) == 9
    assert set(results["one_checkpoint_nine_benchmarks_seconds"]) == {"uncached (median)", "cache filled (first run)", "cache read (later runs, median)"}


def test_l2sp_on_16_bit_weights_starts_at_zero(tiny_clip_dir, tmp_path):
    """DeepSpeed and FSDP with bf16 hold the weights in bf16: θ0 follows their dtype, so the penalty is 0
    at the start, not the float32 rounding error of every weight."""
    from transformers import CLIPModel, CLIPProcessor

    from ldifs_hf import LDIFSTrainer, LDIFSTrainingArguments, get_method
    from ldifs_hf.training.build import build_model

    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    tokenizer = CLIPProcessor.from_pretrained(tiny_clip_dir).tokenizer
    model = build_model(get_method("zs-init-l2sp"), clip, tokenizer, ["cat", "dog"], ["a photo of a {}."])
    args = LDIFSTrainingArguments(output_dir=str(tmp_path), method="zs-init-l2sp", use_cpu=True, report_to=[])
    trainer = LDIFSTrainer(model=model, args=args)
    model.to(torch.bfloat16)  # as DeepSpeed's bf16 engine holds it
    penalty = trainer.regularizer_penalty(model)
    assert penalty.item() == 0.0
    with torch.no_grad():
        model.visual_projection.weight.add_(0.5)
    assert trainer.regularizer_penalty(model).item() == pytest.approx(0.25 * model.visual_projection.weight.numel(), rel=1e-2)
