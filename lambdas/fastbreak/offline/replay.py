"""The processor's rules over the raw table: which rows are applied, to which items, in which order.

The stream processor decides per record (``fastbreak.engine.admission``: the raw table's
``rejection`` column holds its verdict) and then applies rules that need more than one record.
This module is those rules, for code that reads the raw table instead of the stream (the
training-set builder, the backfill, the consistency job):

- **Identity.** An event is ``(event_id, event_time)`` within a Kinesis shard. Of several
  admitted copies (a producer retry re-sends the same event under a new sequence number), the
  copy with the lowest position (sequence number, then sub-sequence) is applied; the others
  are duplicates. ``first_copies``.
- **Lateness.** A copy that reached Kinesis more than a group's ``allowed_lateness_seconds``
  after its event time is not applied to that group; it still takes its identity, so a later
  copy of it is a duplicate. ``route``.
- **Items and order.** A group keyed by the stream's partition entity (the user) keeps one
  item per entity. Other (audience) groups are rebuilt here as one partial per (tile, shard):
  what stage 1 folds per shard, before the audience stage merges the partials into the
  entity's items as a read merges them (``fastbreak.engine.layout``).
  Each item folds its events in position order; where several shards fed one user item (after a
  resharding), shard by shard in shard id order, which is the order in which Lambda drains a
  parent shard before its children. The order matters to ``top_k`` past its capacity only:
  every other aggregation gives the same state in any order.

Pure Python over plain values: no pyarrow, DuckDB or AWS import, so the Spark engine can call it
inside Spark's workers and the backfill inside a Lambda.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastbreak.definitions.model import Catalog
from fastbreak.engine.layout import ItemKey, entity_pk, group_sk, tile_sk
from fastbreak.engine.plan import LIFETIME, FoldSection, GroupPlan, Plan
from fastbreak.engine.records import Position
from fastbreak.engine.timestamps import parse_event_time_ms


@dataclass(frozen=True, slots=True)
class RawEvent:
    """An admitted row of the raw table: the event as the processor folds it, where it sat in
    its shard and when it reached Kinesis. ``fastbreak.engine.fold`` folds it as is."""

    event_type: str
    event_id: str
    time_ms: int
    payload: dict[str, Any]
    shard_id: str
    position: Position  # (sequence number, sub-sequence)
    arrival_ms: int

    @property
    def identity(self) -> tuple[str, str, int]:
        return self.shard_id, self.event_id, self.time_ms

    @property
    def fold_order(self) -> tuple[str, int, int]:
        return self.shard_id, self.position[0], self.position[1]


class RawEvents:
    """Raw table rows -> ``RawEvent``: the payload is the event type's latest schema fields,
    as validation leaves it (a null column is a field the event does not carry)."""

    def __init__(self, catalog: Catalog) -> None:
        self._fields = {
            name: tuple(f.name for f in catalog.latest(name).fields) for name in catalog.event_names
        }

    def event(self, row: Mapping[str, Any]) -> RawEvent | None:
        """None for a row the processor refused (``rejection`` set) or of an unknown type."""
        if row.get("rejection") is not None:
            return None
        fields = self._fields.get(row.get("event_type"))  # type: ignore[arg-type]
        if fields is None:
            return None
        return RawEvent(
            event_type=row["event_type"],
            event_id=row["event_id"],
            time_ms=epoch_ms(row["event_time"]),
            payload={name: row.get(name) for name in fields},
            shard_id=row["kinesis_shard_id"],
            position=(int(row["kinesis_sequence_number"]), int(row["kinesis_sub_sequence"] or 0)),
            arrival_ms=epoch_ms(row["kinesis_arrival_time"]),
        )

    def events(self, rows: Iterable[Mapping[str, Any]]) -> list[RawEvent]:
        return [event for row in rows if (event := self.event(row)) is not None]


def epoch_ms(value: Any) -> int:
    """A raw-table timestamp (epoch ms, an aware ``datetime`` or the envelope's ISO text)."""
    if type(value) is int:
        return value
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    parsed = parse_event_time_ms(text)
    if parsed is None:
        raise ValueError(f"not a time with a zone: {value!r}")
    return parsed


def first_copies(events: Iterable[RawEvent]) -> list[RawEvent]:
    """The applied copy of every event: per (shard, event id, event time), the lowest position.
    Returned in fold order. Must see every copy of an identity: run it over a whole shard (or
    everything), before grouping by entity, since copies may disagree on their entity keys."""
    first: dict[tuple[str, str, int], RawEvent] = {}
    for event in events:
        kept = first.get(event.identity)
        if kept is None or event.position < kept.position:
            first[event.identity] = event
    return sorted(first.values(), key=_fold_order)


def _fold_order(event: RawEvent) -> tuple[str, int, int]:
    return event.fold_order


@dataclass(frozen=True)
class ItemRef:
    """One item as the replay rebuilds it: a user's group item, or one (tile, shard) partial
    of an audience group, as stage 1 folds it (``tile`` then holds (tile seconds, tile
    start))."""

    key: ItemKey
    group: str
    entity_key: str
    shard_id: str | None = None
    tile: tuple[int, int] | None = None


@dataclass
class ItemEvents:
    """What one item folds: its contributions in fold order, and per shard the highest
    position among them (the item's high-water marks once they are applied)."""

    ref: ItemRef
    group: GroupPlan
    contributions: list[tuple[RawEvent, Sequence[FoldSection]]] = field(default_factory=list)
    marks: dict[str, Position] = field(default_factory=dict)

    def add(self, event: RawEvent, sections: Sequence[FoldSection]) -> None:
        self.contributions.append((event, sections))
        mark = self.marks.get(event.shard_id)
        if mark is None or event.position > mark:
            self.marks[event.shard_id] = event.position


def route(
    plan: Plan, events: Iterable[RawEvent], groups: Collection[str] | None = None,
    until: Mapping[str, Position] | None = None,
) -> dict[ItemKey, ItemEvents]:
    """The processor's routing of first copies (``first_copies``) to items, lateness applied.

    ``groups`` limits the groups (default: all); ``until`` keeps, per shard, the events at or
    below that position (a backfill's cut-over; a shard absent from it keeps nothing).
    Events must come in fold order, as ``first_copies`` returns them.
    """
    items: dict[ItemKey, ItemEvents] = {}
    for event in events:
        if until is not None:
            limit = until.get(event.shard_id)
            if limit is None or event.position > limit:
                continue
        for route_ in plan.routes.get(event.event_type, ()):
            group = route_.group
            name = group.group.name
            if groups is not None and name not in groups:
                continue
            if event.arrival_ms - event.time_ms > route_.lateness_ms:
                continue  # too late for this group: the processor quarantines it
            entity_key = event.payload[route_.key_field]
            pk = entity_pk(group.group.entity, entity_key)
            if not group.sharded:
                _item(items, ItemRef((pk, group_sk(name)), name, entity_key), group).add(
                    event, route_.fold)
                continue
            time_s = event.time_ms // 1000
            for section in route_.fold:
                tile_seconds = section[2]
                start = time_s - time_s % tile_seconds if tile_seconds != LIFETIME else 0
                ref = ItemRef(
                    (pk, tile_sk(name, tile_seconds, start, event.shard_id)), name, entity_key,
                    event.shard_id, (tile_seconds, start),
                )
                _item(items, ref, group).add(event, (section,))
    return items


def _item(items: dict[ItemKey, ItemEvents], ref: ItemRef, group: GroupPlan) -> ItemEvents:
    found = items.get(ref.key)
    if found is None:
        found = items[ref.key] = ItemEvents(ref, group)
    return found

