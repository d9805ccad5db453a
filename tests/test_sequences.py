"""Sequences of tasks: eq. 5 and Table 2 on hand-made numbers; a two-task sequence on the world whose
task-2 teacher / L2SP anchor is the task-1 encoder (or the pretrained one with reference="pretrained")."""

import dataclasses
import json
import shutil

import pytest
import torch
from transformers import CLIPModel

from ldifs_hf.evaluation import EvaluationArguments
from ldifs_hf.evaluation.continual import sequence_deltas
from ldifs_hf.modeling import encoder_parameters
from ldifs_hf.training.sequences import SequenceArguments, evaluate_sequence_run, parse_tasks, sequence, sequence_table
from ldifs_hf.training import run as run_module
from ldifs_hf.world import WorldSettings, prepare_world
from conftest import one_line_error

QUICK_WORLD = WorldSettings(seed=0, pretrain_images=256, pretrain_steps=10, batch_size=32, task_train_size=64, task_test_size=32)
TASKS = "world-digit,world-colour"


# -- eq. 5 and the Table 2 layout, by hand ---------------------------------------------------------


def _hand_made_records():
    # f0 (pretrained), f1 after svhn, f2 after cifar10; accuracies on two eval tasks.
    f0 = {"svhn": {"zs": 0.30, "lp": 0.60}, "mnist": {"zs": 0.50, "lp": 0.90}}
    f1 = {"svhn": {"zs": 0.90, "lp": 0.95}, "mnist": {"zs": 0.40, "lp": 0.92}}
    f2 = {"svhn": {"zs": 0.70, "lp": 0.80}, "mnist": {"zs": 0.45, "lp": 0.85}}
    deltas = sequence_deltas([f0, f1, f2])
    records = []
    for k, (accs, step, task, a_ft) in enumerate(zip((f1, f2), deltas, ("svhn", "cifar10"), (0.97, 0.88)), start=1):
        records.append({
            "sequence": "svhn>cifar10", "method": "lp-init-ldifs", "task_index": k, "finetune_task": task, "a_ft": a_ft,
            "eval": {name: {"sequence_delta_zs": d["zs"], "sequence_delta_lp": d["lp"]} for name, d in step.items()},
        })
    return deltas, records


def test_eq5_is_the_drop_from_the_best_earlier_model():
    deltas, _ = _hand_made_records()
    # After task 1: against f0 only.
    assert deltas[0]["svhn"] == pytest.approx({"zs": 0.60, "lp": 0.35})
    assert deltas[0]["mnist"] == pytest.approx({"zs": -0.10, "lp": 0.02})
    # After task 2: against max(f0, f1): svhn 0.90/0.95 (f1), mnist 0.50 (f0) / 0.92 (f1).
    assert deltas[1]["svhn"] == pytest.approx({"zs": -0.20, "lp": -0.15})
    assert deltas[1]["mnist"] == pytest.approx({"zs": -0.05, "lp": -0.07})


def test_table2_layout_on_hand_made_accuracies():
    _, records = _hand_made_records()
    table = sequence_table(records)
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines[0] == "| sequence | method | A_FT task 1 | A_FT task 2 | mnist | svhn | mean (other tasks) |"
    # The last task (cifar10) is not an eval task here, so the mean is over mnist and svhn:
    # Δ_ZS (-5 - 20) / 2 = -12.5, Δ_LP (-7 - 15) / 2 = -11.
    assert lines[2] == "| svhn>cifar10 | lp-init-ldifs | 97.00 | 88.00 | -5.00 / -7.00 | -20.00 / -15.00 | -12.50 / -11.00 |"
    assert len(lines) == 3


def test_table2_refuses_a_sequence_with_a_missing_task():
    _, records = _hand_made_records()
    with pytest.raises(ValueError, match=r"svhn>cifar10.*lacks the records of tasks \[1\]"):
        sequence_table(records[1:])


def test_bad_sequences_and_references_are_refused():
    with pytest.raises(ValueError, match="reference must be one of \\('previous', 'pretrained'\\), got 'teacher'"):
        SequenceArguments(reference="teacher")
    with pytest.raises(ValueError, match="'svhn' appears twice"):
        parse_tasks("svhn,cifar10,svhn")
    with pytest.raises(ValueError, match="needs names separated by ','"):
        parse_tasks("svhn,,cifar10")
    with pytest.raises(ValueError, match="a sequence sets each task's reference itself, got reference_model_name_or_path='x'"):
        sequence(dataset="svhn,cifar10", output_dir="unused", reference_model_name_or_path="x")
    with pytest.raises(ValueError, match=r"dataset_path names \['mnist'\], which are not tasks of the sequence"):
        sequence(dataset="svhn,cifar10", output_dir="unused", dataset_path="svhn=/a,mnist=/b")


# -- a two-task sequence on the world --------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return prepare_world(QUICK_WORLD, tmp_path_factory.mktemp("world_cache"), progress=False)


