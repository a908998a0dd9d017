"""Stored online-store items -> served feature values, as of a time.

The feature API and the Python ``FeatureClient`` fetch a group's items through
``fastbreak.engine.online_store.OnlineStore.read_groups`` and merge them here with
``fastbreak.engine.fold.merge_items``, the one merge that the training-set builder and the
backfill use too; the window rules are documented there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from fastbreak.engine.fold import FeatureValue, ItemState, merge_items
from fastbreak.engine.layout import belongs_to, state_json
from fastbreak.engine.online_store import StoredItem
from fastbreak.engine.plan import GroupPlan


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
