"""``fastbreak demo``: the whole platform on an embedded local AWS (``make demo``)."""

from __future__ import annotations

from collections.abc import Sequence

NAME = "demo"
HELP = "run the whole platform on an embedded local AWS with live games (make demo)"


def main(argv: Sequence[str]) -> int:
    from localplatform.__main__ import main as local_platform

    return local_platform(["demo", *argv], prog="fastbreak")
