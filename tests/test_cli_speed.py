"""The CLI parses and checks its arguments before the heavy imports: `--help` and a one-line error
import neither the Trainer, deepspeed, `datasets` nor the world's model code, and once a command's
parser snapshot is stored, neither transformers nor torch (checked in a fresh interpreter's
sys.modules, not with a wall clock, which a loaded machine would make flaky). The snapshots in the
user's cache are tested here with the shipped ones turned off; tests/test_cli_shipped_snapshots.py
tests the shipped ones."""

import argparse
import json
import os
import subprocess
import sys

import pytest

from ldifs_hf import cli_snapshot

HEAVY = ("transformers.trainer", "deepspeed", "datasets", "ldifs_hf.training.trainer", "ldifs_hf.training.run", "ldifs_hf.tiny")

PROBE = """
import contextlib, io, json, os, sys
from ldifs_hf import cli_snapshot
if os.environ.get("PROBE_WITHOUT_SHIPPED_SNAPSHOTS"):
    cli_snapshot.SHIPPED_DIR = None
from ldifs_hf.cli import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exit:
        code = exit.code
print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue(), "modules": sorted(sys.modules)}))
"""


def _run_cli(*argv, cache=None, env=None, shipped=True):
    """`ldifs-hf ARGV` in a fresh interpreter; `cache`: the snapshot cache root (default: a new, empty
    one); `shipped=False`: without the package's snapshots, so that with an empty cache the real parser runs."""
    import tempfile

    env = {**os.environ, **(env or {}), cli_snapshot.CACHE_ENV: str(cache or tempfile.mkdtemp(prefix="ldifs-cli-"))}
    if not shipped:
        env["PROBE_WITHOUT_SHIPPED_SNAPSHOTS"] = "1"
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=600, env=env)
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


@pytest.mark.parametrize(
    "package", ["ldifs_hf", "ldifs_hf.benchmarks", "ldifs_hf.evaluation", "ldifs_hf.run_folder", "ldifs_hf.training", "ldifs_hf.study", "ldifs_hf.world"]
)
def test_no_name_imported_on_first_use_is_also_a_submodule(package):
    """Importing a submodule sets the package's attribute of that name to the module, so a lazily
    exported function of the same name would be hidden (hence `training.sequences` defines `sequence`)."""
    import importlib
    import pkgutil

    module = importlib.import_module(package)
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    assert not set(module._EXPORTS) & submodules


# -- the parser snapshot --------------------------------------------------------------------------

SNAPSHOT_CASES = [
    ("finetune", "--help"),
    ("finetune", "--method", "bogus", "--output_dir", "x"),
    ("finetune", "--method", "lp-init-ldif", "--output_dir", "x"),  # "did you mean"
    ("finetune", "--method", "lp-init-ce+bogus", "--output_dir", "x"),  # an unknown regularizer
    ("finetune", "--bogus_flag", "1", "--output_dir", "x"),
    ("finetune", "--learning_rate", "abc", "--output_dir", "x"),
    ("finetune", "--train_augmentation", "maybe", "--output_dir", "x"),
    ("finetune", "--save_strategy", "sometimes", "--output_dir", "x"),
    ("finetune", "--lea", "0.1", "--output_dir", "x"),  # an ambiguous abbreviation
    ("lambda-search", "--method", "bogus", "--output_dir", "x"),
    ("evaluate", "--help"),
    ("evaluate", "--checkpoint"),
    ("study", "--help"),
    ("demo", "--quick", "maybe"),
    ("interpolate", "--help"),
    ("interpolate", "--run", "x"),  # missing required options
]


@pytest.mark.parametrize("argv", SNAPSHOT_CASES, ids=" ".join)
def test_a_stored_snapshot_answers_as_the_real_parser_without_transformers_or_torch(tmp_path, argv):
    real = _run_cli(*argv, cache=tmp_path, shipped=False)
    assert "transformers" in real["modules"]  # the first run built the real parser, and stored it
    assert (tmp_path / "cli" / f"{argv[0]}.json").is_file()
    fast = _run_cli(*argv, cache=tmp_path, shipped=False)
    assert (fast["code"], fast["out"], fast["err"]) == (real["code"], real["out"], real["err"])
    assert real["code"] in (0, 2) and (real["out"] if real["code"] == 0 else real["err"].count("\n") == 1)
    assert not {"transformers", "torch"} & set(fast["modules"])


def test_the_help_from_a_snapshot_follows_the_terminal_width(tmp_path):
    _run_cli("study", "--help", cache=tmp_path, shipped=False)  # stored at the default width
    narrow = {"COLUMNS": "60"}
    real = _run_cli("study", "--help", env=narrow, shipped=False)
    fast = _run_cli("study", "--help", cache=tmp_path, env=narrow, shipped=False)
    assert fast["out"] == real["out"] and "transformers" not in fast["modules"]


def test_a_command_line_the_pre_check_accepts_goes_on_to_the_real_parser(tmp_path):
    _run_cli("finetune", "--help", cache=tmp_path)
    result = _run_cli("finetune", "--method", "FLYP+l2sp", "--dataset", "no-such-benchmark", "--output_dir", "x", cache=tmp_path)
    assert result["code"] == 2 and "no-such-benchmark" in result["err"] and "transformers" in result["modules"]


def _stored(tmp_path, command):
    return json.loads((tmp_path / "cli" / f"{command}.json").read_text())


