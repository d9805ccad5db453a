"""The study runner: the grid, the plan and its cost, refusals, the seed means and the trade-off, and on
the world: tables and figures, a SIGKILLed study that resumes without recomputing finished cells,
and the same grid through submitit's local executor."""

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from ldifs_hf.benchmarks.registry import BenchmarkError
from ldifs_hf.cli import main
from ldifs_hf.study import Cell, StudyArguments, plan_study, run_study
from ldifs_hf.study.arguments import cell_config, study_cells
from ldifs_hf.study.runner import CELL_FILE, cell_status, prepare_study
from ldifs_hf.study.tables import mean_over_seeds, tradeoff_rows
from ldifs_hf.world import prepare_world, world_settings
from conftest import one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the grid and its plan ------------------------------------------------------------------------


def test_the_paper_grid_and_its_plan(tmp_path, capsys, cache):
    prepare_world(world_settings("quick"), cache, progress=False)  # world tasks registered: "all" is still the nine
    args = StudyArguments(output_dir=str(tmp_path / "paper"), seeds="0,1,2", plan=True)
    plan = run_study(args)
    assert len(plan.cells) == 8 * 9 * 3 and all(s == "pending" for s in plan.status.values())
    assert not (tmp_path / "paper").exists()  # a plan writes nothing
    printed = capsys.readouterr().out
    # 72 runs x 3 seeds; the paper's epochs: cars 35 + dtd 76 + eurosat 12 + gtsrb 11 + 4 x 10 + resisc45 15 = 189 per method and seed.
    assert "216 cells: 0 done, 216 to run" in printed
    assert "216 fine-tuning runs, 4536 epochs in all" in printed  # 189 x 8 x 3
    # Checkpoints every 20 %: 5 points per run, each scored on 9 tasks.
    assert "9720 evaluations" in printed  # 216 x 5 x 9


def test_cells_cover_methods_tasks_sequences_and_seeds():
    args = StudyArguments(methods="zs-init-ce,lp-init-ldifs", finetune_tasks="eurosat,svhn>cifar10", seeds="0,1")
    cells = study_cells(args)
    assert [(c.method, c.tasks, c.seed) for c in cells[:4]] == [
        ("zs-init-ce", ("eurosat",), 0), ("zs-init-ce", ("eurosat",), 1),
        ("zs-init-ce", ("svhn", "cifar10"), 0), ("zs-init-ce", ("svhn", "cifar10"), 1),
    ]
    assert len(cells) == 8 and cells[2].folder == os.path.join("cells", "zs-init-ce", "svhn_then_cifar10", "seed-0")
    config = cell_config(args, cells[2], ["mnist"])
    assert config["reference"] == "previous" and config["finetune"]["save_steps"] == 0.2 and config["evaluation"]["distances"] is False


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(launcher="slurm"), r"launcher must be one of \('local', 'submitit'\), got 'slurm'"),
        (dict(seeds="0,a"), "seeds must be comma-separated integers, got '0,a'"),
        (dict(seeds="1,1"), "seeds must be distinct"),
        (dict(checkpoint_every_percent=100), r"checkpoint_every_percent must be in \[0, 100\)"),
        (dict(max_steps=0), "max_steps must be >= 1, or -1"),
        (dict(finetune_options="{bad"), "finetune_options must be a JSON object, got '{bad'"),
        (dict(finetune_options='{"seed": 3}'), r"finetune_options may not set \['seed'\]"),
        (dict(world="mars"), "world must be one of"),
        (dict(eval_max_train_samples=-3), r"eval_max_train_samples must be >= 1, got -3 \(leave it unset for no cap\)"),
        (dict(eval_max_eval_samples=0), "eval_max_eval_samples must be >= 1"),
        (dict(eval_batch_size=0), "eval_batch_size must be >= 1, got 0"),
        (dict(eval_num_workers=-1), "eval_num_workers must be >= 0, got -1"),
        (dict(reference="teacher"), "reference must be one of"),
        (dict(finetune_options='{"learnin_rate": 1e-3}'), "unknown key 'learnin_rate'.*did you mean 'learning_rate'\\?"),
        (dict(finetune_options='{"learning_rate": "fast"}'), "finetune_options: learning_rate must be a number, got 'fast'"),
        (dict(finetune_options='{"per_device_train_batch_size": 16.5}'), "per_device_train_batch_size must be an integer, got 16.5"),
        (dict(finetune_options='{"use_cpu": "yes"}'), "use_cpu must be true or false, got 'yes'"),
        (dict(finetune_options='{"lr_scheduler_type": "bogus"}'), "finetune_options lr_scheduler_type='bogus' is refused .*not a valid SchedulerType"),
        (dict(methods="zs-init-ce,lp-init-ldifs", finetune_options='{"ldifs_lambda": -1, "learning_rate": 1e-3}'),
         "finetune_options ldifs_lambda=-1 is refused .*ldifs_lambda must be a number >= 0"),
    ],
)
def test_bad_study_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StudyArguments(**kwargs)


