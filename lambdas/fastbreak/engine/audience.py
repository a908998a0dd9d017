"""The audience stage (stage 2): partials in, one write per touched audience item out.

Stage 1 emits, per batch, one partial per audience entity (``fastbreak.engine.partials``) to the
partials stream, partitioned by entity. For each shard of that stream in the batch (a Lambda
batch holds one):

1. decode the partials; an unreadable record goes to the quarantine object (``bad_partial``);
2. drop re-emissions: a partial whose identity (source shard, emission, entity, part) is in this
   batch already or in the shard's dedup memory of applied partials;
3. route each partial's tiles to the entity's items: one *audience item* per (entity, tile), and
   one for the lifetime state (``fastbreak.engine.layout``);
4. read every touched item once (consistent), merge in only the partials past the item's
   high-water mark for this shard (``fold.ItemMerge``), and write the absolute new state with a
   condition on the marks read: one write per touched item, idempotent under re-delivery. The
   stream is partitioned by entity, so an entity's items have one writer, in order, whatever
   the ParallelizationFactor;
5. write the feature log of those items, then remember the identities of the applied partials.

A partial whose merge would take an item past DynamoDB's item limit is not applied to it
(``item_too_large``): the sequential rule of stage 1, by partial. Anything that fails makes the
batch report its lowest affected sequence number and every later one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastbreak.definitions.model import Catalog
from fastbreak.engine import item_size
from fastbreak.engine.dedup import Additions, DedupMemory, read_roots, remember
from fastbreak.engine.fold import ItemMerge, Tiles
from fastbreak.engine.layout import (
    ItemKey,
    audience_sk,
    compact_state,
    decode_hw,
    decode_position,
    dedup_bucket,
    dedup_key,
    encode_hw,
    encode_position,
    entity_pk,
    partials_memory,
    state_json,
)
from fastbreak.engine.online_store import (
    ItemWrite,
    OnlineStore,
    StoredItem,
    StoreUnavailable,
    WriteOutcome,
    WriteStats,
)
from fastbreak.engine.partials import Partial, decode
from fastbreak.engine.plan import FUTURE_TOLERANCE_SECONDS, LIFETIME, GroupPlan, Plan, compile_plan
from fastbreak.engine.records import Position, SourceRecord, read_source, user_records
from fastbreak.engine.rejections import Reason, Rejection
from fastbreak.engine.sinks import ObjectSink, object_key
from fastbreak.engine.timestamps import format_ms

_CONFLICT_ROUNDS = 3
_NOTHING_APPLIED: Position = (-1, -1)
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# How long the identities of applied partials are remembered by default: a pending emission is
# completed by the next batch of its shard that holds its records, or by any batch of the shard
# once its writer is gone (16 minutes); the retries of a failing batch last at most the stage-1
# mapping's record age (6 hours by default). Deployments set it from that age.
DEFAULT_REMEMBER_SECONDS = 7 * 3600


@dataclass(frozen=True)
class AudienceSettings:
    quarantine_prefix: str = "quarantine/"
    feature_log_prefix: str = "features/"
    future_tolerance_ms: int = FUTURE_TOLERANCE_SECONDS * 1000
    remember_seconds: int = DEFAULT_REMEMBER_SECONDS


@dataclass
class AudienceResult:
    failed_sequence_numbers: list[str] = field(default_factory=list)
    records_in: int = 0
    partials_in: int = 0
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
    duplicate_partials: int = 0
    items_too_large: int = 0
    writes: WriteStats = field(default_factory=WriteStats)
    dedup_writes: int = 0
    freshness_lag_ms: int | None = None  # now less the oldest applied partial's emission time

    def batch_item_failures(self) -> dict[str, list[dict[str, str]]]:
        return {"batchItemFailures": [{"itemIdentifier": sequence}
                                      for sequence in self.failed_sequence_numbers]}


@dataclass(slots=True)
class _Received:
    """A decoded partial and where it sat in the partials stream."""

    partial: Partial
    source: SourceRecord
    sub_index: int

    @property
    def position(self) -> Position:
        return (self.source.sequence, self.sub_index)


@dataclass(slots=True)
class _Unread:
    reason: Reason
    message: str
    source: SourceRecord | None
    sub_index: int | None = None
    payload: bytes | None = None
    raw: Any = None
    groups: tuple[str, ...] = ()

    def line(self) -> dict[str, Any]:
        line: dict[str, Any] = {"reason": self.reason.value, "message": self.message}
        if self.source is not None:
            line.update(sequence_number=self.source.sequence_number,
                        shard_id=self.source.shard_id,
                        partition_key=self.source.partition_key,
                        approximate_arrival=format_ms(self.source.arrival_ms))
        if self.sub_index is not None:
            line["sub_index"] = self.sub_index
        if self.groups:
            line["groups"] = list(self.groups)
        if self.payload is not None:
            line["payload"] = self.payload.decode("utf-8", "backslashreplace")
        elif self.source is not None:
            line["data"] = self.source.data
        else:
            line["record"] = self.raw
        return line


@dataclass(slots=True)
class _Item:
    """What this batch brings to one audience item: tiles of partials, in position order."""

    group: GroupPlan
    entity_key: str
    tile: tuple[int, int]  # (tile seconds, tile start); LIFETIME, 0 for the lifetime item
    contributions: list[tuple[_Received, Tiles]] = field(default_factory=list)
    new: list[tuple[_Received, Tiles]] = field(default_factory=list)
    refused: list[_Received] = field(default_factory=list)
    changed: Tiles | None = None  # the tiles of the last computed write (None: every tile)
    position: str = ""
    text: str = ""  # the JSON state of the last computed write (stored compacted)


class AudienceMerger:
    """Stage 2 over injected stores: ``store`` (the online store table) and ``sink`` (the
    offline store's quarantine and feature-log prefixes)."""

    def __init__(
        self, store: OnlineStore, sink: ObjectSink, catalog: Catalog,
        settings: AudienceSettings | None = None,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.store = store
        self.sink = sink
        self.plan: Plan = compile_plan(catalog)
        self.settings = settings or AudienceSettings()
        self.clock_ms = clock_ms
        self._audience = {name: group for name, group in self.plan.groups.items()
                          if group.sharded}

    # ---- the batch -----------------------------------------------------------------------
    def process(self, records: Sequence[Any]) -> AudienceResult:
        result = AudienceResult()
        by_shard: dict[str, tuple[list[SourceRecord], list[_Received], list[_Unread]]] = {}
        unattributed: list[_Unread] = []
        for index, raw in enumerate(records):
            result.records_in += 1
            source = read_source(raw, index)
            if isinstance(source, Rejection):
                _count(result, source.reason)
                unattributed.append(_Unread(source.reason, source.message, None, raw=raw))
                continue
            sources, received, unread = by_shard.setdefault(source.shard_id, ([], [], []))
            sources.append(source)
            self._decode(source, result, received, unread)
        if unattributed:
            self._put_lines("partials/unattributed", [], unattributed)
        for shard_id, (sources, received, unread) in by_shard.items():
            lowest = self._process_shard(shard_id, sources, received, unread, result)
            if lowest is not None:
                result.failed_sequence_numbers.extend(
                    s.sequence_number for s in sources if s.sequence >= lowest[0])
        return result

    def _decode(self, source: SourceRecord, result: AudienceResult, received: list[_Received],
                unread: list[_Unread]) -> None:
        decoded = user_records(source)
        if isinstance(decoded, Rejection):
            _count(result, decoded.reason)
            unread.append(_Unread(decoded.reason, decoded.message, source))
            return
        for record in decoded:
            partial = decode(record.payload)
            if isinstance(partial, Rejection):
                _count(result, partial.reason)
                unread.append(_Unread(partial.reason, partial.message, source, record.sub_index,
                                      record.payload))
            else:
                result.partials_in += 1
                received.append(_Received(partial, source, record.sub_index))

    # ---- one shard -------------------------------------------------------------------------
    def _process_shard(
        self, shard_id: str, sources: list[SourceRecord], received: list[_Received],
        unread: list[_Unread], result: AudienceResult,
    ) -> Position | None:
        first: Position = (sources[0].sequence, 0)
        memory_name = partials_memory(shard_id)
        received.sort(key=_position_of)
        kept: list[_Received] = []
        ids: dict[int, tuple[ItemKey, int]] = {}  # id(received) -> (dedup root, identity)
        seen: set[int] = set()
        for partial in received:
            identity = partial.partial.identity
            if identity in seen:  # the same emission put twice, both in this batch
                result.duplicate_partials += 1
                continue
            seen.add(identity)
            root = dedup_key(memory_name, dedup_bucket(partial.partial.created_ms))
            ids[id(partial)] = (root, identity)
            kept.append(partial)
        items = self._route(kept)
        wanted: dict[ItemKey, set[int]] = {}
        for root, identity in ids.values():
            wanted.setdefault(root, set()).add(identity)
        memory = DedupMemory()
        try:
            stored = self.store.get_many([*items, *wanted])
            memory.learn(wanted, stored)
            read_roots(self.store, memory, wanted)
        except StoreUnavailable:
            return first
        _as_text(stored, items)
        duplicates = {id(partial) for partial in kept
                      if memory.contains(*ids[id(partial)])}
        result.duplicate_partials += len(duplicates)
        outcome = self._write_items(shard_id, sources, items, stored, duplicates, result)
        if outcome is None:
            return first
        lowest, log_lines = outcome
        if unread and not self._put_lines(memory_name, sources, unread):
            lowest = _lower(lowest, min((u.source.sequence, 0) for u in unread if u.source))
        if log_lines and not self._put(self.settings.feature_log_prefix, memory_name, sources,
                                       log_lines):
            return first
        applied = [partial for partial in kept if id(partial) not in duplicates
                   and (lowest is None or partial.position < lowest)]
        additions: Additions = {}
        for partial in applied:
            root, identity = ids[id(partial)]
            found = additions.get(root)
            if found is None:
                additions[root] = ({identity}, partial.position, partial.position)
            else:
                found[0].add(identity)
                additions[root] = (found[0], max(found[1], partial.position), found[2])
        failed, writes = remember(self.store, memory, additions,
                                  self.settings.remember_seconds)
        result.dedup_writes += writes
        lowest = _lower(lowest, failed)
        if applied:
            oldest = min(partial.partial.created_ms for partial in applied)
            result.freshness_lag_ms = max(result.freshness_lag_ms or 0,
                                          self.clock_ms() - oldest)
        return lowest

    def _route(self, partials: list[_Received]) -> dict[ItemKey, _Item]:
        """Each partial's tiles, by the audience item that holds them."""
        items: dict[ItemKey, _Item] = {}
        for received in partials:
            partial = received.partial
            pk = entity_pk(partial.entity, partial.key)
            for name, tiles in partial.groups.items():
                group = self._audience.get(name)
                if group is None or group.group.entity != partial.entity:
                    continue  # a group since removed from the catalog (or no longer audience)
                for section, section_tiles in tiles.items():
                    kind = group.kind_of_section.get(section)
                    if kind is None:
                        continue  # a tile size the catalog no longer uses
                    for start_key, data in section_tiles.items():
                        start = int(start_key)
                        key = (pk, audience_sk(name, kind.tile_seconds, start))
                        item = items.get(key)
                        if item is None:
                            item = items[key] = _Item(group, partial.key,
                                                      (kind.tile_seconds, start))
                        item.contributions.append((received, {section: {start_key: data}}))
        return items

    def _write_items(
        self, shard_id: str, sources: list[SourceRecord], items: dict[ItemKey, _Item],
        stored: dict[ItemKey, StoredItem], duplicates: set[int], result: AudienceResult,
    ) -> tuple[Position | None, list[str]] | None:
        """Write every item with something new; return the lowest failed position (if any)
        and the feature log lines; None if the store could not even be re-read."""
        log_lines: list[str] = []
        lowest: Position | None = None
        todo = list(items.items())
        for _ in range(_CONFLICT_ROUNDS):
            writes: list[tuple[ItemWrite, _Item]] = []
            refused: list[dict[str, Any]] = []
            for key, item in todo:
                before = stored.get(key)
                write = self._next_state(key, item, before, duplicates, shard_id)
                if item.refused:
                    result.items_too_large += 1
                    refused.extend(_refused(item, key))
                if write is None:
                    if before is not None and not item.refused and any(
                        id(received) not in duplicates for received, _ in item.contributions
                    ):  # applied before: log it again (at least once)
                        log_lines.append(self._log_line(before, item, shard_id, None))
                    continue
                writes.append((write, item))
            # Refused partials are quarantined before the writes that pass their positions: a
            # re-delivery skips those positions, and would not refuse them again.
            if refused and not self._put_lines(partials_memory(shard_id), sources, [], refused):
                for _, item in writes:
                    if item.refused:
                        lowest = _lower(lowest, item.contributions[0][0].position)
                writes = [(write, item) for write, item in writes if not item.refused]
            outcomes, stats = self.store.write_many([write for write, _ in writes])
            visible_ms = self.clock_ms()
            result.writes.add(stats)
            conflicts: list[tuple[ItemKey, _Item]] = []
            for write, item in writes:
                outcome = outcomes[write.key]
                if outcome is WriteOutcome.WRITTEN:
                    log_lines.append(self._log_line(write, item, shard_id, visible_ms))
                elif outcome is WriteOutcome.CONFLICT:
                    conflicts.append((write.key, item))
                else:
                    lowest = _lower(lowest, item.new[0][0].position)
            if not conflicts:
                return lowest, log_lines
            try:
                fresh = self.store.get_many(key for key, _ in conflicts)
            except StoreUnavailable:
                return None
            for key, _ in conflicts:
                stored.pop(key, None)
            stored.update(fresh)
            _as_text(stored, fresh)
            todo = conflicts
        for _, item in todo:
            lowest = _lower(lowest, item.contributions[0][0].position)
        return lowest, log_lines

    def _next_state(
        self, key: ItemKey, item: _Item, stored: StoredItem | None, duplicates: set[int],
        shard_id: str,
    ) -> ItemWrite | None:
        """The item's new absolute state, or None when nothing in this batch is new to it."""
        item.refused = []
        marks: dict[str, str] = {}
        applied = _NOTHING_APPLIED
        tiles: Tiles = {}
        newest = 0
        redelivered = False
        if stored is not None:
            marks = decode_hw(stored.hw)
            mark = marks.get(shard_id)
            if mark is not None:
                applied = decode_position(mark)
            tiles = json.loads(stored.state)
            newest = stored.event_time_ms
            redelivered = item.contributions[0][0].position <= applied
        new = [(received, tiles_of) for received, tiles_of in item.contributions
               if received.position > applied and id(received) not in duplicates]
        if not new:
            return None
        limit = item_size.state_limit(key, marks, shard_id)
        state_bytes = item_size.text_bytes(stored.state) if stored is not None else 2
        bound = state_bytes + sum(len(_ENCODE(part)) for _, part in new)
        tolerance_s = self.settings.future_tolerance_ms // 1000
        if bound <= limit:  # the usual case: no merge on the way can pass the limit
            merge = ItemMerge(item.group, tiles, newest)
            for _, part in new:
                merge.merge(part)
            merge.finish(tolerance_s)
            state, newest = _ENCODE(merge.tiles), merge.newest_ms
            item.new = new
            item.changed = None if stored is None or redelivered else merge.changed()
        else:  # partial by partial, measured: one that would pass the limit is refused
            text = stored.state if stored is not None else "{}"
            state, item.new = "", []
            for received, part in new:
                merge = ItemMerge(item.group, json.loads(text), newest)
                merge.merge(part)
                merge.finish(tolerance_s)
                candidate = _ENCODE(merge.tiles)
                if item_size.text_bytes(candidate) <= limit:
                    text, newest, state = candidate, merge.newest_ms, candidate
                    item.new.append((received, part))
                else:
                    item.refused.append(received)
            if not item.new:
                return None
            item.changed = None
        marks[shard_id] = item.position = encode_position(item.new[-1][0].position)
        tile_seconds, start = item.tile
        kind = item.group.kinds[tile_seconds]
        expires = None if tile_seconds == LIFETIME else kind.tile_expires_at(start)
        item.text = state
        return ItemWrite(
            key, compact_state(state), encode_hw(marks), stored.hw if stored is not None else None,
            expires, newest, stored.version + 1 if stored is not None else 1,
        )

    # ---- side outputs ----------------------------------------------------------------------
    def _log_line(self, item: ItemWrite | StoredItem, pending: _Item, shard_id: str,
                  visible_ms: int | None) -> str:
        """A feature-log line, the same columns as stage 1's (``shard_id`` and ``hw`` are the
        partials stream's)."""
        if isinstance(item, ItemWrite):
            pk, sk = item.key
            position = pending.position
            tiles = json.loads(pending.text) if pending.changed is None else pending.changed
        else:  # read and made text by _as_text
            pk, sk = item.pk, item.sk
            position = decode_hw(item.hw).get(shard_id, "")
            tiles = json.loads(state_json(item.state))
        group = pending.group.group
        return _ENCODE({
            "pk": pk, "sk": sk, "group": group.name, "entity": group.entity,
            "entity_key": pending.entity_key, "shard_id": shard_id, "hw": position,
            "version": item.version, "event_time_ms": item.event_time_ms, "tiles": tiles,
            "visible_ms": visible_ms,
        })

    def _put_lines(self, folder: str, sources: list[SourceRecord], unread: list[_Unread],
                   refused: list[dict[str, Any]] | None = None) -> bool:
        """Quarantine lines: unreadable records, and partials refused as too large."""
        lines = [json.dumps(u.line(), default=str) for u in unread]
        lines += [json.dumps(line) for line in refused or ()]
        return self._put(self.settings.quarantine_prefix, folder, sources, lines)

    def _put(self, prefix: str, folder: str, sources: list[SourceRecord], lines: list[str]
             ) -> bool:
        body = ("\n".join(lines) + "\n").encode()
        try:
            self.sink.put(object_key(prefix, folder, sources, body), body)
        except Exception:
            return False
        return True


def _refused(item: _Item, key: ItemKey) -> list[dict[str, Any]]:
    group = item.group.group.name
    return [
        {
            "reason": Reason.ITEM_TOO_LARGE.value,
            "message": f"partial not applied to group {group}: its item {key[0]} / {key[1]} "
                       f"would pass DynamoDB's {item_size.MAX_ITEM_BYTES // 1024} KB item limit",
            "sequence_number": received.source.sequence_number,
            "sub_index": received.sub_index, "shard_id": received.source.shard_id,
            "partition_key": received.source.partition_key, "groups": [group],
            "payload": received.partial.encode().decode(),
        }
        for received in item.refused
    ]


def _as_text(stored: dict[ItemKey, StoredItem], keys: Iterable[ItemKey]) -> None:
    """The states of the items read, as JSON text (``compact_state`` compresses some)."""
    for key in keys:
        item = stored.get(key)
        if item is not None and type(item.state) is bytes:
            item.state = state_json(item.state)


def _position_of(received: _Received) -> Position:
    return received.position


def _lower(current: Position | None, candidate: Position | None) -> Position | None:
    if candidate is None:
        return current
    return candidate if current is None or candidate < current else current


def _count(result: AudienceResult, reason: Reason) -> None:
    result.invalid_by_reason[reason.value] = result.invalid_by_reason.get(reason.value, 0) + 1
