"""Fast `--help` and argument mistakes for the `ldifs-hf` commands, without importing transformers or torch.

A command's real parser (`cli_parsing.ArgumentParser`, an `HfArgumentParser` over dataclasses that
subclass `TrainingArguments`) costs seconds of imports. Its description (its argparse actions and
groups, and the command's facts: the method names it accepts, the options it requires, as JSON)
answers first: a plain argparse parser rebuilt from it checks the command line. `--help` prints the
same text as the real parser, and a mistake (an unknown flag, a bad value or choice, an unknown method,
a missing option) gives the one-line error and exit code 2 the real parser would. A command line the
pre-check accepts goes on to the real parser, so only what the real parser refuses is ever refused;
with several mistakes on one line, the pre-check may name a different one first. A value whose type
the description cannot reproduce is left to the real parser.

The description lives in `$LDIFS_HF_CACHE/cli/<command>.json` (default `~/.cache/ldifs_hf/cli/`), keyed
by the sha256 of this package's `.py` sources, its version, transformers' version (its TrainingArguments
fields), torch's release (their default optimizer) and Python's major.minor. Without a current one (a
fresh install, edited sources), `cli_light` reads it in a child process that imports neither torch nor
transformers; when that reading stops, the real parser answers. Whenever the real
parser is built, its own description replaces a stored one that differs. Nothing is read or stored when
`ldifs_hf.training` is already imported (a script may have registered a plug-in method), for a `.json`
config file, or beside an `.args` file `HfArgumentParser` would read.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence


class UsageError(ValueError):
    """A mistake in how the command was called (the CLI prints it as one line, exit code 2)."""

# The root of the world cache too (`world.settings.cache_root`), read here without importing it.
CACHE_ENV = "LDIFS_HF_CACHE"
FORMAT_VERSION = 3
# Whether a missing description is read lightly (`cli_light`); tests turn it off to see the real parser.
READ_LIGHTLY = True
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


def check_arguments(namespace: argparse.Namespace, rest: Sequence[str], prog: str, facts: dict) -> None:
    """The checks after argparse's, the same on the description and on the real parser: a known method
    (`facts["methods"]`, `facts["regularizers"]`), the options the command requires (`facts["required"]`:
    option -> what it is) and no word left over."""
    method = getattr(namespace, "method", None)
    if facts.get("methods") is not None and isinstance(method, str):
        check_method_name(method, facts["methods"], facts["regularizers"])
    for name, what in facts.get("required", {}).items():
        if getattr(namespace, name, None) is None:
            raise UsageError(f"--{name} is required: {what}")
    if rest:
        raise UsageError(unrecognized(rest, prog))


class ParserSnapshot:
    """The description of one command's parser: `check` a command line with it before the real parser
    is built, then `remember` the real parser's."""

    def __init__(self, command: str, argv: Sequence[str]):
        self.command, self.argv = command, list(argv)
        self.path = cache_dir() / f"{command}.json"
        argv0 = getattr(sys, "argv", None) or [""]
        usable = (
            _PLUGIN_HOST not in sys.modules
            and not (len(self.argv) == 1 and self.argv[0].endswith(".json"))
            and not (argv0[0] and Path(argv0[0]).with_suffix(".args").exists())
        )
        self.key = _key() if usable else None
        self.stored, self.parser = self._load() if self.key is not None else (None, None)

    def check(self) -> None:
        """Print the help and exit, or raise the one-line `UsageError` of a mistake the real parser
        would refuse; return when the command line is for the real parser to judge."""
        if self.stored is None:
            return
        namespace, rest = self.parser.parse_known_args(self.argv)  # --help exits here; argparse's errors raise
        check_arguments(namespace, rest, self.parser.prog, self.stored["facts"])

    def remember(self, parser: argparse.ArgumentParser, facts: dict) -> None:
        """Store the real `parser`'s description and the command's `facts`, unless the stored one is the same."""
        if self.key is None:
            return
        description = describe(parser)
        if description is None:  # something the plain parser cannot reproduce: no snapshot
            return
        content = json.loads(json.dumps({"parser": description, "facts": facts}))
        if self.stored is not None and (self.stored["parser"], self.stored["facts"]) == (content["parser"], content["facts"]):
            return
        if self.stored is not None:
            logger.debug("the stored description of %s differed from its real parser's; replacing it", self.command)
        self._store(content)

    def _store(self, content: dict) -> None:
        payload = {"format": FORMAT_VERSION, "key": self.key, **content}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=f".{self.command}.", suffix=".tmp", delete=False) as f:
                json.dump(payload, f)
            os.replace(f.name, self.path)  # readers see the old description or the new one, never half of one
        except OSError as err:  # a read-only home only costs speed
            logger.debug("could not store the parser description %s: %r", self.path, err)

    def _load(self) -> tuple[dict | None, argparse.ArgumentParser | None]:
        """The current description and its rebuilt parser: the stored one, else (missing, stale or
        damaged) one read lightly, and stored; (None, None) when the light reading stopped too (the real
        parser answers, and stores its own)."""
        stored = _usable(_current(self.path, self.key))
        if stored is None and READ_LIGHTLY and sys.executable:
            stored = _usable(_read_lightly(self.command))
            if stored is not None:
                self._store(stored[0])
        return stored or (None, None)


def _current(path: Path, key: dict) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("format") != FORMAT_VERSION or stored.get("key") != key:
        return None
    return stored


def _usable(stored: dict | None) -> tuple[dict, argparse.ArgumentParser] | None:
    """`stored` and the plain parser rebuilt from it, or None when it is missing or damaged."""
    try:
        if stored is not None and isinstance(stored["facts"], dict):
            return stored, _rebuild(stored["parser"])
    except Exception as err:
        logger.debug("ignoring a damaged parser description: %r", err)
    return None


def _read_lightly(command: str) -> dict | None:
    """`command`'s description and facts from `cli_light`, in a child process; None when it stopped."""
    # With this process's import path (not `python -c`'s current folder first), cli_light loaded alone,
    # so that the package's own imports (numpy, for the world) meet its stand-ins.
    code = (
        "import json, sys, importlib.util as u; sys.path[:] = json.loads(sys.argv[1]); "
        "s = u.spec_from_file_location('ldifs_hf_cli_light', sys.argv[2]); m = u.module_from_spec(s); s.loader.exec_module(m); "
        "sys.exit(m.main(sys.argv[3:]))"
    )
    light = str(Path(__file__).with_name("cli_light.py"))
    try:
        done = subprocess.run([sys.executable, "-c", code, json.dumps(sys.path), light, command],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        result = json.loads(done.stdout.splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as err:
        logger.debug("the light reading of %s failed: %r", command, err)
        return None
    if "read" not in result:
        logger.debug("the light reading of %s stopped: %s", command, result.get("stopped"))
    return result.get("read")


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
    """What a description depends on: this package's sources, its version, transformers' version (its
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
    """`transformers.hf_argparser.string_to_bool`, with its message (tests/test_cli_speed.py compares them)."""
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
    """A value of a type the description cannot reproduce: accepted here, judged by the real parser."""
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


def describe(parser: argparse.ArgumentParser) -> dict | None:
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
