"""Options given as JSON (a `--finetune_options '{...}'` string, a `.json` config, a plug-in's options),
checked against the dataclass fields they set before anything runs.

    settings = dataclass_from_json(MySettings, '{"weight": 0.5, "layers": [1, 2]}', "my_options")

`dataclass_from_json` parses the JSON object, checks that each key is a field (naming the closest one,
or listing the valid keys) and that each value is of the field's type (`Optional`, bool apart from
int, an int where a float is asked, lists and tuples element by element, `Literal`, enums by name),
then builds the dataclass, whose own `__post_init__` checks the values' ranges. Every refusal is one
`OptionTypeError` line (a TypeError and a ValueError) naming the key, the value and what is accepted.
`check_json_options` does the same for the fields of several dataclasses without building them
(`ldifs-hf study --finetune_options`), and `check_field_types` checks a dataclass already built
(arguments that took Python values rather than JSON).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import json
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence

__all__ = [
    "OptionTypeError", "check_field_types", "check_json_options", "check_number_fields", "check_numbers", "check_value", "dataclass_from_json",
    "describe_type", "field_from", "read_json_config", "value_fits",
]

_LISTED_KEYS = 30  # more valid keys than this are not listed in an error line


class OptionTypeError(TypeError, ValueError):
    """An option of the wrong type or name: a TypeError to the Python API, and, like every bad value, a
    ValueError, so that the command prints it as one `error:` line (exit code 2)."""


def dataclass_from_json(cls, value, what: str):
    """An instance of the dataclass `cls` from `value`: a JSON object as a string, or a dict (already
    parsed). `what` names the options in errors (e.g. "finetune_options"). Raises OptionTypeError on
    a value that is not a JSON object, an unknown key or a value of the wrong type; the dataclass's own
    checks (ranges, choices) then raise as they do for any caller."""
    return cls(**check_json_options(value, cls, what))


def check_json_options(value, classes, what: str) -> dict:
    """`value` (a JSON object as a string, or a dict) checked against the init fields of the dataclass
    `classes` (or of each in a sequence of them), returned as a dict; see `dataclass_from_json`."""
    options = _json_object(value, what)
    fields = _field_types(tuple(classes) if isinstance(classes, Sequence) else (classes,))
    for key, item in options.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            if close:
                hint = f"; did you mean {close[0]!r}?"
            elif len(fields) <= _LISTED_KEYS:
                hint = f"; valid keys: {', '.join(fields)}"
            else:
                hint = f" (valid keys: the fields of {', '.join(_names(classes))})"
            raise OptionTypeError(f"{what} has an unknown key {key!r}{hint}")
        check_value(f"{what}: {key}", item, fields[key])
    return options


def check_field_types(instance, what: str | None = None) -> None:
    """Every init field of a built dataclass holds a value of its declared type; raises OptionTypeError
    naming the field (prefixed by `what` when given) otherwise."""
    for name, hint in _field_types((type(instance),)).items():
        check_value(f"{what}: {name}" if what else name, getattr(instance, name), hint)


def check_number_fields(instance, what: str | None = None) -> None:
    """Every field declared a number or a flag (int, float or bool, or one of them or None) holds one: a
    string where a number goes (a JSON config's `"max_steps": "2"`, a keyword argument) would otherwise
    fail as a comparison deep inside, naming no field. Fields of other types are left to the dataclass,
    which may accept more than its declared type (a path for a string, one value for a list)."""
    try:
        hints = _field_types((type(instance),))
    except Exception:  # a foreign dataclass whose annotations do not resolve: nothing to check against
        return
    for name, hint in hints.items():
        kinds = {a for a in typing.get_args(hint) if a is not type(None)} if typing.get_origin(hint) in (typing.Union, types.UnionType) else {hint}
        # a list of numbers counts too: one number given for it fails as "'int' object is not iterable"
        kinds = {typing.get_args(k)[0] if typing.get_origin(k) in (list, tuple) and len(typing.get_args(k)) == 1 else k for k in kinds}
        if kinds and kinds <= {int, float, bool}:
            check_value(f"{what}: {name}" if what else name, getattr(instance, name, None), hint)


def check_numbers(instance, what: str | None = None, *, hints: dict[str, str] | None = None) -> None:
    """The numbers among a dataclass's fields: those declared numbers hold numbers (`check_number_fields`),
    and every float value (also in lists and tuples) is finite: a NaN or inf setting (`--weight_decay nan`,
    `--ldifs_lambda inf`) would pass every range check written as a comparison and fail much later, or
    never. `hints` adds a field's way out to its error (e.g. {"max_grad_norm": "0 turns clipping off"})."""
    check_number_fields(instance, what)
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name, None)
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, float) and not math.isfinite(item):
                hint = f"; {hints[f.name]}" if hints and f.name in hints else ""
                label = f"{what}: {f.name}" if what else f.name
                raise OptionTypeError(f"{label} must be a finite number, got {item}{hint}")


