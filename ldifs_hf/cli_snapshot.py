"""Fast `--help` and argument mistakes for the `ldifs-hf` commands, without importing transformers or torch.

A command's real parser (`cli_parsing.ArgumentParser`, an `HfArgumentParser` over dataclasses that
subclass `TrainingArguments`) costs seconds of imports. A snapshot of it (its argparse actions and
groups, and the method names it accepts, as JSON) answers first: a plain argparse parser rebuilt from
the snapshot checks the command line. `--help` prints the same text as the real parser, and a mistake
(an unknown flag, a bad value or choice, an unknown method) gives the one-line error and exit code 2
the real parser would. A command line the pre-check accepts goes on to the real parser, so only what
the real parser refuses is ever refused; with several mistakes on one line, the pre-check may name a
different one first. A value whose type the snapshot cannot reproduce is left to the real parser.

A snapshot is used only when its key matches: the sha256 of this package's `.py` sources (their
content, not their place or time, so that every clone and install of the same sources agrees), its
version, transformers' version (its TrainingArguments fields), torch's release (their default
optimizer) and Python's major.minor. The package ships one per command in `cli_snapshots/` (written by
`scripts/refresh_cli_snapshots.py`), so a fresh install answers at once; when that one does not match
(another transformers, edited sources), the one in `$LDIFS_HF_CACHE/cli/` (default
`~/.cache/ldifs_hf/cli/`) does, and without either the command builds its real parser and stores its
snapshot there. No snapshot is used when `ldifs_hf.training` is already imported (a script may have
registered a plug-in method), for a `.json` config file, or beside an `.args` file `HfArgumentParser`
would read.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence


class UsageError(ValueError):
    """A mistake in how the command was called (the CLI prints it as one line, exit code 2)."""

# The root of the world cache too (`world.settings.cache_root`), read here without importing it.
CACHE_ENV = "LDIFS_HF_CACHE"
FORMAT_VERSION = 2
# The snapshots that ship with the package (`scripts/refresh_cli_snapshots.py` writes them).
SHIPPED_DIR: Path | None = Path(__file__).parent / "cli_snapshots"
# Modules whose presence means the process may have registered plug-in methods or regularizers.
_PLUGIN_HOST = "ldifs_hf.training"
_ACTION_KINDS = {
    argparse._StoreAction: "store",
    argparse._StoreTrueAction: "store_true",
    argparse._StoreFalseAction: "store_false",
    argparse._StoreConstAction: "store_const",
    argparse._HelpAction: "help",
}
_PLAIN_VALUES = (str, int, float, bool, type(None))

logger = logging.getLogger(__name__)


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written, and every option's default after its help."""


def unrecognized(rest: Sequence[str], prog: str) -> str:
    """The error for command-line words no option takes."""
    return f"unrecognized arguments: {' '.join(rest)} (see {prog} --help)"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ldifs_hf") / "cli"


