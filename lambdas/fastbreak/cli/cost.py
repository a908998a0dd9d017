"""``fastbreak cost``: what an environment costs a month, per component."""

from __future__ import annotations

from collections.abc import Sequence

NAME = "cost"
HELP = "estimate a month's cost per component from measured ratios and a dated price table"


def main(argv: Sequence[str]) -> int:
    from fastbreak_ops.cost import main as cost

    return cost(list(argv), prog="fastbreak cost")
