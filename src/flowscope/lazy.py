"""Lazy package exports (PEP 562): a name is imported from its module on first use.

A package that re-exports names from heavy modules (PyTorch, matplotlib, reportlab) sets
``__getattr__, __dir__ = lazy.exports(__name__, {"name": ".module", ...})``; importing the
package then costs nothing until a name is used, so that the command line's ``--help`` and
argument errors do not wait for those imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["exports"]


def exports(
    package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` that import each of ``names`` from its
    module (relative to the package) when first asked for, and keep it.

    Raises (from ``__getattr__``):
        AttributeError: for a name the package does not export.
    """

    def getattr_(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name], package), name)
        vars(importlib.import_module(package))[name] = value  # the next lookup is direct
        return value

    def dir_() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *names})

    return getattr_, dir_
