"""``fastbreak redrive``: replay the processor's on-failure queue, exactly once."""

from __future__ import annotations

from collections.abc import Sequence

NAME = "redrive"
HELP = "replay the batches the processor gave up on, from its on-failure queue"


def main(argv: Sequence[str]) -> int:
    from fastbreak_ops.redrive import main as redrive

    return redrive(list(argv), prog="fastbreak redrive")
