"""The package imports, and its layers point down: library code never imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import flowscope

SRC = Path(flowscope.__file__).resolve().parent


def test_version_is_a_string():
    assert flowscope.__version__.count(".") == 2


def _imported_modules(source: str, package: str) -> list[str]:
    """Every module an ``import`` statement of ``source`` names, made absolute.

    ``package`` is the package the source's relative imports are relative to; for
    ``from X import a, b`` both ``X`` and ``X.a``, ``X.b`` are listed, since ``a`` may be a
    submodule (``from . import cli``).
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            found.append(module)
            found += [f"{module}.{alias.name}" for alias in node.names]
    return found


def _imports_cli(source: str, package: str) -> list[str]:
    cli = "flowscope.cli"
    return [m for m in _imported_modules(source, package) if m == cli or m.startswith(cli + ".")]


def test_the_check_finds_every_spelling_of_a_cli_import():
    for source, package in [
        ("import flowscope.cli", "flowscope"),
        ("from flowscope.cli import main", "flowscope"),
        ("from flowscope import cli", "flowscope"),
        ("from .cli import CommandError", "flowscope"),
        ("from . import cli", "flowscope"),
        ("def f():\n    from ..cli import text_table", "flowscope.report"),
        ("from ..cli.bench import add_arguments", "flowscope.report"),
    ]:
        assert _imports_cli(source, package), source
    for source, package in [
        ('"""Options in :mod:`flowscope.cli.eval`; ``from flowscope.cli import main``."""', "x"),
        ("from .client import x\nimport flowscope.clip", "flowscope"),
        ("from ..tables import text_table", "flowscope.report"),
        ("from .cli import x", "flowscope.report"),  # flowscope.report.cli is not the CLI
    ]:
        assert not _imports_cli(source, package), source


def test_library_modules_never_import_the_command_line():
    offenders = {}
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20  # the walk found the package
    for path in files:
        relative = path.relative_to(SRC)
        if relative.parts[0] in ("cli", "__main__.py"):  # the command line, and its entry
            continue
        package = ".".join(("flowscope", *relative.parts[:-1]))
        found = _imports_cli(path.read_text(encoding="utf-8"), package)
        if found:
            offenders[str(relative)] = found
    assert not offenders, f"library modules that import the command line: {offenders}"