def read_json_config(path: str) -> dict:
    """A `.json` config file of a command as a dict: a JSON object, or one OptionTypeError line naming the
    file (the values are checked by the dataclasses they build)."""
    what = f"config file {path}"
    if os.path.isdir(path):
        raise OptionTypeError(f"{what} is a directory, not a JSON file")
    if not os.path.exists(path):
        raise OptionTypeError(f"{what} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except OSError as err:
        raise OptionTypeError(f"{what} cannot be read ({err.strerror or err})") from None
    except ValueError as err:
        raise OptionTypeError(f"{what} is not JSON ({err})") from None
    if not isinstance(config, dict):
        raise OptionTypeError(f"{what} holds a JSON {type(config).__name__}; a config is a JSON object of option names and values")
    return config


def value_fits(value, hint) -> bool:
    """Whether a JSON (or plain Python) value is of the type `hint`."""
    if hint is typing.Any:
        return True
    if hint is type(None) or hint is None:
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(value_fits(value, a) for a in args)
    if origin is typing.Literal:
        return any(value is a or (type(value) is type(a) and value == a) for a in args)
    if origin in (list, tuple) or hint in (list, tuple):
        # JSON has no tuples: a list stands for either.
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(value_fits(v, a) for v, a in zip(value, args))
        return not args or all(value_fits(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict) and (not args or all(value_fits(k, args[0]) and value_fits(v, args[1]) for k, v in value.items()))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, (str, hint))  # a bad name is refused by the dataclass, with the choices
    return isinstance(hint, type) and isinstance(value, hint)


def describe_type(hint) -> str:
    """A type in JSON words: 'a number', 'an integer or null', 'a list of strings', ..."""
    if hint is type(None) or hint is None:
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe_type(a) for a in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin in (list, tuple) or hint in (list, tuple):
        if args and not (origin is tuple and args[-1] is not Ellipsis):
            return f"a list of {describe_type(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} values" if args else "a list"
    if origin is dict or hint is dict:
        return "a JSON object"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "a string"
    return getattr(hint, "__name__", str(hint))


def check_value(label: str, value, hint) -> None:
    """Raise OptionTypeError "<label> must be <type in words>, got <value>" unless `value` is of type `hint`."""
    if not value_fits(value, hint):
        raise OptionTypeError(f"{label} must be {describe_type(hint)}, got {value!r}")


def field_from(source, name: str, *, default=dataclasses.MISSING, help: str | None = None):
    """A dataclass field that is the field `name` of the dataclass `source` under another class (an option
    one command shares with another): its default and help are `source`'s unless given, declared once."""
    origin = source.__dataclass_fields__[name]
    if isinstance(default, list):  # a mutable default: each instance its own copy
        values = {"default_factory": lambda: list(default)}
    elif default is not dataclasses.MISSING:
        values = {"default": default}
    elif origin.default is not dataclasses.MISSING:
        values = {"default": origin.default}
    elif origin.default_factory is not dataclasses.MISSING:
        values = {"default_factory": origin.default_factory}
    else:
        raise ValueError(f"{source.__name__}.{name} has no default to share; declare the field on its own")
    return dataclasses.field(**values, metadata={**origin.metadata, "help": help or origin.metadata.get("help")})


def _json_object(value, what: str) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise OptionTypeError(f"{what} must be a JSON object, got {value!r} ({err})") from None
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise OptionTypeError(f"{what} must be a JSON object (a dict), got {value!r}")
    return dict(value)


@functools.lru_cache(maxsize=None)
def _field_types(classes: tuple) -> dict[str, object]:
    """Every init field of the dataclasses and its resolved type (later classes win, as in a parser)."""
    fields = {}
    for cls in classes:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"options are checked against dataclasses, got {cls!r}")
        hints = typing.get_type_hints(cls)
        fields.update({f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init})
    return fields


def _names(classes) -> list[str]:
    return [c.__name__ for c in (classes if isinstance(classes, Sequence) else (classes,))]
