"""DynamoDB write requests per event, Zipf(1.1) over 100,000 users and 50 live games.

The baseline is a processor that writes once per event for every item the event feeds; the
target is one write per distinct item touched per batch, whatever the skew.
"""

from __future__ import annotations

from bench import workload
from bench.results_format import BenchResult
from fastbreak.definitions import CATALOG
from fastbreak.engine import MemorySink, OnlineStore, StreamProcessor
from fastbreak.engine.layout import dedup_bucket, dedup_key, entity_pk, group_sk, tile_sk
from fastbreak.engine.plan import LIFETIME
from fastbreak.engine.validation import Event
from localplatform.kinesis_events import StreamRecord, lambda_record
from localplatform.memory_dynamodb import MemoryDynamoDB

EVENTS = 50_000
BATCH = 5_000


def run() -> list[BenchResult]:
    table = MemoryDynamoDB()
    processor = StreamProcessor(OnlineStore(table, "online", concurrency=1), MemorySink(), CATALOG)
    records = workload.stream(workload.events(EVENTS, seed=2))
    per_event_writes = 0
    distinct_items = 0
    for start in range(0, EVENTS, BATCH):
        batch = records[start : start + BATCH]
        touched: set[tuple[str, str]] = set()
        for record in batch:
            event = _decode(processor, record)
            for route in processor.plan.routes.get(event.event_type, ()):
                group = route.group
                pk = entity_pk(group.group.entity, event.payload[route.key_field])
                if not group.sharded:
                    touched.add((pk, group_sk(group.group.name)))
                    per_event_writes += 1
                    continue
                for _, _, tile, _ in route.fold:  # one tile partial per tile size
                    start = 0 if tile == LIFETIME else event.time_ms // 1000 // tile * tile
                    touched.add((pk, tile_sk(group.group.name, tile, start, record.shard_id)))
                    per_event_writes += 1
            touched.add(dedup_key(record.shard_id, dedup_bucket(event.time_ms)))
            per_event_writes += 1
        distinct_items += len(touched)
        result = processor.process([lambda_record(record) for record in batch])
        assert result.failed_sequence_numbers == []
    writes = table.calls["UpdateItem"]
    value, baseline = writes / EVENTS, per_event_writes / EVENTS
    return [
        BenchResult(
            "write_amplification", round(value, 4), "DynamoDB write requests per event",
            "one write per event per item it feeds", round(baseline, 4),
            round(value / baseline, 4),
            f"exactly one write per distinct item touched per batch "
            f"({distinct_items / EVENTS:.4f} per event here)",
            writes == distinct_items,
        )
    ]


def _decode(processor: StreamProcessor, record: StreamRecord) -> Event:
    from fastbreak.engine.records import read_source, user_records

    source = read_source(lambda_record(record), 0)
    assert not isinstance(source, Exception)
    decoded = user_records(source)  # type: ignore[arg-type]
    assert isinstance(decoded, list)
    event = processor.admission.validator.validate(decoded[0])
    assert isinstance(event, Event)
    return event
