"""Stored online-store items -> served feature values, as of a time.

The feature API and the Python ``FeatureClient`` decode the items they fetched and merge them
here with ``fastbreak.engine.fold.merge_items``, the one merge that the training-set builder and
the backfill use too; the window rules are documented there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from fastbreak.engine.fold import FeatureValue, ItemState, merge_items
from fastbreak.engine.layout import belongs_to, entity_pk, group_sk, partials_prefix, state_json
from fastbreak.engine.online_store import OnlineStore, StoredItem
from fastbreak.engine.plan import GroupPlan, Plan


def merge_group(
    plan: GroupPlan, items: Iterable[StoredItem], as_of_ms: int, now_ms: int | None = None
) -> dict[str, FeatureValue]:
    """Every served feature of one group for one entity, from that entity's stored group item
    (or its tile and lifetime partials): ``fastbreak.engine.fold.merge_items`` on their state."""
    name = plan.group.name
    states = [
        ItemState(item.sk, item.expires_at, json.loads(state_json(item.state)))
        for item in items if belongs_to(name, item.sk)
    ]
    return merge_items(plan, states, as_of_ms, now_ms)


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
