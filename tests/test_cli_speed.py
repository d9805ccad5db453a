"""The CLI parses and checks its arguments before the heavy imports: `--help` and a one-line error
import neither transformers nor torch in the process that answers, from an empty cache (a fresh install:
`cli_light` reads the parser's description in a child process) as from a stored description (checked in
a fresh interpreter's sys.modules, not with a wall clock, which a loaded machine would make flaky). Their
answers are the real parser's; tests/test_cli_light.py holds each command's description equal to it."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ldifs_hf import cli_snapshot

HEAVY = ("transformers", "torch", "deepspeed", "datasets", "ldifs_hf.training.trainer", "ldifs_hf.training.run", "ldifs_hf.tiny")
ROOT = Path(__file__).resolve().parents[1]

# Runs `ldifs-hf ARGV` for each ARGV in turn in one fresh interpreter, and reports the answers and the
# modules imported by the end. PROBE_REAL: without reading lightly, so that the real parser answers.
PROBE = """
import contextlib, io, json, os, sys
from ldifs_hf import cli_snapshot
cli_snapshot.READ_LIGHTLY = not os.environ.get("PROBE_REAL")
from ldifs_hf.cli import main
answers = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    answers.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps({"answers": answers, "modules": sorted(sys.modules)}))
"""


def _run(cases, cache=None, env=None, real=False):
    """The answers to `cases` in one fresh interpreter, and its modules; `cache`: the descriptions'
    cache root (default: a new, empty one); `real`: the real parser answers what no stored description does."""
    import tempfile

    env = {**os.environ, **(env or {}), cli_snapshot.CACHE_ENV: str(cache or tempfile.mkdtemp(prefix="ldifs-cli-"))}
    if real:
        env["PROBE_REAL"] = "1"
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    return result["answers"], set(result["modules"])


def _run_cli(*argv, **kwargs):
    [answer], modules = _run([list(argv)], **kwargs)
    return {**answer, "modules": modules}


def test_top_level_help_imports_neither_transformers_nor_torch():
    result = _run_cli("--help")
    assert result["code"] == 0 and "ldifs-hf COMMAND --help" in result["out"]
    assert not {"transformers", "torch"} & set(result["modules"])


@pytest.mark.parametrize("command", ["finetune", "study", "demo"])
def test_command_help_from_an_empty_cache_imports_neither_transformers_nor_torch(command):
    result = _run_cli(command, "--help")
    assert result["code"] == 0 and "--output_dir" in result["out"]
    assert not set(HEAVY) & set(result["modules"])


def test_a_bad_value_is_one_line_before_the_heavy_imports(tmp_path):
    for cache in (None, tmp_path, tmp_path):  # from an empty cache, then from what the first stored
        result = _run_cli("finetune", "--method", "bogus", "--output_dir", "x", cache=cache)
        assert result["code"] == 2
        assert result["err"].startswith("error: unknown method 'bogus'") and result["err"].count("\n") == 1
        assert not set(HEAVY) & result["modules"]
    assert (tmp_path / "cli" / "finetune.json").is_file()


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


# -- the parser's description ---------------------------------------------------------------------

# Help and mistakes of each command, one mistake of each kind the pre-check answers.
CASES = [
    ["finetune", "--help"],
    ["finetune", "--method", "bogus", "--output_dir", "x"],
    ["finetune", "--method", "lp-init-ldif", "--output_dir", "x"],  # "did you mean"
    ["finetune", "--method", "lp-init-ce+bogus", "--output_dir", "x"],  # an unknown regularizer
    ["finetune", "--bogus_flag", "1", "--method", "flyp", "--output_dir", "x"],
    ["finetune", "--learning_rate", "abc", "--method", "flyp", "--output_dir", "x"],
    ["finetune", "--train_augmentation", "maybe", "--method", "flyp", "--output_dir", "x"],
    ["finetune", "--save_strategy", "sometimes", "--method", "flyp", "--output_dir", "x"],
    ["finetune", "--lea", "0.1", "--output_dir", "x"],  # an ambiguous abbreviation
    ["finetune", "--learning_rat", "1", "--output_dir", "x"],  # no method
    ["finetune", "--method", "flyp", "--dataset", "eurosat"],  # no output_dir
    ["lambda-search", "--method", "bogus", "--output_dir", "x"],
    ["lambda-search", "--help"],
    ["evaluate", "--help"],
    ["evaluate", "--checkpoint"],
    ["study", "--help"],
    ["study", "--bogus_flag", "1"],
    ["demo", "--help"],
    ["demo", "--quick", "maybe"],
    ["interpolate", "--help"],
    ["interpolate", "--run", "x"],  # missing required options
    ["interpolate", "--run", "x", "--alpha", "half", "--output_dir", "y"],
]


def test_help_and_mistakes_from_an_empty_cache_are_the_real_parser_s(tmp_path):
    """A fresh install: each command's first answer comes from its description read lightly, the
    others from the one that stored; all are the real parser's, and transformers and torch never load."""
    fast, modules = _run(CASES, tmp_path)
    assert not {"transformers", "torch"} & modules
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(f"{c}.json" for c in {argv[0] for argv in CASES})
    real, real_modules = _run(CASES, real=True)
    assert "transformers" in real_modules  # the real parsers answered
    for argv, fast_answer, real_answer in zip(CASES, fast, real):
        assert fast_answer == real_answer, argv
        if argv[-1] == "--help":
            assert (real_answer["code"], real_answer["err"]) == (0, "") and real_answer["out"].startswith(f"usage: ldifs-hf {argv[0]}"), argv
        else:
            assert real_answer["code"] == 2 and real_answer["err"].startswith("error: ") and real_answer["err"].count("\n") == 1, argv


