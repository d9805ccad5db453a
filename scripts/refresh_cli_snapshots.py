"""Writes the parser snapshots the package ships, `ldifs_hf/cli_snapshots/<command>.json`: each
command's real parser as `ldifs-hf COMMAND --help` stores it on a machine without a snapshot, so that
a fresh install answers `--help` and argument mistakes without importing transformers (`cli_snapshot`).

    .venv/bin/python scripts/refresh_cli_snapshots.py          # write them
    .venv/bin/python scripts/refresh_cli_snapshots.py --check  # exit 1, saying which, when they are not current

Run it after any change to a `.py` file of the package (their key holds a digest of all of them) or
to the transformers, torch or Python version, in the environment `scripts/bootstrap.sh` makes: a
snapshot answers only where its key matches. A stale one is never used; it costs each command's first `--help` its imports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's ldifs_hf, whatever is installed

from ldifs_hf import cli_snapshot  # noqa: E402
from ldifs_hf.cli import COMMANDS  # noqa: E402

SHIPPED_DIR = REPO / "ldifs_hf" / "cli_snapshots"
REFRESH = ".venv/bin/python scripts/refresh_cli_snapshots.py"
# Commands that build no parser (their arguments are checked by hand).
WITHOUT_PARSER = {"list"}

# In a fresh interpreter: the command's real parser, built as on a machine without any snapshot (the
# shipped ones are not consulted), and so stored in $LDIFS_HF_CACHE.
_BUILD = """
import contextlib, io, sys
from ldifs_hf import cli_snapshot
cli_snapshot.SHIPPED_DIR = None
from ldifs_hf.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main([sys.argv[1], "--help"])
    except SystemExit as exit:
        sys.exit(exit.code)
sys.exit("--help did not exit")
"""


def shipped_text(snapshot: dict) -> str:
    """A snapshot as the package ships it (indented, so that a change reads as a diff)."""
    return json.dumps(snapshot, indent=1) + "\n"


def build() -> dict[str, str]:
    """Each command's snapshot, as `shipped_text`, by command."""
    commands = [c for c in COMMANDS if c not in WITHOUT_PARSER]
    with tempfile.TemporaryDirectory(prefix="ldifs-cli-snapshots-") as cache:
        env = {**os.environ, cli_snapshot.CACHE_ENV: cache,
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}

        def run(command: str) -> None:
            done = subprocess.run([sys.executable, "-c", _BUILD, command], env=env, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise SystemExit(f"ldifs-hf {command} --help failed (exit code {done.returncode}):\n{done.stderr[-3000:]}")

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(run, commands))
        built = {}
        for command in commands:
            path = Path(cache) / "cli" / f"{command}.json"
            if not path.is_file():
                raise SystemExit(f"ldifs-hf {command} --help stored no snapshot: its parser cannot be snapshotted "
                                 f"(see cli_snapshot._describe), or it builds none (then add it to WITHOUT_PARSER)")
            built[command] = shipped_text(json.loads(path.read_text(encoding="utf-8")))
        return built


def differences(built: dict[str, str], folder: Path = SHIPPED_DIR) -> list[str]:
    """How the snapshots in `folder` differ from `built`, one line each (none when they are current)."""
    lines = []
    for command, text in built.items():
        path = folder / f"{command}.json"
        if not path.is_file():
            lines.append(f"{command}: missing")
            continue
        shipped = path.read_text(encoding="utf-8")
        if shipped != text:
            lines.append(f"{command}: {_why(json.loads(shipped), json.loads(text))}")
    lines.extend(f"{path.stem}: no such command's parser (delete it)" for path in sorted(folder.glob("*.json")) if path.stem not in built)
    return lines


def _why(shipped: dict, built: dict) -> str:
    old, new = shipped.get("key") or {}, built["key"]
    if not isinstance(old, dict):
        return "made with an older snapshot format"
    changed = [f"{part} {old.get(part)} -> {new[part]}" for part in new if part != "sources" and old.get(part) != new[part]]
    if old.get("sources") != new["sources"]:
        changed.append("the package's sources changed")
    return "; ".join(changed) or "same key, different content (edited by hand?)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the shipped snapshots are not current")
    args = parser.parse_args(argv)
    built = build()
    stale = differences(built)
    if args.check:
        if stale:
            print("The shipped parser snapshots (ldifs_hf/cli_snapshots/) are not current; a fresh install's first "
                  f"`ldifs-hf COMMAND --help` would take seconds. Refresh them with:\n    {REFRESH}\n" + "\n".join(stale))
            return 1
        print(f"the {len(built)} shipped parser snapshots are current")
        return 0
    SHIPPED_DIR.mkdir(exist_ok=True)
    for path in SHIPPED_DIR.glob("*.json"):
        if path.stem not in built:
            path.unlink()
    for command, text in built.items():
        (SHIPPED_DIR / f"{command}.json").write_text(text, encoding="utf-8")
    print(f"wrote {len(built)} parser snapshots to {SHIPPED_DIR.relative_to(REPO)}" + (":\n" + "\n".join(stale) if stale else " (unchanged)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
