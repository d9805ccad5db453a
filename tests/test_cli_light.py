"""The light reading of each command's parser (`cli_light`): the same description as its real parser,
for the installed transformers, torch and Python, read without importing either; and where a stand-in's
value would reach the parser, the reading stops rather than guess (then the real parser answers)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ldifs_hf import cli_light, cli_snapshot
from ldifs_hf.cli import PARSERS

# Loads cli_light alone, as `cli_snapshot` does, puts its stand-ins in place, then runs CODE.
PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("light", {path!r})
light = importlib.util.module_from_spec(spec)
spec.loader.exec_module(light)
light.install()
{code}
"""


def _probe(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE.format(path=cli_light.__file__, code=code)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()[-1]


REAL = """
import json
from ldifs_hf.cli import PARSERS
from ldifs_hf.cli_snapshot import describe
built = {command: build() for command, build in PARSERS.items()}
print(json.dumps({command: {"parser": describe(parser), "facts": facts} for command, (parser, facts) in built.items()}))
"""


@pytest.fixture(scope="module")
def real_descriptions():
    """Each command's description from its real parser (transformers and torch imported)."""
    done = subprocess.run([sys.executable, "-c", REAL], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("command", list(PARSERS))
def test_each_command_s_light_description_is_its_real_parser_s(real_descriptions, command):
    light, real = cli_snapshot._read_lightly(command), real_descriptions[command]
    assert light is not None, f"the light reading of {command} stopped; run `python -m ldifs_hf.cli_light {command}` for why"
    by_option = lambda d: {tuple(a["option_strings"]): a for a in d["parser"]["actions"]}  # noqa: E731
    differing = [o for o in by_option(real).keys() | by_option(light).keys() if by_option(real).get(o) != by_option(light).get(o)]
    assert not differing, f"options described otherwise than by the real parser: {differing}"
    assert light == real


def test_the_light_reading_imports_neither_torch_nor_transformers():
    modules = json.loads(_probe(
        "light.read('finetune'); print(json.dumps({name: type(module).__name__ for name, module in sys.modules.items()}))"
    ))
    assert modules["torch"] == modules["transformers"] == "_StandInModule"
    assert "torch._C" not in modules and "transformers.training_args" not in modules
    assert modules["transformers.hf_argparser"] == "module"  # transformers' own file, as it is
    assert modules[f"{cli_light.SOURCE}.training_args"] == "_SourceModule"


@pytest.mark.parametrize("field", [
    "dtype: str = torch.get_default_dtype()",  # a default only torch knows
    "device: str = field(default='cpu', metadata={'help': f'Device, {torch.cuda.device_count()} here.'})",
    "workers: int = 2 if torch.cuda.is_available() else 0",  # the truth of a stand-in
], ids=["default", "help", "truth"])
def test_a_stand_in_s_value_reaching_the_parser_stops_the_reading(field):
    code = f"""
import dataclasses
from dataclasses import field
import torch
import ldifs_hf.cli as cli
def build():  # run by the reading, as a command's own imports are
    @dataclasses.dataclass
    class Arguments:
        {field}
    return cli._parser(Arguments, 'demo', usage='u', description='d')
cli.PARSERS['demo'] = build
light.main(['demo'])
"""
    assert "stopped" in json.loads(_probe(code)), field


def test_an_argument_class_deriving_from_a_stand_in_stops_the_reading():
    code = """
import dataclasses, transformers
import ldifs_hf.cli as cli
@dataclasses.dataclass
class Arguments(transformers.Seq2SeqTrainingArguments):  # its fields are not there
    beams: int = 1
cli.PARSERS['demo'] = lambda: cli._parser(Arguments, 'demo', usage='u', description='d')
light.main(['demo'])
"""
    assert json.loads(_probe(code)) == {"stopped": "StopReading: Arguments derives from the stand-in transformers.Seq2SeqTrainingArguments"}


def _read_source(tmp_path, source: str):
    """A module's namespace read as transformers' modules are: each name by the statement that binds it."""
    path = tmp_path / "module.py"
    path.write_text(source)
    namespace = cli_light._Namespace()
    namespace.update(__file__=str(path), __name__="module")
    return namespace


def test_a_source_module_runs_only_the_statements_a_name_needs(tmp_path):
    namespace = _read_source(tmp_path, (
        'DOC = """\nX = 99\n"""\n'  # a line of a string is no statement
        "from os.path import join, no_such_name\n"  # an import runs for the name asked for alone
        "class C:\n    a = Y\n"  # a class body reads Y before its statement is run
        "def f():\n    return Z\n"  # a function reads Z when called
        "X = 1\nY = 2\nZ = 3\nraise RuntimeError('never run')\n"
    ))
    assert (namespace["X"], namespace["C"].a, namespace["f"](), namespace["join"]) == (1, 2, 3, os.path.join)
    assert "no_such_name" not in namespace and "DOC" not in namespace


@pytest.mark.parametrize("source", [
    "X = {'a': 1}\nX['b'] = 2\n",  # an item set later
    "X = [1]\nfor i in range(2):\n    X.append(i)\n",  # a container method called later
    "X = 1\nif True:\n    X = 2\n",  # bound twice
], ids=["item", "method", "twice"])
def test_a_name_changed_after_its_binding_stops_the_reading(tmp_path, source):
    with pytest.raises(cli_light.StopReading):
        _read_source(tmp_path, source)["X"]
