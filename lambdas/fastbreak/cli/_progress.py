"""The progress display of the long-running subcommands (``rich``, on the console's stderr)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class RichProgress:
    """A long job's stages (the training-set builder's, the backfill's) as a live progress
    display; silent when stderr is no terminal."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.display = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True,
            disable=not console.is_terminal,
        )
        self.task: Any = None

    def __enter__(self) -> RichProgress:
        self.display.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.display.stop()

    def stage(self, description: str, total: int | None = None) -> None:
        if self.task is not None:
            self.display.update(self.task, completed=self.display.tasks[-1].total or 1,
                                total=self.display.tasks[-1].total or 1)
        self.task = self.display.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        if self.task is not None:
            self.display.advance(self.task, amount)
