"""`ldifs_hf.options`: JSON options checked against a dataclass's fields, one line per refusal."""

import json
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from ldifs_hf.options import OptionTypeError, check_field_types, check_json_options, dataclass_from_json


@dataclass
class Probe:
    weight: float = 1.0
    steps: int = 3
    enabled: bool = True
    name: Optional[str] = None
    layers: list[int] = field(default_factory=list)
    pair: tuple[int, str] = (0, "a")
    mode: Literal["token", "flatten"] = "token"
    cap: int | None = None

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")


def test_a_json_object_becomes_the_dataclass_with_lists_for_lists_and_tuples():
    probe = dataclass_from_json(Probe, '{"weight": 2, "steps": 5, "enabled": false, "name": null, "layers": [1, 2], "pair": [3, "b"], "mode": "flatten"}', "probe")
    assert probe == Probe(weight=2, steps=5, enabled=False, name=None, layers=[1, 2], pair=[3, "b"], mode="flatten")
    assert dataclass_from_json(Probe, {"cap": 4}, "probe").cap == 4  # an already-parsed dict
    assert dataclass_from_json(Probe, None, "probe") == Probe()  # no options: the defaults


@pytest.mark.parametrize("value, message", [
    ('{"weight": "heavy"}', "probe: weight must be a number, got 'heavy'"),
    ('{"steps": 2.5}', "probe: steps must be an integer, got 2.5"),
    ('{"steps": true}', "probe: steps must be an integer, got True"),  # bool is not an int
    ('{"enabled": 1}', "probe: enabled must be true or false, got 1"),
    ('{"name": 3}', "probe: name must be a string or null, got 3"),
    ('{"layers": [1, "2"]}', "probe: layers must be a list of integers, got [1, '2']"),
    ('{"layers": 1}', "probe: layers must be a list of integers, got 1"),
    ('{"pair": [1, 2]}', "probe: pair must be a list of 2 values, got [1, 2]"),
    ('{"mode": "mean"}', 'probe: mode must be one of "token", "flatten", got \'mean\''),
    ('{"cap": "4"}', "probe: cap must be an integer or null, got '4'"),
    ('{"wieght": 2}', "probe has an unknown key 'wieght'; did you mean 'weight'?"),
    ('{"zzz": 2}', "probe has an unknown key 'zzz'; valid keys: weight, steps, enabled, name, layers, pair, mode, cap"),
    ("[1, 2]", "probe must be a JSON object (a dict), got [1, 2]"),
    ("{bad", "probe must be a JSON object, got '{bad'"),
])
def test_each_refusal_is_one_line_naming_the_key_the_value_and_what_is_accepted(value, message):
    with pytest.raises(OptionTypeError) as info:
        dataclass_from_json(Probe, value, "probe")
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


def test_the_dataclass_checks_its_own_ranges():
    with pytest.raises(ValueError, match="weight must be >= 0, got -1"):
        dataclass_from_json(Probe, {"weight": -1}, "probe")


def test_options_for_several_dataclasses_are_checked_without_building_them():
    @dataclass
    class Other:
        seed: int = 0

    assert check_json_options(json.dumps({"seed": 1, "steps": 2}), (Probe, Other), "opts") == {"seed": 1, "steps": 2}
    with pytest.raises(OptionTypeError, match=r"^opts: seed must be an integer, got 'x'$"):
        check_json_options({"seed": "x"}, [Probe, Other], "opts")


def test_a_built_dataclass_is_checked_field_by_field():
    check_field_types(Probe())
    with pytest.raises(OptionTypeError, match=r"^steps must be an integer, got '3'$"):
        check_field_types(Probe(steps="3"))
