"""What one event and one feature read cost in billable units: the ratios the cost model
(``python -m fastbreak_ops.cost``) multiplies by a traffic and a price table.

The stream processor handler runs over 1,000-record batches of the benchmark workload (Zipf(1.1)
over 100,000 users and 20,000 contents, 50 live games, six seconds of event time per batch),
and the audience stage's handler over the partials each batch emitted (a batch per shard of a
four-shard partials stream), against the in-process DynamoDB, which meters capacity units as
DynamoDB bills them (``bench.online_store_costs``); the second half of the run is measured, once
items have grown to steady state. Then the feature reader (``FeatureClient``, the API's code)
reads one user's groups, for users drawn from the same distribution.

Measured, per event: each stage's CPU seconds (this machine's process time, handler included:
decode, validation, fold or merge, JSON, metrics), DynamoDB write requests and write units of
both stages, their strongly consistent read units, feature-log bytes and objects, the partials
stream's billed KB (each record rounded up to 1 KB), the event's JSON bytes, its Kinesis billing
size and its Parquet bytes (the raw table's format). Per read: read units (eventually
consistent: half a unit per 4 KB) and reader CPU seconds. The baseline of each ratio is the
unit it is counted against, so that ``ratio`` says, e.g., write units per write request (the
item-size effect).

GB-seconds per event follow from the CPU time: Lambda gives a function one vCPU per 1,769 MB,
so CPU-bound work takes ``cpu_s * 1769 / memory_mb`` seconds at ``memory_mb`` and costs
``cpu_s * 1769 / 1024`` GB-seconds at any memory below 1,769 MB. That assumes a Lambda vCPU
does this machine's per-core work; the cost model adds the DynamoDB round trips on top.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench import workload
from bench.online_store_costs import MeteredDynamoDB, item_bytes
from bench.results_format import BenchResult
from fastbreak.engine import hll
from fastbreak.engine.reference import league_of
from fastbreak.handlers import audience_stage, stream_processor
from fastbreak.serving import FeatureClient
from localplatform.kinesis_events import SEQUENCE_BASE, StreamRecord, lambda_record
from localplatform.lambda_context import LambdaContext
from localplatform.memory_kinesis import MemoryKinesis

BATCH = 1_000
BATCHES = 120
BATCH_SPAN_MS = 6_000
READS = 500
LAMBDA_MB_PER_VCPU = 1769
# One write at a time: the meter's counters are plain integers, and the units do not depend on
# how many writes run at once.
ENV = {"ONLINE_TABLE_NAME": "online", "OFFLINE_BUCKET_NAME": "offline", "WRITE_CONCURRENCY": "1",
       "PARTIALS_STREAM_NAME": "partials"}
PARTIALS_SHARDS = 4


class _MeteredS3:
    def __init__(self) -> None:
        self.objects = 0
        self.bytes = 0

    def put_object(self, **request: Any) -> dict[str, Any]:
        body = request["Body"]
        self.objects += 1
        self.bytes += len(body.encode() if isinstance(body, str) else body)
        return {}


class _ReadMeter(MeteredDynamoDB):
    """Reads billed as their request asks: eventually consistent reads are half a unit."""

    def __init__(self) -> None:
        super().__init__()
        self.eventual_read_units = 0.0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        response = super().batch_get_item(RequestItems)
        for table, items in response["Responses"].items():
            if not RequestItems[table].get("ConsistentRead", False):
                self.eventual_read_units += sum(
                    math.ceil(item_bytes(item) / 4096) / 2 for item in items)
        return response


def _writes(table: _ReadMeter) -> int:
    return table.calls["UpdateItem"] + table.calls["PutItem"] + table.calls["DeleteItem"]


def _processor_run() -> tuple[dict[str, float], _ReadMeter, list[bytes]]:
    table, s3, partials = _ReadMeter(), _MeteredS3(), MemoryKinesis(PARTIALS_SHARDS)
    hll.forget_registers()
    league_of.cache_clear()
    stream_processor.configure(table, s3, ENV, kinesis=partials)
    audience_stage.configure(table, s3, ENV)
    sequence = SEQUENCE_BASE
    half = BATCHES // 2
    cpu = audience_cpu = 0.0
    partial_kb = 0
    start = (0, 0, 0, 0, 0)
    sample: list[bytes] = []
    for batch in range(BATCHES):
        start_ms = workload.T0 + batch * BATCH_SPAN_MS
        payloads = workload.events(BATCH, seed=batch + 100, start_ms=start_ms,
                                   span_ms=BATCH_SPAN_MS)
        arrival_s = (start_ms + BATCH_SPAN_MS) / 1000 + 30
        event = {"Records": [
            lambda_record(StreamRecord(str(sequence + n), "pk", payload, arrival_s))
            for n, payload in enumerate(payloads)
        ]}
        sequence += BATCH
        if batch == half:
            start = (_writes(table), table.write_units, table.read_units, s3.objects, s3.bytes)
        if batch >= half:
            sample.extend(payloads)
        began = time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):  # the EMF line per invocation
            response = stream_processor.handler(event, LambdaContext())
        if batch >= half:
            cpu += time.process_time() - began
        assert response == {"batchItemFailures": []}, response
        for shard in partials.shard_ids:
            emitted = partials.take(shard)
            if not emitted:
                continue
            began = time.process_time()
            with contextlib.redirect_stdout(io.StringIO()):
                response = audience_stage.handler(
                    {"Records": [lambda_record(record) for record in emitted]}, LambdaContext())
            if batch >= half:
                audience_cpu += time.process_time() - began
                partial_kb += sum(math.ceil((len(r.data) + len(r.partition_key)) / 1024)
                                  for r in emitted)
            assert response == {"batchItemFailures": []}, response
    events = (BATCHES - half) * BATCH
    now = (_writes(table), table.write_units, table.read_units, s3.objects, s3.bytes)
    writes, write_units, read_units, objects, log_bytes = (
        after - before for after, before in zip(now, start, strict=True))
    return {
        "cpu_s": cpu / events,
        "audience_cpu_s": audience_cpu / events,
        "partials_kb": partial_kb / events,
        "write_requests": writes / events,
        "write_units": write_units / events,
        "read_units": read_units / events,
        "log_objects": objects / events,
        "log_bytes": log_bytes / events,
    }, table, sample


def _reads(table: _ReadMeter) -> dict[str, float]:
    client = FeatureClient(table, "online", concurrency=1,
                           clock_ms=lambda: workload.T0 + BATCHES * BATCH_SPAN_MS + 60_000)
    users = [f"user-{rank:06d}" for rank in range(1, READS + 1)]
    before = table.eventual_read_units
    items_before = sum(table.calls.values())
    began = time.process_time()
    for user in users:
        client.get("user", user)
    cpu = time.process_time() - began
    return {
        "read_units": (table.eventual_read_units - before) / READS,
        "calls": (sum(table.calls.values()) - items_before) / READS,
        "cpu_s": cpu / READS,
    }


def _event_sizes(payloads: list[bytes]) -> dict[str, float]:
    rows = [json.loads(payload) for payload in payloads]
    parquet = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), parquet, compression="snappy")
    return {
        "json_bytes": sum(len(p) for p in payloads) / len(payloads),
        "kinesis_kb": sum(math.ceil(len(p) / 1024) for p in payloads) / len(payloads),
        "parquet_bytes": parquet.tell() / len(payloads),
    }


def measure() -> dict[str, float]:
    processor, table, sample = _processor_run()
    reads = _reads(table)
    sizes = _event_sizes(sample)
    return {
        "processor_cpu_s_per_event": processor["cpu_s"],
        "processor_gb_s_per_event": processor["cpu_s"] * LAMBDA_MB_PER_VCPU / 1024,
        "audience_cpu_s_per_event": processor["audience_cpu_s"],
        "audience_gb_s_per_event": processor["audience_cpu_s"] * LAMBDA_MB_PER_VCPU / 1024,
        "partials_kb_per_event": processor["partials_kb"],
        "write_requests_per_event": processor["write_requests"],
        "write_units_per_event": processor["write_units"],
        "processor_read_units_per_event": processor["read_units"],
        "feature_log_bytes_per_event": processor["log_bytes"],
        "feature_log_objects_per_event": processor["log_objects"],
        "event_json_bytes": sizes["json_bytes"],
        "kinesis_kb_per_event": sizes["kinesis_kb"],
        "parquet_bytes_per_event": sizes["parquet_bytes"],
        "read_units_per_read": reads["read_units"],
        "store_calls_per_read": reads["calls"],
        "reader_cpu_s_per_read": reads["cpu_s"],
        "reader_gb_s_per_read": reads["cpu_s"] * LAMBDA_MB_PER_VCPU / 1024,
    }


def run() -> list[BenchResult]:
    m = measure()

    def ratio(name: str, value: float, unit: str, baseline: str, base: float) -> BenchResult:
        return BenchResult(name, round(value, 9), unit, baseline, round(base, 9),
                           round(value / base, 4) if base else 0.0,
                           "measured for the cost model (python -m fastbreak_ops.cost)", True)

    return [
        ratio("cost_processor_gb_s_per_event", m["processor_gb_s_per_event"],
              "GB-s per event (CPU-bound part)", "processor CPU seconds per event",
              m["processor_cpu_s_per_event"]),
        ratio("cost_audience_gb_s_per_event", m["audience_gb_s_per_event"],
              "GB-s per event (audience stage, CPU-bound part)",
              "audience stage CPU seconds per event", m["audience_cpu_s_per_event"]),
        ratio("cost_write_units_per_event", m["write_units_per_event"],
              "WRU per event (both stages)", "write requests per event (both stages)",
              m["write_requests_per_event"]),
        ratio("cost_processor_read_units_per_event", m["processor_read_units_per_event"],
              "RRU per event (both stages, strongly consistent)",
              "write requests per event (both stages)", m["write_requests_per_event"]),
        ratio("cost_partials_kb_per_event", m["partials_kb_per_event"],
              "partials stream billed KB per event (1 KB per record)",
              "Kinesis billed KB per event (events stream)", m["kinesis_kb_per_event"]),
        ratio("cost_feature_log_bytes_per_event", m["feature_log_bytes_per_event"],
              "bytes per event", "feature-log objects per event",
              m["feature_log_objects_per_event"]),
        ratio("cost_kinesis_kb_per_event", m["kinesis_kb_per_event"],
              "billed KB per event (1 KB per record)", "JSON bytes per event",
              m["event_json_bytes"]),
        ratio("cost_parquet_bytes_per_event", m["parquet_bytes_per_event"], "bytes per event",
              "JSON bytes per event", m["event_json_bytes"]),
        ratio("cost_read_units_per_read", m["read_units_per_read"],
              "RRU per read (1 user, all groups)", "DynamoDB calls per read",
              m["store_calls_per_read"]),
        ratio("cost_reader_gb_s_per_read", m["reader_gb_s_per_read"],
              "GB-s per read (CPU-bound part)", "reader CPU seconds per read",
              m["reader_cpu_s_per_read"]),
    ]


def main() -> int:
    print(json.dumps(measure(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