def test_a_stale_snapshot_is_not_used_and_is_replaced(tmp_path):
    real = _run_cli("demo", "--help", cache=tmp_path, shipped=False)
    stored = _stored(tmp_path, "demo")
    stored["key"], stored["parser"]["description"] = "stale", "STALE HELP"
    (tmp_path / "cli" / "demo.json").write_text(json.dumps(stored))
    again = _run_cli("demo", "--help", cache=tmp_path, shipped=False)
    assert again["out"] == real["out"] and "STALE HELP" not in again["out"] and "transformers" in again["modules"]
    assert _stored(tmp_path, "demo")["key"] != "stale"


@pytest.mark.parametrize("damage", ["{not json", json.dumps([1, 2]), "parser"])
def test_a_damaged_snapshot_is_ignored_and_rebuilt(tmp_path, damage):
    real = _run_cli("demo", "--help", cache=tmp_path, shipped=False)
    path = tmp_path / "cli" / "demo.json"
    if damage == "parser":  # current key, broken content
        stored = _stored(tmp_path, "demo")
        stored["parser"] = {"prog": "ldifs-hf demo"}
        damage = json.dumps(stored)
    path.write_text(damage)
    again = _run_cli("demo", "--help", cache=tmp_path, shipped=False)
    assert (again["code"], again["out"]) == (0, real["out"]) and "transformers" in again["modules"]
    assert _stored(tmp_path, "demo")["key"] == cli_snapshot._key()
    served = _run_cli("demo", "--help", cache=tmp_path, shipped=False)  # the rebuilt snapshot serves
    assert served["out"] == real["out"] and "transformers" not in served["modules"]


def test_the_snapshot_key_follows_the_package_sources_content_not_their_place_or_time(tmp_path):
    """Every clone and install of the same sources has the same key (so a shipped snapshot serves
    them all); any change to a source file, an added one or a renamed one gives another key."""
    import shutil
    import time

    package = os.path.dirname(cli_snapshot.__file__)
    key = cli_snapshot._key()
    assert key["sources"] == cli_snapshot.sources_digest(package)
    assert key["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    import torch  # TrainingArguments' default optimizer follows torch's release (not its build, +cpu or +cu126)
    import transformers

    assert (key["torch"], key["transformers"]) == (torch.__version__.split("+")[0], transformers.__version__)

    def copy(name):
        time.sleep(0.01)  # other modification times
        return shutil.copytree(package, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))

    assert cli_snapshot.sources_digest(copy("clone")) == key["sources"]
    crlf = copy("crlf") / "options.py"
    crlf.write_bytes(crlf.read_bytes().replace(b"\n", b"\r\n"))
    assert cli_snapshot.sources_digest(crlf.parent) == key["sources"]
    edited = copy("edited") / "options.py"
    edited.write_bytes(edited.read_bytes() + b"\n")
    added = copy("added") / "world" / "extra.py"
    added.write_text("")
    renamed = copy("renamed") / "options.py"
    renamed.rename(renamed.with_name("options2.py"))
    for changed in ("edited", "added", "renamed"):
        assert cli_snapshot.sources_digest(tmp_path / changed) != key["sources"], changed


PLUGIN_PROBE = """
import contextlib, io, json, sys
from ldifs_hf.training.methods import MethodSpec, register_method
register_method(MethodSpec("my-method", "zero-shot", "ce", "ldifs", "vision"))
from ldifs_hf.cli import main
err = io.StringIO()
with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "err": err.getvalue()}))
"""


def test_no_snapshot_is_used_or_stored_in_a_process_that_may_have_registered_plug_ins(tmp_path):
    """A script that registers a method and calls `ldifs_hf.cli.main`: its method is not refused by a
    snapshot that lacks it, and its catalogue (with the plug-in) is not stored for other processes."""
    _run_cli("finetune", "--help", cache=tmp_path, shipped=False)
    before = (tmp_path / "cli" / "finetune.json").read_text()
    env = {**os.environ, cli_snapshot.CACHE_ENV: str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", PLUGIN_PROBE, "finetune", "--method", "my-method", "--zzz", "--output_dir", "x"],
                          capture_output=True, text=True, timeout=600, env=env)
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == 2 and result["err"].startswith("error: unrecognized arguments: --zzz"), result
    assert (tmp_path / "cli" / "finetune.json").read_text() == before
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-c", PLUGIN_PROBE, "demo", "--zzz"], capture_output=True, text=True, timeout=600,
                   env={**env, cli_snapshot.CACHE_ENV: str(fresh)})
    assert not (fresh / "cli").exists()


@pytest.mark.parametrize("name", ["lp-init-ldifs", " FLYP ", "flyp+l2sp", "bogus", "lp-init-ldif", "lp-init-ce+bogus", "bogus+ldifs", "+"])
def test_the_method_check_gives_the_registry_s_answer(name):
    from ldifs_hf.training.methods import get_method, list_methods
    from ldifs_hf.training.terms import list_regularizers

    try:
        get_method(name)
        expected = None
    except ValueError as err:
        expected = str(err)
    try:
        cli_snapshot.check_method_name(name, list_methods(), list_regularizers())
        got = None
    except ValueError as err:
        got = str(err)
    assert got == expected


@pytest.mark.parametrize("word", ["yes", "True", "t", "Y", "1", "no", "FALSE", "f", "n", "0", "maybe", ""])
def test_the_snapshot_s_booleans_read_as_transformers_reads_them(word):
    from transformers.hf_argparser import string_to_bool

    def answer(convert):
        try:
            return convert(word)
        except argparse.ArgumentTypeError as err:
            return f"refused: {err}"

    assert answer(cli_snapshot._string_to_bool) == answer(string_to_bool)
