"""Route what in-process handlers print to their own log, as Lambda routes it to CloudWatch Logs.

The handlers print JSON logs and EMF metrics to stdout. Several functions and the demo's own
terminal output share one process, so ``sys.stdout`` is replaced once by a router that sends
each thread's writes to the sink of the invocation running on that thread, if any.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

LineSink = Callable[[str], None]


class _StdoutRouter(io.TextIOBase):
    def __init__(self, fallback: TextIO) -> None:
        self.fallback = fallback
        self.local = threading.local()

    def write(self, text: str) -> int:
        sink: LineSink | None = getattr(self.local, "sink", None)
        if sink is None:
            return self.fallback.write(text)
        pending = getattr(self.local, "pending", "") + text
        *lines, self.local.pending = pending.split("\n")
        for line in lines:
            if line:
                sink(line)
        return len(text)

    def flush(self) -> None:
        self.fallback.flush()

    def isatty(self) -> bool:
        return self.fallback.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.fallback, "encoding", "utf-8")


_ROUTER: _StdoutRouter | None = None
_INSTALL_LOCK = threading.Lock()


def install() -> _StdoutRouter:
    """Make ``sys.stdout`` the router; before handlers are imported, since their log handlers
    keep the stream they found at import time. If something replaced ``sys.stdout`` since
    (pytest does, around each test), the router goes back on top of the replacement."""
    global _ROUTER
    with _INSTALL_LOCK:
        if _ROUTER is None:
            _ROUTER = _StdoutRouter(sys.stdout)
        if sys.stdout is not _ROUTER:
            _ROUTER.fallback = sys.stdout
            sys.stdout = _ROUTER
        return _ROUTER


@contextmanager
def captured(sink: LineSink) -> Iterator[None]:
    """Send this thread's stdout lines to ``sink`` for the duration of the block."""
    local = install().local
    previous = getattr(local, "sink", None)
    local.sink, local.pending = sink, ""
    try:
        yield
    finally:
        if local.pending:
            sink(local.pending)
        local.sink, local.pending = previous, ""