@pytest.fixture
def trainers(monkeypatch):
    """Every LDIFSTrainer the runs build, in order, so a test can read its teacher and anchor."""
    built = []

    class Recording(run_module.LDIFSTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(run_module, "LDIFSTrainer", Recording)
    return built


def _sequence(world, out, method, reference="previous"):
    return sequence(
        reference=reference, method=method, dataset=TASKS, model_name_or_path=str(world.model_dir), output_dir=str(out),
        max_steps=2, learning_rate=1e-3, per_device_train_batch_size=16, warmup_steps=0, lp_iterations=20, use_cpu=True,
        report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
    )


def _anchor(trainer) -> list[torch.Tensor]:
    """The encoder tensors a trainer anchors at: the LDIFS teacher's or the L2SP reference."""
    if trainer.regularizer == "ldifs":
        return [p.detach() for p in trainer.teacher.parameters()]
    return list(trainer.regularizer_state.reference)


def _encoder(path, regularizer) -> list[torch.Tensor]:
    model = CLIPModel.from_pretrained(path)
    params = model.vision_model.parameters() if regularizer == "ldifs" else encoder_parameters(model)
    return [p.detach() for p in params]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _first_logged(run_dir, key) -> float:
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    return next(h[key] for h in history if key in h)


def test_ce_sequence_carries_the_encoder_over_with_a_new_head_per_task(world, tmp_path, trainers):
    result = _sequence(world, tmp_path / "seq", "zs-init-ce")
    assert [r.dataset for r in result.records] == ["world-digit", "world-colour"] and all(r.completed for r in result.records)
    first, second = result.records
    assert first.base_model == str(world.model_dir) and second.base_model == first.export_dir
    assert first.export_dir == str(tmp_path / "seq" / "1-world-digit" / "clip")
    # Task 2 starts from task 1's encoder, and gets a head with the colour task's classes (10 digits, 6 colours).
    heads = [t.model.config.num_labels for t in trainers]
    assert heads == [10, 6]
    saved = json.loads((tmp_path / "seq" / "sequence.json").read_text())
    assert saved["tasks"] == ["world-digit", "world-colour"] and saved["reference"] == "previous"
    # Rerunning returns the finished tasks as recorded.
    weights = tmp_path / "seq" / "2-world-colour" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert _sequence(world, tmp_path / "seq", "zs-init-ce").records == result.records
    assert weights.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("method", ["lp-init-l2sp", "lp-init-ldifs"])
def test_task2_anchor_is_task1_encoder_or_the_pretrained_one(method, world, tmp_path, trainers):
    regularizer = method.rsplit("-", 1)[1]
    previous = _sequence(world, tmp_path / "previous", method)
    task1_clip = previous.records[0].export_dir
    assert len(trainers) == 2
    anchor = _anchor(trainers[1])
    assert _same(anchor, _encoder(task1_clip, regularizer))
    assert not _same(anchor, _encoder(world.model_dir, regularizer))
    # The same fact in the logs: at task 2's first step the student is its anchor, so the term is 0.
    assert _first_logged(tmp_path / "previous" / "2-world-colour", f"loss_{regularizer}") == pytest.approx(0.0, abs=1e-6)

    # reference="pretrained": the same task 1 (copied, so it is returned as recorded, naming where it is
    # now), then task 2 anchored at the pretrained encoder.
    copy = tmp_path / "pretrained" / "1-world-digit"
    shutil.copytree(tmp_path / "previous" / "1-world-digit", copy)
    trainers.clear()
    pretrained = _sequence(world, tmp_path / "pretrained", method, reference="pretrained")
    assert pretrained.records[0] == dataclasses.replace(previous.records[0], output_dir=str(copy), export_dir=str(copy / "clip"))
    assert len(trainers) == 1
    anchor = _anchor(trainers[0])
    assert _same(anchor, _encoder(world.model_dir, regularizer))
    assert not _same(anchor, _encoder(task1_clip, regularizer))
    assert _first_logged(tmp_path / "pretrained" / "2-world-colour", f"loss_{regularizer}") > 1e-4


def test_sequence_evaluation_writes_table2(world, tmp_path):
    result = _sequence(world, tmp_path / "seq", "lp-init-ldifs")
    records = evaluate_sequence_run(
        result, EvaluationArguments(datasets=",".join(world.benchmarks), output_dir=str(tmp_path / "eval"), num_workers=0,
                                    lp_iterations=20, max_train_samples=64, distances=False),
    )
    assert [r["task_index"] for r in records] == [1, 2]
    for record in records:
        assert set(record["eval"]) == set(world.benchmarks)
        assert all("sequence_delta_lp" in v for v in record["eval"].values())
    # Eq. 5 after task 1 has only f0 before it: the eq. 2 delta.
    assert all(v["sequence_delta_lp"] == pytest.approx(v["delta_lp"]) for v in records[0]["eval"].values())
    table = (tmp_path / "eval" / "sequence_table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| world-digit>world-colour | lp-init-ldifs |"))
    assert row.count("|") == 2 + 2 + len(world.benchmarks) + 1 + 1
    saved = json.loads((tmp_path / "eval" / "sequence_results.json").read_text())
    assert saved["records"][1]["sequence"] == "world-digit>world-colour"


def test_cli_finetune_runs_a_sequence_and_refuses_a_bad_reference(world, tmp_path, trainers, capsys):
    from ldifs_hf.cli import main

    argv = [
        "finetune", "--method", "zs-init-l2sp", "--dataset", TASKS, "--model_name_or_path", str(world.model_dir),
        "--output_dir", str(tmp_path / "seq"), "--max_steps", "1", "--per_device_train_batch_size", "16", "--use_cpu",
        "--report_to", "none", "--warmup_steps", "0", "--save_strategy", "no", "--disable_tqdm", "true",
    ]
    assert main(argv + ["--reference", "pretrained"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed[-2:]] == ["zs-init-l2sp on world-digit", "zs-init-l2sp on world-colour"]
    assert _same(_anchor(trainers[1]), _encoder(world.model_dir, "l2sp"))
    one_line_error(capsys, argv + ["--reference", "teacher"], "error: reference must be one of ('previous', 'pretrained'), got 'teacher'")
