"""Where a long offline job (the training-set builder, the backfill, the consistency check)
reports what it is doing: a terminal progress bar (``fastbreak.cli``), or nothing."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def stage(self, description: str, total: int | None = None) -> None: ...

    def advance(self, amount: int = 1) -> None: ...


class Silent:
    """A ``Progress`` that reports nothing."""

    def stage(self, description: str, total: int | None = None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass
