"""Cut-overs: from which record on the live stages fold a feature, and what the backfill owns.

A feature keeps one state *slot* per tile size of its group (``fastbreak.engine.plan.Slot``).
A slot that a release adds to a running platform (a new group, or a new feature or tile size in
a group) has history in the raw table that the live stages never folded. The *cut-over* of a
slot is a Kinesis arrival time: the live stages fold a record into the slot only if it reached
the stream at or after it, and the backfill (``fastbreak.offline.backfill``) folds the records
that reached it before. Arrival time is a property of the record, the same on every
re-delivery, whatever the batch, the shard, the mapping's ParallelizationFactor lane or the
runtime: so every record is on exactly one side, and neither side depends on the other's
progress.

The *registry* (one item of the online store table, ``REGISTRY_KEY``) holds every slot's
cut-over. The first live stage that meets a slot the registry lacks records it: at 0 (live
since the start) when the registry does not exist yet, the release that created it, whose
slots were all live before; otherwise at its own clock plus ``delay_ms``, long enough for the
release to finish its canary (until then the previous version, which does not know the slot,
still processes some batches: what they see must be the backfill's). Entries never change
afterwards, so every reader may cache them.

Pure Python: the registry goes through ``fastbreak.engine.online_store``, any runtime (the
Lambda, Flink, the backfill) calls ``CutOvers.live`` or ``CutOvers.backfill``.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from fastbreak.engine.layout import CUTOVER_REGISTRY_KEY, ItemKey, compact_state, state_json
from fastbreak.engine.online_store import ItemWrite, OnlineStore, StoreUnavailable, WriteOutcome
from fastbreak.engine.plan import FoldSection, Plan, Route

SlotKey = tuple[str, int, str]  # (group, tile seconds, slot name)
REGISTRY_KEY: ItemKey = CUTOVER_REGISTRY_KEY
# A canary of 5 minutes, the alarms that judge it, and an old version's invocation still running
# when the alias moves (up to the function's timeout): half an hour covers them with a margin.
DEFAULT_DELAY_MS = 30 * 60 * 1000
_ROUNDS = 5


def slot_keys(plan: Plan) -> list[SlotKey]:
    return [
        (name, kind.tile_seconds, slot.name)
        for name, group in plan.groups.items()
        for kind in group.kinds.values()
        for slot in kind.slots
    ]


def slot_text(key: SlotKey) -> str:
    """A slot's name in the registry: ``{group}#{tile seconds}#{slot}``."""
    return f"{key[0]}#{key[1]}#{key[2]}"


def parse_slot(text: str) -> SlotKey:
    group, tile, name = text.split("#", 2)
    return group, int(tile), name


# The folds of a route for records of each arrival interval between its cut-overs: what
# ``CutOvers.live`` and ``CutOvers.backfill`` answer, computed once per route.
@dataclass
class _RouteFolds:
    bounds: list[int]  # the route's distinct non-zero cut-overs, ascending
    live: list[tuple[FoldSection, ...]]  # for arrival in [bounds[i-1], bounds[i])
    backfill: list[tuple[FoldSection, ...]]