def test_the_help_from_a_description_follows_the_terminal_width(tmp_path):
    _run_cli("study", "--help", cache=tmp_path)  # stored at the default width
    narrow = {"COLUMNS": "60"}
    real = _run_cli("study", "--help", env=narrow, real=True)
    fast = _run_cli("study", "--help", cache=tmp_path, env=narrow)
    assert fast["out"] == real["out"] and "transformers" not in fast["modules"]


def _stored(tmp_path, command):
    return json.loads((tmp_path / "cli" / f"{command}.json").read_text())


def test_a_command_line_the_pre_check_accepts_goes_on_to_the_real_parser_whose_description_replaces_a_wrong_one(tmp_path):
    _run_cli("finetune", "--help", cache=tmp_path)
    stored = _stored(tmp_path, "finetune")
    stored["parser"]["description"] = "WRONG HELP"  # as if the light reading had erred
    (tmp_path / "cli" / "finetune.json").write_text(json.dumps(stored))
    result = _run_cli("finetune", "--method", "FLYP+l2sp", "--dataset", "no-such-benchmark", "--output_dir", "x", cache=tmp_path)
    assert result["code"] == 2 and "no-such-benchmark" in result["err"] and "transformers" in result["modules"]
    assert "WRONG HELP" not in json.dumps(_stored(tmp_path, "finetune")) and _stored(tmp_path, "finetune")["key"] == stored["key"]


@pytest.fixture(scope="module")
def real_demo_help():
    return _run_cli("demo", "--help", real=True)


@pytest.mark.parametrize("damage", ["stale", "{not json", json.dumps([1, 2]), "parser"])
def test_a_stale_or_damaged_description_is_read_again(tmp_path, damage, real_demo_help):
    real = real_demo_help
    _run_cli("demo", "--help", cache=tmp_path)
    stored = _stored(tmp_path, "demo")
    if damage == "stale":  # another key (other sources, another transformers...)
        stored["key"], stored["parser"]["description"] = "stale", "STALE HELP"
        damage = json.dumps(stored)
    elif damage == "parser":  # the current key, broken content
        stored["parser"] = {"prog": "ldifs-hf demo", "description": "STALE HELP"}
        damage = json.dumps(stored)
    (tmp_path / "cli" / "demo.json").write_text(damage)
    again = _run_cli("demo", "--help", cache=tmp_path)
    assert (again["code"], again["out"]) == (0, real["out"]) and "transformers" not in again["modules"]
    assert _stored(tmp_path, "demo")["key"] == cli_snapshot._key()


def test_the_key_follows_the_package_sources_content_not_their_place_or_time(tmp_path):
    """Every clone and install of the same sources has the same key (so that they share a cache); any
    change to a source file, an added one or a renamed one gives another key."""
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


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True], ids=["pip install", "pip install -e"])
def test_a_fresh_install_answers_its_first_help_without_transformers_or_torch(tmp_path, editable):
    """`pip install [-e] .` into a fresh venv, an empty cache: its first `finetune --help` is read lightly
    (from the installed package's files) and stored."""
    venv = tmp_path / "venv"
    # The new venv reaches the test environment's packages through a .pth file (nothing is downloaded).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([sys.executable, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True).stdout.strip()
    (venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / "parent.pth").write_text(site + "\n")
    source = tmp_path / "src"  # a copy of the source tree, as a fresh clone has it
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "*.egg-info", "__pycache__", ".pytest_cache", "build"))
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", *(["-e"] if editable else []), str(source)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env[cli_snapshot.CACHE_ENV] = str(tmp_path / "cache")
    code = (
        "import contextlib, io, sys, ldifs_hf; from ldifs_hf.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['finetune', '--help'])\n"
        "    except SystemExit: pass\n"
        "print(ldifs_hf.__file__, 'transformers' in sys.modules or 'torch' in sys.modules)"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    where, imported = done.stdout.split()
    assert where.startswith(str(source if editable else venv)) and imported == "False", done.stdout + done.stderr[-2000:]
    assert (tmp_path / "cache" / "cli" / "finetune.json").is_file()


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


def test_no_description_is_used_or_stored_in_a_process_that_may_have_registered_plug_ins(tmp_path):
    """A script that registers a method and calls `ldifs_hf.cli.main`: its method is not refused by a
    description that lacks it, and its catalogue (with the plug-in) is not stored for other processes."""
    _run_cli("finetune", "--help", cache=tmp_path)
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
def test_the_description_s_booleans_read_as_transformers_reads_them(word):
    from transformers.hf_argparser import string_to_bool

    def answer(convert):
        try:
            return convert(word)
        except argparse.ArgumentTypeError as err:
            return f"refused: {err}"

    assert answer(cli_snapshot._string_to_bool) == answer(string_to_bool)
