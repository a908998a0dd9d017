"""The fold and the merge: the one definition of what every feature's value is.

*Fold*: events go into an item's state, ``{tile seconds: {tile key: {slot: state}}}`` (the
format of ``fastbreak.engine.layout``), each event into the tile of its event time, by the fold
steps of ``fastbreak.engine.plan``. *Merge*: the tiles of one entity's items become the served
values of its group's features as of a time (a sliding window of size W over tiles of size t, as
of T, takes the W / t tiles ending with the one that holds T; tumbling takes that tile; lifetime
the lifetime state; since-kickoff the session tiles from the minute the game went live).

*Merge of partials* (``ItemMerge``): the audience stage merges the partial tiles that stage 1
folded per batch into the items of one entity, with each aggregation's ``merge``. A pure function
of the tiles, so any runtime that re-keys partials (the audience Lambda, a Flink operator) calls
it as is.

Every runtime calls these and nothing else to compute a feature: the Lambda stream processor,
the audience stage, the feature API and ``FeatureClient``, the training-set builder and the
backfill. So a value served online, a value in a training set and a backfilled value are the
same function of the same events.

Aggregation states merge exactly (``fastbreak.engine.aggregations``), and tiles are merged in
one canonical order (tile start, then the item's sort key), so the merge does not depend on how
events were batched, which shard wrote them, or in which order a store returned the items.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fastbreak.definitions.model import WindowKind
from fastbreak.engine.aggregations import State
from fastbreak.engine.layout import tile_key
from fastbreak.engine.plan import (
    KICKOFF_SLOT,
    LIFETIME,
    SESSION_TILE_SECONDS,
    FoldSection,
    GroupPlan,
    TileKind,
)

# section -> tile key -> slot -> state. JSON form (as stored) except for the tiles an
# ``ItemFold`` has opened and not finished yet, which hold live states.
Tiles = dict[str, dict[str, dict[str, Any]]]


class FoldedEvent(Protocol):
    """What the fold reads of an event (``fastbreak.engine.validation.Event`` is one)."""

    @property
    def payload(self) -> dict[str, Any]: ...

    @property
    def time_ms(self) -> int: ...

    @property
    def event_id(self) -> str: ...


# (event, the route sections it feeds in this item)
Contribution = tuple[FoldedEvent, Sequence[FoldSection]]


def tile_start(time_ms: int, tile_seconds: int) -> int:
    """The start (epoch s) of the tile of ``tile_seconds`` that holds ``time_ms``; 0 for the
    lifetime tile."""
    time_s = time_ms // 1000
    return time_s - time_s % tile_seconds if tile_seconds != LIFETIME else 0


class ItemFold:
    """Folds events into one item's tiles, in place: ``fold`` as often as needed, then
    ``finish`` once, which leaves ``tiles`` in JSON form and pruned.

    ``tile_keys`` caches tile start -> tile key across the items of a batch (formatting the key
    is a measurable share of the hot path).
    """

    __slots__ = ("newest_ms", "tile_keys", "tiles", "touched")

    def __init__(
        self, tiles: Tiles, newest_ms: int = 0, tile_keys: dict[int, str] | None = None
    ) -> None:
        self.tiles = tiles
        self.newest_ms = newest_ms
        self.tile_keys = tile_keys if tile_keys is not None else {}
        # (section, tile start) -> the tile's slots as live states, for the tiles folded into
        self.touched: dict[tuple[str, int], dict[str, State]] = {}

    def fold(self, contributions: Iterable[Contribution]) -> None:
        """Fold events in the order given (a shard's position order: ``add`` is sequential
        for ``last`` ties and top-K evictions)."""
        touched, newest = self.touched, self.newest_ms
        for event, sections in contributions:
            payload, time_ms, event_id = event.payload, event.time_ms, event.event_id
            if time_ms > newest:
                newest = time_ms
            time_s = time_ms // 1000
            for kind, section, tile_seconds, steps in sections:
                start = time_s - time_s % tile_seconds if tile_seconds != LIFETIME else 0
                states = touched.get((section, start))
                if states is None:
                    states = touched[(section, start)] = self._open(kind, start)
                for step in steps:
                    step(states, payload, time_ms, event_id)
        self.newest_ms = newest

    def _open(self, kind: TileKind, start: int) -> dict[str, State]:
        """The live states of one tile, created or loaded; the dict returned is also placed in
        ``tiles``, where ``finish`` turns it back to JSON form."""
        start_key = self.tile_keys.get(start)
        if start_key is None:
            start_key = self.tile_keys[start] = tile_key(start)
        section_tiles = self.tiles.get(kind.section)
        if section_tiles is None:
            section_tiles = self.tiles[kind.section] = {}
        data = section_tiles.get(start_key)
        if data is None:
            states: dict[str, State] = {}
        else:
            states = load_tile(kind, data)
        section_tiles[start_key] = states
        return states

    def finish(self, group: GroupPlan, stored: bool, future_tolerance_s: int) -> None:
        """Dump the touched tiles, prune what no window can read any more, and drop tile sizes
        the catalog no longer uses. ``stored`` (the item existed before this fold) no longer
        changes what is pruned."""
        self.dump(group)
        finish_tiles(group, self.tiles, self.newest_ms, future_tolerance_s)

    def dump(self, group: GroupPlan) -> Tiles:
        """Turn the touched tiles back to JSON form, pruning nothing: what a partial carries
        (every tile its events touched, even one a later write will prune). Returns ``tiles``."""
        kind_of_section = group.kind_of_section
        for (section, _), states in self.touched.items():
            dump_tile(kind_of_section[section], states)  # in place, inside ``tiles``
        return self.tiles

    def changed(self) -> Tiles:
        """The tiles this fold touched that are still in the item (not pruned)."""
        changed: Tiles = {}
        tile_keys, tiles = self.tile_keys, self.tiles
        for section, start in self.touched:
            start_key = tile_keys[start]
            section_tiles = tiles[section]
            if start_key in section_tiles:
                changed.setdefault(section, {})[start_key] = section_tiles[start_key]
        return changed


def finish_tiles(group: GroupPlan, tiles: Tiles, newest_ms: int, future_tolerance_s: int) -> None:
    """Prune, in tiles in JSON form, what no window can read any more once the item has seen
    ``newest_ms``, and drop tile sizes the catalog no longer uses."""
    kind_of_section = group.kind_of_section
    # Tiles are pruned against the newest event time less the future tolerance: an event may be
    # dated up to that far ahead of the clock that readers use.
    prune_s = newest_ms // 1000 - future_tolerance_s
    # Every section, new item or not, whichever tiles this write touched: what an item keeps
    # then depends on its newest event time alone, so it is the same however its events were
    # batched (a tile expired at one newest time is expired at every later one).
    for section, section_tiles in tiles.items():
        kind = kind_of_section.get(section)
        if kind is None or kind.tile_seconds == LIFETIME or not section_tiles:
            continue
        expires = kind.tile_expires_at(int(min(section_tiles)))  # of the oldest tile
        if expires is not None and expires <= prune_s:  # usually nothing has expired
            prune(kind, section_tiles, prune_s)
    if len(tiles) > len(kind_of_section):
        for section in [section for section in tiles if section not in kind_of_section]:
            del tiles[section]


def fold_partial(group: GroupPlan, contributions: Iterable[Contribution],
                 tile_keys: dict[int, str] | None = None) -> tuple[Tiles, int]:
    """One batch's events of one entity folded from nothing (in position order): the tiles of a
    partial, in JSON form, and their newest event time. Nothing is pruned: the audience stage
    merges each tile into the entity's items, which prune by their own newest event time."""
    fold = ItemFold({}, 0, tile_keys)
    fold.fold(contributions)
    return fold.dump(group), fold.newest_ms


