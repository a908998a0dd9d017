"""``fastbreak produce replay FILE | simulate``: send events to the events stream."""

from __future__ import annotations

from collections.abc import Sequence

NAME = "produce"
HELP = "send events: replay a file of events, or simulate live games (the producer's CLI)"


def main(argv: Sequence[str]) -> int:
    from fastbreak_producer.cli import main as producer

    return producer(list(argv), prog="fastbreak produce")
