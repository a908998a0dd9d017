"""Cut-overs: the registry records when the live stages start folding each slot, and every
record is folded into each slot by exactly one side, the live stages or the backfill."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from fastbreak.definitions import CATALOG, Catalog
from fastbreak.engine import MemorySink, OnlineStore, ProcessorSettings, RetryPolicy
from fastbreak.engine.cutover import CutOverRegistry, CutOvers, slot_keys
from fastbreak.engine.online_store import StoreUnavailable
from fastbreak.engine.plan import compile_plan
from localplatform.kinesis_events import lambda_record
from localplatform.memory_dynamodb import MemoryDynamoDB, client_error
from tests.fixtures.two_stages import TwoStages
from tests.unit.test_processor import ARRIVAL_S, T0, stream_of, views

MINUTE = 60_000
NOW = 1_800_000_000_000


def without(catalog: Catalog, group: str) -> Catalog:
    return dataclasses.replace(catalog, groups=tuple(
        g for g in catalog.groups if g.name != group)).validate()


def registry(table: MemoryDynamoDB) -> CutOverRegistry:
    return CutOverRegistry(OnlineStore(table, "online", RetryPolicy(sleep=lambda _: None),
                                       concurrency=1))


def test_the_release_that_creates_the_registry_has_every_slot_live_since_the_start() -> None:
    table = MemoryDynamoDB()
    plan = compile_plan(CATALOG)
    cutovers = registry(table).load(plan, NOW)
    assert set(cutovers.from_ms) == set(slot_keys(plan))
    assert set(cutovers.from_ms.values()) == {0}
    assert registry(table).read() == dict(cutovers.from_ms)


def test_a_slot_met_later_is_live_from_first_sight_plus_the_delay_and_never_moves() -> None:
    table = MemoryDynamoDB()
    registry(table).load(compile_plan(without(CATALOG, "user_affinity")), NOW)
    plan = compile_plan(CATALOG)
    first = registry(table).load(plan, NOW + MINUTE, delay_ms=30 * MINUTE)
    later = registry(table).load(plan, NOW + 90 * MINUTE, delay_ms=30 * MINUTE)
    new = {key for key in slot_keys(plan) if key[0] == "user_affinity"}
    assert {first.from_ms[key] for key in new} == {NOW + 31 * MINUTE}
    assert all(first.from_ms[key] == 0 for key in slot_keys(plan) if key not in new)
    assert later.from_ms == first.from_ms


def test_two_stages_recording_the_same_slot_at_once_agree_on_the_first_one() -> None:
    table = MemoryDynamoDB()
    registry(table).load(compile_plan(without(CATALOG, "game_live")), NOW)
    plan = compile_plan(CATALOG)
    raced = False

    def rival_first(operation: str, request: dict[str, Any]) -> None:
        nonlocal raced
        if operation == "UpdateItem" and not raced:
            raced = True
            table.fault = None
            registry(table).load(plan, NOW + 5 * MINUTE, delay_ms=0)  # records first
            table.fault = rival_first

    table.fault = rival_first
    mine = registry(table).load(plan, NOW, delay_ms=0)
    assert raced and mine.from_ms[("game_live", 60, "viewers")] == NOW + 5 * MINUTE


def test_a_registry_that_cannot_be_written_is_unavailable() -> None:
    table = MemoryDynamoDB()

    def refuse(operation: str, request: dict[str, Any]) -> None:
        if operation == "UpdateItem":
            raise client_error("AccessDeniedException", operation)

    table.fault = refuse
    with pytest.raises(StoreUnavailable):
        registry(table).load(compile_plan(CATALOG), NOW)


@pytest.mark.parametrize("arrival_ms", [0, NOW - 1, NOW, NOW + 1, NOW + 9, NOW + 10, NOW + 99])
def test_each_slot_of_a_route_is_folded_by_exactly_one_side(arrival_ms: int) -> None:
    plan = compile_plan(CATALOG)
    # user_engagement's views: two generations of cut-overs, others live since the start
    cutovers = CutOvers({("user_engagement", 60, "views"): NOW,
                         ("user_engagement", 3600, "views"): NOW + 10})
    for routes in plan.routes.values():
        for route in routes:
            every = {(kind.section, step) for kind, _, _, steps in route.fold for step in steps}
            live = {(kind.section, step) for kind, _, _, steps in cutovers.live(route, arrival_ms)
                    for step in steps}
            backfill = {(kind.section, step)
                        for kind, _, _, steps in cutovers.backfill(route, arrival_ms)
                        for step in steps}
            assert live | backfill == every and not live & backfill
            if route.group.group.name != "user_engagement":
                assert not backfill and cutovers.latest(route) == 0
    route = next(r for r in plan.routes["content_view"] if r.group.group.name == "user_engagement")
    backfilled = {section for _, section, _, _ in cutovers.backfill(route, arrival_ms)}
    assert backfilled == ({"60", "3600"} if arrival_ms < NOW else
                          {"3600"} if arrival_ms < NOW + 10 else set())


def test_the_processor_leaves_the_history_before_a_cut_over_to_the_backfill() -> None:
    table = MemoryDynamoDB()
    registry(table).load(compile_plan(without(CATALOG, "user_affinity")), 0)
    cutover = (ARRIVAL_S + 60) * 1000
    stages = TwoStages(table, MemorySink(), CATALOG, clock_ms=lambda: cutover,
                       settings=ProcessorSettings(cutover_delay_ms=0))
    before = stream_of(views(3), ARRIVAL_S)  # arrived before the cut-over
    stages.process([lambda_record(record) for record in before])
    assert stages.values("user_engagement", "u1", T0 + MINUTE)["views_1h"] == 3
    assert table.items.get(("user#u1", "user_affinity")) is None
    # The same events again after the cut-over (producer retries): still duplicates, for the
    # new group as for the others, since their first copies were applied (by the backfill).
    again = stream_of(views(3), ARRIVAL_S + 120, start=100)
    result = stages.process([lambda_record(record) for record in again])
    assert result.duplicate_events == 3
    assert table.items.get(("user#u1", "user_affinity")) is None
    fresh = stream_of(views(2, start=10), ARRIVAL_S + 120, start=200)
    stages.process([lambda_record(record) for record in fresh])
    assert stages.values("user_affinity", "u1", T0 + 3 * MINUTE)["top_sports_7d"] is not None
    assert stages.values("user_engagement", "u1", T0 + 3 * MINUTE)["views_1h"] == 5
