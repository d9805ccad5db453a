"""The light reading of a command's parser: its description (`cli_snapshot`) without importing torch or transformers.

`python -m ldifs_hf.cli_light COMMAND` runs the command's own parser-building code (`cli.PARSERS`) in a
child process whose heavy packages are not imported:

- transformers' `HfArgumentParser` is its own file, `hf_argparser.py`, loaded as it is (it imports nothing
  of transformers). `TrainingArguments` is read from the installed `training_args.py` by running only the
  top-level statements that bind a name it needs (its enums, its optimizer default and what decides it),
  each when first needed; transformers' other modules are read the same way, under a private name. A
  name bound by two statements, or changed in place by another, stops the reading.
- every other module of an installed third-party package (torch, the rest of transformers, datasets...)
  is a stand-in: its names import, call, subclass and decorate, so that this package's modules import,
  but asking a stand-in for its truth, text, items or an isinstance check stops the reading.

The child prints the parser's description and the command's facts as JSON, or why it stopped (then the
real parser answers). It imports the package's modules afresh, so plug-ins a script registered are not
seen (`cli_snapshot` does not read lightly in such a process). tests/test_cli_light.py holds every
command's light description equal to its real parser's, for the installed transformers, torch and Python.
"""

from __future__ import annotations

import ast
import bisect
import importlib.machinery
import importlib.util
import json
import os
import re
import sys
import types

# The private name transformers' modules are read under; third-party packages used for real.
SOURCE = "_ldifs_hf_light_transformers"
REAL = ("packaging",)  # transformers' version checks (pure Python, small)


class StopReading(BaseException):
    """The light reading cannot give the real parser's answer. A BaseException, so that no `except
    Exception` in the code being read carries on with a value the real import would not give."""


class _StandInType(type):
    """Stand-ins are classes of this type, so that they can be subclassed and named in annotations; each
    name of a stand-in is one stand-in, so that identity holds as in the real package."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = stand_in(f"{cls.__qualname__}.{name}")
        setattr(cls, name, value)
        return value

    def __call__(cls, *args, **kwargs):
        return stand_in(f"{cls.__qualname__}()")

    def __getitem__(cls, key):
        return stand_in(f"{cls.__qualname__}[]")

    def _stop(cls, *args):
        raise StopReading(f"{cls.__qualname__} is a stand-in: its value needs the package's real import")

    __bool__ = __len__ = __iter__ = __contains__ = __str__ = __repr__ = __format__ = __instancecheck__ = _stop


def stand_in(name: str) -> type:
    return _StandInType(name, (), {"__module__": "stand-in", "__qualname__": name})


class _StandInModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if self.__name__ == "transformers" and name in ("HfArgumentParser", "TrainingArguments"):
            module = "transformers.hf_argparser" if name == "HfArgumentParser" else f"{SOURCE}.training_args"
            value = getattr(importlib.import_module(module), name)
        else:
            value = stand_in(f"{self.__name__}.{name}")
        setattr(self, name, value)  # the same object at each use
        return value


class _SourceModule:
    """A module of transformers read from its source: its `__dict__` is a `_Namespace`."""

    def __getattr__(self, name):
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {self.__dict__.get('__name__')!r} has no attribute {name!r}") from None


class _Namespace(dict):
    """A source module's globals: a name not yet bound is bound by running the one top-level statement of
    the module that binds it (an import runs for that name alone), the names it reads first."""

    def __missing__(self, name):
        if "__file__" not in self:  # not set up yet (the import system is asking)
            raise KeyError(name)
        if "_source" not in self.__dict__:
            self._source, self._ran = _Source(self["__file__"]), set()
        statements = [s for s in self._source.binding(name) if id(s) not in self._ran]
        if len(statements) > 1 and not all(isinstance(s, ast.Import) for s in statements):  # `import a.b`, `import a.c` bind one `a`
            raise StopReading(f"{self['__name__']}.{name} is bound by {len(statements)} statements")
        if not statements:
            raise KeyError(name)  # then a builtin, or a name a branch not taken would bind
        for statement in statements:
            self._run(statement, name)
        return dict.__getitem__(self, name)

    def _run(self, statement: ast.stmt, name: str) -> None:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):  # the import of `name` alone
            statement = type(statement)(**{**vars(statement), "names": [a for a in statement.names if _bound_name(a) == name]})
        else:
            self._ran.add(id(statement))
        for read in _names_read(statement) - {name}:  # a class body reads its globals without __missing__
            if read not in self:
                _bind_quietly(self, read)
        code = compile(ast.Module(body=[statement], type_ignores=[]), self["__file__"], "exec")
        exec(code, self)


def _bind_quietly(namespace: _Namespace, name: str) -> None:
    try:
        namespace[name]
    except KeyError:
        pass


# Strings and comments (skipped whole), or the start of a line that starts a top-level statement: at
# column 0, a decorator or a name (not a keyword that continues a statement).
_SPLIT = re.compile(
    r"""[rRbBuUfF]{0,2}(?:\"\"\"(?:\\.|[^\\])*?\"\"\"|'''(?:\\.|[^\\])*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')"""
    r"|#[^\n]*|^(?=@|(?!(?:else|elif|except|finally)\b)[A-Za-z_])",
    re.M | re.S,
)
_DEFINITION = re.compile(r"(?:@[^\n]*\n)*(?:async\s+def|def|class)\s+(\w+)")