def test_good_finetune_options_are_accepted_and_checking_them_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the check's output_dir (never created) would be
    args = StudyArguments(output_dir=str(tmp_path / "study"), finetune_options=GRID["finetune_options"] | {"report_to": ["none"], "ldifs_layers": [1, 2]})
    assert args.finetune_options["learning_rate"] == 1e-3
    assert list(tmp_path.iterdir()) == []


def _no_world(monkeypatch):
    """Fail the test if the study gets as far as preparing its world."""
    import ldifs_hf.study.runner as runner
    import ldifs_hf.world as world

    def refuse(*args, **kwargs):
        pytest.fail("the study prepared its world before refusing a bad input")

    monkeypatch.setattr(runner, "prepare_study", refuse)
    monkeypatch.setattr(world, "prepare_world", refuse)


@pytest.mark.parametrize(
    "where, options, message",
    [
        ("a-file", None, "output_dir '{out}' is a file, not a directory; the study needs a directory"),
        ("a-file/study", None, "output_dir '{out}' cannot be created: '{tmp}/a-file' is a file, not a directory"),
        ("read-only", None, "output_dir '{out}' is not writable"),
        ("study", '{"learning_rate": "fast"}', "finetune_options: learning_rate must be a number, got 'fast'"),
        ("study", '{"learnin_rate": 1e-3}', "finetune_options has an unknown key 'learnin_rate'; did you mean 'learning_rate'?"),
        ("study", '{"lr_scheduler_type": "bogus"}', "finetune_options lr_scheduler_type='bogus' is refused by the fine-tuning arguments"),
    ],
)
def test_cli_bad_output_dir_or_finetune_options_is_one_line_before_anything_runs(where, options, message, tmp_path, monkeypatch, capsys):
    _no_world(monkeypatch)
    (tmp_path / "a-file").write_text("the user's")
    (tmp_path / "read-only").mkdir()
    out = tmp_path / where
    if where == "read-only":
        import ldifs_hf.run_folder.plan as run_folder_plan

        def refuse(*args, **kwargs):  # what a read-only mount does (chmod does not stop root)
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(run_folder_plan.tempfile, "mkstemp", refuse)
    argv = ["study", "--output_dir", str(out), "--world", "quick", "--methods", "zs-init-ce", "--finetune_tasks", "world-digit", "--max_steps", "2"]
    line = one_line_error(capsys, argv + (["--finetune_options", options] if options else []))
    assert line.startswith("error: " + message.format(out=out, tmp=tmp_path)), line
    assert (tmp_path / "a-file").read_text() == "the user's"  # nothing the user had is overwritten
    assert not (tmp_path / "study").exists() and list((tmp_path / "read-only").iterdir()) == []  # no cells/, nothing at all


def test_unknown_names_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="ft-magic"):
        plan_study(StudyArguments(output_dir=str(tmp_path), methods="ft-magic"))
    with pytest.raises(BenchmarkError, match="Unknown benchmark .marsnet."):
        plan_study(StudyArguments(output_dir=str(tmp_path), finetune_tasks="eurosat>marsnet"))


def test_a_done_cell_with_other_settings_is_refused(tmp_path):
    args = StudyArguments(output_dir=str(tmp_path), methods="zs-init-ce", finetune_tasks="eurosat", max_steps=5)
    cell = study_cells(args)[0]
    cell_dir = tmp_path / cell.folder
    cell_dir.mkdir(parents=True)
    assert cell_status(str(cell_dir), cell_config(args, cell, ["mnist"])) == "partial"
    saved = {"config": cell_config(args, cell, ["mnist"]), "run_dirs": [], "evaluation_files": []}
    (cell_dir / CELL_FILE).write_text(json.dumps(saved))
    assert cell_status(str(cell_dir), cell_config(args, cell, ["mnist"])) == "done"
    other = StudyArguments(output_dir=str(tmp_path), methods="zs-init-ce", finetune_tasks="eurosat", max_steps=7)
    with pytest.raises(ValueError, match=r"was run with other settings \(finetune.max_steps\)"):
        cell_status(str(cell_dir), cell_config(other, cell, ["mnist"]))


# -- seed means and the trade-off, by hand ------------------------------------------------------------


