"""How the `ldifs-hf` commands read their arguments: `HfArgumentParser` with one-line errors, this
project's options listed first, every option's default in the help, and a single `.json` argument
read as a config file. Apart from `cli.py` so that `ldifs-hf --help` imports no transformers."""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from transformers import HfArgumentParser

from .options import read_json_config
from .cli_snapshot import Formatter, UsageError, check_arguments, unrecognized  # noqa: F401  (Formatter: the commands' help format, taken from here)


class ArgumentParser(HfArgumentParser):
    """HfArgumentParser whose errors are one line and whose help lists this project's options first."""

    def error(self, message):
        raise UsageError(message)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # HfArgumentParser gives a boolean field's `--no_X` the help of `--X`, which then reads backwards.
        for action in self._actions:
            negative = next((o for o in action.option_strings if o.startswith("--no_")), None)
            if negative is not None:
                # "%(default).0s" prints nothing; its presence keeps the formatter from appending the
                # positive flag's default here, where it would read backwards too.
                action.help = f"Turn off --{negative[len('--no_'):]}.%(default).0s"

    def own_options_first(self, title: str) -> None:
        """Move the options this project defines (not the Trainer's) into a first group."""
        own = _own_fields(self.dataclass_types)
        group = self.add_argument_group(title)
        for other in self._action_groups:
            if other is group:
                continue
            for action in list(other._group_actions):
                if action.dest in own:
                    other._group_actions.remove(action)
                    group._group_actions.append(action)
        self._action_groups.remove(group)
        self._action_groups.insert(1, group)  # before argparse's general "options" group


def _own_fields(dataclass_types) -> set[str]:
    from transformers import TrainingArguments  # here: the commands without its fields do not pay for its import

    inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
    own = set()
    for cls in dataclass_types:
        for f in dataclasses.fields(cls):
            # Ours: a field TrainingArguments lacks, or one whose default we changed (the paper's).
            if f.name not in inherited or f.default != TrainingArguments.__dataclass_fields__[f.name].default:
                own.add(f.name)
    return own


def parse(parser: ArgumentParser, argv: Sequence[str], facts: dict, settled: dict | None = None):
    """The parser's dataclasses from a command line or one .json file, after the command's own checks
    (`facts`: `cli_snapshot.check_arguments`, the same as its description made). `settled` are values the
    command has already resolved (e.g. from what the user gave): they override the command line and the
    file, so that the dataclasses are built with them and never changed afterwards."""
    settled = settled or {}
    if len(argv) == 1 and argv[0].endswith(".json"):
        config = read_json_config(argv[0])  # one line for a missing file, a directory, bad JSON, not an object
        for name, what in facts.get("required", {}).items():
            if name not in config:
                raise UsageError(f"--{name} is required: {what}")
        return parser.parse_dict({**config, **settled})
    check_arguments(*parser.parse_known_args(argv), parser.prog, facts)
    # argparse keeps the last value given for an option: the settled ones come last.
    settled_argv = [item for key, value in settled.items() for item in (f"--{key}", str(value))]
    namespace_and_rest = parser.parse_args_into_dataclasses(args=[*argv, *settled_argv], return_remaining_strings=True)
    *parsed, rest = namespace_and_rest
    if rest:
        raise UsageError(unrecognized(rest, parser.prog))
    return tuple(parsed)


def json_has(argv: Sequence[str], key: str) -> bool:
    """Whether the command's config file (a single .json argument) sets `key`."""
    if len(argv) == 1 and argv[0].endswith(".json") and os.path.isfile(argv[0]):
        return key in read_json_config(argv[0])
    return False