class _Source:
    """A module's source split at its top-level statements (`_SPLIT`), parsed only where they mention a
    name asked for (a function or class of another name aside). The whole file is parsed instead when a
    statement does not parse alone (a split in the wrong place)."""

    def __init__(self, path: str):
        with open(path, encoding="utf-8") as f:
            self.text, self.path = f.read(), path
        starts = [m.start() for m in _SPLIT.finditer(self.text) if m.start() == m.end()]
        self.starts = [s for i, s in enumerate(starts) if i == 0 or self.text[starts[i - 1]] != "@"]  # a def with its decorators
        self.parsed: dict[int, list[ast.stmt]] = {}
        self.whole: dict[str, list[ast.stmt]] | None = None  # name -> the statements that bind or read it

    def binding(self, name: str) -> list[ast.stmt]:
        """The top-level statements that bind `name`. The reading runs only those: it stops where another
        changes the object in place (an item set, a container method called), which it would miss."""
        if self.whole is None:
            try:
                statements = self._mentioning(name)
            except SyntaxError:
                self.whole = {}
                for statement in ast.parse(self.text, self.path).body:
                    for mentioned in set(_bound_names(statement)) | {n.id for n in ast.walk(statement) if isinstance(n, ast.Name)}:
                        self.whole.setdefault(mentioned, []).append(statement)
        if self.whole is not None:
            statements = self.whole.get(name, [])
        bound = [statement for statement in statements if name in _bound_names(statement)]
        if any(_mutates(statement, name) for statement in statements if statement not in bound):
            raise StopReading(f"{self.path}: a top-level statement changes {name} in place")
        return bound

    def _mentioning(self, name: str) -> list[ast.stmt]:
        found = []
        for i in sorted({bisect.bisect_right(self.starts, at) - 1 for at in self._mentions(name)} - {-1}):
            start, end = self.starts[i], self.starts[i + 1] if i + 1 < len(self.starts) else len(self.text)
            definition = _DEFINITION.match(self.text, start)
            if definition and definition.group(1) != name:
                continue
            if start not in self.parsed:  # parsed at its own lines, for tracebacks
                self.parsed[start] = ast.parse("\n" * self.text.count("\n", 0, start) + self.text[start:end], self.path).body
            found += self.parsed[start]
        return found

    def _mentions(self, name: str):
        """Where `name` occurs as a whole word, not as an attribute."""
        at = self.text.find(name)
        while at != -1:
            after = self.text[at + len(name):at + len(name) + 1]
            if not (at and (self.text[at - 1].isalnum() or self.text[at - 1] in "_.")) and not (after.isalnum() or after == "_"):
                yield at
            at = self.text.find(name, at + len(name))


def _bound_name(alias: ast.alias) -> str:
    return alias.asname or alias.name.split(".")[0]


