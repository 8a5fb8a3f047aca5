"""The ``flowscope`` command line: the top layer, which owns argparse and the user's errors.

Every command reports bad input as one line on stderr (``flowscope: error: ...``) and a
non-zero exit status, without a traceback, and never overwrites a file it was not asked to.

The package: this module (the parser, :func:`main` and the helpers the commands share),
:mod:`.commands` (train, reflow, sample, log-prob, invert), :mod:`.report`, :mod:`.eval` and
:mod:`.bench`; each adds its subcommands and calls the library, which never imports the
command line.

Building the parser imports no PyTorch (``tests/test_cli_fast.py``): the options' choices
and defaults come from plain-Python declarations (:mod:`flowscope.models`,
:mod:`flowscope.defaults`, :mod:`flowscope.recipe`, the registries of
:mod:`flowscope.matching`), and each command imports the library's heavy modules in its
handler, so that ``--help`` and argument errors come back at once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..tables import text_table

__all__ = ["main", "CommandError", "add_command", "int_type", "run_folder", "text_table"]


class CommandError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as one line through :func:`main` instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if "expected one argument" in message:
            # argparse reads a value that starts with '-' (a negative number) as an option
            message += " (a value that starts with '-' needs the '=' form, e.g. --point=-1,0)"
        # Arguments the named command does not take are found by the top level: point to
        # that command's help, where its options are.
        prog = self.prog
        if message.startswith("unrecognized arguments") and getattr(self, "command", None):
            prog = f"{prog} {self.command}"
        raise CommandError(f"{message} (see `{prog} --help`)")


Handler = Callable[[argparse.Namespace], int | None]


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    help: str,
    example: str,
    handler: Handler,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """Add a subcommand declared in :data:`COMMANDS`: its ``--help`` opens with ``help``
    and ends with an example; the top-level list shows its summary. ``kwargs`` go to
    the parser (``add_help=False`` for a command with a help action of its own).

    Raises:
        KeyError: for a command :data:`COMMANDS` does not declare.
    """
    p = sub.add_parser(
        name,
        help=COMMANDS[name][1],
        description=help,
        epilog=f"example:\n  {example}",
        formatter_class=_formatter,
        **kwargs,
    )
    p.set_defaults(handler=handler)
    return p


def run_folder(text: str) -> str:
    """An argparse ``type``: a path that is a folder, checked before the command imports
    PyTorch (what else a run folder must hold is :func:`~flowscope.runs.read_info`'s)."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(
            f"{text}: no such run folder (train one with `flowscope train`)"
        )
    return text


