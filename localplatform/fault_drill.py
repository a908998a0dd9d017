"""The on-call drill: break the processor until it pages, then mend it and watch the all-clear.

The injected failure is the common real one: the processor's dependency stops answering, so
each invocation hangs for a few seconds and then fails. Lambda retries (the template's retry
and bisect settings), records pile up in the stream, and the template's alarms on processor
errors and iterator age fire and page; once a page has arrived the failure is removed and the
drill waits for those alarms to return to OK.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from localplatform.platform import LocalPlatform

HANG_S = 3.0
WARM_UP_S = 10.0
# The alarms the drill must see fire: what an outage of the processor must page for.
ALARM_SUFFIXES = ("ProcessorErrors", "ProcessorIteratorAge")


class Phase(StrEnum):
    WARMING_UP = "warming up"
    FAILING = "processor failing"
    RECOVERING = "recovering"
    DONE = "recovered"


class DrillFailure(ConnectionError):
    """What the drill makes the processor raise."""


class FaultDrill:
    def __init__(self, platform: LocalPlatform) -> None:
        self.platform = platform
        self.phase = Phase.WARMING_UP
        self.started = time.monotonic()
        self.timeline: list[tuple[float, str]] = []
        self.pages_seen = 0

    def step(self, pages: list[dict[str, Any]]) -> None:
        """Advance on the alarm states and the pages received since the last step."""
        self.pages_seen += sum(1 for page in pages if page.get("NewStateValue") == "ALARM")
        assert self.platform.alarms is not None
        states = self._watched(self.platform.alarms.states())
        elapsed = time.monotonic() - self.started
        if self.phase is Phase.WARMING_UP and elapsed >= WARM_UP_S:
            self.platform.processor.fault = _hang_then_fail
            self._enter(Phase.FAILING, elapsed)
        elif (self.phase is Phase.FAILING and self.pages_seen
              and all(state == "ALARM" for state in states.values())):
            self.platform.processor.fault = None
            self._enter(Phase.RECOVERING, elapsed)
        elif self.phase is Phase.RECOVERING and all(s == "OK" for s in states.values()):
            self._enter(Phase.DONE, elapsed)

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    def _enter(self, phase: Phase, elapsed: float) -> None:
        self.phase = phase
        self.timeline.append((round(elapsed, 1), phase.value))

    @staticmethod
    def _watched(states: Mapping[str, str]) -> dict[str, str]:
        return {name: state for name, state in states.items() if name.endswith(ALARM_SUFFIXES)}


def _hang_then_fail(event: Mapping[str, Any]) -> None:
    time.sleep(HANG_S)
    raise DrillFailure("drill: the online store does not answer")
