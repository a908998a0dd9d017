"""``FeatureClient``: online features for Python services, and the core of the feature API.

The API handler is a thin HTTP face over this class, so both answer with the same validation,
the same reads (``fastbreak.engine.online_store``, the table's one access layer) and the same
merge (``fastbreak.engine.read.merge_group``). A value is ``None`` when no event falls in its
window: a missing entity or feature is an explicit null, never an absent key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastbreak.definitions import CATALOG, Catalog
from fastbreak.engine.fold import FeatureValue
from fastbreak.engine.layout import entity_pk
from fastbreak.engine.online_store import GroupKey, OnlineStore, RetryPolicy
from fastbreak.engine.plan import Plan, compile_plan
from fastbreak.engine.read import merge_group
from fastbreak.serving.request import EntityRef, ReadRequest, RequestValidator


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def serving_retry() -> RetryPolicy:
    """Backoff for reads that a caller is waiting on: a few short tries, not the processor's."""
    return RetryPolicy(max_attempts=4, base_delay_s=0.02, max_delay_s=0.2, margin_s=0.5)


@dataclass(frozen=True)
class EntityFeatures:
    entity: EntityRef
    # "{group}.{feature}_{window}" -> value with event time and age, or None (nothing in window)
    features: dict[str, FeatureValue | None]

    @property
    def missing(self) -> int:
        return sum(value is None for value in self.features.values())

    @property
    def freshest_age_ms(self) -> int | None:
        ages = [v.age_ms for v in self.features.values() if v is not None and v.age_ms is not None]
        return min(ages, default=None)


@dataclass(frozen=True)
class FeatureResult:
    as_of_ms: int
    entities: list[EntityFeatures]  # in request order, duplicates answered again


class FeatureClient:
    """Reads served features straight from the online store table.

    ``dynamodb`` is a boto3 DynamoDB *client* (give it ``max_pool_connections`` of at least
    ``concurrency``); ``clock_ms`` is the request time that windows are merged as of.
    """

    def __init__(
        self,
        dynamodb: Any,
        table_name: str,
        *,
        catalog: Catalog = CATALOG,
        concurrency: int = 16,
        retry: RetryPolicy | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.validator = RequestValidator(catalog)
        self.plan: Plan = compile_plan(catalog)
        self.sharded = frozenset(name for name, group in self.plan.groups.items()
                                 if group.sharded)
        self.store = OnlineStore(dynamodb, table_name, retry or serving_retry(), concurrency)
        self.clock_ms = clock_ms

    def get(
        self, entity_type: str, entity_id: str, features: Sequence[str] | None = None
    ) -> EntityFeatures:
        """One entity; ``features`` are group or ``group.feature`` names (default: all)."""
        return self.read(self.validator.single(entity_type, entity_id, features)).entities[0]

    def batch_get(
        self, entities: Iterable[tuple[str, str]], features: Sequence[str] | None = None
    ) -> FeatureResult:
        """Up to 100 ``(entity_type, entity_id)`` pairs, possibly of several types."""
        shaped = [{"entity_type": kind, "entity_id": key} for kind, key in entities]
        return self.read(self.validator.batch(shaped, None if features is None else list(features)))

    def read(self, request: ReadRequest) -> FeatureResult:
        """Answer a validated request: one parallel round of reads, then the merge."""
        as_of_ms = self.clock_ms()
        keys = [
            (entity_pk(ref.entity_type, ref.entity_id), selection.group)
            for ref in dict.fromkeys(request.entities)
            for selection in request.selections[ref.entity_type]
        ]
        items = self.store.read_groups(keys, self.sharded, as_of_ms // 1000)
        merged: dict[GroupKey, dict[str, FeatureValue]] = {
            key: merge_group(self.plan.groups[key[1]], group_items, as_of_ms)
            for key, group_items in items.items()
        }
        answers = []
        for ref in request.entities:
            pk = entity_pk(ref.entity_type, ref.entity_id)
            features: dict[str, FeatureValue | None] = {}
            for selection in request.selections[ref.entity_type]:
                values = merged[(pk, selection.group)]
                for name in selection.features:
                    value = values[name]
                    features[f"{selection.group}.{name}"] = (
                        value if value.event_time_ms is not None else None
                    )
            answers.append(EntityFeatures(ref, features))
        return FeatureResult(as_of_ms, answers)
