"""Sustained events/s through the whole local pipeline: producer -> Kinesis (moto) -> the
emulated event source mapping -> the real processor -> DynamoDB (moto), for 60 s.

Offered load: the live-games simulator at 2,100 events/s (5% above the 2,000 target, so that
events still in flight when the minute ends do not decide the verdict), without late,
duplicate or malformed events so that every event sent must become visible. Reported: the
events made visible per second during the offered minute, p99 freshness (event time to
visible in the online store), and the events still not visible after a bounded drain (loss).

The same run with both stages' DynamoDB answered in-process (one ``MemoryDynamoDB``, as the
processor benchmark does) separates what the local platform costs from what moto's DynamoDB
costs (docs/local-platform.md, "Throughput").
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

from bench.results_format import BenchResult
from fastbreak_producer import Producer
from fastbreak_producer.driver import drive
from fastbreak_producer.simulator import Emission, Kind, LiveGameSimulator, SimulationConfig
from localplatform.freshness import FreshnessTracker
from localplatform.kinesis_events import StreamRecord
from localplatform.mapping_emulator import MappingHooks
from localplatform.memory_dynamodb import MemoryDynamoDB
from localplatform.platform import LocalPlatform, PlatformOptions

TARGET_RATE = 2_000.0
OFFERED_RATE = 2_100.0
DURATION_S = float(os.environ.get("LOCAL_PIPELINE_SECONDS", "60"))
DRAIN_S = 60.0
TARGET_P99_MS = 2_000.0
TARGET = ">= 2,000 events/s for 60 s with p99 freshness <= 2 s and zero loss"


@dataclass(frozen=True)
class Measurement:
    sent: int
    offered_s: float
    visible_per_s: float
    p99_ms: float
    lost: int

    @property
    def met(self) -> bool:
        return (self.visible_per_s >= TARGET_RATE and self.p99_ms <= TARGET_P99_MS
                and self.lost == 0)


def run() -> list[BenchResult]:
    return [*_results("local_pipeline", measure(memory_store=False)),
            *_results("local_pipeline_memory_store", measure(memory_store=True))]


def measure(memory_store: bool) -> Measurement:
    tracker = FreshnessTracker()
    visible_in_window = [0]
    window_open = threading.Event()

    def on_visible(records: Sequence[StreamRecord]) -> None:
        before = tracker.visible_events
        tracker.on_visible(records)
        if window_open.is_set():
            visible_in_window[0] += tracker.visible_events - before

    options = PlatformOptions(mapping_hooks=MappingHooks(on_success=on_visible))
    with LocalPlatform(options) as platform:
        if memory_store:
            s3, dynamodb = platform.client("s3"), MemoryDynamoDB()

            def configure(module: ModuleType) -> None:
                module.configure(dynamodb, s3)

            # both stages, on one in-process table (the audience stage merges into it)
            platform.processor.on_cold_start = configure
            platform.audience_stage.on_cold_start = configure
        simulator = LiveGameSimulator(SimulationConfig(
            rate=OFFERED_RATE, games=8, users=100_000, seed=11, late_fraction=0.0,
            duplicate_fraction=0.0, malformed_fraction=0.0, spike_factor=1.0,
        ))
        producer = Producer(platform.client("kinesis"), platform.stream_name)

        def on_emission(emission: Emission) -> None:
            if emission.kind is Kind.EVENT and emission.event is not None:
                tracker.track(emission.event["event_id"])

        window_open.set()
        started = time.monotonic()
        drive(simulator, producer, DURATION_S, on_emission=on_emission)
        window_open.clear()
        offered_s = time.monotonic() - started
        platform.wait_until_processed(timeout=DRAIN_S)
        sent = producer.report.events_accepted
        mapping = platform.events_mapping
        lost = sent - mapping.stats.records_succeeded + len(producer.report.failed)
    _, p99 = tracker.percentiles()
    # Nothing visible at all: the whole run is a lower bound of the lag.
    p99_ms = (offered_s + DRAIN_S) * 1000 if p99 is None else p99
    return Measurement(sent, offered_s, visible_in_window[0] / offered_s, p99_ms, lost)


def _results(name: str, measured: Measurement) -> list[BenchResult]:
    return [
        BenchResult(
            f"{name}_throughput", round(measured.visible_per_s, 1),
            "events/s visible in the online store",
            f"target rate (offered: {measured.sent:,} events in {measured.offered_s:.0f} s)",
            TARGET_RATE, round(measured.visible_per_s / TARGET_RATE, 4), TARGET, measured.met,
        ),
        BenchResult(
            f"{name}_freshness_p99", round(measured.p99_ms, 1),
            "ms from event time to visible (p99)", "target", TARGET_P99_MS,
            round(measured.p99_ms / TARGET_P99_MS, 4), "<= 2,000 ms",
            measured.p99_ms <= TARGET_P99_MS,
        ),
        BenchResult(
            f"{name}_loss", float(measured.lost),
            f"events not visible {DRAIN_S:.0f} s after the load stopped", "events sent",
            float(measured.sent), round(measured.lost / max(measured.sent, 1), 4), "0",
            measured.lost == 0,
        ),
    ]
