"""The reference path of the training-set builder: per entity, the engine's own fold and merge.

For one entity, its items are rebuilt (``fastbreak.offline.replay``: one item per user, or one
partial per (tile, shard) of an audience group, which the audience stage merges into the
entity's items as a read merges them), and at each spine time T every feature is
``fastbreak.engine.fold.merge_items`` of those items as of T: the feature API's own
computation. The items hold

- in event-time mode (the default), the applied events whose event time is at most T;
- in ``as_served`` mode, those that had reached Kinesis by T (an event dated up to the future
  tolerance ahead of its arrival included, as online).

Spine times are answered in ascending order, folding in each one only what became included
since the previous one (as the processor folds batch after batch; the fold's result does not
depend on the batching). The one state that depends on the order is a ``top_k`` past its
capacity: the sections holding one take their events in position order, folded again from a
copy kept every few hundred events whenever a newly included event comes before events
already folded (an event that arrived late, or a shard's events that arrived out of their
event-time order).

A function of one entity's events and spine times, with no other state: the Spark engine calls
``entity_values`` per entity inside Spark's workers (``spark_engine``), and the DuckDB path calls
it for the features its SQL does not cover.
"""

from __future__ import annotations

import copy
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from fastbreak.engine.aggregations import TopK
from fastbreak.engine.fold import (
    Contribution,
    FeatureValue,
    ItemFold,
    ItemState,
    Tiles,
    merge_items,
    tile_start,
)
from fastbreak.engine.plan import FUTURE_TOLERANCE_SECONDS, LIFETIME, GroupPlan, Plan
from fastbreak.offline.replay import ItemEvents, RawEvent, route

_CHECKPOINT_EVERY = 256
# One row of features: "{group}.{feature}_{window}" -> value, or None where the window holds
# no event (the feature API's null).
FeatureRow = dict[str, FeatureValue | None]


def entity_values(
    plan: Plan, groups: Sequence[str], entity_key: str, events: Iterable[RawEvent],
    times_ms: Sequence[int], *, as_served: bool = False,
) -> list[FeatureRow]:
    """Every served feature of ``groups`` (all keyed by one entity) for ``entity_key``, at
    each of ``times_ms`` (any order; one row per time, in the order given).

    ``events``: the entity's first copies (``replay.first_copies``, run over whole shards);
    events of other entities are ignored.
    """
    events = list(events)
    order = sorted(range(len(times_ms)), key=times_ms.__getitem__)
    rows: list[FeatureRow] = [{} for _ in times_ms]
    for name in groups:
        group = plan.groups[name]
        histories = [
            _ItemHistory(item, as_served)
            for item in route(plan, events, (name,)).values()
            if item.ref.entity_key == entity_key
        ]
        previous: int | None = None
        values: FeatureRow = {}
        for index in order:
            at = times_ms[index]
            if at != previous:
                values = _values_at(group, histories, at)
                previous = at
            rows[index].update(values)
    return rows


def _values_at(group: GroupPlan, histories: list[_ItemHistory], at_ms: int) -> FeatureRow:
    states = [state for history in histories if (state := history.state_at(at_ms)) is not None]
    merged = merge_items(group, states, at_ms)
    prefix = group.group.name + "."
    return {
        prefix + name: value if value.event_time_ms is not None else None
        for name, value in merged.items()
    }


