"""The paper's protocol around the formulas (official code's behaviour), one test per item."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from ldifs_hf import heads
from ldifs_hf.benchmarks import image_transform, load_benchmark
from ldifs_hf.benchmarks.transforms import TRAIN_CROP_SCALE, TrainImageTransform, random_resized_crop_box
from ldifs_hf.cli import parse_finetune_args
from ldifs_hf.tiny import tiny_image_processor
from ldifs_hf.training import get_method
from ldifs_hf.training.build import build_collator, build_model
from ldifs_hf.training.run import run_finetune
from conftest import finetune_argv


def _argv(model_dir, data_dir, out_dir, method, *extra):
    return finetune_argv(model_dir, data_dir, out_dir, method, "--max_steps", "3", "--learning_rate", "1e-3", *extra)


# -- training augmentation: open_clip's RandomResizedCrop(scale=(0.9, 1.0), bicubic) -------------------


def test_train_crop_covers_90_to_100_percent_of_the_image():
    generator = torch.Generator().manual_seed(0)
    fractions, ratios = [], []
    for _ in range(500):
        left, top, w, h = random_resized_crop_box(224, 224, generator=generator)
        assert 0 <= left and left + w <= 224 and 0 <= top and top + h <= 224
        fractions.append(w * h / 224**2)
        ratios.append(w / h)
    # Rounding w and h to pixels moves the area by under 1 %.
    assert TRAIN_CROP_SCALE[0] - 0.01 <= min(fractions) and max(fractions) <= TRAIN_CROP_SCALE[1] + 0.01
    assert min(fractions) < 0.92 and max(fractions) > 0.98  # the whole range is drawn
    assert 3 / 4 - 0.02 <= min(ratios) and max(ratios) <= 4 / 3 + 0.02


def test_train_transform_is_seeded_per_image_and_epoch_and_eval_transform_is_unchanged():
    processor = tiny_image_processor(32)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(3)]
    batch = {"image": images, "label": [0, 1, 2]}
    augment = TrainImageTransform(processor, seed=0)
    first = augment(batch)["pixel_values"]
    assert all(p.shape == (3, 32, 32) for p in first)
    assert all(torch.equal(a, b) for a, b in zip(first, TrainImageTransform(processor, seed=0)(batch)["pixel_values"]))
    augment.set_epoch(1)
    assert not all(torch.equal(a, b) for a, b in zip(first, augment(batch)["pixel_values"]))  # fresh crops per epoch
    # Evaluation: the processor's resize + center crop, untouched.
    expected = processor(images=images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(torch.stack(image_transform(processor)(batch)["pixel_values"]), expected)


def test_a_run_trains_on_augmented_pixels_and_evaluates_on_the_eval_transform(tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch):
    from ldifs_hf.training import run as run_module

    seen = {}
    original = run_module.LDIFSTrainer

    class Spy(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen["train"], seen["eval"] = kwargs["train_dataset"], kwargs.get("eval_dataset")

    monkeypatch.setattr(run_module, "LDIFSTrainer", Spy)
    run_finetune(*parse_finetune_args(_argv(tiny_clip_dir, eurosat_dir, tmp_path / "aug", "zs-init-ldifs")))
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    raw = load_benchmark("eurosat", data_path=str(eurosat_dir)).splits["train"]
    plain = image_transform(processor.image_processor)({"image": [raw[0]["image"]], "label": [raw[0]["label"]]})["pixel_values"][0]
    assert not torch.equal(seen["train"][0]["pixel_values"], plain)  # cropped
    run_finetune(*parse_finetune_args(_argv(tiny_clip_dir, eurosat_dir, tmp_path / "plain", "zs-init-ldifs", "--train_augmentation", "false")))
    assert torch.equal(seen["train"][0]["pixel_values"], plain)


# -- linear probe: lr chosen on a 90/10 split, then refitted on all of train ----------------------------


def test_linear_probe_selects_on_90_10_then_refits_on_all_rows(monkeypatch):
    calls = []
    original = heads._fit_adamw

    def spy(features, labels, num_classes, lrs, *args):
        calls.append((len(features), list(lrs)))
        return original(features, labels, num_classes, lrs, *args)

    monkeypatch.setattr(heads, "_fit_adamw", spy)
    generator = torch.Generator().manual_seed(0)
    features, labels = torch.randn(50, 8, generator=generator), torch.arange(50) % 3
    heads.fit_linear_probe(features, labels, 3, iterations=5)
    assert calls[0] == (45, list(heads.LP_LEARNING_RATES))  # selection: 90 % of the rows, every lr
    assert calls[1][0] == 50 and len(calls[1][1]) == 1  # refit: all rows, the chosen lr


def test_lp_init_probe_uses_all_of_train_including_the_validation_rows(tiny_clip_dir, eurosat_dir, tmp_path, monkeypatch):
    from ldifs_hf.training import build

    sizes = []
    original = build.fit_linear_probe
    monkeypatch.setattr(build, "fit_linear_probe", lambda features, *a, **k: sizes.append(len(features)) or original(features, *a, **k))
    run_finetune(*parse_finetune_args(_argv(tiny_clip_dir, eurosat_dir, tmp_path / "lp", "lp-init-ce")))
    assert sizes == [30]  # 27 training + 3 validation rows: the whole source train split


def test_the_evaluators_linear_probe_trains_on_all_of_train(tiny_clip_dir, eurosat_dir):
    from ldifs_hf.evaluation import ConceptForgettingEvaluator, EvaluatorSettings

    evaluator = ConceptForgettingEvaluator.from_pretrained(tiny_clip_dir, EvaluatorSettings(dataset_paths={"eurosat": str(eurosat_dir)}, device="cpu"))
    assert len(evaluator.benchmark("eurosat").splits["train"]) == 30


def test_logistic_solver_uses_the_official_c_grid():
    # C = 1/L for L in {1e-6, 1e-4, 1e-2, 1, 1e2, 1e4, 1e6}, tried in that order of L.
    assert heads.LOGISTIC_CS == pytest.approx([1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6])


# -- heads and logit scale ---------------------------------------------------------------------------


def _train_steps(model, spec, tiny_clip_dir, eurosat_dir, tmp_path, steps=3):
    from ldifs_hf import LDIFSTrainer, LDIFSTrainingArguments

    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    bench = load_benchmark("eurosat", data_path=str(eurosat_dir))
    train = bench.splits["train"].with_transform(image_transform(processor.image_processor))
    args = LDIFSTrainingArguments(
        output_dir=str(tmp_path / spec.name), method=spec.name, max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-2,
        warmup_steps=0, use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True,
    )
    collator = build_collator(spec, processor.tokenizer, bench.class_names, bench.templates)
    LDIFSTrainer(model=model, args=args, train_dataset=train, data_collator=collator).train()
    return bench


def test_zero_shot_head_has_a_zero_bias_that_trains(tiny_clip_dir, eurosat_dir, tmp_path):
    spec = get_method("zs-init-ce")
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    bench = load_benchmark("eurosat", data_path=str(eurosat_dir))
    model = build_model(spec, clip, processor.tokenizer, bench.class_names, bench.templates)
    assert model.head.bias is not None and torch.equal(model.head.bias, torch.zeros(10)) and model.head.bias.requires_grad
    _train_steps(model, spec, tiny_clip_dir, eurosat_dir, tmp_path)
    assert model.head.bias.abs().max() > 0


@pytest.mark.parametrize("method,learns", [("flyp", False), ("flyp-ce", True)])
def test_flyp_keeps_the_logit_scale_fixed_and_flyp_ce_learns_it(method, learns, tiny_clip_dir, eurosat_dir, tmp_path):
    spec = get_method(method)
    clip = CLIPModel.from_pretrained(tiny_clip_dir)
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    bench = load_benchmark("eurosat", data_path=str(eurosat_dir))
    model = build_model(spec, clip, processor.tokenizer, bench.class_names, bench.templates)
    before = model.logit_scale.detach().clone()
    _train_steps(model, spec, tiny_clip_dir, eurosat_dir, tmp_path)
    assert (not torch.equal(model.logit_scale.detach(), before)) == learns
    assert model.text_projection.weight.requires_grad  # both towers still train


# -- the forgetting callback's θ0 on a resumed run ----------------------------------------------------


def test_callback_reference_is_the_weights_before_a_resumed_checkpoint_loads(tiny_clip_dir):
    from types import SimpleNamespace

    from ldifs_hf.evaluation.callback import ConceptForgettingCallback
    from ldifs_hf.evaluation.distances import parameter_distance

    model = CLIPModel.from_pretrained(tiny_clip_dir)
    trainer = SimpleNamespace(model=model)
    evaluator = SimpleNamespace()
    callback = ConceptForgettingCallback(evaluator, ["mnist"], trainer=trainer)
    initial = CLIPModel.from_pretrained(tiny_clip_dir)
    with torch.no_grad():  # what loading checkpoint-N does to the weights before on_train_begin
        for p in model.vision_model.parameters():
            p.add_(0.1)
    state = SimpleNamespace(max_steps=10, global_step=4, is_world_process_zero=False)
    callback.on_train_begin(SimpleNamespace(method=None), state, None, model=model)
    assert parameter_distance(callback._reference_model, initial) == 0.0
    assert parameter_distance(model, callback._reference_model) > 0
    # Without the trainer given before train(), a resumed run cannot know θ0: an error, not a wrong number.
    late = ConceptForgettingCallback(evaluator, ["mnist"])
    with pytest.raises(ValueError, match="resumed at step 4"):
        late.on_train_begin(SimpleNamespace(method=None), state, None, model=model)


# -- warnings and evaluation on any local dataset ----------------------------------------------------


def test_warmup_as_long_as_the_run_is_warned(tiny_clip_dir, eurosat_dir, tmp_path, caplog):
    argv = _argv(tiny_clip_dir, eurosat_dir, tmp_path / "w", "zs-init-ce")
    argv[argv.index("--warmup_steps") + 1] = "500"
    with caplog.at_level(logging.WARNING, logger="ldifs_hf"):
        run_finetune(*parse_finetune_args(argv))
    assert any("warm-up (500 steps) is as long as the whole run (3 steps)" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ldifs_hf"):
        run_finetune(*parse_finetune_args(_argv(tiny_clip_dir, eurosat_dir, tmp_path / "w0", "zs-init-ce")))
    assert not any("warm-up" in r.getMessage() for r in caplog.records)


def test_run_evaluation_scores_an_unregistered_local_dataset(tiny_clip_dir, tmp_path):
    import datasets

    from ldifs_hf.evaluation import EvaluationArguments, run_evaluation

    rng = np.random.default_rng(0)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    images = [Image.fromarray(np.full((32, 32, 3), colours[i % 3], dtype=np.uint8) + rng.integers(0, 20, (32, 32, 3), dtype=np.uint8)) for i in range(24)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["red", "green", "blue"])})
    split = datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(24)]}, features=features)
    datasets.DatasetDict(train=split, test=split).save_to_disk(tmp_path / "colours")
    result = run_evaluation(
        EvaluationArguments(
            checkpoint=[f"pretrained={tiny_clip_dir}"], datasets=f"my-colours={tmp_path / 'colours'}", templates=["a {} square."],
            pretrained=str(tiny_clip_dir), output_dir=str(tmp_path / "report"), num_workers=0, lp_iterations=20, device="cpu",
        )
    )
    assert result.benchmarks == ["my-colours"]
    assert result.pretrained_accuracy["my-colours"]["lp"] > 0.9  # separable colours
    table = json.loads((tmp_path / "report" / "results.json").read_text())
    assert table["records"][0]["eval"]["my-colours"]["delta_zs"] == 0.0
    from ldifs_hf.benchmarks import get_benchmark

    assert get_benchmark("my-colours").templates == ("a {} square.",)


def test_runs_record_how_the_hub_split_differs_from_the_papers(tiny_clip_dir, eurosat_dir, tmp_path):
    from huggingface_hub import ModelCard

    record = run_finetune(*parse_finetune_args(_argv(tiny_clip_dir, eurosat_dir, tmp_path / "e", "zs-init-ce")))
    assert "19,600 / 5,400" in record.dataset_splits
    assert "19,600 / 5,400" in ModelCard.load(tmp_path / "e" / "README.md").text


def test_evaluations_feature_distance_uses_the_runs_taps_and_normalisation(tiny_clip_dir, eurosat_dir, tmp_path):
    from ldifs_hf.evaluation import ConceptForgettingEvaluator, EvaluatorSettings, evaluate_checkpoints, load_checkpoint, resolve_checkpoints

    out = tmp_path / "taps"
    run_finetune(*parse_finetune_args(_argv(tiny_clip_dir, eurosat_dir, out, "zs-init-ldifs", "--ldifs_layers", "0", "1",
                                            "--ldifs_normalization", "flatten")))
    (entry,) = resolve_checkpoints([str(out)])
    assert entry.ldifs_layers == [0, 1] and entry.ldifs_normalization == "flatten"
    settings = EvaluatorSettings(dataset_paths={"eurosat": str(eurosat_dir)}, device="cpu", lp_iterations=5)
    evaluator = ConceptForgettingEvaluator.from_pretrained(tiny_clip_dir, settings)
    (record,) = evaluate_checkpoints(evaluator, [entry], ["eurosat"])
    model = load_checkpoint(str(out))
    own = evaluator.feature_distance(model, "eurosat", layers=[0, 1], normalization="flatten")
    default = evaluator.feature_distance(model, "eurosat")
    assert record["eval"]["eurosat"]["feature_distance"] == pytest.approx(own) and own != pytest.approx(default)
