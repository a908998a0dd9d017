"""``fastbreak`` (or ``python -m fastbreak``): one entry point, one subcommand per module of this
package.

A subcommand is a module here (its name not starting with ``_``) that defines

- ``NAME``: the subcommand, e.g. ``"training-set"``;
- ``HELP``: one line for ``fastbreak --help``;
- ``add_arguments(parser)``: its options, on an ``argparse`` parser;
- ``run(args, console) -> int``: the exit code; ``console`` is a ``rich`` console on stderr;

or, for a command that has a command line of its own elsewhere in the repository (the local
platform, the producer, the operations tools), ``main(argv) -> int`` instead of the last two:
its arguments are handed over untouched, ``--help`` included.

Adding a module adds the subcommand: nothing else to edit. Keep heavy imports (DuckDB,
pyarrow, boto3) inside ``run``, so that ``--help`` and the other subcommands stay fast.

Bad input is a ``UsageError``: one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

USAGE_ERROR = 2
PROG = "fastbreak"


class UsageError(Exception):
    """Input the user can fix: printed as one line, exit code 2."""


def commands() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("_"):
            continue
        command = importlib.import_module(f"{__name__}.{module.name}")
        found[command.NAME] = command
    return dict(sorted(found.items()))


def parser(found: dict[str, ModuleType] | None = None) -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog=PROG,
        description="Fastbreak from a terminal: the local platform, producing and reading "
        "features, training sets, operations. `fastbreak COMMAND --help` for each.",
    )
    subcommands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in (found or commands()).items():
        if hasattr(command, "main"):  # parses its own arguments: listed here, handed over
            subcommands.add_parser(name, help=command.HELP, add_help=False)
            continue
        sub = subcommands.add_parser(name, help=command.HELP, description=command.HELP)
        command.add_arguments(sub)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    found = commands()
    if arguments and arguments[0] in found and hasattr(found[arguments[0]], "main"):
        delegated: int = found[arguments[0]].main(arguments[1:])
        return delegated
    from rich.console import Console

    args = parser(found).parse_args(arguments)
    console = Console(stderr=True)
    try:
        code: int = found[args.command].run(args, console)
    except UsageError as error:
        console.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        return USAGE_ERROR
    except KeyboardInterrupt:
        console.print("interrupted", markup=False, highlight=False)
        return 130
    return code


def count(text: str) -> int:
    """An argparse type for a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def minutes(text: str) -> float:
    """An argparse type for a duration in minutes, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of minutes: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"minutes must be 0 or more, got {text}")
    return value


def key_value(text: str) -> tuple[str, str]:
    """An argparse type for ``NAME=VALUE``."""
    name, sign, value = text.partition("=")
    if not sign or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value
