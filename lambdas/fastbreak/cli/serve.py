"""``fastbreak serve``: the local platform with no traffic, until Ctrl-C."""

from __future__ import annotations

from collections.abc import Sequence

NAME = "serve"
HELP = "start the local platform and keep it up until Ctrl-C (no traffic of its own)"


def main(argv: Sequence[str]) -> int:
    from localplatform.__main__ import main as local_platform

    return local_platform(["serve", *argv], prog="fastbreak")
