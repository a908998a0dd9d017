"""The catalog compiled for the hot path: which items each event type feeds, and how.

Each feature group keeps one online-store item per entity (per Kinesis shard for groups keyed
by another entity than the stream's partition key, see ``docs/online-store-layout.md``). Inside
it, a *tile kind* is one tile size of the group (or the lifetime section): every feature whose
windows use that tile size keeps one state *slot* in each tile of it. So one event touches one
item per group, whatever the number of features, windows and tile sizes; reads merge the same
slots back into served features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from fastbreak.definitions.model import (
    Catalog,
    DefinitionError,
    Feature,
    FeatureGroup,
    FieldType,
    Window,
    WindowKind,
)
from fastbreak.engine.aggregations import (
    Aggregator,
    Min,
    State,
    Step,
    aggregator_for,
    is_json_state,
)

# "Since kickoff" sessions: a game kicks off at the event time of its first score_update with
# status live. Session state lives in 1-minute tiles kept for 12 hours, so the window has
# minute resolution: it starts at the minute the game went live.
KICKOFF_EVENT = "score_update"
KICKOFF_STATUS_FIELD = "status"
KICKOFF_STATUS = "live"
KICKOFF_SLOT = "_kickoff"
SESSION_TILE_SECONDS = 60
SESSION_RETENTION_SECONDS = 12 * 3600
LIFETIME = 0  # tile size of the lifetime item kind
# Producers' clocks drift: an event may be dated this far after it reached Kinesis (the
# processor refuses later ones). Pruning keeps the tiles that such an event's time skips.
FUTURE_TOLERANCE_SECONDS = 5 * 60
# DynamoDB refuses items over 400 KB, and a refused write would stop the shard: a group item
# must stay well inside it even at its worst (every tile kept, every sketch dense), keys,
# marks and attribute names included.
GROUP_ITEM_BUDGET_BYTES = 300 * 1024
DOUBLE = FieldType.DOUBLE

@dataclass(frozen=True)
class Slot:
    """One mergeable state inside an item; ``field`` None means the event time is the value
    (the kickoff slot) or no value is needed (count)."""

    name: str
    aggregator: Aggregator
    field: str | None
    events: frozenset[str]
    when: Callable[[dict[str, Any]], bool] | None = None


@dataclass(frozen=True)
class TileKind:
    """One tile size of a group (``LIFETIME``: the single lifetime tile) and its slots."""

    group: str
    entity: str
    tile_seconds: int  # LIFETIME for the lifetime item
    slots: tuple[Slot, ...]
    retention_seconds: int  # how long after the tile ends it can still be read; 0 = forever

    @cached_property
    def section(self) -> str:
        """The key of this tile size in an item's state (JSON object keys are strings)."""
        return str(self.tile_seconds)

    @cached_property
    def slot_named(self) -> dict[str, Slot]:
        return {slot.name: slot for slot in self.slots}

    def tile_expires_at(self, tile_start: int) -> int | None:
        """When no window reads the tile starting at ``tile_start`` any more (epoch s): its
        end plus the longest window over this tile size. None for the lifetime state. The
        one rule behind item TTLs, pruning and the reader's skip."""
        if self.tile_seconds == LIFETIME:
            return None
        return tile_start + self.tile_seconds + self.retention_seconds

    @cached_property
    def tiles_kept(self) -> int:
        """The most tiles of this kind an item holds: those of its longest window, the one
        being filled, one not pruned yet, and those an event dated ahead of the clock skips."""
        if self.tile_seconds == LIFETIME:
            return 1
        ahead = -(-FUTURE_TOLERANCE_SECONDS // self.tile_seconds)  # ceil
        return self.retention_seconds // self.tile_seconds + 2 + ahead

    @property
    def max_tile_bytes(self) -> int:
        return sum(len(slot.name) + 4 + slot.aggregator.max_state_bytes for slot in self.slots)

    @cached_property
    def dumps(self) -> tuple[tuple[str, Callable[[State], Any]], ...]:
        """(slot, its ``dump``) for the slots whose state is not its own JSON form."""
        return tuple(
            (slot.name, slot.aggregator.dump)
            for slot in self.slots if not is_json_state(slot.aggregator)
        )


@dataclass(frozen=True)
class RouteSection:
    """The slots of one tile kind that events of one type feed."""

    kind: TileKind
    slots: tuple[Slot, ...]

    @cached_property
    def steps(self) -> tuple[Step, ...]:
        """One fold step per slot (``Aggregator.fold_step``), in slot order."""
        return tuple(_step_of(slot) for slot in self.slots)


def _step_of(slot: Slot) -> Step:
    step = slot.aggregator.fold_step(slot.name, slot.field)
    when = slot.when
    if when is None:
        return step

    def guarded(states: dict[str, State], payload: dict[str, Any], time_ms: int,
                event_id: str) -> None:
        if when(payload):
            step(states, payload, time_ms, event_id)

    return guarded


# (tile kind, its section key, tile seconds, fold steps): a route section, unpacked
FoldSection = tuple["TileKind", str, int, tuple[Step, ...]]


@dataclass(frozen=True)
class ServedFeature:
    name: str
    feature: Feature
    window: Window
    tile_seconds: int
    aggregator: Aggregator


@dataclass(frozen=True)
class GroupPlan:
    group: FeatureGroup
    kinds: dict[int, TileKind]
    served: tuple[ServedFeature, ...]
    has_kickoff: bool
    # Per-shard partial items: the group is keyed by another entity than the stream's
    # partition key, so many shards write to the same entity (docs/online-store-layout.md).
    sharded: bool

    @cached_property
    def kind_of_section(self) -> dict[str, TileKind]:
        return {kind.section: kind for kind in self.kinds.values()}

    def expires_at(self, newest_s: int) -> int | None:
        """When the whole item can go: its newest tile of every size is past retention.
        Never, when the group keeps lifetime state."""
        if LIFETIME in self.kinds:
            return None
        return max(
            kind.tile_expires_at(newest_s - newest_s % kind.tile_seconds) or 0
            for kind in self.kinds.values()
        )


@dataclass(frozen=True)
class Route:
    """How events of one type feed one group's item."""

    group: GroupPlan
    key_field: str
    lateness_ms: int
    sections: tuple[RouteSection, ...]

    @cached_property
    def fold(self) -> tuple[FoldSection, ...]:
        """The sections as the processor's fold loop reads them."""
        return tuple(
            (section.kind, section.kind.section, section.kind.tile_seconds, section.steps)
            for section in self.sections
        )


@dataclass(frozen=True)
class Plan:
    groups: dict[str, GroupPlan]
    routes: dict[str, tuple[Route, ...]] = field(default_factory=dict)

    @property
    def max_lateness_ms(self) -> int:
        lateness = (g.group.allowed_lateness_seconds for g in self.groups.values())
        return max(lateness, default=0) * 1000


def _tile_of(window: Window) -> int:
    if window.kind is WindowKind.LIFETIME:
        return LIFETIME
    if window.kind is WindowKind.SINCE_KICKOFF:
        return SESSION_TILE_SECONDS
    return window.tile_seconds


def _retention_of(window: Window) -> int:
    if window.kind is WindowKind.SINCE_KICKOFF:
        return SESSION_RETENTION_SECONDS
    return window.size_seconds


def _is_live(payload: dict[str, Any]) -> bool:
    return payload.get(KICKOFF_STATUS_FIELD) == KICKOFF_STATUS


def compile_plan(catalog: Catalog) -> Plan:
    catalog.validate()
    groups: dict[str, GroupPlan] = {}
    routes: dict[str, list[Route]] = {}
    for group in catalog.groups:
        plan = _compile_group(catalog, group, sharded=group.entity != catalog.partition_entity)
        groups[group.name] = plan
        for event_type in group.sources:
            sections = tuple(
                RouteSection(kind, slots)
                for kind in plan.kinds.values()
                if (slots := tuple(slot for slot in kind.slots if event_type in slot.events))
            )
            if not sections:
                continue
            key_field = catalog.latest(event_type).entity_keys.get(group.entity)
            if key_field is None:
                raise DefinitionError(
                    f"feature group '{group.name}': field 'sources' names '{event_type}', "
                    f"which has no '{group.entity}' entity key"
                )
            routes.setdefault(event_type, []).append(
                Route(plan, key_field, group.allowed_lateness_seconds * 1000, sections)
            )
    return Plan(groups, {name: tuple(found) for name, found in routes.items()})


def _compile_group(catalog: Catalog, group: FeatureGroup, sharded: bool) -> GroupPlan:
    slots_by_tile: dict[int, dict[str, Slot]] = {}
    retention: dict[int, int] = {}
    served: list[ServedFeature] = []
    has_kickoff = False
    for feature in group.features:
        aggregator = aggregator_for(
            feature.aggregation, feature.size, _field_type(catalog, group, feature) is DOUBLE
        )
        slot = Slot(
            feature.name, aggregator, feature.field, frozenset(feature.events or group.sources)
        )
        for window in feature.windows:
            tile = _tile_of(window)
            slots_by_tile.setdefault(tile, {})[feature.name] = slot
            retention[tile] = max(retention.get(tile, 0), _retention_of(window))
            served.append(ServedFeature(f"{feature.name}_{window.name}", feature, window, tile,
                                        aggregator))
            has_kickoff |= window.kind is WindowKind.SINCE_KICKOFF
    if has_kickoff:
        if KICKOFF_EVENT not in group.sources:
            raise DefinitionError(
                f"feature group '{group.name}': field 'sources' must include '{KICKOFF_EVENT}' "
                "for a since_kickoff window"
            )
        slots_by_tile.setdefault(LIFETIME, {})[KICKOFF_SLOT] = Slot(
            KICKOFF_SLOT, Min(), None, frozenset({KICKOFF_EVENT}), _is_live
        )
    kinds = {
        tile: TileKind(group.name, group.entity, tile, tuple(slots.values()),
                       retention.get(tile, 0) if tile != LIFETIME else 0)
        for tile, slots in slots_by_tile.items()
    }
    plan = GroupPlan(group, kinds, tuple(served), has_kickoff, sharded)
    if not sharded:
        _check_item_size(plan)
    return plan


def _field_type(catalog: Catalog, group: FeatureGroup, feature: Feature) -> FieldType | None:
    """The type of the feature's field (``Catalog.validate``: one type per field name)."""
    if feature.field is None:
        return None
    for source in feature.events or group.sources:
        declared = catalog.latest(source).field_named(feature.field)
        if declared is not None:
            return declared.type
    return None


def max_group_item_bytes(plan: GroupPlan) -> int:
    """The worst-case size of a group item of ``plan`` (sizing estimates of
    ``fastbreak.engine.aggregations``); tile partials hold one tile and stay small."""
    return sum(kind.tiles_kept * (14 + kind.max_tile_bytes) for kind in plan.kinds.values())


def _check_item_size(plan: GroupPlan) -> None:
    worst = max_group_item_bytes(plan)
    if worst <= GROUP_ITEM_BUDGET_BYTES:
        return
    kind = max(plan.kinds.values(), key=lambda k: k.tiles_kept * k.max_tile_bytes)
    slot = max(kind.slots, key=lambda s: s.aggregator.max_state_bytes)
    tiles = "the lifetime state" if kind.tile_seconds == LIFETIME else (
        f"{kind.tiles_kept} tiles of {kind.tile_seconds} s"
    )
    raise DefinitionError(
        f"feature group '{plan.group.name}': one item per {plan.group.entity} could reach "
        f"{worst // 1024} KB, over the {GROUP_ITEM_BUDGET_BYTES // 1024} KB budget of a "
        f"DynamoDB item (400 KB limit): feature '{slot.name}' keeps up to "
        f"{slot.aggregator.max_state_bytes // 1024 or 1} KB per tile in {tiles}. Give its long "
        "windows larger tiles (field 'windows'), or move it to a group of its own"
    )


def slot_value(slot: Slot, payload: dict[str, Any], time_ms: int) -> Any:
    """What an event adds to a slot: the field's value, or the event time for the kickoff."""
    return payload.get(slot.field) if slot.field is not None else time_ms

