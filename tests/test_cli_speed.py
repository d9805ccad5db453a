"""The CLI parses and checks its arguments before the heavy imports: `--help` and a one-line error
import neither the Trainer, deepspeed, `datasets` nor the world's model code (checked in a fresh
interpreter's sys.modules, not with a wall clock, which a loaded machine would make flaky)."""

import json
import subprocess
import sys

import pytest

HEAVY = ("transformers.trainer", "deepspeed", "datasets", "ldifs_hf.training.trainer", "ldifs_hf.training.run", "ldifs_hf.tiny")

PROBE = """
import contextlib, io, json, sys
from ldifs_hf.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exit:
        code = exit.code
print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(), "modules": sorted(sys.modules)}))
"""


def _run_cli(*argv):
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_top_level_help_imports_neither_transformers_nor_torch():
    result = _run_cli("--help")
    assert result["code"] == 0 and "ldifs-hf COMMAND --help" in result["out"]
    assert not {"transformers", "torch"} & set(result["modules"])


@pytest.mark.parametrize("command", ["finetune", "study", "demo"])
def test_command_help_does_not_import_the_trainer_deepspeed_or_datasets(command):
    result = _run_cli(command, "--help")
    assert result["code"] == 0 and "--output_dir" in result["out"]
    assert not set(HEAVY) & set(result["modules"])


def test_a_bad_value_is_one_line_before_the_heavy_imports():
    result = _run_cli("finetune", "--method", "bogus", "--output_dir", "x")
    assert result["code"] == 2
    assert result["err"].startswith("error: unknown method 'bogus'") and result["err"].count("\n") == 1
    assert not set(HEAVY) & set(result["modules"])


def test_the_package_namespace_still_offers_the_library_names():
    """`import ldifs_hf` is cheap, and every name it exports still resolves (on first use)."""
    code = (
        "import sys, ldifs_hf; cheap = 'ldifs_hf.training.trainer' not in sys.modules and 'torch' not in sys.modules; "
        "from ldifs_hf import LDIFSTrainer, finetune, evaluate; from ldifs_hf.training import LDIFSTrainer as same; "
        "missing = [n for n in ldifs_hf.__all__ if getattr(ldifs_hf, n, None) is None]; "
        "print(cheap, LDIFSTrainer is same, callable(finetune), callable(evaluate), missing, set(ldifs_hf.__all__) <= set(dir(ldifs_hf)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.stdout.split("\n")[-2] == "True True True True [] True", done.stderr[-2000:]
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        import ldifs_hf

        ldifs_hf.no_such_name


@pytest.mark.parametrize("package", ["ldifs_hf", "ldifs_hf.benchmarks", "ldifs_hf.evaluation", "ldifs_hf.training", "ldifs_hf.study", "ldifs_hf.world"])
def test_no_name_imported_on_first_use_is_also_a_submodule(package):
    """Importing a submodule sets the package's attribute of that name to the module, so a lazily
    exported function of the same name would be hidden (hence `training.sequences` defines `sequence`)."""
    import importlib
    import pkgutil

    module = importlib.import_module(package)
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    assert not set(module._EXPORTS) & submodules
