"""The backfill on the in-process DynamoDB: a release adds an audience group and a feature of a
user group to a running platform; the new version records their cut-over, takes over from the
old one through a canary, and the backfill folds the history before the cut-over while the live
stages go on, with a crash in the middle of a run. The online store must then answer exactly
what a platform that ran the new catalog from the start answers."""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastbreak.definitions.model import Catalog
from fastbreak.engine import MemorySink, ProcessorSettings
from fastbreak.engine.cutover import CutOverRegistry
from fastbreak.engine.layout import decode_hw
from fastbreak.offline.backfill import Backfill, BackfillError, BackfillRequest, mark_name
from localplatform.kinesis_events import StreamRecord, lambda_record
from localplatform.memory_dynamodb import MemoryDynamoDB
from tests.fixtures.offline import (
    MINUTE,
    OFFLINE_CATALOG,
    T0,
    Online,
    Sent,
    document,
    stream_records,
    write_raw_table,
)
from tests.fixtures.two_stages import TwoStages

SHARDS = ("shardId-000000000000", "shardId-000000000001")
DEPLOY = T0 + 15 * MINUTE  # the release reaches the first batch (arrival times)
CANARY_END = DEPLOY + 5 * MINUTE  # until then the old version still processes some batches
DELAY = 10 * MINUTE  # the processor's cut-over delay
AS_OF = T0 + 42 * MINUTE


def previous_catalog() -> Catalog:
    """The release before: no item_stats group, and user_stats without top_items."""
    user_stats = next(g for g in OFFLINE_CATALOG.groups if g.name == "user_stats")
    older = dataclasses.replace(user_stats, features=tuple(
        f for f in user_stats.features if f.name != "top_items"))
    return dataclasses.replace(OFFLINE_CATALOG, groups=(older,)).validate()


def workload(seed: int) -> list[StreamRecord]:
    """40 minutes of views and buys of 8 users and 10 items over two shards, out of order,
    with producer duplicates and events later than a group's allowed lateness."""
    rng = random.Random(seed)
    sent: list[Sent] = []
    for n in range(900):
        time_ms = T0 + rng.randrange(38 * MINUTE)
        user, item = f"u{rng.randrange(8)}", f"i{rng.randrange(10)}"
        kind = rng.choice(["view", "view", "buy"])
        fields: dict[str, Any] = {"user_id": user, "item_id": item,
                                  "amount": rng.randint(1, 40) / 4}
        if kind == "view" and rng.random() < 0.5:
            fields["qty"] = rng.randint(1, 5)
        delay = rng.choice([rng.randint(0, 90_000)] * 8 + [rng.randint(6, 12) * MINUTE])
        payload = json.dumps(document(kind, f"e{n}", time_ms, **fields)).encode()
        shard = SHARDS[zlib.crc32(user.encode()) % 2]
        sent.append(Sent(payload, time_ms + delay, shard))
        if rng.random() < 0.05:  # a producer retry: the same event again, later
            sent.append(Sent(payload, time_ms + delay + rng.randint(1, 120_000), shard))
    return stream_records(sent)


class Live:
    """The stream, delivered shard by shard in batches; each batch to the old or the new
    version of both stages, as a canary does."""

    def __init__(self, records: list[StreamRecord], table: MemoryDynamoDB, seed: int) -> None:
        sink = MemorySink()
        self.old = TwoStages(table, sink, previous_catalog(), clock_ms=lambda: DEPLOY - MINUTE)
        self.new = TwoStages(table, sink, OFFLINE_CATALOG, clock_ms=lambda: DEPLOY,
                             settings=ProcessorSettings(cutover_delay_ms=DELAY))
        rng = random.Random(seed)
        self.batches: list[list[StreamRecord]] = []
        for shard in SHARDS:
            pending = [r for r in records if r.shard_id == shard]
            while pending:
                size = rng.randint(5, 25)
                self.batches.append(pending[:size])
                pending = pending[size:]
        self.batches.sort(key=lambda batch: batch[-1].arrival)
        self.rng = rng
        self.done = 0
        self.lock = threading.Lock()

    def deliver(self, until_ms: int | None = None) -> None:
        """Every batch that ends before ``until_ms`` (everything left for None)."""
        while self.done < len(self.batches):
            batch = self.batches[self.done]
            last_ms = round(batch[-1].arrival * 1000)
            if until_ms is not None and last_ms >= until_ms:
                return
            self.next_batch()

    def next_batch(self) -> bool:
        with self.lock:  # the backfill writes from several threads: one batch at a time
            if self.done == len(self.batches):
                return False
            batch = self.batches[self.done]
            self.done += 1
            last_ms = round(batch[-1].arrival * 1000)
            canary = DEPLOY <= last_ms < CANARY_END and self.rng.random() < 0.5
            version = self.old if last_ms < DEPLOY or canary else self.new
            result = version.process([lambda_record(record) for record in batch])
            assert result.failed_sequence_numbers == [], result
            return True


class Crash(BaseException):
    """The backfill's process dies."""


class BackfillClient:
    """The backfill's view of DynamoDB: before some of its writes a live batch lands first
    (the write then meets an item that moved on), and a crash after ``crash_after`` writes."""

    def __init__(self, table: MemoryDynamoDB, live: Live | None,
                 crash_after: int | None = None) -> None:
        self.table, self.live, self.crash_after = table, live, crash_after
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.table, name)

    def update_item(self, **request: Any) -> dict[str, Any]:
        if self.crash_after is not None and self.writes >= self.crash_after:
            raise Crash
        self.writes += 1
        if self.live is not None and self.writes % 3 == 1:
            self.live.next_batch()
        return self.table.update_item(**request)