class _ItemHistory:
    """One item, folded up to a time."""

    def __init__(self, item: ItemEvents, as_served: bool) -> None:
        self.item = item
        self.group = item.group
        self.contributions = item.contributions  # fold order
        self.keys = [
            event.arrival_ms if as_served else event.time_ms for event, _ in self.contributions
        ]
        # indices in inclusion order (ties in fold order)
        self.by_key = sorted(range(len(self.keys)), key=lambda i: (self.keys[i], i))
        self.taken = 0  # how many of by_key are folded in
        self.tiles: Tiles = {}
        self.newest_ms = 0
        self.sensitive = _order_sensitive_sections(item)
        # The events folded into the order-sensitive sections, in fold order, and copies of
        # those sections every _CHECKPOINT_EVERY of them: (how many, the sections' tiles).
        self.ordered: list[int] = []
        self.checkpoints: list[tuple[int, Tiles]] = []
        # a tile partial past its retention, or not begun yet, is read by no window
        self.tile = item.ref.tile

    def state_at(self, at_ms: int) -> ItemState | None:
        if self.tile is not None and self.tile[0] != LIFETIME:
            tile_seconds, start = self.tile
            kind = self.group.kinds[tile_seconds]
            expires = kind.tile_expires_at(start)
            if start > at_ms // 1000 or (expires is not None and expires <= at_ms // 1000):
                return None
        self._fold_until(at_ms)
        if self.taken == 0:
            return None
        if self.tile is None:
            expires_at = self.group.expires_at(self.newest_ms // 1000)
        else:
            expires_at = self.group.kinds[self.tile[0]].tile_expires_at(self.tile[1])
        return ItemState(self.item.ref.key[1], expires_at, self.tiles)

    def _fold_until(self, at_ms: int) -> None:
        end = self.taken
        while end < len(self.by_key) and self.keys[self.by_key[end]] <= at_ms:
            end += 1
        if end == self.taken:
            return
        new = sorted(self.by_key[self.taken : end])
        stored = self.taken > 0
        self.taken = end
        contributions = self.contributions
        if not self.sensitive:
            self._fold(contributions[i] for i in new)
            return
        sensitive = self.sensitive
        self._fold((contributions[i][0], [s for s in contributions[i][1] if s[1] not in sensitive])
                   for i in new)
        # The order-sensitive sections take the events in fold order: from the last copy made
        # before the first new event, fold again whatever follows it.
        first = bisect_left(self.ordered, new[0])
        self.ordered[first:] = sorted(self.ordered[first:] + new)
        while self.checkpoints and self.checkpoints[-1][0] > first:
            self.checkpoints.pop()
        done, saved = self.checkpoints[-1] if self.checkpoints else (0, {})
        if stored:
            for section in sensitive:
                if section in saved:
                    self.tiles[section] = copy.deepcopy(saved[section])
                else:
                    self.tiles.pop(section, None)
        while done < len(self.ordered):
            stop = min(len(self.ordered), (done // _CHECKPOINT_EVERY + 1) * _CHECKPOINT_EVERY)
            self._fold((contributions[i][0], [s for s in contributions[i][1] if s[1] in sensitive])
                       for i in self.ordered[done:stop])
            done = stop
            if done % _CHECKPOINT_EVERY == 0:
                self.checkpoints.append((done, {
                    section: copy.deepcopy(self.tiles[section])
                    for section in sensitive if section in self.tiles
                }))

    def _fold(self, contributions: Iterable[Contribution]) -> None:
        fold = ItemFold(self.tiles, self.newest_ms)
        fold.fold(contributions)
        fold.finish(self.group, True, FUTURE_TOLERANCE_SECONDS)
        self.newest_ms = fold.newest_ms


def _order_sensitive_sections(item: ItemEvents) -> set[str]:
    """The sections of the item whose state depends on the order events are folded in: those
    with a ``top_k`` that meets more distinct values in one tile than it keeps counters for
    (below that, its counts are exact, in any order). Every other aggregation gives the same
    state in any order, ties included (they are broken on the event id, then the fold order,
    which inclusion order keeps)."""
    distinct: dict[tuple[str, str, int], set[object]] = {}
    sensitive: set[str] = set()
    for event, sections in item.contributions:
        for kind, section_key, tile_seconds, _ in sections:
            for slot in kind.slots:
                aggregator = slot.aggregator
                if not isinstance(aggregator, TopK) or event.event_type not in slot.events:
                    continue
                value = event.payload.get(slot.field) if slot.field is not None else None
                if value is None:
                    continue
                seen = distinct.setdefault(
                    (slot.name, section_key, tile_start(event.time_ms, tile_seconds)), set())
                seen.add(value)
                if len(seen) > aggregator.capacity:
                    sensitive.add(section_key)
    return sensitive