class ItemMerge:
    """Merges partial tiles (``fold_partial``'s, in JSON form) into one item's tiles, in place:
    ``merge`` as often as needed, then ``finish`` once. Aggregation merges are associative and
    commutative (top-K past its capacity aside), so the result does not depend on the order of
    the partials, nor on how stage 1 batched the events inside them."""

    __slots__ = ("group", "newest_ms", "tiles", "touched")

    def __init__(self, group: GroupPlan, tiles: Tiles, newest_ms: int = 0) -> None:
        self.group = group
        self.tiles = tiles
        self.newest_ms = newest_ms
        # (section, tile key) -> the tile's slots as live states, for the tiles merged into
        self.touched: dict[tuple[str, str], dict[str, State]] = {}

    def merge(self, partial: Tiles) -> None:
        kind_of_section = self.group.kind_of_section
        touched, newest = self.touched, self.newest_ms
        for section, section_tiles in partial.items():
            kind = kind_of_section.get(section)
            if kind is None:
                continue  # a tile size the catalog no longer uses
            for start_key, data in section_tiles.items():
                states = touched.get((section, start_key))
                if states is None:
                    states = touched[(section, start_key)] = self._open(kind, start_key)
                for name, slot_data in data.items():
                    slot = kind.slot_named.get(name)
                    if slot is None:
                        continue  # a feature since removed from the catalog
                    aggregator = slot.aggregator
                    part = aggregator.load(slot_data)
                    held = states.get(name)
                    states[name] = part if held is None else aggregator.merge(held, part)
                    if part[0] > newest:
                        newest = part[0]
        self.newest_ms = newest

    def _open(self, kind: TileKind, start_key: str) -> dict[str, State]:
        section_tiles = self.tiles.setdefault(kind.section, {})
        data = section_tiles.get(start_key)
        states = {} if data is None else load_tile(kind, data)
        section_tiles[start_key] = states
        return states

    def finish(self, future_tolerance_s: int) -> None:
        """Dump the merged tiles and prune what no window reads any more (``finish_tiles``)."""
        kind_of_section = self.group.kind_of_section
        for (section, _), states in self.touched.items():
            dump_tile(kind_of_section[section], states)
        finish_tiles(self.group, self.tiles, self.newest_ms, future_tolerance_s)

    def changed(self) -> Tiles:
        """The tiles this merge touched that are still in the item (not pruned)."""
        changed: Tiles = {}
        for section, start_key in self.touched:
            section_tiles = self.tiles.get(section, {})
            if start_key in section_tiles:
                changed.setdefault(section, {})[start_key] = section_tiles[start_key]
        return changed


