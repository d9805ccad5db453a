"""The parser snapshots the package ships (`ldifs_hf/cli_snapshots/`): they are current (what
`scripts/refresh_cli_snapshots.py` makes from these sources), and with an empty user cache (a fresh
install) they answer each command's `--help` and argument mistakes exactly as the real parser does,
without importing transformers or torch; one that does not match is not used."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ldifs_hf import cli_snapshot
from ldifs_hf.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]


def _refresh_script():
    spec = importlib.util.spec_from_file_location("refresh_cli_snapshots", ROOT / "scripts" / "refresh_cli_snapshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFRESH = _refresh_script()
PARSER_COMMANDS = [command for command in COMMANDS if command not in REFRESH.WITHOUT_PARSER]
STALE = f"the shipped parser snapshots are not current; refresh them with:\n    {REFRESH.REFRESH}\n"

# Each command's help and one mistake the real parser refuses.
CASES = [
    *([command, "--help"] for command in PARSER_COMMANDS),
    ["finetune", "--method", "bogus", "--output_dir", "x"],
    ["lambda-search", "--learning_rate", "abc", "--output_dir", "x"],
    ["evaluate", "--checkpoint"],
    ["study", "--bogus_flag", "1"],
    ["demo", "--quick", "maybe"],
    ["interpolate", "--run", "x", "--alpha", "half", "--output_dir", "y"],
]

# Runs `ldifs-hf ARGV` for each ARGV in turn in one fresh interpreter, and reports the answers and the
# modules imported by the end. PROBE_SHIPPED_DIR: the shipped snapshots' folder ("" for none).
PROBE = """
import contextlib, io, json, os, sys
from pathlib import Path
from ldifs_hf import cli_snapshot
if "PROBE_SHIPPED_DIR" in os.environ:
    cli_snapshot.SHIPPED_DIR = Path(os.environ["PROBE_SHIPPED_DIR"]) if os.environ["PROBE_SHIPPED_DIR"] else None
