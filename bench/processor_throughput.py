"""The stream processor handler on one 10,000-record batch, DynamoDB answered in-process.

Compared with the bare decode (base64 + JSON parse) of the same batch, timed in the same run:
the processor's own cost is what remains once the unavoidable decode is paid.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import time
from collections.abc import Callable
from typing import Any

from bench import workload
from bench.results_format import BenchResult
from fastbreak.engine import MemorySink, hll
from fastbreak.engine.reference import league_of
from fastbreak.handlers import stream_processor
from localplatform.kinesis_events import lambda_event
from localplatform.lambda_context import LambdaContext
from localplatform.memory_dynamodb import MemoryDynamoDB
from localplatform.memory_kinesis import MemoryKinesis

BATCH = 10_000
TARGET_EVENTS_PER_S = 100_000
TARGET_RATIO = 3.0
ENV = {"ONLINE_TABLE_NAME": "online", "OFFLINE_BUCKET_NAME": "offline",
       "PARTIALS_STREAM_NAME": "partials"}


class _MemoryS3:
    def __init__(self) -> None:
        self.sink = MemorySink()

    def put_object(self, **request: Any) -> dict[str, Any]:
        self.sink.put(request["Key"], request["Body"])
        return {}


def _best_of(runs: int, setup: Callable[[], Any], body: Callable[[Any], Any]) -> float:
    best = float("inf")
    for _ in range(runs):
        prepared = setup()
        started = time.perf_counter()
        body(prepared)
        best = min(best, time.perf_counter() - started)
    return best


def run() -> list[BenchResult]:
    event = lambda_event(workload.stream(workload.events(BATCH)))
    size = sum(len(base64.b64decode(r["kinesis"]["data"])) for r in event["Records"]) / BATCH

    def decode(_: Any) -> None:
        for record in event["Records"]:
            json.loads(base64.b64decode(record["kinesis"]["data"]))

    def fresh_handler() -> None:
        # A cold execution environment each run: nothing memoized from the previous run of the
        # same batch (which would make every lookup a hit).
        hll.forget_registers()
        league_of.cache_clear()
        stream_processor.configure(MemoryDynamoDB(), _MemoryS3(), ENV, MemoryKinesis(4))

    def invoke(_: Any) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # the EMF line per invocation
            response = stream_processor.handler(event, LambdaContext())
        assert response == {"batchItemFailures": []}, response

    decode_s = _best_of(5, lambda: None, decode)
    handler_s = _best_of(5, fresh_handler, invoke)
    rate, decode_rate = BATCH / handler_s, BATCH / decode_s
    ratio = handler_s / decode_s
    return [
        BenchResult(
            "processor_throughput", round(rate), "events/s",
            f"bare decode of the same batch ({size:.0f}-byte events)", round(decode_rate),
            round(rate / decode_rate, 3), f">= {TARGET_EVENTS_PER_S} events/s on one core",
            rate >= TARGET_EVENTS_PER_S,
        ),
        BenchResult(
            "processor_time_vs_decode", round(handler_s * 1000, 1), "ms per 10,000-record batch",
            "bare decode (base64 + json) of the same batch, ms", round(decode_s * 1000, 1),
            round(ratio, 2), f"<= {TARGET_RATIO}x the bare decode", ratio <= TARGET_RATIO,
        ),
    ]
