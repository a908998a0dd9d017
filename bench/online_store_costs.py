"""What the online store costs in steady state: requests and DynamoDB capacity units per event,
for the whole pipeline (stage 1 and the audience stage).

    .venv/bin/python -m bench.online_store_costs [--batches N]

Runs the stream processor over N batches of 5,000 events of the benchmark workload (Zipf(1.1)
over 100,000 users and 20,000 contents, 50 live games), 30 s of event time each, and the
audience stage over what each batch emitted (one batch per shard of a four-shard partials
stream: no partial of one stage-1 batch is merged with another's, the least coalescing a
deployment sees), against the in-process DynamoDB, which counts capacity units as DynamoDB bills
them: an UpdateItem or PutItem costs 1 write unit per KB of the larger of the item before and
after, a DeleteItem 1 per KB of the item deleted, a strongly consistent read 1 read unit per
4 KB (and 1 for a key with no item). Reports the second half (items have grown to steady state
by then): write units per event, in all and by item kind, read units, and the largest item (in
all and by kind).
Item sizes follow DynamoDB's rule: attribute names plus values (strings and binaries by length,
numbers about one byte per two digits).

``make bench`` runs it (``run``) against the target of at most 1.0 write unit per event;
``docs/online-store-layout.md`` ("Costs") quotes it.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from typing import Any

from bench import workload
from bench.results_format import BenchResult
from fastbreak.definitions import CATALOG
from fastbreak.engine import (
    AudienceMerger,
    MemorySink,
    OnlineStore,
    PartialsSink,
    StreamProcessor,
)
from fastbreak.engine.layout import CUTOVER_REGISTRY_KEY, DEDUP_PREFIX, OUTBOX_PREFIX
from localplatform.kinesis_events import SEQUENCE_BASE, StreamRecord, lambda_record
from localplatform.memory_dynamodb import MemoryDynamoDB
from localplatform.memory_kinesis import MemoryKinesis

BATCH = 5_000
BATCH_SPAN_MS = 30_000
PARTIALS_SHARDS = 4
TARGET_WRITE_UNITS = 1.0


def item_bytes(item: dict[str, dict[str, Any]]) -> int:
    size = 0
    for name, value in item.items():
        ((kind, data),) = value.items()
        size += len(name.encode())
        if kind == "S":
            size += len(data.encode())
        elif kind == "B":
            size += len(data)
        else:
            size += len(data) // 2 + 1
    return size


def kind_of(key: tuple[str, str]) -> str:
    """What an item is, for the breakdown: a group, an audience group's items, a memory, the
    outbox."""
    pk, sk = key
    if pk.startswith(OUTBOX_PREFIX):
        return "outbox"
    if pk.startswith(DEDUP_PREFIX):
        return "audience dedup memory" if "/" in pk else "dedup memory"
    if key == CUTOVER_REGISTRY_KEY:
        return "cut-over registry"
    return sk.split("#", 1)[0]


class MeteredDynamoDB(MemoryDynamoDB):
    """The in-process DynamoDB, counting capacity units as DynamoDB bills them."""

    def __init__(self) -> None:
        super().__init__()
        self.write_units = 0
        self.read_units = 0
        self.largest_item = 0
        self.units_by_kind: Counter[str] = Counter()
        self.largest_by_kind: Counter[str] = Counter()

    def _wrote(self, key: tuple[str, str], before: dict[str, Any] | None) -> None:
        after = self.items.get(key)
        after_size = item_bytes(after) if after is not None else 0
        self.largest_item = max(self.largest_item, after_size)
        units = max(1, math.ceil(max(after_size, item_bytes(before) if before else 0) / 1024))
        self.write_units += units
        kind = kind_of(key)
        self.units_by_kind[kind] += units
        self.largest_by_kind[kind] = max(self.largest_by_kind[kind], after_size)

    def update_item(self, **request: Any) -> dict[str, Any]:
        key = (request["Key"]["pk"]["S"], request["Key"]["sk"]["S"])
        before = self.items.get(key)
        response = super().update_item(**request)
        self._wrote(key, before)
        return response

    def put_item(self, **request: Any) -> dict[str, Any]:
        key = (request["Item"]["pk"]["S"], request["Item"]["sk"]["S"])
        before = self.items.get(key)
        response = super().put_item(**request)
        self._wrote(key, before)
        return response

    def delete_item(self, **request: Any) -> dict[str, Any]:
        key = (request["Key"]["pk"]["S"], request["Key"]["sk"]["S"])
        before = self.items.get(key)
        response = super().delete_item(**request)
        self._wrote(key, before)
        return response

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        response = super().batch_get_item(RequestItems)
        for table, items in response["Responses"].items():
            self.read_units += sum(math.ceil(item_bytes(item) / 4096) for item in items)
            # A key with no item still costs a read's minimum (one unit, strongly consistent).
            self.read_units += len(RequestItems[table]["Keys"]) - len(items)
        return response

    def query(self, **request: Any) -> dict[str, Any]:
        response = super().query(**request)
        size = sum(item_bytes(item) for item in response["Items"])
        self.read_units += max(1, math.ceil(size / 4096))  # a Query costs one unit at least
        return response


class Pipeline:
    """Both stages over one metered table and an in-process partials stream."""

    def __init__(self, table: MeteredDynamoDB) -> None:
        self.table = table
        self.kinesis = MemoryKinesis(PARTIALS_SHARDS)
        store = OnlineStore(table, "online", concurrency=1)
        self.stage1 = StreamProcessor(store, MemorySink(), CATALOG,
                                      partials=PartialsSink(self.kinesis, "partials"))
        self.stage2 = AudienceMerger(store, MemorySink(), CATALOG)
        self.partials = 0
        self.partial_bytes = 0
        self.stage1_writes = 0
        self.stage2_writes = 0

    def process(self, records: list[dict[str, Any]]) -> None:
        before = self.table.calls["UpdateItem"]
        result = self.stage1.process(records)
        assert result.failed_sequence_numbers == [], result.failed_sequence_numbers
        self.stage1_writes += self.table.calls["UpdateItem"] - before
        for shard in self.kinesis.shard_ids:
            partials = self.kinesis.take(shard)
            if not partials:
                continue
            self.partials += len(partials)
            self.partial_bytes += sum(len(p.data) + len(p.partition_key) for p in partials)
            before = self.table.calls["UpdateItem"]
            merged = self.stage2.process([lambda_record(record) for record in partials])
            assert merged.failed_sequence_numbers == [], merged.failed_sequence_numbers
            self.stage2_writes += self.table.calls["UpdateItem"] - before


def measure(batches: int) -> dict[str, Any]:
    table = MeteredDynamoDB()
    pipeline = Pipeline(table)
    sequence = SEQUENCE_BASE
    half = batches // 2
    start: dict[str, Any] = {}
    for batch in range(batches):
        start_ms = workload.T0 + batch * BATCH_SPAN_MS
        payloads = workload.events(BATCH, seed=batch + 10, start_ms=start_ms,
                                   span_ms=BATCH_SPAN_MS)
        arrival_s = (start_ms + BATCH_SPAN_MS) / 1000 + 30
        records = [
            lambda_record(StreamRecord(str(sequence + n), "pk", payload, arrival_s))
            for n, payload in enumerate(payloads)
        ]
        sequence += BATCH
        if batch == half:
            start = {"writes": table.calls["UpdateItem"] + table.calls["PutItem"]
                     + table.calls["DeleteItem"], "write_units": table.write_units,
                     "read_units": table.read_units, "by_kind": Counter(table.units_by_kind),
                     "stage1": pipeline.stage1_writes, "stage2": pipeline.stage2_writes,
                     "partials": pipeline.partials, "partial_bytes": pipeline.partial_bytes}
        pipeline.process(records)
    events = (batches - half) * BATCH
    by_kind = table.units_by_kind - start["by_kind"]
    writes = (table.calls["UpdateItem"] + table.calls["PutItem"] + table.calls["DeleteItem"]
              - start["writes"])
    return {
        "events_measured": events,
        "write_requests_per_event": round(writes / events, 3),
        "write_units_per_event": round((table.write_units - start["write_units"]) / events, 3),
        "write_units_per_event_by_item": {kind: round(units / events, 3)
                                          for kind, units in sorted(by_kind.items())},
        "stage_1_item_writes_per_event": round(
            (pipeline.stage1_writes - start["stage1"]) / events, 3),
        "audience_stage_item_writes_per_event": round(
            (pipeline.stage2_writes - start["stage2"]) / events, 3),
        "partials_per_event": round((pipeline.partials - start["partials"]) / events, 3),
        "partial_bytes_per_event": round(
            (pipeline.partial_bytes - start["partial_bytes"]) / events, 1),
        "read_units_per_event": round((table.read_units - start["read_units"]) / events, 3),
        "largest_item_bytes": table.largest_item,
        "largest_item_bytes_by_item": dict(sorted(table.largest_by_kind.items())),
        "items_stored": len(table.items),
    }


def run() -> list[BenchResult]:
    measured = measure(60)
    value = measured["write_units_per_event"]
    requests = measured["write_requests_per_event"]
    return [BenchResult(
        "online_store_costs", value, "DynamoDB write units per event (both stages)",
        "DynamoDB write requests per event (both stages)", requests,
        round(value / requests, 4), f"<= {TARGET_WRITE_UNITS} write unit per event",
        value <= TARGET_WRITE_UNITS,
    )]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.online_store_costs")
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.batches), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