def load_tile(kind: TileKind, data: dict[str, Any]) -> dict[str, State]:
    states: dict[str, State] = {}
    for name, slot_data in data.items():
        slot = kind.slot_named.get(name)
        if slot is not None:  # a slot of a feature since removed from the catalog is dropped
            states[name] = slot.aggregator.load(slot_data)
    return states


def dump_tile(kind: TileKind, states: dict[str, Any]) -> None:
    """Live states -> their JSON form, in place."""
    for name, dump in kind.dumps:
        state = states.get(name)
        if state is not None:
            states[name] = dump(state)


def prune(kind: TileKind, section_tiles: dict[str, Any], newest_s: int) -> None:
    """Drop the tiles no window can read any more once the item has seen ``newest_s``
    (``TileKind.tile_expires_at``, the item TTL's rule). Lifetime state stays."""
    if kind.tile_seconds == LIFETIME:
        return
    # the latest start whose tile has expired by newest_s
    cutoff = newest_s - (kind.tile_expires_at(0) or 0)
    if cutoff <= 0:
        return
    last_expired = tile_key(cutoff)  # fixed width: text order is time order
    for start_key in [key for key in section_tiles if key <= last_expired]:
        del section_tiles[start_key]


# ---- the merge ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureValue:
    value: Any
    event_time_ms: int | None  # newest event folded into the value; None if there is none
    age_ms: int | None  # as_of minus that event time


@dataclass(frozen=True, slots=True)
class ItemState:
    """One stored item of a group as the merge reads it: ``order`` is its sort key (the merge
    order of tiles that share a start), ``tiles`` its state in JSON form."""

    order: str
    expires_at: int | None
    tiles: Tiles


# tile seconds -> [(tile start, item order, live states by slot)]
TileSet = dict[int, list[tuple[int, str, dict[str, State]]]]


