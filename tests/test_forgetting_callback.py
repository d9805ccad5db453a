"""ConceptForgettingCallback in a tiny LDIFSTrainer run: rows at 0/20/40/60/80/100 %, logged and written."""

import json

import pytest
from PIL import Image

from ldifs_hf import LDIFSTrainer, LDIFSTrainingArguments
from ldifs_hf.benchmarks import collate_images
from ldifs_hf.evaluation import ConceptForgettingEvaluator, EvaluatorSettings
from ldifs_hf.evaluation.callback import ConceptForgettingCallback, evaluation_schedule, flatten_record
from ldifs_hf.modeling import CLIPVisionClassifier
from ldifs_hf.testing import save_benchmark_like_dataset


def test_evaluation_schedule_covers_every_percent_and_validates():
    assert evaluation_schedule(10, 20) == {0: [0.0], 2: [20.0], 4: [40.0], 6: [60.0], 8: [80.0], 10: [100.0]}
    assert evaluation_schedule(2, 20) == {0: [0.0, 20.0], 1: [40.0, 60.0], 2: [80.0, 100.0]}
    assert evaluation_schedule(9, 50) == {0: [0.0], 4: [50.0], 9: [100.0]}  # round-half-even: 4.5 -> 4
    with pytest.raises(ValueError, match="every_percent"):
        evaluation_schedule(10, 0)
    with pytest.raises(ValueError, match="max_steps"):
        evaluation_schedule(-1, 20)


def test_flatten_record_gives_scalar_logger_keys():
    record = {"percent": 20.0, "eval": {"mnist": {"delta_lp": -0.1}}, "a_ft": 0.9, "param_distance": 1.5, "feature_distance": None}
    assert flatten_record(record) == {
        "forgetting/mnist/delta_lp": -0.1, "forgetting/percent": 20.0, "forgetting/a_ft": 0.9, "forgetting/param_distance": 1.5,
    }


@pytest.mark.slow
def test_callback_logs_rows_at_every_20_percent_of_a_tiny_run(tiny_clip_dir, tmp_path):
    paths = {name: save_benchmark_like_dataset(name, tmp_path / name, num_train=20, num_test=8) for name in ("eurosat", "mnist")}
    settings = EvaluatorSettings(dataset_paths=paths, device="cpu", lp_iterations=50, feature_distance_samples=8)
    evaluator = ConceptForgettingEvaluator.from_pretrained(tiny_clip_dir, settings)
    eurosat = evaluator.benchmark("eurosat")
    head = evaluator.zero_shot_weights("eurosat") * 10
    model = CLIPVisionClassifier.from_clip(evaluator.pretrained, head, id2label=dict(enumerate(eurosat.class_names)))
    args = LDIFSTrainingArguments(
        output_dir=str(tmp_path / "run"), method="zs-init-ldifs", max_steps=5, per_device_train_batch_size=4,
        learning_rate=1e-2, warmup_steps=0, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
    )
    callback = ConceptForgettingCallback(evaluator, ["mnist"], finetune_benchmark="eurosat")
    trainer = LDIFSTrainer(model=model, args=args, train_dataset=eurosat.splits["train"], data_collator=collate_images, callbacks=[callback])
    callback.set_trainer(trainer)
    trainer.train()

    with open(tmp_path / "run" / "forgetting_log.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["percent"] for r in rows] == [0, 20, 40, 60, 80, 100]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert rows[0]["param_distance"] == 0.0 and rows[0]["feature_distance"] == 0.0
    assert rows[0]["eval"]["mnist"]["delta_zs"] == 0.0 and rows[0]["eval"]["mnist"]["delta_lp"] == 0.0
    assert all(r["param_distance"] > 0 and r["feature_distance"] > 0 for r in rows[1:])
    assert rows[-1]["param_distance"] > rows[1]["param_distance"]
    assert all(0 <= r["a_ft"] <= 1 and r["method"] == "zs-init-ldifs" and r["finetune_task"] == "eurosat" for r in rows)
    with open(tmp_path / "run" / "forgetting_log.json") as f:
        assert json.load(f) == rows

    # Through the Trainer's loggers: forgetting rows sit in log_history beside the training loss,
    # whose LDIFS term was not consumed by them.
    logged = [e for e in trainer.state.log_history if "forgetting/percent" in e]
    assert [e["forgetting/percent"] for e in logged] == [0, 20, 40, 60, 80, 100]
    assert "forgetting/mnist/delta_lp" in logged[-1] and "loss_ldifs" not in logged[-1]
    assert any("loss_ldifs" in e for e in trainer.state.log_history)
    # A forgetting row does not take the place of the step's own loss entry (logging_steps=1).
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [1, 2, 3, 4, 5]

    for name in ("forgetting_deltas.png", "forgetting_distances.png"):
        with Image.open(tmp_path / "run" / name) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
