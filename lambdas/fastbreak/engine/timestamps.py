"""Event times: ISO-8601 with a timezone in, integer epoch milliseconds inside the engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def parse_event_time_ms(text: str) -> int | None:
    """Epoch milliseconds of an ISO-8601 time with a timezone, or None if it is not one.

    A naive time is refused: guessing the producer's zone would shift windows silently.
    """
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    # Integer arithmetic on the timedelta, not float timestamp(): exact to the millisecond.
    return (parsed - _EPOCH) // _MS


def format_ms(epoch_ms: int) -> str:
    """``2026-11-26T18:30:00.123Z``: the envelope format, for logs and fixtures."""
    moment = _EPOCH + timedelta(milliseconds=epoch_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"
