"""Freshness: from an event's time to the moment its features are visible in the online store.

The mapping reports each batch the function has finished with (its writes are done, so its
features are readable); the tracker reads the event times of the on-time events in it. Events
a producer sent late, or sent twice, are left out: their age says nothing about the pipeline.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

from fastbreak.engine.kpl import KplError, deaggregate
from fastbreak.engine.timestamps import parse_event_time_ms
from localplatform.kinesis_events import StreamRecord
from localplatform.metrics import percentile


class FreshnessTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracked: set[str] = set()
        self.lags_ms: list[float] = []
        self.visible_events = 0

    def track(self, event_id: str) -> None:
        """Measure this event (an on-time, first-sent event)."""
        with self._lock:
            self._tracked.add(event_id)

    def forget(self, event_id: str) -> None:
        """Stop measuring an event, e.g. once a producer sent it again."""
        with self._lock:
            self._tracked.discard(event_id)

    def on_visible(self, records: Sequence[StreamRecord]) -> None:
        now_ms = time.time() * 1000
        lags = []
        for record in records:
            try:
                payloads = deaggregate(record.data)
            except KplError:
                continue
            for payload in payloads:
                lag = self._lag(payload, now_ms)
                if lag is not None:
                    lags.append(lag)
        with self._lock:
            self.visible_events += len(lags)
            self.lags_ms.extend(lags)

    def _lag(self, payload: bytes, now_ms: float) -> float | None:
        try:
            event = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(event, dict) or not isinstance(event.get("event_time"), str):
            return None
        with self._lock:
            if event.get("event_id") not in self._tracked:
                return None
            self._tracked.discard(event["event_id"])  # the first delivery is the one that counts
        event_ms = parse_event_time_ms(event["event_time"])
        return None if event_ms is None else now_ms - event_ms

    def percentiles(self, since: int = 0) -> tuple[float | None, float | None]:
        """p50 and p99 in ms of the lags measured after the first ``since`` ones."""
        with self._lock:
            window = self.lags_ms[since:]
        if not window:
            return None, None
        return percentile(window, 50), percentile(window, 99)