def _record(method, seed, a_ft, deltas):
    return {
        "method": method, "finetune_task": "a", "step": 10, "percent": 100.0, "seed": seed, "a_ft": a_ft,
        "eval": {name: {"delta_zs": zs, "delta_lp": lp} for name, (zs, lp) in deltas.items()},
    }


def test_mean_over_seeds_and_the_tradeoff_by_hand():
    records = [
        _record("ce", 0, 0.90, {"a": (0.1, 0.2), "b": (-0.10, -0.20), "c": (-0.30, -0.40)}),
        _record("ce", 1, 0.80, {"a": (0.1, 0.2), "b": (-0.20, -0.30), "c": (-0.20, -0.10)}),
    ]
    (mean,) = mean_over_seeds(records, ("method", "finetune_task", "step", "percent"))
    assert mean["seeds"] == [0, 1] and mean["a_ft"] == pytest.approx(0.85)
    assert mean["eval"]["b"] == pytest.approx({"delta_zs": -0.15, "delta_lp": -0.25})
    (row,) = tradeoff_rows(records)
    # Other tasks than "a": seed 0 mean Δ_LP (-0.2 - 0.4) / 2 = -0.3, seed 1 (-0.3 - 0.1) / 2 = -0.2.
    assert row["method"] == "ce" and row["seeds"] == 2
    assert row["delta_lp_other_mean"] == pytest.approx(-0.25)
    assert row["delta_lp_other_std"] == pytest.approx(0.0707107, abs=1e-6)  # sample std of (-0.3, -0.2)
    assert row["a_ft_mean"] == pytest.approx(0.85) and row["a_ft_std"] == pytest.approx(0.0707107, abs=1e-6)


# -- on the world ---------------------------------------------------------------------------------------

GRID = dict(
    methods="zs-init-ce,lp-init-ldifs", finetune_tasks="world-digit,world-colour>world-texture", eval_tasks="all", seeds="0",
    world="quick", max_steps=2, checkpoint_every_percent=50, lp_iterations=20, eval_max_train_samples=64, eval_num_workers=0,
    finetune_options={"per_device_train_batch_size": 16, "warmup_steps": 0, "learning_rate": 1e-3, "use_cpu": True},
)
TABLES = ("results.md", "results.csv", "sequence_table.md", "tradeoff.csv")


def _study(out, cache, **extra):
    return StudyArguments(output_dir=str(out), world_cache_dir=str(cache), **GRID, **extra)


def _tables(out):
    return {name: (out / name).read_text() for name in TABLES}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("world_cache")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("uninterrupted")
    return out, run_study(_study(out, cache))


