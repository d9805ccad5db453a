"""The `ldifs-hf` command: every user mistake the tests know of is one line, `error: ...`, exit code 2;
`--help` opens with this project's options; the installed package runs the demo outside the checkout."""

import os
import shutil
import subprocess
import sys

import pytest

from ldifs_hf.cli import main
from conftest import finetune_argv, one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


FINETUNE_CASES = [
    (("ldifs-deluxe",), "unknown method 'ldifs-deluxe'"),
    (("zs-init-ldifs", "--ldifs_lambda", "-3"), "ldifs_lambda must be a number >= 0, got -3"),
    (("zs-init-ce", "--image_column", "pixels"), "pixels"),
    (("zs-init-ldifs", "--ldifs_layers", "0", "7"), "out of range"),
    (("zs-init-ce", "--bogus_flag", "1"), "unrecognized arguments: --bogus_flag 1"),
    (("zs-init-ce", "--lp_solver", "newton"), "unknown linear-probe solver 'newton'"),
    (("zs-init-ce", "--validation_fraction", "1.5"), "validation_fraction must be in [0, 1), got 1.5"),
    (("zs-init-ce", "--forgetting_benchmarks", "imagenet-xyz"), "Unknown benchmark 'imagenet-xyz'"),
]


@pytest.mark.parametrize("args,needle", FINETUNE_CASES, ids=[c[1][:30] for c in FINETUNE_CASES])
def test_finetune_mistakes_are_one_line_and_exit_2(args, needle, capsys, tiny_clip_dir, eurosat_dir, tmp_path):
    method, *extra = args
    one_line_error(capsys, ["finetune", *finetune_argv(tiny_clip_dir, eurosat_dir, tmp_path / "out", method, *extra)], needle)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_finetune_missing_model_and_unknown_dataset(capsys, eurosat_dir, tmp_path, tiny_clip_dir):
    one_line_error(capsys, ["finetune", *finetune_argv(tmp_path / "no-model", eurosat_dir, tmp_path / "o", "zs-init-ce")], "could not load CLIP model")
    argv = ["finetune", *finetune_argv(tiny_clip_dir, eurosat_dir, tmp_path / "o", "zs-init-ce")]
    argv[argv.index("--dataset") + 1] = "imagenet-xyz"
    one_line_error(capsys, argv, "Unknown benchmark 'imagenet-xyz'")
    one_line_error(capsys, ["finetune", str(tmp_path / "missing.json")], "config file")


EVALUATE_CASES = [
    (["--checkpoint", "{tmp}/nope", "--datasets", "mnist"], "does not exist"),
    (["--checkpoint", "{tmp}", "--datasets", "mnist"], "no config.json"),
    (["--checkpoint", "{clip}", "--datasets", "mnist,not-a-benchmark"], "Unknown benchmark 'not-a-benchmark'"),
    (["--checkpoint", "{clip}", "--datasets", "mnist"], "pass --pretrained"),
    (["--checkpoint", "{clip}", "--dataset_path", "mnist"], "name=path"),
    (["--datasets", "mnist"], "--checkpoint is required"),
    (["--checkpoint", "{clip}", "--text_tower", "both"], "text_tower must be one of"),
]


@pytest.mark.parametrize("args,needle", EVALUATE_CASES, ids=[c[1][:30] for c in EVALUATE_CASES])
def test_evaluate_mistakes_are_one_line_and_exit_2(args, needle, capsys, tiny_clip_dir, tmp_path):
    argv = ["evaluate", *[a.format(tmp=tmp_path, clip=tiny_clip_dir) for a in args]]
    one_line_error(capsys, argv, needle)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--methods", "ft-magic"], "unknown method 'ft-magic'"),
        (["--finetune_task", "world-smell"], "'world-smell' is not a world task; choose one of world-digit"),
        (["--max_steps", "0"], "max_steps must be >= 1, got 0"),
    ],
)
def test_demo_mistakes_are_one_line_and_exit_2(args, needle, capsys, tmp_path):
    one_line_error(capsys, ["demo", "--output_dir", str(tmp_path), *args], needle)


def test_unknown_command_and_debug_traceback(capsys, tmp_path):
    one_line_error(capsys, ["train"], "unknown command 'train'; choose one of demo, finetune, evaluate")
    with pytest.raises(ValueError, match="unknown method"):  # --debug: the traceback, not one line
        main(["demo", "--methods", "ft-magic", "--output_dir", str(tmp_path), "--debug"])


def test_help_opens_with_this_projects_options_and_lists_valid_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    first_group = text.split("\n\n")[2]  # after the usage line and the description
    assert first_group.startswith("ldifs_hf options")
    for option in ("--method", "--dataset", "--ldifs_lambda", "--model_name_or_path"):
        assert option in first_group
    assert "lp-init-ldifs" in text and "eurosat" in text and "world-digit" in text
    assert len(text.split("\n\n")[0].splitlines()) == 1  # a one-line usage, not 600 flags


@pytest.mark.parametrize("command", ["demo", "finetune", "evaluate", "study", "lambda-search"])
def test_every_command_prints_its_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: ldifs-hf {command}")


def test_list_prints_methods_and_benchmarks(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "zs-init-ldifs" in out and "svhn" in out


@pytest.mark.slow
def test_installed_package_runs_the_demo_outside_the_checkout(tmp_path):
    """`pip install .` (not editable) into a fresh venv, then `ldifs-hf demo --quick` from elsewhere."""
    venv = tmp_path / "venv"
    # The new venv reaches the test environment's packages (torch, transformers, pip, setuptools) through
    # a .pth file, so the check downloads nothing; ldifs_hf itself is installed as a regular package.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([sys.executable, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True).stdout.strip()
    (venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / "parent.pth").write_text(site + "\n")
    build = tmp_path / "src"  # a copy of the source tree without the checkout's venv, caches and runs
    shutil.copytree(ROOT, build, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "*.egg-info", "__pycache__", ".pytest_cache", "build"))
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(build)], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", LDIFS_HF_CACHE=str(tmp_path / "cache"))
    demo = subprocess.run(
        [str(venv / "bin" / "ldifs-hf"), "demo", "--quick", "--output_dir", "out", "--methods", "zs-init-ce", "--seeds", "0", "--world_seeds", "0", "--max_steps", "2",
         "--lp_iterations", "5"],
        cwd=work, capture_output=True, text=True, env=env, timeout=900,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    where = subprocess.run([str(python), "-c", "import ldifs_hf; print(ldifs_hf.__file__)"], cwd=work, capture_output=True, text=True, env=env)
    assert str(venv) in where.stdout, where.stdout  # the installed copy ran, not the checkout
    assert "mean (other tasks)" in (work / "out" / "results.md").read_text()
    assert (work / "out" / "world-0" / "seed-0" / "results.md").read_text().startswith("Concept forgetting")