def int_type(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum`` (1: positive, 0: e.g. a seed).

    argparse names the flag in the message, e.g. ``argument --seed: must be a
    non-negative integer, got '-1'``; the wording is :func:`~flowscope.data.check_int`'s.
    """
    from ..data import int_requirement

    what = int_requirement(minimum)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


#: Every command, in the order of ``flowscope --help``: the module of this package that
#: adds it (with its options and handler) and the summary the top-level help lists. The
#: top-level help, ``--version`` and a bare ``flowscope`` are answered from this table
#: alone, without importing the modules (and PyTorch).
COMMANDS = {
    "train": ("commands", "train a model and save a run folder"),
    "reflow": ("commands", "train the rectified flow of a flow-matching run on its own pairs"),
    "sample": ("commands", "draw points from a trained model, as CSV or a plot"),
    "log-prob": ("commands", "the log-density of points, in nats"),
    "invert": ("commands", "map points to their latents, with their trajectories"),
    "report": ("report", "run the Olympic-rings study: report.pdf and report.html"),
    "eval": ("eval", "measure a trained model: NLL, W2, ring metrics, round trip, NFE"),
    "explore": ("explore", "write an offline interactive page to look inside a model"),
    "bench": ("bench", "time the training step beside other libraries"),
}
COMMAND_MODULES = tuple(dict.fromkeys(module for module, _ in COMMANDS.values()))


def _commands(sub: argparse._SubParsersAction, modules: Sequence[str]) -> None:
    # Each module of `modules` adds its own subcommands; the others' are listed with their
    # summaries only (no module imported), in the order of COMMANDS.
    for module in COMMAND_MODULES:
        if module in modules:
            importlib.import_module(f"{__name__}.{module}").add_commands(sub)
        else:
            for name, (where, summary) in COMMANDS.items():
                if where == module:
                    sub.add_parser(name, help=summary)


def _top_level_only(argv: Sequence[str]) -> bool:
    """Whether the arguments ask only what :data:`COMMANDS` answers: the top-level
    help, the version, or nothing."""
    return not argv or argv[0] in ("-h", "--help", "--version")


def _command(argv: Sequence[str]) -> str | None:
    """The command the arguments name: the first that is not an option (the top level
    has no option that takes a value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(full: bool = True, only: str | None = None) -> argparse.ArgumentParser:
    """The ``flowscope`` parser: every command with its options, or (``full=False``) the
    top level with the commands' summaries only, or (``only`` a command's name) that
    command (and the others of its module) with its options and the others' summaries,
    which is all that parsing a command line that names it needs."""
    parser = _Parser(
        prog="flowscope",
        description="Train, sample, invert and look inside normalizing flows and flow "
        "matching models on low-dimensional data.",
        epilog="examples:\n"
        "  flowscope report                     # the whole Olympic-rings study\n"
        "  flowscope train nf --out runs/nf     # the study's normalizing flow\n"
        "  flowscope sample runs/nf -n 1000 --plot samples.png",
        formatter_class=_formatter,
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"flowscope {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    modules = COMMAND_MODULES if full else ()
    if only is not None:
        modules = (COMMANDS[only][0],) if full and only in COMMANDS else ()
    _commands(sub, modules)
    return parser


def _threads() -> None:
    """One PyTorch thread for the commands, as the trainer uses: for networks this small a
    second thread gains little on an idle machine and, on a busy one, its waits cost
    many times the work (``benchmarks/README.md``). ``FLOWSCOPE_THREADS=N`` sets another
    count."""
    import torch

    try:
        count = int_type(1)(os.environ.get("FLOWSCOPE_THREADS", "1"))
    except argparse.ArgumentTypeError as err:
        raise CommandError(f"FLOWSCOPE_THREADS {err}") from None
    torch.set_num_threads(count)


@contextlib.contextmanager
def _without_compiler() -> Iterator[None]:
    """Spare a command the import of ``torch._dynamo`` (over a second), which no command
    uses: ``torch.optim.Optimizer``'s ``add_param_group``, ``state_dict``,
    ``load_state_dict`` and ``zero_grad`` are wrapped by ``torch._disable_dynamo``, which
    imports the compiler on the first call to store a compiler-disabled version of the
    method on it. Storing the method itself there first keeps every call the plain call
    it is outside ``torch.compile``; where a PyTorch release names things otherwise,
    nothing changes. What was stored is taken back at the end, so that ``torch.compile``
    later in the same process (``main`` called from Python) skips those methods again.
    (The trainer's C Adam never calls ``optimizer.step()``, which would import it too.)"""
    import torch

    stored = []
    for name in ("add_param_group", "state_dict", "load_state_dict", "zero_grad"):
        method = getattr(torch.optim.Optimizer.__dict__.get(name), "__wrapped__", None)
        if callable(method) and not hasattr(method, "__dynamo_disable"):
            setattr(method, "__dynamo_disable", method)
            stored.append(method)
    try:
        yield
    finally:
        for method in stored:
            if getattr(method, "__dynamo_disable", None) is method:
                delattr(method, "__dynamo_disable")


def _notes() -> Callable[..., None]:
    """A ``warnings.showwarning`` that prints the library's warnings as one line each,
    ``flowscope: note: ...``, each text once per command (a file read twice warns
    twice)."""
    said: set[str] = set()

    def note(message, category, filename, lineno, file=None, line=None) -> None:
        if str(message) not in said:
            said.add(str(message))
            print(f"flowscope: note: {message}", file=sys.stderr)

    return note


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowscope`` command; returns the exit status.

    A closed output pipe (``flowscope eval RUN | head``) ends the command quietly with
    status 141, as Unix tools do; files the command writes are written before it prints.
    """
    import warnings

    argv = sys.argv[1:] if argv is None else list(argv)
    if _top_level_only(argv):
        parser = build_parser(full=False)
        try:
            parser.parse_args(argv)
        except CommandError as err:
            print(f"flowscope: error: {err}", file=sys.stderr)
            return 2
        parser.print_help()
        return 2
    # Only the named command's module: its options and handler (`flowscope bench`
    # imports PyTorch to list its contenders; the others import it when they run).
    parser = build_parser(only=_command(argv))
    parser.command = _command(argv) if _command(argv) in COMMANDS else None
    from ..errors import MissingDependency, RunError, TrainingDiverged

    shown, warnings.showwarning = warnings.showwarning, _notes()
    try:
        args = parser.parse_args(argv)
        if not hasattr(args, "handler"):
            parser.print_help()
            return 2
        _threads()
        with _without_compiler():
            return int(args.handler(args) or 0)
    except (CommandError, MissingDependency, RunError, ValueError, TrainingDiverged) as err:
        print(f"flowscope: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Nothing more can reach the reader; keep Python from complaining at exit.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass  # not a real file (a test's capture)
        return 141
    except OSError as err:
        print(
            f"flowscope: error: {err.strerror or err}: {err.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("flowscope: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown
