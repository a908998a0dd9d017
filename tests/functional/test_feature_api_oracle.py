"""Property: for random events and request times, the API answers what a plain-Python oracle
computes from the events and the catalog, exactly.

Each example writes its own entities through the REAL stream processor (Kinesis events,
split over two shards, batched within the allowed lateness) and reads them back through the
API handler as of a random time at or after the last event. The oracle knows nothing of
tiles, items or shards: only windows (tile-aligned, the documented convention), the 12-hour
retention of "since kickoff" sessions, and what each aggregation means.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastbreak.definitions import CATALOG
from fastbreak.definitions.model import Aggregation, Feature, FeatureGroup, Window, WindowKind
from fastbreak.engine.hll import HyperLogLog
from fastbreak.engine.timestamps import format_ms
from tests.functional.test_feature_api_harness import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    T0_MS,
    ServingWorld,
    world,
)

__all__ = ["world"]

SESSION_RETENTION_MS = 12 * HOUR_MS  # documented in fastbreak.engine.plan
BATCH_SPAN_MS = 9 * MINUTE_MS  # under the smallest allowed lateness (game_live: 10 min)
START = T0_MS - 3 * DAY_MS
_examples = itertools.count()

EVENT_TYPES = ("content_view", "content_click", "video_play", "push_open", "game_follow",
               "experiment_exposure", "score_update")

raw_events = st.lists(
    st.fixed_dictionaries({
        "event_type": st.sampled_from(EVENT_TYPES),
        # Sessions of activity a few minutes long, hours or days apart, with second jitter
        # so that events fall on both sides of minute, hour and day tile edges.
        "time_ms": st.builds(
            lambda anchor, jitter: START + anchor + jitter,
            st.sampled_from([0, 50 * MINUTE_MS, 23 * HOUR_MS, 2 * DAY_MS, 3 * DAY_MS]),
            st.integers(0, 8 * MINUTE_MS),
        ),
        "user": st.integers(0, 1),
        "content": st.integers(0, 1),
        "team": st.sampled_from(["bruins", "celtics", "patriots"]),
        "sport": st.sampled_from(["hockey", "basketball"]),
        "number": st.integers(0, 12),
        "status": st.sampled_from(["scheduled", "live", "live", "final"]),
        "shard": st.integers(0, 1),
    }),
    min_size=1, max_size=24,
)
request_delay = st.one_of(
    st.sampled_from([0, 1000, MINUTE_MS, HOUR_MS, HOUR_MS + MINUTE_MS, DAY_MS, 7 * DAY_MS,
                     12 * HOUR_MS + 30 * MINUTE_MS]),
    st.integers(0, 9 * DAY_MS),
)


def _event(raw: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A valid event of the drawn type, its entity ids namespaced by the example."""
    user, content, game = f"{prefix}u{raw['user']}", f"{prefix}c{raw['content']}", f"{prefix}g"
    kind, number = raw["event_type"], raw["number"]
    fields: dict[str, dict[str, Any]] = {
        "content_view": {"user_id": user, "content_id": content, "sport": raw["sport"]},
        "content_click": {"user_id": user, "content_id": content, "position": number},
        "video_play": {"user_id": user, "content_id": content, "game_id": game,
                       "watch_seconds": number / 2},  # halves: float sums exact in any order
        "push_open": {"user_id": user, "campaign_id": f"campaign-{number % 3}"},
        "game_follow": {"user_id": user, "game_id": game, "team_id": raw["team"]},
        "experiment_exposure": {"user_id": user, "experiment_id": f"exp-{number % 4}",
                                "variant": "ab"[number % 2]},
        "score_update": {"game_id": game, "home_score": number, "away_score": number // 2,
                         "period": 1 + number % 4, "clock_seconds": 60 * number,
                         "status": raw["status"]},
    }
    return {"event_type": kind, "time_ms": raw["time_ms"], **fields[kind]}


def _feed(world: ServingWorld, events: list[dict[str, Any]], shards: list[int],
          prefix: str) -> None:
    for shard in set(shards):
        batch: list[dict[str, Any]] = []
        mine = sorted((e for e, s in zip(events, shards, strict=True) if s == shard),
                      key=lambda e: e["time_ms"])
        for event in mine:
            if batch and event["time_ms"] - batch[0]["time_ms"] > BATCH_SPAN_MS:
                world.feed(batch, shard_id=f"shardId-{prefix}{shard}")
                batch = []
            batch.append(event)
        world.feed(batch, shard_id=f"shardId-{prefix}{shard}")


# ---- the oracle ------------------------------------------------------------------------------
def oracle(events: list[dict[str, Any]], entity_type: str, entity_id: str,
           as_of: int) -> dict[str, Any]:
    expected: dict[str, Any] = {}
    for group in CATALOG.groups:
        if group.entity != entity_type:
            continue
        mine = [e for e in events if _key_of(e, group) == entity_id]
        for feature in group.features:
            sources = feature.events or group.sources
            fed = [e for e in mine if e["event_type"] in sources
                   and (feature.field is None or feature.field in e)]
            for window in feature.windows:
                inside = [e for e in fed if _in_window(e, window, mine, as_of)]
                expected[f"{group.name}.{feature.name}_{window.name}"] = _value(
                    feature, inside, as_of
                )
    return expected


def _key_of(event: dict[str, Any], group: FeatureGroup) -> str | None:
    schema = CATALOG.latest(event["event_type"])
    if event["event_type"] not in group.sources:
        return None
    field = schema.entity_keys.get(group.entity)
    return None if field is None else event.get(field)


def _in_window(event: dict[str, Any], window: Window, mine: list[dict[str, Any]],
               as_of: int) -> bool:
    if window.kind is WindowKind.LIFETIME:
        return True
    if window.kind is WindowKind.SINCE_KICKOFF:
        kickoffs = [e["time_ms"] for e in mine
                    if e["event_type"] == "score_update" and e["status"] == "live"]
        if not kickoffs or min(kickoffs) // 1000 > as_of // 1000:
            return False
        tile = event["time_ms"] // MINUTE_MS * MINUTE_MS
        started = min(kickoffs) // MINUTE_MS * MINUTE_MS
        expired = (tile + MINUTE_MS + SESSION_RETENTION_MS) // 1000 <= as_of // 1000
        return started <= tile <= as_of and not expired
    size, tile_size = window.size_seconds * 1000, window.tile_seconds * 1000
    newest_tile = as_of // tile_size * tile_size
    tile = event["time_ms"] // tile_size * tile_size
    return bool(newest_tile - size < tile <= newest_tile)


def _value(feature: Feature, events: list[dict[str, Any]], as_of: int) -> Any:
    if not events:
        return None
    values: list[Any] = [e[feature.field] for e in events] if feature.field else []
    newest_first = sorted(events, key=lambda e: (e["time_ms"], e["event_id"]), reverse=True)
    value: Any
    match feature.aggregation:
        case Aggregation.COUNT:
            value = len(events)
        case Aggregation.SUM:
            value = sum(values)
        case Aggregation.MEAN:
            value = sum(values) / len(values)
        case Aggregation.MIN:
            value = min(values)
        case Aggregation.MAX:
            value = max(values)
        case Aggregation.LAST:
            value = newest_first[0][feature.field or ""]
        case Aggregation.LAST_N:
            value = [e[feature.field or ""] for e in newest_first[: feature.size]]
        case Aggregation.TOP_K:
            counts = Counter(values)
            ranked = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))
            value = [[v, c] for v, c in ranked[: feature.size]]
        case Aggregation.APPROX_DISTINCT:
            sketch = HyperLogLog()
            for distinct in values:
                sketch.add(distinct)
            value = sketch.estimate()
    newest = max(e["time_ms"] for e in events)
    return {"value": json.loads(json.dumps(value)), "event_time": format_ms(newest),
            "age_ms": as_of - newest}


# ---- the property ----------------------------------------------------------------------------
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=raw_events, delay=request_delay)
def test_api_answers_equal_the_oracle_for_random_events_and_request_times(
    world: ServingWorld, raw: list[dict[str, Any]], delay: int
) -> None:
    prefix = f"p{next(_examples):03d}-"
    events = [{**_event(r, prefix), "event_id": f"{prefix}e{i:02d}"} for i, r in enumerate(raw)]
    _feed(world, events, [r["shard"] for r in raw], prefix)
    as_of = max(e["time_ms"] for e in events) + delay
    entities = [("user", f"{prefix}u0"), ("user", f"{prefix}u1"), ("content", f"{prefix}c0"),
                ("content", f"{prefix}c1"), ("game", f"{prefix}g")]

    status, body = world.batch_get(
        {"entities": [{"entity_type": t, "entity_id": i} for t, i in entities]}, at_ms=as_of
    )

    assert status == 200
    for (entity_type, entity_id), answer in zip(entities, body["entities"], strict=True):
        assert answer["features"] == oracle(events, entity_type, entity_id, as_of), entity_id
