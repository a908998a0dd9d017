"""``python -m fastbreak``: one entry point, one subcommand per module of this package.

A subcommand is a module here (its name not starting with ``_``) that defines

- ``NAME``: the subcommand, e.g. ``"training-set"``;
- ``HELP``: one line for ``python -m fastbreak --help``;
- ``add_arguments(parser)``: its options, on an ``argparse`` parser;
- ``run(args, console) -> int``: the exit code; ``console`` is a ``rich`` console on stderr.

Adding a module adds the subcommand: nothing else to edit. Keep heavy imports (DuckDB,
pyarrow, boto3) inside ``run``, so that ``--help`` and the other subcommands stay fast.

Bad input is a ``UsageError``: one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Sequence
from types import ModuleType

USAGE_ERROR = 2


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
        prog="python -m fastbreak",
        description="Fastbreak's offline tools: training sets from the raw events table, "
        "computed with the engine that serves features online.",
    )
    subcommands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in (found or commands()).items():
        sub = subcommands.add_parser(name, help=command.HELP, description=command.HELP)
        command.add_arguments(sub)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console

    found = commands()
    args = parser(found).parse_args(argv)
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


def key_value(text: str) -> tuple[str, str]:
    """An argparse type for ``NAME=VALUE``."""
    name, sign, value = text.partition("=")
    if not sign or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value
