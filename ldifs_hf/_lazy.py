"""Package namespaces that import a name's module only when the name is first used (PEP 562).

A package's `__init__` lists each public name once, with the module that defines it; `import ldifs_hf`
(and the CLI parsing its arguments) then stays cheap, while `from ldifs_hf import LDIFSTrainer` works.

    _EXPORTS = {"RunRecord": ".record", "FolderLock": ".lock"}
    __getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
"""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """`(__getattr__, __dir__, __all__)` for `package`, whose `exports` map each public name to the
    module, relative to the package (".training"), that defines it; `__all__` is those names, sorted."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__, sorted(exports)
