"""One Kinesis batch in, one write per touched item out: the exactly-once stream processor.

For each shard in the batch (a Lambda batch holds one):

1. decode and validate every record; invalid ones go to the quarantine object, never blocking
   the shard;
2. drop producer duplicates (same event id and event-time bucket) seen in this batch or
   remembered in the shard's dedup items;
3. route each event to the items it feeds (late beyond a group's allowed lateness: routed to
   the quarantine object with reason ``too_late``, not applied);
4. read every touched item once (consistent), fold in only the events past the item's
   high-water mark for this shard, and write the absolute new state with a condition on the
   marks that were read: one write per touched item, idempotent under any re-delivery
   (an item is a user's group item, or one tile partial of a game or content group, see
   ``fastbreak.engine.layout``);
5. write the feature log, then remember the ids of the events now fully applied.

Anything that fails makes the batch report its lowest affected sequence number and every
later one; Lambda re-delivers from there and step 4 skips what was already applied.
``docs/exactly-once.md`` gives the argument.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any

from fastbreak.definitions.model import Catalog
from fastbreak.engine.admission import Admission
from fastbreak.engine.fold import ItemFold, Tiles
from fastbreak.engine.hll import hash64
from fastbreak.engine.layout import (
    DEDUP_BUCKET_SECONDS,
    ItemKey,
    decode_hw,
    decode_position,
    dedup_bucket,
    dedup_key,
    encode_hw,
    encode_position,
    group_sk,
    tile_sk_head,
)
from fastbreak.engine.online_store import (
    ItemWrite,
    OnlineStore,
    StoredItem,
    StoreUnavailable,
    WriteOutcome,
    WriteStats,
)
from fastbreak.engine.plan import (
    FUTURE_TOLERANCE_SECONDS,
    LIFETIME,
    FoldSection,
    GroupPlan,
    Plan,
    Route,
    TileKind,
    compile_plan,
)
from fastbreak.engine.records import Position, SourceRecord, read_source, user_records
from fastbreak.engine.rejections import Reason, Rejection
from fastbreak.engine.sinks import ObjectSink
from fastbreak.engine.timestamps import format_ms
from fastbreak.engine.validation import Event

_NOTHING_APPLIED: Position = (-1, -1)
# DynamoDB's item limit (names and values, UTF-8). Group items are sized at synth to stay far
# below it; values much longer than the estimate can still push one over, and a refused write
# would fail the batch on every retry: such an item is not written, its events are routed.
MAX_ITEM_BYTES = 400 * 1024
_CONFLICT_ROUNDS = 3
_ID = struct.Struct(">Q")
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# What JSONEncoder.encode builds on every call (two thirds of its cost on the small states of
# the hot path), built once: same output. No cycle check: states are trees. CPython has had
# the C encoder since 2.6; anything else falls back to the public method.
_C_MAKE_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE = (
    _C_MAKE_ENCODER(None, _ENCODER.default, encode_basestring, None, ":", ",", False, False, True)
    if _C_MAKE_ENCODER is not None else None
)


def _encode(document: Any) -> str:
    if _C_ENCODE is None:  # pragma: no cover
        return _ENCODER.encode(document)
    return "".join(_C_ENCODE(document, 0))


@dataclass(frozen=True)
class ProcessorSettings:
    quarantine_prefix: str = "quarantine/"
    feature_log_prefix: str = "features/"
    future_tolerance_ms: int = FUTURE_TOLERANCE_SECONDS * 1000  # see ``Admission``


@dataclass
class BatchResult:
    failed_sequence_numbers: list[str] = field(default_factory=list)
    records_in: int = 0
    records_valid: int = 0
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
    late_events: int = 0
    duplicate_events: int = 0
    items_too_large: int = 0
    writes: WriteStats = field(default_factory=WriteStats)
    dedup_writes: int = 0
    freshness_lag_ms: int | None = None

    def batch_item_failures(self) -> dict[str, list[dict[str, str]]]:
        return {
            "batchItemFailures": [
                {"itemIdentifier": sequence} for sequence in self.failed_sequence_numbers
            ]
        }


@dataclass
class _Routed:
    """A record that is not applied, as written to the quarantine object."""

    reason: Reason
    message: str
    source: SourceRecord | None
    sub_index: int | None = None
    payload: bytes | None = None
    event_id: str | None = None
    groups: tuple[str, ...] = ()
    raw: Any = None

    def line(self) -> dict[str, Any]:
        line: dict[str, Any] = {"reason": self.reason.value, "message": self.message}
        if self.source is not None:
            line.update(
                sequence_number=self.source.sequence_number,
                shard_id=self.source.shard_id,
                partition_key=self.source.partition_key,
                approximate_arrival=format_ms(self.source.arrival_ms),
            )
        if self.sub_index is not None:
            line["sub_index"] = self.sub_index
        if self.event_id is not None:
            line["event_id"] = self.event_id
        if self.groups:
            line["groups"] = list(self.groups)
        if self.payload is not None:
            line["payload"] = self.payload.decode("utf-8", "backslashreplace")
        elif self.source is not None:
            line["data"] = self.source.data
        else:
            line["record"] = self.raw
        return line


class _Pending:
    """Everything this batch contributes to one item (contributions in position order)."""

    __slots__ = (
        "contributions", "entity_key", "first_new", "group", "log_head", "new", "position",
        "tile", "touched",
    )

    def __init__(
        self, group: GroupPlan, entity_key: str, log_head: str,
        tile: tuple[TileKind, int] | None = None,
    ) -> None:
        self.group = group
        self.entity_key = entity_key
        self.log_head = log_head  # the feature-log line's constant middle, see _log_line
        self.tile = tile  # (kind, tile start) of a tile partial; None for a group item
        # (event, the route sections it feeds in this item), in position order
        self.contributions: list[tuple[Event, tuple[FoldSection, ...]]] = []
        self.first_new: Position = _NOTHING_APPLIED
        self.new: list[tuple[Event, tuple[FoldSection, ...]]] = []  # of the last computed write
        # What the last computed write changed: its tiles (None: all of them) and this
        # shard's new high-water mark.
        self.touched: dict[str, dict[str, Any]] | None = None
        self.position = ""


class StreamProcessor:
    def __init__(
        self,
        store: OnlineStore,
        sink: ObjectSink,
        catalog: Catalog,
        settings: ProcessorSettings | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.store = store
        self.sink = sink
        self.plan: Plan = compile_plan(catalog)
        self.settings = settings or ProcessorSettings()
        self.admission = Admission(catalog, self.settings.future_tolerance_ms)
        # tile start (epoch s) -> its key in an item's state; refilled per batch
        self._tile_keys: dict[int, str] = {}
        self.clock_ms = clock_ms

    # ---- the batch -----------------------------------------------------------------------
    def process(self, records: Sequence[Any]) -> BatchResult:
        result = BatchResult()
        by_shard: dict[str, tuple[list[SourceRecord], list[Event], list[_Routed]]] = {}
        unattributed: list[_Routed] = []
        for index, raw in enumerate(records):
            source = read_source(raw, index)
            if isinstance(source, Rejection):
                result.records_in += 1
                unattributed.append(_Routed(source.reason, source.message, None, raw=raw))
                continue
            sources, events, routed = by_shard.setdefault(source.shard_id, ([], [], []))
            sources.append(source)
            self._decode(source, result, events, routed)
        for rejected in unattributed:
            _count_invalid(result, rejected.reason)
        if unattributed:
            # These records cannot be retried by sequence number; a failed put only loses
            # the copy in S3 (the record itself stays in the stream until it expires).
            self._put_lines("unattributed", unattributed, _put_ok_anyway=True)
        for shard_id, (sources, events, routed) in by_shard.items():
            lowest_failed = self._process_shard(shard_id, sources, events, routed, result)
            if lowest_failed is not None:
                result.failed_sequence_numbers.extend(
                    s.sequence_number for s in sources if s.sequence >= lowest_failed[0]
                )
        return result

    def _decode(
        self, source: SourceRecord, result: BatchResult, events: list[Event],
        routed: list[_Routed],
    ) -> None:
        decoded = user_records(source)
        if isinstance(decoded, Rejection):
            result.records_in += 1
            _count_invalid(result, decoded.reason)
            routed.append(_Routed(decoded.reason, decoded.message, source))
            return
        admit = self.admission.admit
        for record in decoded:
            result.records_in += 1
            outcome = admit(record)
            if isinstance(outcome, Rejection):
                _count_invalid(result, outcome.reason)
                routed.append(
                    _Routed(outcome.reason, outcome.message, source, record.sub_index,
                            record.payload)
                )
            else:
                result.records_valid += 1
                events.append(outcome)

    # ---- one shard ---------------------------------------------------------------------------
    def _process_shard(
        self, shard_id: str, sources: list[SourceRecord], events: list[Event],
        routed: list[_Routed], result: BatchResult,
    ) -> Position | None:
        """Apply the shard's events; return the lowest position that must be re-delivered."""
        first: Position = (sources[0].sequence, 0)
        events.sort(key=_position)
        events, ids = _first_copies(shard_id, events, result)
        pending = self._route(shard_id, events, routed, result)
        lowest: Position | None = None
        dedup_keys = {key for key, _ in ids.values()}
        try:
            stored = self.store.get_many([*pending, *dedup_keys])
        except StoreUnavailable:
            return first
        duplicates = _remembered(ids, stored)
        result.duplicate_events += len(duplicates)
        self._tile_keys.clear()
        outcome = self._write_items(shard_id, pending, stored, duplicates, result)
        if outcome is None:
            return first
        failed_at, log_lines, too_large = outcome
        lowest = _lower(lowest, failed_at)
        routed.extend(too_large)
        if routed and not self._put_lines(shard_id, routed):
            lowest = _lower(lowest, min((r.source.sequence, 0) for r in routed if r.source))
        if log_lines and not self._put_feature_log(shard_id, sources, log_lines):
            return first
        applied = [
            event for event in events
            if event.event_id not in duplicates and (lowest is None or event.position < lowest)
        ]
        lowest = _lower(lowest, self._remember(shard_id, applied, ids, stored, result))
        applied_arrivals = [e.record.source.arrival_ms for e in applied]
        if applied_arrivals:
            result.freshness_lag_ms = max(
                result.freshness_lag_ms or 0, self.clock_ms() - min(applied_arrivals)
            )
        return lowest

    def _route(
        self, shard_id: str, events: list[Event], routed: list[_Routed], result: BatchResult
    ) -> dict[ItemKey, _Pending]:
        pending: dict[ItemKey, _Pending] = {}
        table = self._route_table(shard_id)
        for event in events:
            routes = table.get(event.event_type)
            if routes is None:
                continue
            lateness = event.record.source.arrival_ms - event.time_ms
            payload = event.payload
            late_groups: list[str] | None = None
            for route, pk_prefix, sk, log_head, partials in routes:
                if lateness > route.lateness_ms:
                    group = route.group.group.name
                    if late_groups is None:
                        late_groups = [group]
                    elif group not in late_groups:
                        late_groups.append(group)
                    continue
                entity_key = payload[route.key_field]
                pk = pk_prefix + entity_key
                if sk is not None:  # a group item: every section of the route
                    key = (pk, sk)
                    item = pending.get(key)
                    if item is None:
                        item = pending[key] = _Pending(route.group, entity_key, log_head)
                    item.contributions.append((event, route.fold))
                    continue
                time_s = event.time_ms // 1000
                for fold, sk_head, tile_starts in partials:  # one tile partial per section
                    kind = fold[0][0]
                    tile_seconds = kind.tile_seconds
                    start = time_s - time_s % tile_seconds if tile_seconds != LIFETIME else 0
                    tile_sk = tile_starts.get(start)
                    if tile_sk is None:
                        tile_sk = tile_starts[start] = (
                            sk_head if tile_seconds == LIFETIME else f"{sk_head}{start:011d}"
                        )
                    key = (pk, tile_sk)
                    item = pending.get(key)
                    if item is None:
                        item = pending[key] = _Pending(
                            route.group, entity_key, log_head, (kind, start)
                        )
                    item.contributions.append((event, fold))
            if late_groups is not None:
                result.late_events += 1
                routed.append(
                    _Routed(
                        Reason.TOO_LATE,
                        f"arrived {lateness // 1000} s after its event time, beyond the "
                        "allowed lateness of these groups",
                        event.record.source, event.record.sub_index, event.record.payload,
                        event.event_id, tuple(late_groups),
                    )
                )
        return pending

    def _route_table(self, shard_id: str) -> dict[str, tuple[_RouteEntry, ...]]:
        """Event type -> where its events go, for one shard's batch (built per batch: the
        entries cache the batch's tile sort keys)."""
        return {
            event_type: tuple(_route_entry(route, shard_id) for route in routes)
            for event_type, routes in self.plan.routes.items()
        }

    def _write_items(
        self, shard_id: str, pending: dict[ItemKey, _Pending], stored: dict[ItemKey, StoredItem],
        duplicates: set[str], result: BatchResult,
    ) -> tuple[Position | None, list[str], list[_Routed]] | None:
        """Write every item with something new; return the lowest failed position (if any),
        the feature log lines and the events routed away from items too large to write, or
        None if the store could not even be re-read."""
        log_lines: list[str] = []
        too_large: list[_Routed] = []
        lowest: Position | None = None
        todo: list[tuple[ItemKey, _Pending]] = list(pending.items())
        next_state, log_line, written = self._next_state, self._log_line, WriteOutcome.WRITTEN
        for _ in range(_CONFLICT_ROUNDS):
            writes: list[ItemWrite] = []
            items: list[_Pending] = []
            for key, item in todo:
                before = stored.get(key)
                write = next_state(key, item, before, duplicates, shard_id)
                if write is None:
                    if before is not None:  # already applied: log it again (at-least-once)
                        log_lines.append(log_line(before, item, shard_id, False))
                    continue
                if _item_bytes(write) > MAX_ITEM_BYTES:
                    result.items_too_large += 1
                    too_large.extend(_routed_away(item, key))
                    continue
                writes.append(write)
                items.append(item)
            outcomes, stats = self.store.write_many(writes)
            result.writes.add(stats)
            conflicts: list[tuple[ItemKey, _Pending]] = []
            for write, item in zip(writes, items, strict=True):
                outcome = outcomes[write.key]
                if outcome is written:
                    log_lines.append(log_line(write, item, shard_id, True))
                elif outcome is WriteOutcome.CONFLICT:
                    conflicts.append((write.key, item))
                else:
                    lowest = _lower(lowest, item.first_new)
            if not conflicts:
                return lowest, log_lines, too_large
            # Another writer moved these items on (ParallelizationFactor > 1, or a zombie), or
            # TTL deleted one: read what is there now and fold ours on top.
            try:
                fresh = self.store.get_many(key for key, _ in conflicts)
            except StoreUnavailable:
                return None
            stored = {key: item for key, item in stored.items() if key not in fresh}
            for key, _ in conflicts:
                stored.pop(key, None)
            stored.update(fresh)
            todo = conflicts
        for _, item in todo:
            lowest = _lower(lowest, min(event.position for event, _ in item.contributions))
        return lowest, log_lines, too_large

    def _next_state(
        self, key: ItemKey, item: _Pending, stored: StoredItem | None, duplicates: set[str],
        shard_id: str,
    ) -> ItemWrite | None:
        """The item's new absolute state, or None when nothing in this batch is new to it;
        sets ``item.first_new``, the lowest new position (reported if the write fails), and
        ``item.touched``, the tiles the write changes (for the feature log)."""
        new = item.contributions
        redelivered = False
        if stored is not None:
            marks = decode_hw(stored.hw)
            mark = marks.get(shard_id)
            applied = decode_position(mark) if mark is not None else _NOTHING_APPLIED
            redelivered = new[0][0].position <= applied
            new = [
                (event, sections) for event, sections in new
                if event.position > applied and event.event_id not in duplicates
            ]
            if not new:
                return None
            tiles: Tiles = json.loads(stored.state)
            newest = stored.event_time_ms
        else:
            if duplicates:
                new = [(event, sections) for event, sections in new
                       if event.event_id not in duplicates]
                if not new:
                    return None
            marks = {}
            tiles = {}
            newest = 0
        fold = ItemFold(tiles, newest, self._tile_keys)
        fold.fold(new)
        group = item.group
        fold.finish(group, stored is not None, self.settings.future_tolerance_ms // 1000)
        newest = fold.newest_ms
        newest_s = newest // 1000
        state = _encode(tiles)
        # Every tile is this batch's, or part of the batch was applied before and its
        # feature-log line may have been lost: the line carries the whole state.
        item.touched = None if stored is None or redelivered else fold.changed()
        # Contributions are in position order: the first new one is the lowest, the last
        # one the highest.
        item.new = new
        item.first_new = new[0][0].position
        marks[shard_id] = item.position = encode_position(new[-1][0].position)
        if item.tile is None:
            expires = group.expires_at(newest_s)
        else:
            kind, start = item.tile
            expires = kind.tile_expires_at(start)
        return ItemWrite(
            key, state, encode_hw(marks), stored.hw if stored is not None else None,
            expires, newest, stored.version + 1 if stored is not None else 1,
        )

    # ---- dedup memory --------------------------------------------------------------------
    def _remember(
        self, shard_id: str, applied: list[Event], ids: dict[str, tuple[ItemKey, int]],
        stored: dict[ItemKey, StoredItem], result: BatchResult,
    ) -> Position | None:
        """Add the ids of fully applied events to the shard's dedup items."""
        by_bucket: dict[ItemKey, list[Event]] = {}
        for event in applied:
            by_bucket.setdefault(ids[event.event_id][0], []).append(event)
        writes: list[ItemWrite] = []
        # A duplicate can only arrive while its event is within the largest allowed lateness
        # (later copies are too late anyway): that bounds how long ids are remembered.
        keep_s = (self.plan.max_lateness_ms + self.settings.future_tolerance_ms) // 1000 + 3600
        for key, bucket_events in by_bucket.items():
            writes.append(_dedup_write(key, bucket_events, ids, stored.get(key), keep_s))
        lowest: Position | None = None
        for _ in range(_CONFLICT_ROUNDS):
            outcomes, stats = self.store.write_many(writes)
            result.dedup_writes += stats.writes
            retry: list[ItemWrite] = []
            for write in writes:
                if outcomes[write.key] is WriteOutcome.CONFLICT:
                    retry.append(write)
                elif outcomes[write.key] is WriteOutcome.FAILED:
                    lowest = _lower(lowest, min(e.position for e in by_bucket[write.key]))
            if not retry:
                return lowest
            try:
                fresh = self.store.get_many([w.key for w in retry])
            except StoreUnavailable:
                fresh = None
            if fresh is None:
                break
            writes = [
                _dedup_write(w.key, by_bucket[w.key], ids, fresh.get(w.key), keep_s)
                for w in retry
            ]
        for write in writes:
            lowest = _lower(lowest, min(e.position for e in by_bucket[write.key]))
        return lowest

    # ---- side outputs ------------------------------------------------------------------------
    def _log_line(
        self, item: ItemWrite | StoredItem, pending: _Pending, shard_id: str, written: bool
    ) -> str:
        """One feature-log line: the item's tiles this batch changed, each in its absolute
        state as the online store was told it (the whole state for a re-logged item).

        Written out by hand, in the key order and the exact text of json.dumps with
        ``(",", ":")`` separators and ``ensure_ascii=False``: a line per written item.
        """
        if isinstance(item, ItemWrite):
            pk, sk = item.key
        else:
            pk, sk = item.pk, item.sk
        state = item.state if isinstance(item.state, str) else item.state.decode()
        if written:
            tiles = state if pending.touched is None else _encode(pending.touched)
            position = pending.position
        else:
            tiles, position = state, decode_hw(item.hw).get(shard_id, "")
        return (
            f'{{"pk":{encode_basestring(pk)},"sk":{encode_basestring(sk)}{pending.log_head}'
            f'{encode_basestring(pending.entity_key)},"shard_id":{encode_basestring(shard_id)}'
            f',"hw":"{position}","version":{item.version},"event_time_ms":{item.event_time_ms}'
            f',"tiles":{tiles}}}'
        )

    def _put_feature_log(
        self, shard_id: str, sources: list[SourceRecord], lines: list[str]
    ) -> bool:
        key = _object_key(self.settings.feature_log_prefix, shard_id, sources)
        body = "\n".join(lines) + "\n"
        try:
            self.sink.put(key, body.encode())
        except Exception:
            return False
        return True

    def _put_lines(self, shard_id: str, routed: list[_Routed], _put_ok_anyway: bool = False
                   ) -> bool:
        sources = [r.source for r in routed if r.source is not None]
        key = _object_key(self.settings.quarantine_prefix, shard_id, sources)
        body = "\n".join(json.dumps(r.line(), default=str) for r in routed) + "\n"
        try:
            self.sink.put(key, body.encode())
        except Exception:
            return _put_ok_anyway
        return True


# ---- helpers ---------------------------------------------------------------------------------
def _position(event: Event) -> Position:
    return event.position


def _lower(current: Position | None, candidate: Position | None) -> Position | None:
    if candidate is None:
        return current
    return candidate if current is None or candidate < current else current


def _count_invalid(result: BatchResult, reason: Reason) -> None:
    result.invalid_by_reason[reason.value] = result.invalid_by_reason.get(reason.value, 0) + 1


def _first_copies(
    shard_id: str, events: list[Event], result: BatchResult
) -> tuple[list[Event], dict[str, tuple[ItemKey, int]]]:
    """Keep the first copy of each event in this batch; map event id -> (the dedup item that
    remembers it, its id hash).

    A producer retry re-sends the same event (same id, same event time) under a new sequence
    number; the copy with the lowest position is the one applied.
    """
    kept: list[Event] = []
    ids: dict[str, tuple[ItemKey, int]] = {}
    keys: dict[int, ItemKey] = {}  # dedup bucket -> its item key
    for event in events:
        if event.event_id in ids:
            result.duplicate_events += 1
            continue
        bucket = dedup_bucket(event.time_ms)
        key = keys.get(bucket)
        if key is None:
            key = keys[bucket] = dedup_key(shard_id, bucket)
        ids[event.event_id] = (key, hash64(event.event_id))
        kept.append(event)
    return kept, ids


def _remembered(
    ids: dict[str, tuple[ItemKey, int]], stored: dict[ItemKey, StoredItem]
) -> set[str]:
    """Event ids that the shard's dedup items say were already fully applied."""
    seen: dict[ItemKey, set[int]] = {}
    duplicates: set[str] = set()
    for event_id, (key, hashed) in ids.items():
        known = seen.get(key)
        if known is None:
            item = stored.get(key)
            known = seen[key] = _unpack_ids(item.state) if item is not None else set()
        if hashed in known:
            duplicates.add(event_id)
    return duplicates


def _unpack_ids(state: str | bytes) -> set[int]:
    data = state if isinstance(state, bytes) else state.encode()
    return {value for (value,) in _ID.iter_unpack(data[: len(data) // 8 * 8])}


def _dedup_write(
    key: ItemKey, events: list[Event], ids: dict[str, tuple[ItemKey, int]],
    stored: StoredItem | None, keep_s: int,
) -> ItemWrite:
    known = _unpack_ids(stored.state) if stored is not None else set()
    known.update(ids[event.event_id][1] for event in events)
    newest = max(event.position for event in events)
    if stored is not None:
        newest = max(newest, decode_position(stored.hw))
    bucket = int(key[1])
    return ItemWrite(
        key=key,
        state=b"".join(_ID.pack(value) for value in sorted(known)),
        hw=encode_position(newest),
        expected_hw=stored.hw if stored is not None else None,
        expires_at=bucket + DEDUP_BUCKET_SECONDS + keep_s,
        event_time_ms=(bucket + DEDUP_BUCKET_SECONDS) * 1000 - 1,
        version=stored.version + 1 if stored is not None else 1,
    )


# (sections fed, sort key head, sort key by tile start) of one tile partial of a route
_Partial = tuple[tuple[FoldSection], str, dict[int, str]]
# (route, pk prefix, group item sort key or None for tile partials, feature-log head, partials)
_RouteEntry = tuple[Route, str, str | None, str, tuple[_Partial, ...]]


def _route_entry(route: Route, shard_id: str) -> _RouteEntry:
    group = route.group.group
    log_head = (
        f',"group":{encode_basestring(group.name)},"entity":{encode_basestring(group.entity)}'
        ',"entity_key":'
    )
    if not route.group.sharded:
        return route, group.entity + "#", group_sk(group.name), log_head, ()
    partials: tuple[_Partial, ...] = tuple(
        ((section,), tile_sk_head(group.name, section[2], shard_id), {})
        for section in route.fold
    )
    return route, group.entity + "#", None, log_head, partials


def _item_bytes(write: ItemWrite) -> int:
    """The item's size as DynamoDB counts it, computed only when it could be near the limit
    (a character is 1 to 4 bytes of UTF-8)."""
    state = write.state
    if len(state) * 4 < MAX_ITEM_BYTES - 4096:
        return len(state)
    size = len(state.encode()) if isinstance(state, str) else len(state)
    return size + len(write.key[0].encode()) + len(write.key[1].encode()) + len(write.hw) + 128


def _routed_away(item: _Pending, key: ItemKey) -> list[_Routed]:
    """Quarantine lines for the events a too-large item did not take."""
    group = item.group.group.name
    return [
        _Routed(
            Reason.ITEM_TOO_LARGE,
            f"not applied to group {group}: its item {key[0]} / {key[1]} would pass "
            f"DynamoDB's {MAX_ITEM_BYTES // 1024} KB item limit",
            event.record.source, event.record.sub_index, event.record.payload,
            event.event_id, (group,),
        )
        for event, _ in item.new
    ]


def _object_key(prefix: str, shard_id: str, sources: list[SourceRecord]) -> str:
    if not sources:
        return f"{prefix}unattributed/{time.time_ns()}.jsonl"
    first, last = sources[0], sources[-1]
    day = format_ms(first.arrival_ms)[:10]
    return f"{prefix}date={day}/{shard_id}/{first.sequence_number}-{last.sequence_number}.jsonl"