def backfill(folder: Path, client: Any, sink: MemorySink, groups: tuple[str, ...] = (
        "user_stats", "item_stats")) -> Any:
    request = BackfillRequest(groups, str(folder / "raw"), "online", settle_ms=0)
    # One write at a time: the live batches land at the same points of every run.
    return Backfill(request, client, sink, OFFLINE_CATALOG, concurrency=1).run()


def answers(read: Any, records: list[StreamRecord], at_ms: int) -> dict[tuple[str, str], Any]:
    users = {json.loads(r.data)["user_id"] for r in records}
    items = {json.loads(r.data)["item_id"] for r in records}
    return {(group, key): read(group, key, at_ms)
            for group, keys in (("user_stats", users), ("item_stats", items)) for key in keys}


@pytest.fixture(scope="module")
def records() -> list[StreamRecord]:
    return workload(7)


@pytest.fixture(scope="module")
def expected(records: list[StreamRecord]) -> Iterator[Any]:
    """A platform that ran the new catalog from the start."""
    online = Online()
    online.process(records)
    yield online


def test_a_backfill_that_overlaps_live_traffic_and_crashes_equals_a_platform_that_had_the_group_from_the_start(  # noqa: E501
    tmp_path: Path, records: list[StreamRecord], expected: Online,
) -> None:
    write_raw_table(records, tmp_path / "raw")
    table = MemoryDynamoDB()
    live = Live(records, table, seed=11)
    live.deliver(until_ms=DEPLOY + DELAY + 3 * MINUTE)
    registry = CutOverRegistry(TwoStages(table).store).read()
    assert registry is not None
    cutover = DEPLOY + DELAY
    assert registry[("item_stats", 60, "views")] == cutover
    assert registry[("user_stats", 0, "top_items")] == cutover
    assert registry[("user_stats", 60, "views")] == 0  # live since the start

    sink = MemorySink()
    with pytest.raises(Crash):  # the first run dies part of the way
        backfill(tmp_path, BackfillClient(table, live, crash_after=4), sink)
    resumed = backfill(tmp_path, BackfillClient(table, live), sink)
    live.deliver()
    assert {g.group: g.cutovers for g in resumed.groups} == {
        "user_stats": [cutover], "item_stats": [cutover]}
    assert resumed.groups[0].already_done > 0  # what the crashed run wrote is not redone
    # live writes landed between the backfill's reads and writes, in both kinds of group
    assert all(group.conflicts > 0 for group in resumed.groups), resumed

    read = Online(OFFLINE_CATALOG)
    read.table = table
    for at in (cutover - 4 * MINUTE, cutover + 2 * MINUTE, AS_OF):
        got, want = answers(read.read, records, at), answers(expected.read, records, at)
        diff = {k: {f: (got[k][f], v) for f, v in want[k].items() if got[k][f] != v} for k in want}
        assert {k: v for k, v in diff.items() if v} == {}, at

    # Once more: nothing left to write; the user items are logged again, as written.
    before = {key: dict(item) for key, item in table.items.items()}
    again = backfill(tmp_path, table, sink)
    assert sum(g.items_written for g in again.groups) == 0
    assert {key: item for key, item in table.items.items()} == before
    user_items = [key for key in table.items if key[1] == "user_stats"]
    assert user_items and all(
        mark_name(cutover) in decode_hw(table.items[key]["hw"]["S"]) for key in user_items)
    logged = [json.loads(line) for key, body in sink.objects.items()
              if key.startswith("features/") for line in body.splitlines()]
    assert {line["shard_id"] for line in logged} == {mark_name(cutover)} | {
        line["shard_id"] for line in logged if line["shard_id"].startswith("partials/")}


def test_a_group_live_since_the_registry_was_created_has_nothing_to_backfill(
    tmp_path: Path, records: list[StreamRecord],
) -> None:
    write_raw_table(records[:50], tmp_path / "raw")
    stages = TwoStages(catalog=OFFLINE_CATALOG)
    stages.process([lambda_record(record) for record in records[:50]])
    summary = backfill(tmp_path, stages.table, MemorySink())
    assert [(g.group, g.cutovers, g.items_written) for g in summary.groups] == [
        ("user_stats", [], 0), ("item_stats", [], 0)]


def test_the_backfill_waits_until_the_raw_table_holds_the_records_before_the_cut_over(
    tmp_path: Path, records: list[StreamRecord],
) -> None:
    write_raw_table(records, tmp_path / "raw")
    table = MemoryDynamoDB()
    Live(records, table, seed=3).deliver(until_ms=DEPLOY + MINUTE)
    request = BackfillRequest(("item_stats",), str(tmp_path / "raw"), "online")
    early = Backfill(request, table, MemorySink(), OFFLINE_CATALOG,
                     clock_ms=lambda: DEPLOY + DELAY + 5 * MINUTE)
    with pytest.raises(BackfillError) as refused:
        early.run()
    assert "cut-over at 2026-11-26T18:55:00.000Z from 2026-11-26T19:15:00.000Z" in str(
        refused.value)


@pytest.mark.parametrize(("groups", "message"), [
    (("nope",), "unknown feature group 'nope'"),
])
def test_an_unknown_group_is_refused_by_name(tmp_path: Path, groups: tuple[str, ...],
                                             message: str) -> None:
    with pytest.raises(BackfillError, match=message):
        backfill(tmp_path, MemoryDynamoDB(), MemorySink(), groups)


def test_a_table_no_processor_has_run_on_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackfillError, match="no cut-over registry"):
        backfill(tmp_path, MemoryDynamoDB(), MemorySink())
