"""Read-time merge: online-store items -> served feature values, as of a time.

The feature API, the Python FeatureClient and the oracle test all read through here, so what
is served is exactly what the processor's states mean. A sliding window of size W over tiles of
size t, as of time T, merges the W / t tiles ending with the one that contains T (so it spans
between W - t and W of event time, the Chronon/Tecton convention); tumbling serves the tile
containing T; lifetime merges the lifetime state of every item (the partials of every shard);
since_kickoff merges the 1-minute session tiles from the minute the game went live up to T.
Items and tiles past their TTL are skipped even if DynamoDB has not deleted them yet.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fastbreak.definitions.model import WindowKind
from fastbreak.engine.aggregations import State
from fastbreak.engine.layout import belongs_to, entity_pk, group_sk, partials_prefix
from fastbreak.engine.online_store import OnlineStore, StoredItem
from fastbreak.engine.plan import KICKOFF_SLOT, LIFETIME, SESSION_TILE_SECONDS, GroupPlan, Plan


@dataclass(frozen=True)
class FeatureValue:
    value: Any
    event_time_ms: int | None  # newest event folded into the value; None if there is none
    age_ms: int | None  # as_of minus that event time


def merge_group(
    plan: GroupPlan, items: Iterable[StoredItem], as_of_ms: int, now_ms: int | None = None
) -> dict[str, FeatureValue]:
    """Every served feature of one group for one entity, from that entity's group item (or
    its tile and lifetime partials)."""
    now_s = (as_of_ms if now_ms is None else now_ms) // 1000
    name = plan.group.name
    tiles: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for item in items:
        if item.expires_at is not None and item.expires_at <= now_s:
            continue
        if not belongs_to(name, item.sk):
            continue
        for section, section_tiles in json.loads(item.state).items():
            kind = plan.kind_of_section.get(section)
            if kind is None:
                continue  # a tile size the catalog no longer uses
            found = tiles.setdefault(kind.tile_seconds, [])
            for start_key, data in section_tiles.items():
                start = int(start_key)
                expires = kind.tile_expires_at(start)
                if expires is not None and expires <= now_s:
                    continue  # past its retention: no window reads it any more
                found.append((start, {
                    slot: kind.slot_named[slot].aggregator.load(state)
                    for slot, state in data.items() if slot in kind.slot_named
                }))

    as_of_s = as_of_ms // 1000
    kickoff_s = _kickoff_s(plan, tiles.get(LIFETIME, []))
    values: dict[str, FeatureValue] = {}
    for served in plan.served:
        window, tile = served.window, served.tile_seconds
        if window.kind is WindowKind.LIFETIME:
            low, high = None, None
        else:
            high = as_of_s // tile * tile
            if window.kind is WindowKind.SLIDING:
                low = high - window.size_seconds + tile
            elif window.kind is WindowKind.TUMBLING:
                low = high
            elif kickoff_s is not None and kickoff_s <= as_of_s:
                low = kickoff_s // SESSION_TILE_SECONDS * SESSION_TILE_SECONDS
            else:
                low = high + 1  # not kicked off yet: an empty session
        aggregator = served.aggregator
        state: State = aggregator.empty()
        for start, states in tiles.get(tile, []):
            if low is not None and high is not None and not low <= start <= high:
                continue
            part = states.get(served.feature.name)
            if part is not None:
                state = aggregator.merge(state, part)
        newest = state[0] or None
        values[served.name] = FeatureValue(
            aggregator.result(state), newest, as_of_ms - newest if newest is not None else None
        )
    return values


def _kickoff_s(plan: GroupPlan, lifetime: list[tuple[int, dict[str, Any]]]) -> int | None:
    if not plan.has_kickoff:
        return None
    slot = plan.kinds[LIFETIME].slot_named[KICKOFF_SLOT]
    state: State = slot.aggregator.empty()
    for _, states in lifetime:
        if KICKOFF_SLOT in states:
            state = slot.aggregator.merge(state, states[KICKOFF_SLOT])
    kickoff_ms = slot.aggregator.result(state)
    return None if kickoff_ms is None else int(kickoff_ms) // 1000


def read_group(
    store: OnlineStore, plan: Plan, group: str, entity_key: str, as_of_ms: int,
    now_ms: int | None = None,
) -> dict[str, FeatureValue]:
    """Read one entity's group item (or Query its partials) and merge it."""
    group_plan = plan.groups[group]
    pk = entity_pk(group_plan.group.entity, entity_key)
    if group_plan.sharded:
        items = store.query_prefix(pk, partials_prefix(group))
    else:
        items = list(store.get_many([(pk, group_sk(group))]).values())
    return merge_group(group_plan, items, as_of_ms, now_ms)
