"""How a read of a game's audience features grows with the shards that saw the game.

    .venv/bin/python -m bench.audience_read_fanout

A marquee game: 60,000 plays by 20,000 viewers over three hours of event time (kickoff at the
start), written from 1, 10 and 200 shards of the events stream; each shard's events reach
stage 1 in batches of ten minutes, each record 5 s after its event time. Two layouts of the
same events, which must serve the same values (checked):

- **this release**: stage 1 emits partials, the audience stage merges them (both in-process,
  the real engine): the game's entity item and a tile item for each tile that outgrew it,
  whatever the shards;
- **the layout before the audience stage** (the baseline): one tile partial per (tile, shard),
  built with the engine's own fold as that release wrote them.

A read is the ``FeatureClient``'s, the feature API's code: one Query of the game's items, every
``game_live`` feature as of the end of the game (``viewers_since_kickoff`` merges every session
tile since kickoff), against the in-process DynamoDB paginated like DynamoDB (1 MB a page), with
a modeled round trip of 3 ms a request (a Query's pages follow one another). This release's
reads at 1, 10 and 200 shards are interleaved and repeated (``bench.sampling``); the target,
judged on the median over repeats: the 200-shard p99 at most 1.5 times the 1-shard p99. The
baseline is read beside it, fewer times (its 200-shard read takes tens of seconds).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import zlib
from collections.abc import Callable
from typing import Any

from bench import sampling
from bench.online_store_costs import item_bytes
from bench.results_format import BenchResult
from bench.sampling import timed
from fastbreak.definitions import CATALOG
from fastbreak.engine import (
    AudienceMerger,
    MemorySink,
    OnlineStore,
    PartialsSink,
    StreamProcessor,
    compile_plan,
)
from fastbreak.engine.fold import ItemFold
from fastbreak.engine.layout import encode_hw, entity_pk, tile_sk
from fastbreak.engine.plan import FUTURE_TOLERANCE_SECONDS, LIFETIME
from fastbreak.engine.timestamps import format_ms, parse_event_time_ms
from fastbreak.serving import FeatureClient
from localplatform.kinesis_events import SEQUENCE_BASE, StreamRecord, json_bytes, lambda_record
from localplatform.memory_dynamodb import MemoryDynamoDB
from localplatform.memory_kinesis import MemoryKinesis

GAME = "final-2026"
KICKOFF_MS = 1_795_717_800_000
SPAN_MS = 3 * 3600 * 1000
PLAYS = 60_000
VIEWERS = 20_000
BATCH_SPAN_MS = 10 * 60 * 1000
# Each record reaches the stream this long after its event time: well within game_live's
# allowed lateness (a batch's records do not share one arrival time).
ARRIVAL_DELAY_MS = 5_000
SHARD_COUNTS = (1, 10, 200)
ROUND_TRIP_S = 0.003
PAGE_BYTES = 1024 * 1024
TARGET_RATIO = 1.5
# Reads per shard count and repeat (their p99 rests on the slowest one or two), and repeats.
RUNS = 40
REPEATS = 3
# The baseline's reads: its 200-shard read merges ~29,000 tiles and takes tens of seconds.
BASELINE_RUNS = {1: 20, 10: 10, 200: 2}


class PagedDynamoDB(MemoryDynamoDB):
    """The in-process DynamoDB, answering Query in pages of 1 MB as DynamoDB does, each read
    call after a modeled network round trip (none while the layouts are written)."""

    def __init__(self) -> None:
        super().__init__()
        self.pages = 0
        self.bytes_read = 0
        self.round_trip_s = 0.0

    def query(self, **request: Any) -> dict[str, Any]:
        time.sleep(self.round_trip_s)
        found = super().query(**{k: v for k, v in request.items() if k != "ExclusiveStartKey"})
        items = found["Items"]
        start = request.get("ExclusiveStartKey")
        if start is not None:
            after = (start["pk"]["S"], start["sk"]["S"])
            items = [i for i in items if (i["pk"]["S"], i["sk"]["S"]) > after]
        page: list[dict[str, Any]] = []
        size = 0
        for item in items:
            if page and size + item_bytes(item) > PAGE_BYTES:
                break
            page.append(item)
            size += item_bytes(item)
        self.pages += 1
        self.bytes_read += size
        answer: dict[str, Any] = {"Items": page}
        if len(page) < len(items):
            answer["LastEvaluatedKey"] = {"pk": page[-1]["pk"], "sk": page[-1]["sk"]}
        return answer

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        time.sleep(self.round_trip_s)
        return super().batch_get_item(RequestItems)


def game_events() -> list[dict[str, Any]]:
    rng = random.Random(20261128)
    events: list[dict[str, Any]] = [{
        "event_type": "score_update", "schema_version": 1, "event_id": "kickoff",
        "event_time": format_ms(KICKOFF_MS), "game_id": GAME, "home_score": 0,
        "away_score": 0, "period": 1, "clock_seconds": 0, "status": "live",
    }]
    for n in range(PLAYS):
        events.append({
            "event_type": "video_play", "schema_version": 1, "event_id": f"play-{n}",
            "event_time": format_ms(KICKOFF_MS + n * SPAN_MS // PLAYS),
            "user_id": f"viewer-{rng.randrange(VIEWERS):05d}", "content_id": "live-stream",
            "game_id": GAME, "watch_seconds": rng.randint(10, 600) / 2,
        })
    return events


def shard_of(event: dict[str, Any], shards: int) -> int:
    key = event.get("user_id", event["game_id"])
    return zlib.crc32(key.encode()) % shards


def _batches(events: list[dict[str, Any]], shards: int) -> list[tuple[int, list[dict[str, Any]]]]:
    """(shard, events) per shard and ten minutes of event time, in time order."""
    batches: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for event in events:
        window = (_ms(event) - KICKOFF_MS) // BATCH_SPAN_MS
        batches.setdefault((window, shard_of(event, shards)), []).append(event)
    return [(shard, found) for (_, shard), found in sorted(batches.items())]


def _ms(event: dict[str, Any]) -> int:
    time_ms = parse_event_time_ms(event["event_time"])
    assert time_ms is not None
    return time_ms


def write_two_stage(events: list[dict[str, Any]], shards: int) -> PagedDynamoDB:
    """This release: the real stage 1 and audience stage, in-process."""
    table, kinesis = PagedDynamoDB(), MemoryKinesis(4)
    store = OnlineStore(table, "online", concurrency=1)
    stage1 = StreamProcessor(store, MemorySink(), CATALOG, partials=PartialsSink(kinesis, "p"))
    stage2 = AudienceMerger(store, MemorySink(), CATALOG)
    next_sequence = [SEQUENCE_BASE] * shards
    for shard, batch in _batches(events, shards):
        records = []
        for event in batch:
            next_sequence[shard] += 1
            records.append(lambda_record(StreamRecord(
                str(next_sequence[shard]), event.get("user_id", GAME), json_bytes(event),
                (_ms(event) + ARRIVAL_DELAY_MS) / 1000, f"shardId-{shard:012d}")))
        assert stage1.process(records).failed_sequence_numbers == []
        for partials_shard in kinesis.shard_ids:
            emitted = kinesis.take(partials_shard)
            if emitted:
                merged = stage2.process([lambda_record(record) for record in emitted])
                assert merged.failed_sequence_numbers == []
    return game_only(table)


def game_only(table: PagedDynamoDB) -> PagedDynamoDB:
    """The game's items alone: the in-process Query scans its whole table, where DynamoDB's
    cost depends on the items a Query returns only (here also the users' items and every
    shard's dedup memory, which grow with the shards)."""
    reading = PagedDynamoDB()
    reading.items = {key: item for key, item in table.items.items()
                     if key[0] == entity_pk("game", GAME)}
    return reading


def write_previous_layout(events: list[dict[str, Any]], shards: int) -> PagedDynamoDB:
    """The layout before the audience stage: one partial per (tile, shard) of game_live, folded
    by the engine's ``ItemFold`` as that release's processor folded it."""
    table = PagedDynamoDB()
    plan = compile_plan(CATALOG)
    group = plan.groups["game_live"]
    route_of = {kind: next(r for r in plan.routes[kind] if r.group.group.name == "game_live")
                for kind in ("video_play", "score_update")}
    partials: dict[tuple[int, int, int], list[Any]] = {}
    for event in events:
        time_s = _ms(event) // 1000
        for section in route_of[event["event_type"]].fold:
            tile_seconds = section[2]
            start = 0 if tile_seconds == LIFETIME else time_s - time_s % tile_seconds
            partials.setdefault((shard_of(event, shards), tile_seconds, start), []).append(
                (_Folded(event), (section,)))
    for (shard, tile_seconds, start), contributions in partials.items():
        fold = ItemFold({})
        fold.fold(contributions)
        fold.finish(group, False, FUTURE_TOLERANCE_SECONDS)
        kind = group.kinds[tile_seconds]
        expires = kind.tile_expires_at(start)
        item: dict[str, Any] = {
            "pk": {"S": entity_pk("game", GAME)},
            "sk": {"S": tile_sk("game_live", tile_seconds, start, f"shardId-{shard:012d}")},
            "state": {"S": json.dumps(fold.tiles, separators=(",", ":"))},
            "hw": {"S": encode_hw({f"shardId-{shard:012d}": f"{SEQUENCE_BASE}.0"})},
            "v": {"N": "1"}, "t": {"N": str(fold.newest_ms)},
        }
        if expires is not None:
            item["expires_at"] = {"N": str(expires)}
        table.items[(item["pk"]["S"], item["sk"]["S"])] = item
    return table


class _Folded:
    """An event as the fold reads it."""

    def __init__(self, event: dict[str, Any]) -> None:
        self.payload, self.time_ms, self.event_id = event, _ms(event), event["event_id"]


def reader(table: PagedDynamoDB) -> Callable[[], Any]:
    """One read of the game's features, as the feature API reads them."""
    client = FeatureClient(table, "online", concurrency=1, clock_ms=lambda: KICKOFF_MS + SPAN_MS)

    def read() -> Any:
        return client.get("game", GAME, ["game_live"]).features

    return read


def read_once(table: PagedDynamoDB) -> tuple[Any, dict[str, float]]:
    """One read's values, and its items, pages and bytes (no modeled round trip yet)."""
    table.pages = table.bytes_read = 0
    values = reader(table)()
    return values, {"items": sum(1 for key in table.items if key[0] == entity_pk("game", GAME)),
                    "pages_per_read": table.pages, "mb_per_read": round(table.bytes_read / 1e6, 2)}


def measure(runs: int = RUNS, repeats: int = REPEATS) -> dict[str, Any]:
    events = game_events()
    tables = {("ours", shards): write_two_stage(events, shards) for shards in SHARD_COUNTS}
    tables.update({("previous", shards): write_previous_layout(events, shards)
                   for shards in SHARD_COUNTS})
    served = {key: read_once(table) for key, table in tables.items()}
    expected = served[("previous", 1)][0]
    assert all(values == expected for values, _ in served.values()), "the layouts disagree"
    assert expected["game_live.viewers_since_kickoff"].value > 0.9 * VIEWERS
    for table in tables.values():
        table.round_trip_s = ROUND_TRIP_S
    measured = sampling.measure(
        [timed(reader(tables[("ours", shards)])) for shards in SHARD_COUNTS],
        runs=runs, repeats=repeats, label="audience_read_fanout")
    baseline = {shards: sampling.measure(
        [timed(reader(tables[("previous", shards)]))], runs=BASELINE_RUNS[shards], repeats=1,
        warm=0, label=f"audience_read_fanout previous layout, {shards} shards")[0][0]
        for shards in SHARD_COUNTS}
    return {
        "ours": {shards: {**served[("ours", shards)][1], "p99_ms": [
            round(sampling.percentile(repeat[index], 99), 1) for repeat in measured]}
            for index, shards in enumerate(SHARD_COUNTS)},
        "previous": {shards: {**served[("previous", shards)][1], "p99_ms": round(
            sampling.percentile(baseline[shards], 99) if len(baseline[shards]) > 1
            else baseline[shards][0], 1), "samples": len(baseline[shards])}
            for shards in SHARD_COUNTS},
        "viewers_since_kickoff": expected["game_live.viewers_since_kickoff"].value,
        "measured": measured,
        "runs": runs,
    }


def run() -> list[BenchResult]:
    found = measure()
    results = []
    for index, shards in enumerate(SHARD_COUNTS[1:], start=1):
        p99 = sampling.percentiles(found["measured"], 99, ours=index, baseline=0)
        results.append(sampling.result(
            f"audience_read_fanout_{shards}_shards",
            f"ms, game_live read, {found['ours'][shards]['items']} items",
            "1 shard, same layout", p99, f"<= {TARGET_RATIO}x the 1-shard p99",
            lambda ratio: ratio <= TARGET_RATIO, found["runs"]))
    for shards in SHARD_COUNTS:
        previous = found["previous"][shards]
        ours = statistics.median(found["ours"][shards]["p99_ms"])
        results.append(BenchResult(
            f"audience_read_fanout_previous_layout_{shards}_shards", previous["p99_ms"],
            f"ms p99 over {previous['samples']} reads, game_live read, "
            f"{previous['items']} partials", "this release, same shards (p99 ms)", ours,
            round(previous["p99_ms"] / ours, 3),
            "the baseline layout, measured beside it (informational)", True))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.audience_read_fanout")
    parser.add_argument("--runs", type=int, default=RUNS, help="reads per side and repeat")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args(argv)
    found = measure(args.runs, args.repeats)
    del found["measured"]
    print(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
