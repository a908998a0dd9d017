"""DynamoDB item writes per event, for each stage, Zipf(1.1) over 100,000 users and 50 live games.

Stage 1 (the stream processor) over 10 batches of 5,000 events; the audience stage over what
each batch emitted (one batch per shard of a four-shard partials stream). The baseline of each
stage writes once per input for every item it feeds: stage 1, once per event per user item
and per dedup bucket; the audience stage, once per partial per tile it carries. The target, for
each: one write per distinct item touched per batch (no item is written twice in a batch).
Outbox entries (stage 1's pending emissions) are counted apart: they are per batch, not per
item.
"""

from __future__ import annotations

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
from fastbreak.engine.layout import CUTOVER_REGISTRY_KEY, OUTBOX_PREFIX
from fastbreak.engine.partials import Partial, decode
from fastbreak.engine.records import SourceRecord, read_source, user_records
from fastbreak.engine.validation import Event
from localplatform.kinesis_events import StreamRecord, lambda_record
from localplatform.memory_dynamodb import MemoryDynamoDB
from localplatform.memory_kinesis import MemoryKinesis

EVENTS = 50_000
BATCH = 5_000


class CountingDynamoDB(MemoryDynamoDB):
    """Counts item writes (UpdateItem) by key, per batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_writes: list[tuple[str, str]] = []

    def update_item(self, **request: Any) -> dict[str, Any]:
        response = super().update_item(**request)
        self.batch_writes.append((request["Key"]["pk"]["S"], request["Key"]["sk"]["S"]))
        return response

    def take(self) -> list[tuple[str, str]]:
        taken, self.batch_writes = self.batch_writes, []
        # The outbox and the cut-over registry (written once, by the first batch) hold no
        # feature state.
        return [key for key in taken
                if not key[0].startswith(OUTBOX_PREFIX) and key != CUTOVER_REGISTRY_KEY]


def run() -> list[BenchResult]:
    table, kinesis = CountingDynamoDB(), MemoryKinesis(4)
    store = OnlineStore(table, "online", concurrency=1)
    stage1 = StreamProcessor(store, MemorySink(), CATALOG,
                             partials=PartialsSink(kinesis, "partials"))
    stage2 = AudienceMerger(store, MemorySink(), CATALOG)
    records = workload.stream(workload.events(EVENTS, seed=2))
    writes = {"stage 1": 0, "audience stage": 0}
    per_input = {"stage 1": 0, "audience stage": 0}
    twice = {"stage 1": 0, "audience stage": 0}
    partials = 0
    for start in range(0, EVENTS, BATCH):
        batch = records[start : start + BATCH]
        per_input["stage 1"] += _stage_1_baseline(stage1, batch)
        result = stage1.process([lambda_record(record) for record in batch])
        assert result.failed_sequence_numbers == []
        _count(table.take(), "stage 1", writes, twice)
        for shard in kinesis.shard_ids:
            emitted = kinesis.take(shard)
            if not emitted:
                continue
            partials += len(emitted)
            per_input["audience stage"] += sum(_tiles_in(record) for record in emitted)
            merged = stage2.process([lambda_record(record) for record in emitted])
            assert merged.failed_sequence_numbers == []
            _count(table.take(), "audience stage", writes, twice)
    results = []
    for stage in ("stage 1", "audience stage"):
        value, baseline = writes[stage] / EVENTS, per_input[stage] / EVENTS
        name = "write_amplification" if stage == "stage 1" else "write_amplification_audience"
        results.append(BenchResult(
            name, round(value, 4), f"DynamoDB item writes per event ({stage})",
            "one write per input per item it feeds", round(baseline, 4),
            round(value / baseline, 4),
            "one write per distinct item touched per batch "
            f"({twice[stage]} items written twice in a batch)", twice[stage] == 0,
        ))
    return results


def _count(keys: list[tuple[str, str]], stage: str, writes: dict[str, int],
           twice: dict[str, int]) -> None:
    writes[stage] += len(keys)
    twice[stage] += len(keys) - len(set(keys))


def _stage_1_baseline(processor: StreamProcessor, batch: list[StreamRecord]) -> int:
    """Writes if every event wrote each user item it feeds, and its dedup bucket, itself."""
    writes = 0
    for record in batch:
        event = _decode(processor, record)
        for route in processor.plan.routes.get(event.event_type, ()):
            if not route.group.sharded:
                writes += 1
        writes += 1  # the dedup bucket
    return writes


def _tiles_in(record: StreamRecord) -> int:
    partial = decode(record.data)
    assert isinstance(partial, Partial)
    return sum(len(section) for tiles in partial.groups.values() for section in tiles.values())


def _decode(processor: StreamProcessor, record: StreamRecord) -> Event:
    source = read_source(lambda_record(record), 0)
    assert isinstance(source, SourceRecord)
    decoded = user_records(source)
    assert isinstance(decoded, list)
    event = processor.admission.validator.validate(decoded[0])
    assert isinstance(event, Event)
    return event

