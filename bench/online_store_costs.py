"""What the online store costs in steady state: requests and DynamoDB capacity units per event.

    .venv/bin/python -m bench.online_store_costs [--batches N]

Runs the processor over N batches of 5,000 events of the benchmark workload (Zipf(1.1) over
100,000 users and 20,000 contents, 50 live games), 30 s of event time each, against the
in-process DynamoDB, and reports the second half (items have grown to steady state by then):
write requests, write units (1 KB of item per unit, the larger of before and after, as
DynamoDB bills an UpdateItem), strongly consistent read units (4 KB per unit) per event, and
the largest item. Item sizes follow DynamoDB's rule: attribute names plus values (strings and
binaries by length, numbers about one byte per two digits).

Not part of ``make bench`` (no target of its own); ``docs/online-store-layout.md`` ("Costs")
quotes it.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from bench import workload
from fastbreak.definitions import CATALOG
from fastbreak.engine import MemorySink, OnlineStore, StreamProcessor
from localplatform.kinesis_events import SEQUENCE_BASE, StreamRecord, lambda_record
from localplatform.memory_dynamodb import MemoryDynamoDB

BATCH = 5_000
BATCH_SPAN_MS = 30_000


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


class MeteredDynamoDB(MemoryDynamoDB):
    """The in-process DynamoDB, counting capacity units as DynamoDB bills them."""

    def __init__(self) -> None:
        super().__init__()
        self.write_units = 0
        self.read_units = 0
        self.largest_item = 0

    def update_item(self, **request: Any) -> dict[str, Any]:
        key = (request["Key"]["pk"]["S"], request["Key"]["sk"]["S"])
        before = self.items.get(key)
        response = super().update_item(**request)
        after = item_bytes(self.items[key])
        self.largest_item = max(self.largest_item, after)
        biggest = max(after, item_bytes(before) if before is not None else 0)
        self.write_units += math.ceil(biggest / 1024)
        return response

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        response = super().batch_get_item(RequestItems)
        for items in response["Responses"].values():
            self.read_units += sum(math.ceil(item_bytes(item) / 4096) for item in items)
        return response


def measure(batches: int) -> dict[str, float]:
    table = MeteredDynamoDB()
    processor = StreamProcessor(OnlineStore(table, "online", concurrency=1), MemorySink(),
                                CATALOG)
    sequence = SEQUENCE_BASE
    half = batches // 2
    start: tuple[int, int, int] = (0, 0, 0)
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
            start = (table.calls["UpdateItem"], table.write_units, table.read_units)
        result = processor.process(records)
        assert result.failed_sequence_numbers == [], result.failed_sequence_numbers
    events = (batches - half) * BATCH
    writes, write_units, read_units = (
        now - then for now, then in zip(
            (table.calls["UpdateItem"], table.write_units, table.read_units), start, strict=True
        )
    )
    return {
        "events_measured": events,
        "write_requests_per_event": round(writes / events, 3),
        "write_units_per_event": round(write_units / events, 3),
        "read_units_per_event": round(read_units / events, 3),
        "largest_item_bytes": table.largest_item,
        "items_stored": len(table.items),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.online_store_costs")
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.batches), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