def _bound_names(statement: ast.stmt):
    """The names a top-level statement binds."""
    if isinstance(statement, (ast.Import, ast.ImportFrom)):
        yield from (_bound_name(a) for a in statement.names if a.name != "*")
    elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield statement.name
    elif isinstance(statement, (ast.Assign, ast.AugAssign)) or isinstance(statement, ast.AnnAssign) and statement.value:
        for target in statement.targets if isinstance(statement, ast.Assign) else [statement.target]:
            yield from (n.id for n in ast.walk(target) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    else:  # if / try / with / for: the names bound in its blocks (and by a for's or a with's target)
        targets = [statement.target] if isinstance(statement, ast.For) else [i.optional_vars for i in getattr(statement, "items", [])]
        yield from (n.id for t in targets if t for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
        for field in ("body", "orelse", "finalbody", "handlers"):
            for child in getattr(statement, field, []):
                yield from _bound_names(child) if isinstance(child, ast.stmt) else [n for c in child.body for n in _bound_names(c)]


def _run_time_nodes(statement: ast.stmt):
    """The nodes evaluated when `statement` runs, not those inside its functions' bodies (run later)."""
    stack = [statement]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stack.extend([*node.decorator_list, node.args, *filter(None, [node.returns])])
        elif isinstance(node, ast.Lambda):
            stack.append(node.args)
        else:
            stack.extend(ast.iter_child_nodes(node))


def _names_read(statement: ast.stmt) -> set[str]:
    return {n.id for n in _run_time_nodes(statement) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


_MUTATORS = {"append", "extend", "insert", "update", "add", "setdefault", "pop", "popitem", "remove", "discard", "clear", "sort"}


def _mutates(statement: ast.stmt, name: str) -> bool:
    """Whether `statement` sets or deletes an item of `name`'s object, or calls one of its container methods."""

    def root(node):
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    return any(
        isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del)) and root(node) == name
        or isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _MUTATORS and root(node.func.value) == name
        for node in _run_time_nodes(statement)
    )


class _Finder:
    """The finder and loader of stand-ins for third-party packages and of transformers' modules read
    from source (the import protocol's methods; importlib.abc would cost its import)."""

    def __init__(self, transformers_dir: str):
        self.transformers_dir = transformers_dir

    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top == SOURCE:
            return self._source_spec(name)
        if name == "transformers.hf_argparser":
            return importlib.util.spec_from_file_location(name, os.path.join(self.transformers_dir, "hf_argparser.py"))
        if top in sys.stdlib_module_names or top in REAL or top == "ldifs_hf":
            return None
        if top == name and importlib.machinery.PathFinder.find_spec(top) is None:
            return None  # not installed: its ImportError, as in the real import
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def _source_spec(self, name: str):
        relative = os.path.join(self.transformers_dir, *name.split(".")[1:])
        if os.path.isfile(os.path.join(relative, "__init__.py")):
            return importlib.util.spec_from_file_location(name, os.path.join(relative, "__init__.py"), loader=self,
                                                          submodule_search_locations=[relative])
        if os.path.isfile(relative + ".py"):
            return importlib.util.spec_from_file_location(name, relative + ".py", loader=self)
        return None

    def create_module(self, spec):
        if spec.name.partition(".")[0] != SOURCE:
            return _StandInModule(spec.name)
        module = _SourceModule()
        module.__dict__ = _Namespace()
        return module

    def exec_module(self, module):
        pass  # a stand-in has nothing to run; a source module runs its statements on demand


def install() -> None:
    """Stand-ins and transformers' source modules in place of the real imports, from now on in this
    process (one of its own: they stay in its `sys.modules`)."""
    if any(isinstance(finder, _Finder) for finder in sys.meta_path):
        return
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        raise StopReading("transformers is not installed")
    sys.meta_path.insert(0, _Finder(spec.submodule_search_locations[0]))


def read(command: str) -> dict:
    """The description of `command`'s parser and its facts, read lightly (`install`)."""
    install()
    from ldifs_hf.cli import PARSERS  # this module may be loaded alone, before the package (`cli_snapshot`)
    from ldifs_hf.cli_snapshot import describe

    parser, facts = PARSERS[command]()
    for dtype in parser.dataclass_types:  # a stand-in base's fields would be missing
        bases = [cls.__qualname__ for cls in dtype.__mro__ if isinstance(cls, _StandInType) and cls.__module__ == "stand-in"]
        if bases:
            raise StopReading(f"{dtype.__qualname__} derives from the stand-in {bases[0]}")
    description = describe(parser)  # a stand-in default, choice or help stops it; a stand-in type is "any", as a real one
    if description is None:
        raise StopReading("the parser is not one the plain parser rebuilds")
    return {"parser": description, "facts": json.loads(json.dumps(facts))}


def main(argv: list[str]) -> int:
    try:
        result = {"read": read(argv[0])}
    except BaseException as err:  # the reading stopped: the caller builds the real parser
        result = {"stopped": f"{type(err).__name__}: {err}"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