from ldifs_hf.cli import main
answers = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    answers.append([code, out.getvalue(), err.getvalue()])
print(json.dumps({"answers": answers, "modules": sorted(sys.modules)}))
"""


def _run(cases, cache, shipped_dir=None):
    """The answers to `cases` in one fresh interpreter whose user cache is `cache`; `shipped_dir`: the
    shipped snapshots' folder ("" for none; default: the package's)."""
    env = {**os.environ, cli_snapshot.CACHE_ENV: str(cache)}
    if shipped_dir is not None:
        env["PROBE_SHIPPED_DIR"] = str(shipped_dir)
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    return result["answers"], set(result["modules"])


# The parts of the key that are the environment, not these sources: a snapshot made with another
# transformers, torch or Python is rightly not used here (a fresh install of that kind builds its own).
ENVIRONMENT = ("transformers", "torch", "python")


def _shipped_for_another_environment() -> str | None:
    """Why the shipped snapshots cannot answer in this environment (made with another transformers,
    torch or Python), or None when they were made for it."""
    key = cli_snapshot._key()
    stored = json.loads((cli_snapshot.SHIPPED_DIR / "finetune.json").read_text(encoding="utf-8"))["key"]
    other = [f"{part} {stored.get(part)} (here {key[part]})" for part in ENVIRONMENT if stored.get(part) != key[part]]
    return f"the shipped parser snapshots were made with {', '.join(other)}" if other else None


def test_every_command_ships_a_snapshot_of_these_sources():
    shipped = sorted(path.stem for path in cli_snapshot.SHIPPED_DIR.glob("*.json"))
    assert shipped == sorted(PARSER_COMMANDS), STALE
    key = cli_snapshot._key()
    for command in shipped:
        stored = json.loads((cli_snapshot.SHIPPED_DIR / f"{command}.json").read_text(encoding="utf-8"))
        # These sources and this format, always; the environment's parts only where they can match.
        mine = {part: value for part, value in stored["key"].items() if part not in ENVIRONMENT}
        assert stored["format"] == cli_snapshot.FORMAT_VERSION and mine == {p: v for p, v in key.items() if p not in ENVIRONMENT}, (
            f"{STALE}{command}: {REFRESH._why(stored, {'key': key})}"
        )
    elsewhere = _shipped_for_another_environment()
    if elsewhere:
        pytest.skip(f"{elsewhere}: their environment's parts cannot be checked here")
    assert all(json.loads((cli_snapshot.SHIPPED_DIR / f"{c}.json").read_text(encoding="utf-8"))["key"] == key for c in shipped), STALE


@pytest.mark.slow
def test_refreshing_the_shipped_snapshots_changes_nothing():
    """The shipped snapshots are exactly what the refresh script makes now (as a fresh install's first
    `--help` would store them), not only stamped with the current key."""
    if _shipped_for_another_environment():
        pytest.skip(_shipped_for_another_environment())
    stale = REFRESH.differences(REFRESH.build())
    assert not stale, STALE + "\n".join(stale)


def test_a_fresh_install_answers_help_and_mistakes_from_the_shipped_snapshots(tmp_path):
    if _shipped_for_another_environment():
        pytest.skip(_shipped_for_another_environment())
    fresh, modules = _run(CASES, tmp_path / "fresh")
    assert not {"transformers", "torch"} & modules, "a shipped snapshot did not answer; if stale, " + STALE
    assert not (tmp_path / "fresh" / "cli").exists()  # nothing to store: the shipped snapshots answered
    real, real_modules = _run(CASES, tmp_path / "real", shipped_dir="")
    assert "transformers" in real_modules  # the real parsers answered
    for argv, fast_answer, real_answer in zip(CASES, fresh, real):
        assert fast_answer == real_answer, argv
        code, out, err = real_answer
        if argv[-1] == "--help":
            assert (code, err) == (0, "") and out.startswith(f"usage: ldifs-hf {argv[0]}"), argv
        else:
            assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, argv


def _shipped_copy(tmp_path, change):
    """A folder of shipped snapshots: the package's, with `change` applied to the demo's."""
    folder = shutil.copytree(cli_snapshot.SHIPPED_DIR, tmp_path / "shipped")
    stored = json.loads((folder / "demo.json").read_text(encoding="utf-8"))
    change(stored)
    (folder / "demo.json").write_text(json.dumps(stored), encoding="utf-8")
    return folder


@pytest.mark.parametrize("part", ["transformers", "sources"])
def test_a_shipped_snapshot_made_elsewhere_is_not_used(tmp_path, part):
    """Made with another transformers (other TrainingArguments fields) or other sources: the real
    parser answers, and stores its snapshot in the user's cache, which then answers."""

    def elsewhere(stored):
        stored["key"][part] = "0.0.0"
        stored["parser"]["description"] = "STALE HELP"

    shipped = _shipped_copy(tmp_path, elsewhere)
    [(code, out, _)], modules = _run([["demo", "--help"]], tmp_path / "cache", shipped)
    assert code == 0 and "STALE HELP" not in out and "transformers" in modules
    assert json.loads((tmp_path / "cache" / "cli" / "demo.json").read_text())["key"] == cli_snapshot._key()
    [again], modules = _run([["demo", "--help"]], tmp_path / "cache", shipped)
    assert again == [0, out, ""] and "transformers" not in modules


def test_a_damaged_shipped_snapshot_gives_way_to_the_user_s(tmp_path):
    if _shipped_for_another_environment():  # the copy below would not be this environment's either
        pytest.skip(_shipped_for_another_environment())
    [expected], _ = _run([["demo", "--help"]], tmp_path / "empty")
    (tmp_path / "cache" / "cli").mkdir(parents=True)
    shutil.copy(cli_snapshot.SHIPPED_DIR / "demo.json", tmp_path / "cache" / "cli" / "demo.json")
    shipped = _shipped_copy(tmp_path, lambda stored: stored["parser"].pop("actions"))
    [answer], modules = _run([["demo", "--help"]], tmp_path / "cache", shipped)
    assert answer == expected and "transformers" not in modules


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True], ids=["pip install", "pip install -e"])
def test_an_install_ships_the_snapshots(tmp_path, editable):
    """`pip install [-e] .` into a fresh venv: its first `finetune --help` comes from the shipped
    snapshot (package data in the wheel; the source tree in an editable install)."""
    if _shipped_for_another_environment():
        pytest.skip(_shipped_for_another_environment())
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
        "print(ldifs_hf.__file__, 'transformers' in sys.modules)"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    where, imported = done.stdout.split()
    assert where.startswith(str(source if editable else venv)) and imported == "False", done.stdout + done.stderr[-2000:]
    assert not (tmp_path / "cache" / "cli").exists()