@dataclass
class CutOvers:
    """Every slot's cut-over (arrival ms; 0: live since the start). A slot absent from
    ``from_ms`` is live since the start."""

    from_ms: Mapping[SlotKey, int] = field(default_factory=dict)
    _folds: dict[int, _RouteFolds] = field(default_factory=dict, repr=False)

    def latest(self, route: Route) -> int:
        """The route's latest cut-over: a record that arrived at or after it takes
        ``route.fold`` whole."""
        bounds = self._of(route).bounds
        return bounds[-1] if bounds else 0

    def live(self, route: Route, arrival_ms: int) -> tuple[FoldSection, ...]:
        """The part of ``route.fold`` the live stages apply to a record that reached the stream
        at ``arrival_ms`` (empty: none of it)."""
        folds = self._of(route)
        return folds.live[bisect_right(folds.bounds, arrival_ms)]

    def backfill(self, route: Route, arrival_ms: int) -> tuple[FoldSection, ...]:
        """The rest of it: the slots whose cut-over is after ``arrival_ms``."""
        folds = self._of(route)
        return folds.backfill[bisect_right(folds.bounds, arrival_ms)]

    def generation(self, key: SlotKey) -> int:
        return self.from_ms.get(key, 0)

    def _of(self, route: Route) -> _RouteFolds:
        found = self._folds.get(id(route))
        if found is None:
            found = self._folds[id(route)] = self._compile(route)
        return found

    def _compile(self, route: Route) -> _RouteFolds:
        name = route.group.group.name
        cut = {
            (section.kind.tile_seconds, slot.name): self.from_ms.get(
                (name, section.kind.tile_seconds, slot.name), 0)
            for section in route.sections for slot in section.slots
        }
        bounds = sorted({value for value in cut.values() if value > 0})
        live, backfill = [], []
        # Interval i holds arrivals a with bounds[i-1] <= a < bounds[i]: a slot is live there
        # when its cut-over is at most bounds[i-1] (0 before the first bound).
        for index in range(len(bounds) + 1):
            reached = bounds[index - 1] if index else 0
            live.append(_restricted(route, cut, reached, live=True))
            backfill.append(_restricted(route, cut, reached, live=False))
        if not bounds:
            live[0] = route.fold  # the usual case: the route itself, nothing to restrict
        return _RouteFolds(bounds, live, backfill)


def _restricted(route: Route, cut: Mapping[tuple[int, str], int], reached: int, *, live: bool
                ) -> tuple[FoldSection, ...]:
    """The route's sections with only the slots live (cut-over at most ``reached``), or only
    the others."""
    sections: list[FoldSection] = []
    for section in route.sections:
        kind = section.kind
        steps = tuple(
            step for slot, step in zip(section.slots, section.steps, strict=True)
            if (cut[(kind.tile_seconds, slot.name)] <= reached) is live
        )
        if steps:
            sections.append((kind, kind.section, kind.tile_seconds, steps))
    return tuple(sections)


class CutOverRegistry:
    """The registry item over the online store's access layer (consistent reads, writes
    conditional on the revision read)."""

    def __init__(self, store: OnlineStore) -> None:
        self.store = store

    def read(self) -> dict[SlotKey, int] | None:
        """Every recorded cut-over; None when no live stage has created the registry yet."""
        stored = self.store.get_many([REGISTRY_KEY]).get(REGISTRY_KEY)
        if stored is None:
            return None
        return {parse_slot(text): int(value)
                for text, value in json.loads(state_json(stored.state)).items()}

    def load(self, plan: Plan, now_ms: int, delay_ms: int = DEFAULT_DELAY_MS) -> CutOvers:
        """The cut-overs of every slot of ``plan``, recording those the registry lacks (see the
        module docstring); ``StoreUnavailable`` if the registry cannot be read or written."""
        keys = slot_keys(plan)
        for _ in range(_ROUNDS):
            stored = self.store.get_many([REGISTRY_KEY]).get(REGISTRY_KEY)
            recorded: dict[str, int] = (
                json.loads(state_json(stored.state)) if stored is not None else {})
            missing = [slot_text(key) for key in keys if slot_text(key) not in recorded]
            if not missing:
                return CutOvers({key: int(recorded[slot_text(key)]) for key in keys})
            start = 0 if stored is None else now_ms + delay_ms
            revision = stored.version + 1 if stored is not None else 1
            text = json.dumps({**recorded, **dict.fromkeys(missing, start)}, sort_keys=True,
                              separators=(",", ":"))
            write = ItemWrite(REGISTRY_KEY, compact_state(text), f"revision={revision}",
                              stored.hw if stored is not None else None, None, 0, revision)
            outcomes, _ = self.store.write_many([write])
            if outcomes[REGISTRY_KEY] is WriteOutcome.FAILED:
                raise StoreUnavailable("the cut-over registry could not be written")
            # WRITTEN or CONFLICT (another stage recorded first): read what is there now
        raise StoreUnavailable("the cut-over registry kept changing under this writer")


def pending(cutovers: Mapping[SlotKey, int], groups: Iterable[str]) -> dict[SlotKey, int]:
    """The slots of ``groups`` that have history before their cut-over."""
    wanted = set(groups)
    return {key: start for key, start in cutovers.items() if key[0] in wanted and start > 0}
