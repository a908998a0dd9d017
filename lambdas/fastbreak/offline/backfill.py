"""The backfill: a new or changed feature group's online state filled from the raw table.

A release that adds feature slots (a group, or a feature or tile size of one) leaves their history
before the cut-over to the backfill (``fastbreak.engine.cutover``): the live stages fold into a
slot only the records that reached the stream at or after its cut-over. The backfill folds the
others, with the rules the processor applies to them (``fastbreak.offline.replay``: refused rows,
duplicate copies, allowed lateness), into the online store:

- **user groups** (one item per user): each user's events before the cut-over are folded with
  ``ItemFold`` into the item as it is, live state included, and written back with the item's
  high-water marks plus ``backfill-{cut-over}=1.0``, conditional on the marks read. An item
  whose marks name the cut-over already has it: a re-run, or a run resumed after a crash,
  skips it (and logs it again, as the processor does for a re-delivered item);
- **audience groups** (one item per entity and tile, written by the audience stage): each
  entity's events are folded into one partial (``fold.fold_partial``), which the audience
  stage's own merger (``fastbreak.engine.audience.AudienceMerger``) applies as a record of a
  partials "shard" of its own, ``backfill-{cut-over}``, at position 1 (2, 3... for the parts of
  a partial too large for one record): the merger's marks make a re-run skip it, and the
  audience item layout stays the merger's business.

Items are written in batches, each write one conditional request; a live write in between makes
the backfill read the item again and fold on top. A crash leaves every item either done
(marked) or untouched: running again completes the job, and running it once more changes
nothing. Every write goes to the feature log, as the stages' writes do.

The raw table must hold every record that reached the stream before the cut-over: the backfill
waits ``settle_ms`` after it (Firehose buffers for up to 15 minutes).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from fastbreak.definitions import CATALOG, Catalog
from fastbreak.definitions.model import FieldType
from fastbreak.engine import item_size
from fastbreak.engine.audience import AudienceMerger
from fastbreak.engine.cutover import CutOverRegistry, CutOvers, SlotKey, pending
from fastbreak.engine.fold import Contribution, ItemFold, Tiles, fold_partial
from fastbreak.engine.layout import (
    ItemKey,
    compact_state,
    decode_hw,
    encode_hw,
    entity_pk,
    group_sk,
    state_json,
)
from fastbreak.engine.online_store import (
    ItemWrite,
    OnlineStore,
    RetryPolicy,
    StoredItem,
    StoreUnavailable,
    WriteOutcome,
)
from fastbreak.engine.partials import Partial, encoded_parts
from fastbreak.engine.plan import FUTURE_TOLERANCE_SECONDS, GroupPlan, Plan, compile_plan
from fastbreak.engine.records import SourceRecord
from fastbreak.engine.sinks import ObjectSink, object_key
from fastbreak.engine.timestamps import format_ms
from fastbreak.offline.raw_files import S3Options, open_raw
from fastbreak.offline.replay import RawEvent

# The builder's conversion of an applied row (the columns of its ``applied`` view, as here).
from fastbreak.offline.request import Progress, SilentProgress, applied_event

# Firehose buffers up to 900 s before a record reaches the raw table; and a margin.
DEFAULT_SETTLE_MS = 20 * 60 * 1000
FEATURE_LOG_PREFIX = "features/"
# Entities per round of reads and writes: BatchGetItem reads 100 keys a call.
BATCH_ENTITIES = 100
_ROUNDS = 5  # conflicts with live writes in a row before an item is left for the next run
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class BackfillError(ValueError):
    """Input the user can fix: one line naming the group, table or file."""


class BackfillIncomplete(RuntimeError):
    """Some items could not be written (the store kept refusing): run the backfill again, it
    resumes."""


def mark_name(cutover_ms: int) -> str:
    """The backfill of one cut-over, as a writer in an item's marks (and as the audience stage's
    source shard): ``backfill-{epoch ms}``."""
    return f"backfill-{cutover_ms}"


MARK_POSITION = "1.0"  # the backfill's one "record" in its marks: applied, or not


@dataclass(frozen=True)
class BackfillRequest:
    groups: tuple[str, ...]
    raw: str  # a folder or s3://bucket/prefix
    table: str
    s3: S3Options | None = None
    settle_ms: int = DEFAULT_SETTLE_MS
    dry_run: bool = False  # say what would be backfilled; read and write nothing else


@dataclass
class GroupSummary:
    group: str
    cutovers: list[int]  # the cut-overs backfilled (epoch ms)
    slots: list[str]  # "tile seconds/slot" of the slots backfilled
    entities: int = 0
    items_written: int = 0  # items written (an audience item once per partial merged into it)
    partials: int = 0  # audience partials handed to the merger (it skips those it applied)
    already_done: int = 0  # user items marked by an earlier run
    too_large: int = 0  # user items the backfill would take past DynamoDB's item limit
    conflicts: int = 0  # writes that met a live write in between, and were made again


@dataclass
class BackfillSummary:
    groups: list[GroupSummary] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Item:
    """A user item's backfill: the user's events (fold order) and the cut-overs they feed."""

    key: ItemKey
    entity_key: str
    events: list[RawEvent]


class Backfill:
    """Backfills the groups of ``request`` into the online store over ``dynamodb`` (a boto3
    client, or anything with its methods); feature-log lines and quarantine lines go to
    ``sink``."""

    def __init__(
        self, request: BackfillRequest, dynamodb: Any, sink: ObjectSink,
        catalog: Catalog = CATALOG, progress: Progress | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        retry: RetryPolicy | None = None, concurrency: int = 8,
    ) -> None:
        self.request = request
        self.catalog = catalog
        self.plan: Plan = compile_plan(catalog)
        self.store = OnlineStore(dynamodb, request.table, retry or RetryPolicy(), concurrency)
        self.sink = sink
        self.progress = progress or SilentProgress()
        self.clock_ms = clock_ms
        self.merger = AudienceMerger(self.store, sink, catalog, clock_ms=clock_ms)
        self.unwritten = 0

    # ---- the plan ------------------------------------------------------------------------------
    def cutovers(self) -> dict[str, dict[SlotKey, int]]:
        """Per requested group, its slots with history before their cut-over; ``BackfillError``
        for a group the catalog or the registry does not know."""
        unknown = [name for name in self.request.groups if name not in self.plan.groups]
        if unknown:
            raise BackfillError(
                f"unknown feature group '{unknown[0]}': the catalog has "
                f"{', '.join(sorted(self.plan.groups))}")
        try:
            registry = CutOverRegistry(self.store).read()
        except StoreUnavailable as error:
            raise BackfillError(f"cannot read table {self.request.table}: {error}") from error
        if registry is None:
            raise BackfillError(
                f"table {self.request.table} has no cut-over registry: no stream processor has "
                "run on it yet, so every feature is live from its first event")
        found: dict[str, dict[SlotKey, int]] = {}
        for name in self.request.groups:
            group = self.plan.groups[name]
            slots = [(name, kind.tile_seconds, slot.name)
                     for kind in group.kinds.values() for slot in kind.slots]
            missing = [slot for slot in slots if slot not in registry]
            if missing:
                raise BackfillError(
                    f"group {name} has no cut-over yet for {missing[0][1]}/{missing[0][2]}: the "
                    "stream processor records it at its first batch after the release that adds "
                    "it; deploy that release first")
            found[name] = pending({slot: registry[slot] for slot in slots}, [name])
        return found

    def run(self) -> BackfillSummary:
        started = time.perf_counter()
        planned = self.cutovers()
        summary = BackfillSummary()
        latest = max((start for slots in planned.values() for start in slots.values()),
                     default=0)
        ready_ms = latest + self.request.settle_ms
        if latest and not self.request.dry_run and self.clock_ms() < ready_ms:
            raise BackfillError(
                f"the raw table holds every record before the cut-over at {format_ms(latest)} "
                f"from {format_ms(ready_ms)} (Firehose delivers in up to 15 minutes): run the "
                "backfill then, or lower --settle-minutes once the delivery has caught up")
        reader: RawReader | None = None
        try:
            for name, slots in planned.items():
                group_summary = GroupSummary(
                    name, sorted(set(slots.values())),
                    sorted(f"{tile}/{slot}" for _, tile, slot in slots))
                summary.groups.append(group_summary)
                if not slots:
                    continue
                if reader is None:  # one read of the raw table for every group
                    reader = RawReader(self.request.raw, self.catalog, self.request.s3, latest)
                self._group(reader, self.plan.groups[name], CutOvers(slots), group_summary)
        finally:
            if reader is not None:
                reader.close()
        summary.seconds = time.perf_counter() - started
        if self.unwritten:
            raise BackfillIncomplete(
                f"{self.unwritten} items could not be written (the online store kept refusing "
                "them): run the backfill again, it resumes where it stopped")
        return summary

    # ---- one group ---------------------------------------------------------------------------
    def _group(self, reader: RawReader, group: GroupPlan, cutovers: CutOvers,
               summary: GroupSummary) -> None:
        before = max(cutovers.from_ms.values())
        total = reader.count_entities(group, self.plan, before)
        if self.request.dry_run:
            summary.entities = total
            return
        self.progress.stage(f"{group.group.name}: {total:,} {group.group.entity}s", total)
        batch: list[tuple[str, list[RawEvent]]] = []
        for entity in reader.entities(group, self.plan, before):
            batch.append(entity)
            if len(batch) == BATCH_ENTITIES:
                self._batch(group, cutovers, batch, summary)
                batch = []
        if batch:
            self._batch(group, cutovers, batch, summary)

    def _batch(self, group: GroupPlan, cutovers: CutOvers,
               entities: list[tuple[str, list[RawEvent]]], summary: GroupSummary) -> None:
        summary.entities += len(entities)
        if group.sharded:
            self._audience(group, cutovers, entities, summary)
        else:
            pk_of = group.group.entity
            items = [_Item((entity_pk(pk_of, key), group_sk(group.group.name)), key, events)
                     for key, events in entities]
            self._users(group, cutovers, items, summary)
        self.progress.advance(len(entities))

    # ---- user groups -------------------------------------------------------------------------
    def _users(self, group: GroupPlan, cutovers: CutOvers, items: list[_Item],
               summary: GroupSummary) -> None:
        todo = {item.key: item for item in items}
        for _ in range(_ROUNDS):
            try:
                stored = self.store.get_many(todo)
            except StoreUnavailable:
                continue
            writes: list[ItemWrite] = []
            lines: list[str] = []
            for key, item in todo.items():
                before = stored.get(key)
                write = self._user_write(group, cutovers, item, before, summary)
                if write is not None:
                    writes.append(write)
                elif before is not None and _done(before, cutovers):
                    summary.already_done += 1
                    lines.append(_log_line(group, item.entity_key, before, None))
            outcomes, _ = self.store.write_many(writes) if writes else ({}, None)
            visible_ms = self.clock_ms()
            retry: dict[ItemKey, _Item] = {}
            for write in writes:
                outcome = outcomes[write.key]
                if outcome is WriteOutcome.WRITTEN:
                    summary.items_written += 1
                    lines.append(_log_line(group, todo[write.key].entity_key, write, visible_ms))
                else:  # a live write in between (CONFLICT), or refused for now (FAILED)
                    summary.conflicts += outcome is WriteOutcome.CONFLICT
                    retry[write.key] = todo[write.key]
            self._log(lines, cutovers)
            todo = retry
            if not todo:
                return
        self.unwritten += len(todo)

    def _user_write(self, group: GroupPlan, cutovers: CutOvers, item: _Item,
                    stored: StoredItem | None, summary: GroupSummary) -> ItemWrite | None:
        """The item with the cut-overs it lacks folded in; None when it has them all (or
        nothing of it is the backfill's)."""
        marks = decode_hw(stored.hw) if stored is not None else {}
        missing = {start for start in set(cutovers.from_ms.values())
                   if mark_name(start) not in marks}
        if not missing:
            return None
        # Only the slots of the cut-overs the item lacks (another run may have done the others).
        todo = cutovers if missing == set(cutovers.from_ms.values()) else CutOvers(
            {slot: start for slot, start in cutovers.from_ms.items() if start in missing})
        contributions = _contributions(self.plan, group, todo, item.events)
        if not contributions:
            return None
        tiles: Tiles = json.loads(state_json(stored.state)) if stored is not None else {}
        fold = ItemFold(tiles, stored.event_time_ms if stored is not None else 0)
        fold.fold(contributions)
        fold.finish(group, stored is not None, FUTURE_TOLERANCE_SECONDS)
        text = _ENCODE(tiles)
        for start in missing:
            marks[mark_name(start)] = MARK_POSITION
        limit = item_size.state_limit(item.key, marks, "")  # every mark counted
        if item_size.text_bytes(text) > limit:
            # The processor refuses an event that would take an item past DynamoDB's limit;
            # a backfill that would is reported, and the item left as it is.
            summary.too_large += 1
            self._too_large(group, item)
            return None
        newest = fold.newest_ms
        return ItemWrite(
            item.key, compact_state(text), encode_hw(marks),
            stored.hw if stored is not None else None, group.expires_at(newest // 1000), newest,
            stored.version + 1 if stored is not None else 1,
        )

    # ---- audience groups -----------------------------------------------------------------------
    def _audience(self, group: GroupPlan, cutovers: CutOvers,
                  entities: list[tuple[str, list[RawEvent]]], summary: GroupSummary) -> None:
        name = group.group.name
        for start in sorted(set(cutovers.from_ms.values())):
            only = CutOvers({slot: at for slot, at in cutovers.from_ms.items() if at == start})
            shard = mark_name(start)
            records: list[dict[str, Any]] = []
            for key, events in entities:
                contributions = _contributions(self.plan, group, only, events)
                if not contributions:
                    continue
                tiles, _ = fold_partial(group, contributions)
                # One partial per (group, entity, cut-over): its identity (emission and shard)
                # and its position are the same in every run.
                partial = Partial(shard, f"backfill-{name}", start, group.group.entity, key,
                                  {name: tiles})
                records.extend(_record(shard, part, data, self.clock_ms())
                               for part, data in encoded_parts(partial))
            if records:
                summary.partials += len(records)
                self._merge(records, summary)

    def _merge(self, records: list[dict[str, Any]], summary: GroupSummary) -> None:
        """The merger over one batch of backfill partials, until it took them all (it skips
        those it applied before)."""
        for _ in range(_ROUNDS):
            result = self.merger.process(records)
            summary.items_written += result.writes.writes
            summary.conflicts += result.writes.conflicts
            if not result.failed_sequence_numbers:
                return
        self.unwritten += len(records)

    # ---- side outputs --------------------------------------------------------------------------
    def _log(self, lines: list[str], cutovers: CutOvers) -> None:
        if not lines:
            return
        shard = mark_name(min(cutovers.from_ms.values()))
        body = ("\n".join(lines) + "\n").encode()
        self._put(object_key(FEATURE_LOG_PREFIX, shard, [self._source(shard)], body), body)

    def _too_large(self, group: GroupPlan, item: _Item) -> None:
        line = json.dumps({
            "reason": "item_too_large", "groups": [group.group.name],
            "message": f"backfill not applied: item {item.key[0]} / {item.key[1]} would pass "
                       f"DynamoDB's {item_size.MAX_ITEM_BYTES // 1024} KB item limit",
            "events": len(item.events),
        })
        body = (line + "\n").encode()
        shard = "backfill"
        self._put(object_key("quarantine/", shard, [self._source(shard)], body), body)

    def _put(self, key: str, body: bytes) -> None:
        """An object of the offline store, retried; a put that keeps failing stops the run
        (the items are written: a re-run finds them done and logs them again)."""
        for attempt in range(_ROUNDS):
            try:
                self.sink.put(key, body)
                return
            except Exception:
                if attempt == _ROUNDS - 1:
                    raise
                time.sleep(0.05 * 2**attempt)

    def _source(self, shard: str) -> SourceRecord:
        """Where an object key says its lines come from: the backfill, at the time of writing."""
        return SourceRecord(0, "1", 1, shard, "", self.clock_ms(), "")


def _done(item: StoredItem, cutovers: CutOvers) -> bool:
    marks = decode_hw(item.hw)
    return all(mark_name(start) in marks for start in cutovers.from_ms.values())


def _contributions(plan: Plan, group: GroupPlan, cutovers: CutOvers,
                   events: Sequence[RawEvent]) -> list[Contribution]:
    """The group's part of ``events`` (one entity's first copies, in fold order) that the
    backfill folds: within the group's allowed lateness, into the slots whose cut-over is after
    the record's arrival."""
    found: list[Contribution] = []
    for event in events:
        for route in plan.routes.get(event.event_type, ()):
            if route.group is not group or event.arrival_ms - event.time_ms > route.lateness_ms:
                continue
            sections = cutovers.backfill(route, event.arrival_ms)
            if sections:
                found.append((event, sections))
    return found


def _record(shard: str, partial: Partial, data: bytes, now_ms: int) -> dict[str, Any]:
    """A backfill partial as a record of the partials stream, as Lambda hands the audience
    stage its records: the part number gives the position."""
    sequence = str(partial.part + 1)
    return {
        "eventID": f"{shard}:{sequence}",
        "eventSource": "aws:kinesis",
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partial.partition_key,
            "sequenceNumber": sequence,
            "data": base64.b64encode(data).decode(),
            "approximateArrivalTimestamp": now_ms / 1000,
        },
    }


def _log_line(group: GroupPlan, entity_key: str, item: ItemWrite | StoredItem,
              visible_ms: int | None) -> str:
    """A feature-log line with the processor's columns; the whole state (a backfill changes
    tiles all over the item); ``shard_id`` and ``hw`` name the backfill."""
    if isinstance(item, ItemWrite):
        pk, sk = item.key
    else:
        pk, sk = item.pk, item.sk
    marks = decode_hw(item.hw)
    shard = max((name for name in marks if name.startswith("backfill-")), default="backfill")
    return _ENCODE({
        "pk": pk, "sk": sk, "group": group.group.name, "entity": group.group.entity,
        "entity_key": entity_key, "shard_id": shard, "hw": marks.get(shard, ""),
        "version": item.version, "event_time_ms": item.event_time_ms,
        "tiles": json.loads(state_json(item.state)), "visible_ms": visible_ms,
    })


# ---- the raw table -----------------------------------------------------------------------------
class RawReader:
    """The raw table in DuckDB: each entity's applied events (first copies, in fold order) that
    reached the stream before a time (at most ``before_ms``)."""

    def __init__(self, location: str, catalog: Catalog, s3: S3Options | None,
                 before_ms: int) -> None:
        self.catalog = catalog
        if not location.startswith("s3://"):
            root = Path(location)
            if not root.is_dir():
                raise BackfillError(f"cannot read raw table {location}: no such folder")
            if next(root.rglob("*.parquet"), None) is None:
                raise BackfillError(f"cannot read raw table {location}: no Parquet files")
        self.con = duckdb.connect()
        self.con.execute("SET preserve_insertion_order = false")
        try:
            self.dataset = open_raw(location, catalog, s3)
            self.con.register("raw", self.dataset)
        except (OSError, pa.ArrowException, ValueError) as error:
            self.con.close()
            raise BackfillError(f"cannot read raw table {location}: {_first_line(error)}"
                                ) from error
        self.location = location
        self._fields = {name: tuple(f.name for f in catalog.latest(name).fields)
                        for name in catalog.event_names}
        self._timestamps = {name for name, kind in catalog.offline_columns()
                            if kind is FieldType.TIMESTAMP}
        self._prepare(before_ms)

    def close(self) -> None:
        self.con.close()

    def _prepare(self, before_ms: int) -> None:
        """The admitted rows that reached the stream before ``before_ms``, less the copies
        ``replay.first_copies`` drops (per shard and identity, all but the lowest position)."""
        payload = sorted({f for fields in self._fields.values() for f in fields})
        columns = "".join(f", {_ident(name)}" for name in payload)
        # An event is dated at most the future tolerance after it arrived: the partitions of
        # later dates hold nothing that arrived before ``before_ms``.
        last_date = format_ms(before_ms + FUTURE_TOLERANCE_SECONDS * 1000)[:10]
        try:
            self.con.execute(f"""
                CREATE OR REPLACE TEMP TABLE applied AS
                SELECT event_type, event_id, epoch_ms(event_time) AS t_ms,
                       epoch_ms(kinesis_arrival_time) AS a_ms, kinesis_shard_id AS shard,
                       kinesis_sequence_number AS seq, coalesce(kinesis_sub_sequence, 0) AS sub
                       {columns}
                FROM raw
                WHERE rejection IS NULL AND event_date <= '{last_date}'
                  AND epoch_ms(kinesis_arrival_time) < {before_ms}
                QUALIFY row_number() OVER (
                    PARTITION BY kinesis_shard_id, event_id, event_time
                    ORDER BY length(kinesis_sequence_number), kinesis_sequence_number, sub) = 1
            """)
        except (duckdb.Error, pa.ArrowException, OSError) as error:
            self.con.close()
            raise BackfillError(f"cannot read raw table {self.location}: {_first_line(error)}"
                                ) from error

    def _key_sql(self, group: GroupPlan, plan: Plan) -> str:
        cases = " ".join(
            f"WHEN {_literal(event_type)} THEN {_ident(route.key_field)}"
            for event_type in group.group.sources
            for route in plan.routes.get(event_type, ()) if route.group is group
        )
        return f"CASE event_type {cases} END"

    def count_entities(self, group: GroupPlan, plan: Plan, before_ms: int) -> int:
        ((count,),) = self.con.sql(
            f"SELECT count(DISTINCT {self._key_sql(group, plan)}) FROM applied "
            f"WHERE event_type IN ({_sources(group)}) AND a_ms < {before_ms}").fetchall()
        return int(count)

    def entities(self, group: GroupPlan, plan: Plan, before_ms: int
                 ) -> Iterator[tuple[str, list[RawEvent]]]:
        """(entity key, its first copies in fold order) for every entity of ``group`` with an
        admitted event of its sources before ``before_ms``, in key order."""
        reader = self.con.sql(f"""
            SELECT {self._key_sql(group, plan)} AS __key, * FROM applied
            WHERE event_type IN ({_sources(group)}) AND __key IS NOT NULL
              AND a_ms < {before_ms}
            ORDER BY __key, shard, length(seq), seq, sub
        """).to_arrow_reader(65_536)
        current: str | None = None
        events: list[RawEvent] = []
        for batch in reader:
            for row in batch.to_pylist():
                key = row["__key"]
                if key != current:
                    if current is not None:
                        yield current, events
                    current, events = key, []
                events.append(applied_event(row, self._fields[row["event_type"]],
                                         self._timestamps))
        if current is not None:
            yield current, events


def _sources(group: GroupPlan) -> str:
    return ", ".join(_literal(source) for source in group.group.sources)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