def collect_tiles(plan: GroupPlan, items: Iterable[ItemState], now_s: int) -> TileSet:
    """The live tiles of a group's items that are still readable at ``now_s`` (items and tiles
    past their TTL are skipped: DynamoDB deletes expired items lazily), in merge order."""
    found: TileSet = {}
    for item in items:
        if item.expires_at is not None and item.expires_at <= now_s:
            continue
        for section, section_tiles in item.tiles.items():
            kind = plan.kind_of_section.get(section)
            if kind is None:
                continue  # a tile size the catalog no longer uses
            tiles = found.setdefault(kind.tile_seconds, [])
            for start_key, data in section_tiles.items():
                start = int(start_key)
                expires = kind.tile_expires_at(start)
                if expires is not None and expires <= now_s:
                    continue  # past its retention: no window reads it any more
                tiles.append((start, item.order, load_tile(kind, data)))
    for tiles in found.values():
        tiles.sort(key=_merge_order)
    return found


def _merge_order(tile: tuple[int, str, dict[str, State]]) -> tuple[int, str]:
    return tile[0], tile[1]


def window_values(plan: GroupPlan, tiles: TileSet, as_of_ms: int) -> dict[str, FeatureValue]:
    """Every served feature of the group as of ``as_of_ms``, from its tiles."""
    as_of_s = as_of_ms // 1000
    kickoff_s = _kickoff_s(plan, tiles.get(LIFETIME, []))
    values: dict[str, FeatureValue] = {}
    for served in plan.served:
        window, tile = served.window, served.tile_seconds
        low, high = window_tiles(window.kind, window.size_seconds, tile, as_of_s, kickoff_s)
        aggregator = served.aggregator
        state: State = aggregator.empty()
        name = served.feature.name
        for start, _, states in tiles.get(tile, ()):
            if low is not None and high is not None and not low <= start <= high:
                continue
            part = states.get(name)
            if part is not None:
                state = aggregator.merge(state, part)
        newest = state[0] or None
        values[served.name] = FeatureValue(
            aggregator.result(state), newest, as_of_ms - newest if newest is not None else None
        )
    return values


def window_tiles(
    kind: WindowKind, size_seconds: int, tile_seconds: int, as_of_s: int, kickoff_s: int | None
) -> tuple[int | None, int | None]:
    """The first and last tile start a window takes as of ``as_of_s`` (both None: every tile,
    the lifetime window). A window of size W over tiles of t spans between W - t and W of
    event time (the Chronon/Tecton convention); ``(low, high)`` with low > high is empty."""
    if kind is WindowKind.LIFETIME:
        return None, None
    high = as_of_s // tile_seconds * tile_seconds
    if kind is WindowKind.SLIDING:
        return high - size_seconds + tile_seconds, high
    if kind is WindowKind.TUMBLING:
        return high, high
    if kickoff_s is not None and kickoff_s <= as_of_s:
        return kickoff_s // SESSION_TILE_SECONDS * SESSION_TILE_SECONDS, high
    return high + 1, high  # not kicked off yet: an empty session


def _kickoff_s(plan: GroupPlan, lifetime: Sequence[tuple[int, str, dict[str, State]]]
               ) -> int | None:
    if not plan.has_kickoff:
        return None
    slot = plan.kinds[LIFETIME].slot_named[KICKOFF_SLOT]
    state: State = slot.aggregator.empty()
    for _, _, states in lifetime:
        if KICKOFF_SLOT in states:
            state = slot.aggregator.merge(state, states[KICKOFF_SLOT])
    kickoff_ms = slot.aggregator.result(state)
    return None if kickoff_ms is None else int(kickoff_ms) // 1000


def merge_items(
    plan: GroupPlan, items: Iterable[ItemState], as_of_ms: int, now_ms: int | None = None
) -> dict[str, FeatureValue]:
    """Every served feature of one group for one entity, from that entity's group item (or its
    tile and lifetime partials), as of ``as_of_ms``; TTLs are judged at ``now_ms`` (default:
    ``as_of_ms``)."""
    now_s = (as_of_ms if now_ms is None else now_ms) // 1000
    return window_values(plan, collect_tiles(plan, items, now_s), as_of_ms)
