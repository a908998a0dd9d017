"""The audience stage (stage 2): partials in, one write per touched audience item out.

Stage 1 emits, per batch, one partial per audience entity (``fastbreak.engine.partials``) to the
partials stream, partitioned by entity. For each shard of that stream in the batch (a Lambda
batch holds one):

1. decode the partials; an unreadable record goes to the quarantine object (``bad_partial``);
2. drop re-emissions: a partial whose identity (source shard, emission, entity, part) is in this
   batch already or in the shard's dedup memory of applied partials;
3. find each touched tile's home (``fastbreak.engine.layout``): the entity's *entity item*
   (the lifetime state and the tiles that came while it fitted one write unit) or a *tile item*
   of its own. A new tile goes into the entity item if the item still fits one write unit with
   it, else to a tile item, and the entity item records it in ``tiles_out`` before that tile
   item is written: where a tile lives is decided once, by a conditional write of the entity
   item, and a tile is never in two items;
4. read the touched items (consistent), merge in only the partials past each item's high-water
   mark for this shard (``fold.ItemMerge``), and write the absolute new state with a condition on
   the marks read: one write per touched item, idempotent under re-delivery, the entity item
   before the tile items. The stream is partitioned by entity, so an entity's items have one
   writer, in order, whatever the ParallelizationFactor;
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
    decode_tiles_out,
    dedup_bucket,
    dedup_key,
    encode_hw,
    encode_position,
    encode_tiles_out,
    entity_pk,
    entity_sk,
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
from fastbreak.engine.plan import FUTURE_TOLERANCE_SECONDS, GroupPlan, Plan, compile_plan
from fastbreak.engine.records import Position, SourceRecord, read_source, user_records
from fastbreak.engine.rejections import Reason, Rejection
from fastbreak.engine.sinks import ObjectSink, object_key
from fastbreak.engine.timestamps import format_ms

_CONFLICT_ROUNDS = 3
_NOTHING_APPLIED: Position = (-1, -1)
# An entity item takes a new tile while the item, with it, is at most one write unit (DynamoDB
# bills a write per KB of the larger of the item before and after): the long tail of entities,
# a few events an hour each, then costs one write per batch for all their tile sizes, and a hot
# entity's tiles, which outgrow it, get items of their own.
ENTITY_ITEM_BYTES = 1024
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
    tile: tuple[int, int] | None  # (tile seconds, tile start) of a tile item; None: entity item
    contributions: list[tuple[_Received, Tiles]] = field(default_factory=list)
    new: list[tuple[_Received, Tiles]] = field(default_factory=list)
    refused: list[_Received] = field(default_factory=list)
    changed: Tiles | None = None  # the tiles of the last computed write (None: every tile)
    position: str = ""
    text: str = ""  # the JSON state of the last computed write (stored compacted)


@dataclass(slots=True)
class _Entity:
    """What this batch brings to one audience group of one entity: the partials' tiles, by
    tile (section, tile key), each in position order."""

    group: GroupPlan
    pk: str
    entity_key: str
    key: ItemKey  # the entity item's
    tiles: dict[tuple[str, str], list[tuple[_Received, Any]]] = field(default_factory=dict)

    def tile_item_key(self, tile: tuple[str, str]) -> ItemKey:
        section, start = tile
        kind = self.group.kind_of_section[section]
        return self.pk, audience_sk(self.group.group.name, kind.tile_seconds, int(start))

    def first_position(self) -> Position:
        return min(received.position for parts in self.tiles.values() for received, _ in parts)

    def contributions(self, tiles: Iterable[tuple[str, str]], after: Position = _NOTHING_APPLIED
                      ) -> list[tuple[_Received, Tiles]]:
        """Per partial past ``after``, in position order, its data for ``tiles``."""
        by_partial: dict[int, tuple[_Received, Tiles]] = {}
        for section, start in tiles:
            for received, data in self.tiles[(section, start)]:
                if received.position <= after:
                    continue
                found = by_partial.get(id(received))
                if found is None:
                    found = by_partial[id(received)] = (received, {})
                found[1].setdefault(section, {})[start] = data
        return sorted(by_partial.values(), key=_first_of)


@dataclass(slots=True)
class _Plan:
    """One entity's writes of a round: its entity item's (first: it records where new tiles
    go), then its tile items'."""

    entity: _Entity
    entity_item: _Item
    entity_write: ItemWrite | None
    tile_writes: list[tuple[ItemWrite, _Item]]
    unwritten: list[tuple[StoredItem, _Item]]  # applied before: their lines are logged again

    def items(self) -> list[tuple[ItemKey, _Item]]:
        return [(self.entity.key, self.entity_item),
                *((write.key, item) for write, item in self.tile_writes)]


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
        """A Lambda batch: records as the event source mapping delivers them."""
        sources: list[SourceRecord] = []
        unattributed: list[_Unread] = []
        for index, raw in enumerate(records):
            source = read_source(raw, index)
            if isinstance(source, Rejection):
                unattributed.append(_Unread(source.reason, source.message, None, raw=raw))
            else:
                sources.append(source)
        result = AudienceResult(records_in=len(unattributed))
        for unread in unattributed:
            _count(result, unread.reason)
        if unattributed:
            self._put_lines("partials/unattributed", [], unattributed)
        return self.process_sources(sources, result)

    def process_sources(
        self, sources: Sequence[SourceRecord], result: AudienceResult | None = None,
    ) -> AudienceResult:
        """Records already read from the partials stream, by any runtime (the Lambda batch
        above, a Flink flush): each shard's records in the order they sat in the shard."""
        result = result or AudienceResult()
        by_shard: dict[str, tuple[list[SourceRecord], list[_Received], list[_Unread]]] = {}
        for source in sources:
            result.records_in += 1
            shard_sources, received, unread = by_shard.setdefault(source.shard_id, ([], [], []))
            shard_sources.append(source)
            self._decode(source, result, received, unread)
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
        entities = self._route(kept)
        wanted: dict[ItemKey, set[int]] = {}
        for root, identity in ids.values():
            wanted.setdefault(root, set()).add(identity)
        memory = DedupMemory()
        try:  # the entity items and the dedup memory, then the tile items they do not hold
            stored = self.store.get_many([*entities, *wanted])
            memory.learn(wanted, stored)
            read_roots(self.store, memory, wanted)
            _as_text(stored, entities)
            self._read_tile_items(entities.values(), stored)
        except StoreUnavailable:
            return first
        duplicates = {id(partial) for partial in kept
                      if memory.contains(*ids[id(partial)])}
        result.duplicate_partials += len(duplicates)
        outcome = self._write_entities(shard_id, sources, entities, stored, duplicates, result)
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

    def _route(self, partials: list[_Received]) -> dict[ItemKey, _Entity]:
        """Each partial's tiles, by (entity, audience group): keyed by the entity item."""
        entities: dict[ItemKey, _Entity] = {}
        for received in partials:
            partial = received.partial
            pk = entity_pk(partial.entity, partial.key)
            for name, tiles in partial.groups.items():
                group = self._audience.get(name)
                if group is None or group.group.entity != partial.entity:
                    continue  # a group since removed from the catalog (or no longer audience)
                key = (pk, entity_sk(name))
                entity = entities.get(key)
                if entity is None:
                    entity = entities[key] = _Entity(group, pk, partial.key, key)
                for section, section_tiles in tiles.items():
                    if section not in group.kind_of_section:
                        continue  # a tile size the catalog no longer uses
                    for start_key, data in section_tiles.items():
                        entity.tiles.setdefault((section, start_key), []).append(
                            (received, data))
        return {key: entity for key, entity in entities.items() if entity.tiles}

    def _read_tile_items(self, entities: Iterable[_Entity],
                         stored: dict[ItemKey, StoredItem]) -> None:
        """Read the tile items of the touched tiles that their entity items do not hold."""
        keys: list[ItemKey] = []
        for entity in entities:
            held = _held(stored.get(entity.key))
            keys += [entity.tile_item_key(tile) for tile in entity.tiles
                     if tile[1] not in held.get(tile[0], ())]
        if keys:
            fresh = self.store.get_many(keys)
            stored.update(fresh)
            _as_text(stored, fresh)

    def _write_entities(
        self, shard_id: str, sources: list[SourceRecord], entities: dict[ItemKey, _Entity],
        stored: dict[ItemKey, StoredItem], duplicates: set[int], result: AudienceResult,
    ) -> tuple[Position | None, list[str]] | None:
        """Write every item with something new, the entity items first; return the lowest
        failed position (if any) and the feature log lines; None if the store could not even
        be re-read."""
        log_lines: list[str] = []
        lowest: Position | None = None
        todo = list(entities.values())
        for _ in range(_CONFLICT_ROUNDS):
            plans = [self._plan(entity, stored, duplicates, shard_id) for entity in todo]
            refused: list[dict[str, Any]] = []
            for plan in plans:
                for key, item in plan.items():
                    if item.refused:
                        result.items_too_large += 1
                        refused.extend(_refused(item, key))
            # Refused partials are quarantined before the writes that pass their positions: a
            # re-delivery skips those positions, and would not refuse them again.
            if refused and not self._put_lines(partials_memory(shard_id), sources, [], refused):
                held_back = {id(plan) for plan in plans
                             if any(item.refused for _, item in plan.items())}
                for plan in plans:
                    if id(plan) in held_back:
                        lowest = _lower(lowest, plan.entity.first_position())
                plans = [plan for plan in plans if id(plan) not in held_back]
            conflicts: dict[ItemKey, _Entity] = {}
            # Entity items first: a new tile's tile item is written only once its entity item
            # has recorded that the tile lives there.
            outcomes, stats = self.store.write_many(
                [plan.entity_write for plan in plans if plan.entity_write is not None])
            visible_ms = self.clock_ms()
            result.writes.add(stats)
            ready: list[_Plan] = []
            for plan in plans:
                write = plan.entity_write
                if write is not None:
                    outcome = outcomes[write.key]
                    if outcome is WriteOutcome.CONFLICT:
                        conflicts[plan.entity.key] = plan.entity
                        continue
                    if outcome is WriteOutcome.FAILED:  # its tile items wait for the retry
                        lowest = _lower(lowest, plan.entity.first_position())
                        continue
                    if plan.entity_item.changed != {}:  # not only a record of where tiles go
                        log_lines.append(self._log_line(write, plan.entity_item, shard_id,
                                                        visible_ms))
                ready.append(plan)
            tile_writes = [(write, item, plan) for plan in ready
                           for write, item in plan.tile_writes]
            outcomes, stats = self.store.write_many([write for write, _, _ in tile_writes])
            visible_ms = self.clock_ms()
            result.writes.add(stats)
            for write, item, plan in tile_writes:
                outcome = outcomes[write.key]
                if outcome is WriteOutcome.WRITTEN:
                    log_lines.append(self._log_line(write, item, shard_id, visible_ms))
                elif outcome is WriteOutcome.CONFLICT:
                    conflicts[plan.entity.key] = plan.entity
                else:
                    lowest = _lower(lowest, item.new[0][0].position)
            for plan in ready:  # applied before: log them again (at least once)
                log_lines.extend(self._log_line(before, item, shard_id, None)
                                 for before, item in plan.unwritten)
            if not conflicts:
                return lowest, log_lines
            # Another writer moved these entities on (a redrive), or TTL deleted an item: read
            # what is there now and merge ours on top.
            keys = [key for entity in conflicts.values()
                    for key in (entity.key, *map(entity.tile_item_key, entity.tiles))]
            try:
                fresh = self.store.get_many(keys)
            except StoreUnavailable:
                return None
            for key in keys:
                stored.pop(key, None)
            stored.update(fresh)
            _as_text(stored, fresh)
            todo = list(conflicts.values())
        for entity in todo:
            lowest = _lower(lowest, entity.first_position())
        return lowest, log_lines

    def _plan(self, entity: _Entity, stored: dict[ItemKey, StoredItem], duplicates: set[int],
              shard_id: str) -> _Plan:
        """Where each touched tile lives, and the entity's writes. A tile the entity item holds
        is merged there. One of a size that ``tiles_out`` sends to tile items from a start at
        or before it, or whose tile item exists (written by the first release of this stage),
        is merged in its tile item. A new tile goes into the entity item while the item fits
        one write unit with it; else the largest new tiles go to tile items until it does, and
        from then on the later tiles of their sizes too (``tiles_out``): a size that outgrew
        the item once (a hot entity's minute tiles) would outgrow it again, and an entity item
        written only to say where each new tile goes would cost a write each time."""
        group = entity.group
        before = stored.get(entity.key)
        held = _held(before)
        first_out = decode_tiles_out(before.tiles_out) if before is not None else {}
        mark = _mark_of(before, shard_id)
        inside: list[tuple[str, str]] = []
        elsewhere: list[tuple[str, str]] = []
        new: list[tuple[str, str]] = []
        for tile, parts in entity.tiles.items():
            section, start = tile
            if start in held.get(section, ()):
                inside.append(tile)
            elif ((section in first_out and int(start) >= first_out[section])
                  or entity.tile_item_key(tile) in stored):
                elsewhere.append(tile)
            elif any(received.position > mark and id(received) not in duplicates
                     for received, _ in parts):
                new.append(tile)
            # else the tile's item is gone (past its retention) and what it brings was applied
        kept: list[tuple[str, str]] = sorted(new)
        placed: list[tuple[str, str]] = []
        while True:
            own = _Item(group, entity.entity_key, None, entity.contributions([*inside, *kept]))
            write = (self._next_state(entity.key, own, before, duplicates, shard_id)
                     if own.contributions else None)
            if (write is None or not kept or own.refused
                    or _fits(write, _placing(first_out, placed))):
                break
            tiles = json.loads(own.text)
            sizes = [(len(_ENCODE(tiles[section][start])), (section, start))
                     for section, start in kept if start in tiles.get(section, ())]
            if not sizes:  # every new tile was pruned: moving none out makes it smaller
                break
            largest = max(sizes)[1]
            kept.remove(largest)
            placed.append(largest)
        unwritten: list[tuple[StoredItem, _Item]] = []
        if (write is None and before is not None and not own.refused
                and any(id(received) not in duplicates for received, _ in own.contributions)):
            unwritten.append((before, own))
        tile_writes: list[tuple[ItemWrite, _Item]] = []
        newest_placed = 0
        for tile in [*elsewhere, *placed]:
            kind = group.kind_of_section[tile[0]]
            item = _Item(group, entity.entity_key, (kind.tile_seconds, int(tile[1])),
                         entity.contributions([tile], mark if tile in placed else _NOTHING_APPLIED))
            key = entity.tile_item_key(tile)
            found = stored.get(key)
            tile_write = self._next_state(key, item, found, duplicates, shard_id)
            if tile_write is not None:
                tile_writes.append((tile_write, item))
                if tile in placed:
                    newest_placed = max(newest_placed, tile_write.event_time_ms)
            elif found is not None and not item.refused and any(
                    id(received) not in duplicates for received, _ in item.contributions):
                unwritten.append((found, item))
        if placed:  # recorded by the entity item's write, which goes first
            if write is None:
                write = _as_it_is(entity.key, own, before)
            position = max(received.position for tile in placed
                           for received, _ in entity.tiles[tile]
                           if received.position > mark and id(received) not in duplicates)
            marks = decode_hw(write.hw)
            if shard_id not in marks or decode_position(marks[shard_id]) < position:
                marks[shard_id] = own.position = encode_position(position)
                write.hw = encode_hw(marks)
            # The item lives as long as the tiles it sends elsewhere (its TTL follows ``t``).
            write.event_time_ms = max(write.event_time_ms, newest_placed)
            write.expires_at = group.expires_at(write.event_time_ms // 1000)
        if write is not None:
            write.tiles_out = encode_tiles_out({
                section: start for section, start in _placing(first_out, placed).items()
                if section in group.kind_of_section})
        return _Plan(entity, own, write, tile_writes, unwritten)

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
        if item.tile is None:  # the entity item: gone once the newest tile of each size is
            expires = item.group.expires_at(newest // 1000)
        else:
            tile_seconds, start = item.tile
            expires = item.group.kinds[tile_seconds].tile_expires_at(start)
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


def _placing(first_out: dict[str, int], placed: list[tuple[str, str]]) -> dict[str, int]:
    """``tiles_out`` once ``placed`` go to tile items: a size's first start moves down only."""
    after = dict(first_out)
    for section, start in placed:
        after[section] = min(after.get(section, int(start)), int(start))
    return after


def _fits(write: ItemWrite, tiles_out: dict[str, int]) -> bool:
    """Whether the entity item written is at most one write unit, about (DynamoDB counts
    attribute names and values)."""
    size = (item_size.text_bytes(write.key[0]) + item_size.text_bytes(write.key[1])
            + item_size.text_bytes(write.state) + len(write.hw)
            + len(encode_tiles_out(tiles_out)) + item_size.ATTRIBUTE_BYTES)
    return size <= ENTITY_ITEM_BYTES


def _as_it_is(key: ItemKey, own: _Item, before: StoredItem | None) -> ItemWrite:
    """The entity item's write when it takes nothing new but records where new tiles go."""
    own.changed = {}
    if before is None:
        own.text = "{}"
        return ItemWrite(key, "{}", "", None, None, 0, 1)
    assert isinstance(before.state, str)  # made text by _as_text
    own.text = before.state
    return ItemWrite(key, compact_state(before.state), before.hw, before.hw, before.expires_at,
                     before.event_time_ms, before.version + 1)


def _held(item: StoredItem | None) -> Tiles:
    """The tiles an entity item holds (its state, made text by ``_as_text``)."""
    if item is None:
        return {}
    assert isinstance(item.state, str)
    tiles: Tiles = json.loads(item.state)
    return tiles


def _mark_of(item: StoredItem | None, shard_id: str) -> Position:
    if item is None:
        return _NOTHING_APPLIED
    mark = decode_hw(item.hw).get(shard_id)
    return decode_position(mark) if mark is not None else _NOTHING_APPLIED


def _first_of(contribution: tuple[_Received, Tiles]) -> Position:
    return contribution[0].position


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
