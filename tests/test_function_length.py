"""The package's shape: no function in `ldifs_hf/` is longer than 80 lines; a longer one is split into
named steps."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "ldifs_hf"
LIMIT = 80


def _function_lengths():
    """(where, lines) of every function and method in the package, nested ones included; a function's
    lines run from its `def` to its last line."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1


def test_no_function_in_the_package_is_longer_than_80_lines():
    lengths = list(_function_lengths())
    assert len(lengths) > 500  # the whole package was read, not an empty folder
    too_long = [f"{where} ({lines} lines)" for where, lines in lengths if lines > LIMIT]
    assert not too_long, f"functions over {LIMIT} lines, split them into named steps: " + "; ".join(too_long)