class ParserSnapshot:
    """The snapshot of one command's parser (the shipped one, else the user's): `check` a command line
    with it before the real parser is built, then `remember` the real parser in the user's cache when
    neither snapshot is current."""

    def __init__(self, command: str, argv: Sequence[str]):
        self.command, self.argv = command, list(argv)
        self.path = cache_dir() / f"{command}.json"  # the user's snapshot, where `remember` stores
        argv0 = getattr(sys, "argv", None) or [""]
        self.usable = (
            _PLUGIN_HOST not in sys.modules
            and not (len(self.argv) == 1 and self.argv[0].endswith(".json"))
            and not (argv0[0] and Path(argv0[0]).with_suffix(".args").exists())
        )
        self.key = _key() if self.usable else None
        self.stored, self.parser = self._load() if self.key is not None else (None, None)

    def check(self) -> None:
        """Print the help and exit, or raise the one-line `UsageError` of a mistake the real parser
        would refuse; return when the command line is for the real parser to judge."""
        if self.stored is None:
            return
        methods, regularizers = self.stored["facts"].get("methods"), self.stored["facts"].get("regularizers")
        namespace, rest = self.parser.parse_known_args(self.argv)  # --help exits here; argparse's errors raise
        method = getattr(namespace, "method", None)
        if methods is not None and isinstance(method, str):
            check_method_name(method, methods, regularizers)
        if rest:
            raise UsageError(unrecognized(rest, self.parser.prog))

    def remember(self, parser: argparse.ArgumentParser, facts: dict | None = None) -> None:
        """Store `parser` (the real one) as this command's snapshot in the user's cache, unless a current
        snapshot (shipped or stored) answered. `facts` are what the pre-check needs beyond argparse
        (`methods`, `regularizers`)."""
        if self.key is None or self.stored is not None:
            return
        description = _describe(parser)
        if description is None:  # something the plain parser cannot reproduce: no snapshot
            return
        payload = {"format": FORMAT_VERSION, "key": self.key, "parser": description, "facts": facts or {}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=f".{self.command}.", suffix=".tmp", delete=False) as f:
                json.dump(payload, f)
            os.replace(f.name, self.path)  # readers see the old snapshot or the new one, never half of one
        except OSError as err:  # a read-only home only costs speed
            logger.debug("could not store the parser snapshot %s: %r", self.path, err)

    def _load(self) -> tuple[dict | None, argparse.ArgumentParser | None]:
        """The first current snapshot, shipped or the user's, and its rebuilt parser; (None, None)
        when neither is current (missing, stale or damaged: the real parser runs and stores one)."""
        places = [SHIPPED_DIR / f"{self.command}.json"] if SHIPPED_DIR is not None else []
        for path in [*places, self.path]:
            try:
                with open(path, encoding="utf-8") as f:
                    stored = json.load(f)
            except (OSError, ValueError):
                continue
            if not isinstance(stored, dict) or stored.get("format") != FORMAT_VERSION or stored.get("key") != self.key:
                continue
            try:
                if not isinstance(stored["facts"], dict):
                    raise TypeError(f"its facts are a {type(stored['facts']).__name__}")
                return stored, _rebuild(stored["parser"])
            except Exception as err:  # a damaged snapshot: the next place, or the real parser
                logger.debug("ignoring the damaged parser snapshot %s: %r", path, err)
        return None, None


def check_method_name(name: str, methods: Sequence[str], regularizers: Sequence[str]) -> None:
    """The error `training.methods.get_method` raises for an unknown name, from the registered names
    (`methods`, `regularizers`), without importing the registry (it imports torch)."""

    key = name.strip().lower()
    if key in methods:
        return
    base, sep, regularizer = key.partition("+")
    if sep and base in methods:
        if regularizer not in regularizers:
            raise UsageError(f"unknown regularizer {regularizer!r} in method {name!r}; valid regularizers: {', '.join(regularizers)}")
        return
    close = difflib.get_close_matches(key, methods, n=1)
    raise UsageError(
        f"unknown method {name!r}{f' (did you mean {close[0]!r}?)' if close else ''}; valid methods: {', '.join(methods)} "
        f"(or METHOD+REGULARIZER with a regularizer in {', '.join(regularizers)})"
    )


