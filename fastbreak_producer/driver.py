"""Drive a simulator through a producer in real time, in ticks."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastbreak_producer.client import Producer
from fastbreak_producer.simulator import Emission, LiveGameSimulator

TICK_S = 0.1


def drive(
    simulator: LiveGameSimulator,
    producer: Producer,
    duration_s: float,
    *,
    on_emission: Callable[[Emission], None] = lambda emission: None,
    on_tick: Callable[[float], None] = lambda elapsed: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Emit ``duration_s`` seconds of the simulation; each tick's events are flushed at the
    tick's end, so an event waits at most one tick in the producer."""
    started = time.monotonic()
    last = time.time()
    next_tick = started
    while not should_stop():
        elapsed = time.monotonic() - started
        if elapsed >= duration_s:
            break
        now = time.time()
        for emission in simulator.tick(now, now - last):
            on_emission(emission)
            if emission.event is not None:
                producer.send(emission.event)
            elif emission.raw is not None:
                producer.send_raw(emission.raw, emission.partition_key)
        last = now
        producer.flush()
        on_tick(elapsed)
        next_tick += TICK_S
        time.sleep(max(0.0, next_tick - time.monotonic()))
    producer.flush()