@pytest.mark.slow
def test_world_study_writes_tables_figures_and_manifest(uninterrupted, capsys, cache):
    out, result = uninterrupted
    assert all(status == "done" for status in result.plan.status.values()) and len(result.plan.cells) == 4
    manifest = json.loads((out / "study.json").read_text())
    assert [c["status"] for c in manifest["cells"]] == ["done"] * 4
    table3 = result.tables.table3
    assert "| fine-tune task | eval task | lp-init-ldifs | zs-init-ce |" in table3 and "| world-digit | A_FT |" in table3
    assert "| world-colour>world-texture | lp-init-ldifs |" in result.tables.table2
    for png in ("deltas_over_training.png", "distances_over_training.png", "tradeoff.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_seed = (out / "results_by_seed.csv").read_text().splitlines()
    assert by_seed[0].startswith("seed,method,finetune_task")
    # Checkpoints every 50 % of 2 steps: the start, step 1, step 2 and the final model, per method.
    percents = sorted({r["percent"] for r in json.loads((out / "results.json").read_text())["records"]})
    assert percents == [0.0, 50.0, 100.0]
    # The pretrained model is scored once for the whole study: its features and accuracies are written by
    # the first cell (before its cell.json) and only read by the others.
    cached = list((out / "feature_cache").iterdir())
    assert any(p.suffix == ".safetensors" for p in cached) and any(p.suffix == ".json" for p in cached)
    first_done = min(p.stat().st_mtime_ns for p in out.glob("cells/**/cell.json"))
    assert max(p.stat().st_mtime_ns for p in cached) < first_done
    # Each cell's own output (the Trainer's log) is in its folder's output.log, not on the console.
    for marker in out.glob("cells/**/cell.json"):
        assert "train_runtime" in (marker.parent / "output.log").read_text()
    # Every cell records its evaluation files where they are, not in the staging folder.
    for marker in out.glob("cells/**/cell.json"):
        files = json.loads(marker.read_text())["evaluation_files"]
        assert files and all(os.path.isfile(f) and ".evaluation.tmp" not in f for f in files)
    # Everything done: the plan says so and a rerun changes nothing.
    assert main(["study", "--plan", *_cli(out, cache)]) == 0
    assert "4 cells: 4 done, 0 to run" in capsys.readouterr().out


def _cli(out, cache):
    argv = ["--output_dir", str(out), "--world_cache_dir", str(cache)]
    for key, value in GRID.items():
        argv += [f"--{key}", json.dumps(value) if isinstance(value, dict) else str(value)]
    return argv


def _weights(out):
    return {str(p): p.stat().st_mtime_ns for p in sorted(out.glob("cells/**/model.safetensors"))}


@pytest.mark.slow
def test_killed_study_resumes_without_recomputing_and_gives_the_same_tables(uninterrupted, cache, tmp_path, caplog):
    reference_out, _ = uninterrupted
    out = tmp_path / "killed"
    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from ldifs_hf.study import StudyArguments, run_study\n"
        f"run_study(StudyArguments(output_dir={str(out)!r}, world_cache_dir={str(cache)!r}, **{GRID!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = out / "study.json"
    deadline = time.monotonic() + 300
    done = []
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists():
            done = [c for c in json.loads(manifest.read_text())["cells"] if c["status"] == "done"]
            if done:
                break
        time.sleep(0.2)
    assert done, f"no cell finished before the deadline: {proc.stderr.read().decode()[-2000:] if proc.poll() is not None else 'still running'}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    unfinished = [c for c in json.loads(manifest.read_text())["cells"] if c["status"] != "done"]
    assert unfinished, "the study finished before it could be killed"

    finished_weights = {p: t for p, t in _weights(out).items() if any(os.sep + c["folder"] + os.sep in p for c in done)}
    assert finished_weights
    result = run_study(_study(out, cache))
    assert all(status == "done" for status in result.plan.status.values())
    after = _weights(out)
    assert {p: after[p] for p in finished_weights} == finished_weights  # finished cells were not recomputed
    assert _tables(out) == _tables(reference_out)

    # A cell killed between its finished run and its cell.json (with a stale staging folder) has its
    # evaluation redone, not its training.
    cell = out / done[0]["folder"]
    (cell / "cell.json").unlink()
    (cell / ".evaluation.tmp").mkdir()
    (cell / ".evaluation.tmp" / "results.md").write_text("half written")
    evaluated = (cell / "evaluation").stat().st_mtime_ns
    args = _study(out, cache)
    status = plan_study(*prepare_study(args)).status
    assert status[Cell(done[0]["method"], tuple(done[0]["tasks"]), done[0]["seed"])] == "partial"
    with caplog.at_level(logging.INFO, logger="ldifs_hf"):
        run_study(_study(out, cache))
    assert (cell / "cell.json").exists() and not (cell / ".evaluation.tmp").exists()
    # The log names where the evaluation ended up, never the staging folder that is gone.
    logged = [r.getMessage() for r in caplog.records]
    assert not [m for m in logged if ".evaluation.tmp" in m]
    assert any(f"wrote the evaluation to {cell / 'evaluation'} (" in m and "results.md" in m for m in logged), logged
    assert (cell / "evaluation").stat().st_mtime_ns != evaluated
    assert {p: t for p, t in _weights(out).items() if p in finished_weights} == finished_weights
    assert _tables(out) == _tables(reference_out)


@pytest.mark.slow
def test_submitit_local_executor_gives_the_same_tables(uninterrupted, cache, tmp_path, monkeypatch):
    reference_out, _ = uninterrupted
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs' torch threads, as in this process
    monkeypatch.setenv("PYTHONPATH", ROOT)
    out = tmp_path / "submitit"
    result = run_study(_study(out, cache, launcher="submitit", submitit_cluster="local", gpus_per_node=0, cpus_per_task=1, timeout_min=10))
    assert all(status == "done" for status in result.plan.status.values())
    assert len(list((out / "submitit").glob("*/*_result.pkl"))) == 4  # one job per cell
    assert _tables(out) == _tables(reference_out)


def test_cli_study_help_and_one_line_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "--finetune_tasks" in printed and "--launcher" in printed and "--plan" in printed
    one_line_error(capsys, ["study", "--launcher", "slurm"], "error: launcher must be one of ('local', 'submitit'), got 'slurm'")


def test_bf16_in_finetune_options_is_accepted_on_a_host_without_a_gpu(tmp_path):
    """The cells may run elsewhere (submitit on GPU nodes): the options check must not need this host's GPU."""
    args = StudyArguments(output_dir=str(tmp_path / "s"), methods="zs-init-ce", finetune_tasks="eurosat", finetune_options='{"bf16": true}')
    assert args.finetune_options == {"bf16": True} and not (tmp_path / "s").exists()