def _key() -> dict | None:
    """What a snapshot depends on: this package's sources, its version, transformers' version (its
    TrainingArguments fields), torch's release (TrainingArguments' default optimizer depends on it;
    a build's local tag, `+cpu` or `+cu126`, does not matter) and Python's major.minor (how dataclass
    fields become argparse actions); None without transformers. The same in every clone and install
    of the same sources (a few ms)."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    try:
        transformers_version = version("transformers")
    except PackageNotFoundError:
        return None
    try:
        torch_release = version("torch").split("+")[0]
    except PackageNotFoundError:
        torch_release = None
    return {
        "ldifs_hf": __version__, "transformers": transformers_version, "torch": torch_release,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}", "sources": sources_digest(Path(__file__).parent),
    }


def sources_digest(package: Path) -> str:
    """sha256 of the `.py` files under `package`: their paths relative to it and their bytes (line
    endings as `\\n`, as Python reads them), so that a checkout with CRLF endings agrees too."""
    digest = hashlib.sha256()
    for folder, subfolders, files in os.walk(package):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                content = f.read().replace(b"\r\n", b"\n")
            relative = Path(os.path.relpath(path, package)).as_posix().encode()
            digest.update(b"%d:%s%d:" % (len(relative), relative, len(content)))
            digest.update(content)
    return digest.hexdigest()


# -- the parser as data ---------------------------------------------------------------------------


class _ShownDefault:
    """A default as the help shows it: argparse converts only `str` defaults through an option's type,
    so the shown text of a default must not be a `str`."""

    def __init__(self, text: str):
        self.text = text

    def __str__(self) -> str:
        return self.text


def _string_to_bool(value):
    """`transformers.hf_argparser.string_to_bool`, with its message (the snapshot tests compare them)."""
    if isinstance(value, bool):
        return value
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(
        f"Truthy value expected: got {value} but expected one of yes/no, true/false, t/f, y/n, 1/0 (case insensitive)."
    )


def _any_value(value):
    """A value of a type the snapshot cannot reproduce: accepted here, judged by the real parser."""
    return value


_TYPES = {"str": str, "int": int, "float": float, "dict": dict, "bool": _string_to_bool, "any": _any_value}


def _type_name(action: argparse.Action) -> str | None:
    from transformers.hf_argparser import string_to_bool

    kind = action.type
    if kind is None:
        return None
    if kind in (str, int, float, dict):
        return kind.__name__
    if kind is string_to_bool:
        return "bool"
    if getattr(kind, "__qualname__", "").startswith("make_choice_type_function."):
        return "choice"  # maps a word to the choice whose str() it is
    return "any"


def _describe(parser: argparse.ArgumentParser) -> dict | None:
    """`parser` as JSON-able data, or None when the plain parser could not reproduce it exactly."""
    plain = (
        parser.prefix_chars == "-" and parser.fromfile_prefix_chars is None and parser.argument_default is None
        and parser.conflict_handler == "error" and parser.allow_abbrev and parser.exit_on_error
        and not parser._mutually_exclusive_groups and parser.formatter_class is Formatter
    )
    if not plain:
        return None
    actions = []
    for action in parser._actions:
        kind = _ACTION_KINDS.get(type(action))
        choices = list(action.choices) if action.choices is not None else None
        if (
            kind is None or not action.option_strings
            or not all(type(c) in _PLAIN_VALUES for c in choices or ())
            or type(action.const) not in _PLAIN_VALUES
            or not isinstance(action.metavar, (str, type(None)))
            or not isinstance(action.help, (str, type(None)))
            or not isinstance(action.nargs, (str, int, type(None)))
        ):
            return None
        if kind == "help":
            actions.append({"kind": kind, "option_strings": action.option_strings, "help": action.help})
            continue
        actions.append({
            "kind": kind, "option_strings": action.option_strings, "dest": action.dest, "nargs": action.nargs,
            "const": action.const, "default": None if action.default is None else str(action.default),
            "type": _type_name(action), "choices": choices, "required": action.required,
            "help": action.help, "metavar": action.metavar,
        })
    index = {id(action): i for i, action in enumerate(parser._actions)}
    groups = [
        {"title": group.title, "description": group.description, "actions": [index[id(a)] for a in group._group_actions]}
        for group in parser._action_groups
    ]
    return {"prog": parser.prog, "usage": parser.usage, "description": parser.description, "epilog": parser.epilog,
            "actions": actions, "groups": groups}


class _PlainParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _rebuild(description: dict) -> argparse.ArgumentParser:
    parser = _PlainParser(
        prog=description["prog"], usage=description["usage"], description=description["description"],
        epilog=description["epilog"], formatter_class=Formatter, add_help=False,
    )
    actions = []
    for spec in description["actions"]:
        kind = spec["kind"]
        if kind == "help":
            actions.append(parser.add_argument(*spec["option_strings"], action="help", help=spec["help"]))
            continue
        kwargs = {"action": kind, "dest": spec["dest"], "required": spec["required"], "help": spec["help"],
                  "default": None if spec["default"] is None else _ShownDefault(spec["default"])}
        if kind == "store":
            kwargs.update(nargs=spec["nargs"], const=spec["const"], choices=spec["choices"], metavar=spec["metavar"])
            if spec["type"] == "choice":
                by_word = {str(choice): choice for choice in spec["choices"]}
                kwargs["type"] = lambda word, by_word=by_word: by_word.get(word, word)
            elif spec["type"] is not None:
                kwargs["type"] = _TYPES[spec["type"]]
        elif kind == "store_const":
            kwargs["const"] = spec["const"]
        actions.append(parser.add_argument(*spec["option_strings"], **kwargs))
    parser._action_groups.clear()
    for spec in description["groups"]:
        group = parser.add_argument_group(spec["title"], spec["description"])
        group._group_actions.extend(actions[i] for i in spec["actions"])
    return parser
