"""The oracle test: the online store, read back as the feature API reads it, must equal
features computed in plain Python from the de-duplicated valid events, exactly.

Real DynamoDB and S3 APIs (moto in server mode on 127.0.0.1, real boto3 serialization), the
real Lambda handler, and the local platform's Kinesis event source mapping emulator, which
re-delivers the way Lambda does: partial batch failures resume at the lowest reported sequence
number and function errors bisect the batch, over batches of random sizes. On top of that: producer
duplicates, out-of-order event times within the lateness, events later than it, poison
records (lone surrogates among them), KPL aggregates, 129-digit sequence numbers, throttling,
UnprocessedKeys, failing S3 puts, and crashes after part of the writes.

moto answers ~250 UpdateItem calls/s, so the workload is sized (30 users, 12 minutes of event
time, large batches) to stay near 60 s while keeping every fault in play.
"""

from __future__ import annotations

import itertools
import json
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from fastbreak.definitions import CATALOG, WindowKind
from fastbreak.definitions.model import Aggregation
from fastbreak.engine import RetryPolicy
from fastbreak.engine.hll import HyperLogLog
from fastbreak.engine.kpl import aggregate
from fastbreak.engine.layout import DEDUP_PREFIX
from fastbreak.engine.plan import KICKOFF_EVENT, SESSION_TILE_SECONDS
from fastbreak.engine.timestamps import format_ms
from fastbreak.handlers import stream_processor
from fastbreak.serving import FeatureClient
from localplatform.embedded_aws import client, embedded_aws
from localplatform.kinesis_events import EXAMPLE_SOURCE, SEQUENCE_BASE, StreamRecord, json_bytes
from localplatform.lambda_context import LambdaContext
from localplatform.mapping_emulator import BatchDelivery, MappingSettings
from localplatform.memory_dynamodb import client_error
from localplatform.stores import create_feature_stores

pytestmark = pytest.mark.e2e

SEED = 20261126
T0 = 1_795_717_800_000  # 2026-11-26T18:30:00Z
SPAN_MS = 12 * 60 * 1000
AS_OF = T0 + SPAN_MS + 2 * 60 * 1000
UNIQUE_EVENTS = 20_000
SHARDS = ("shardId-000000000000", "shardId-000000000001")
TABLE, BUCKET = "fastbreak-online", "fastbreak-offline"
USERS = [f"u{n}" for n in range(30)]
CONTENTS = [f"c{n}" for n in range(60)]
GAMES = ["g1", "g2", "g3", "g4"]
TEAMS = [f"t{n}" for n in range(12)]


# ---- the workload ------------------------------------------------------------------------------
@dataclass
class Generated:
    event: dict[str, Any]
    arrival_ms: int
    partition_key: str
    poison: bytes | None = None  # the raw payload, for poison records
    duplicate_of: str | None = None


@dataclass
class Workload:
    shards: dict[str, list[StreamRecord]] = field(default_factory=dict)
    applied: list[tuple[dict[str, Any], int]] = field(default_factory=list)  # (event, arrival)
    poison_sequence_numbers: set[str] = field(default_factory=set)


def _event(rng: random.Random, n: int, time_ms: int) -> tuple[dict[str, Any], str]:
    user = rng.choice(USERS)
    content = CONTENTS[min(int(rng.paretovariate(1.1)) - 1, len(CONTENTS) - 1)]
    game = rng.choice(GAMES)
    envelope = {"event_id": f"ev-{n}", "event_time": format_ms(time_ms)}
    kind = rng.choices(
        ["view", "click", "play", "follow", "score", "push", "exposure"],
        [40, 15, 20, 8, 5, 6, 6],
    )[0]
    if kind == "view":
        body: dict[str, Any] = {"event_type": "content_view", "user_id": user,
                                "content_id": content, "sport": rng.choice(["nba", "nfl", "epl"])}
        if rng.random() < 0.3:
            body["schema_version"] = 1  # the previous version: upcast with surface "unknown"
        else:
            body.update(schema_version=2, surface=rng.choice(["home", "game_page", "push"]))
    elif kind == "click":
        body = {"event_type": "content_click", "schema_version": 1, "user_id": user,
                "content_id": content, "position": rng.randint(0, 30)}
    elif kind == "play":
        body = {"event_type": "video_play", "schema_version": 1, "user_id": user,
                "content_id": content, "game_id": game,
                "watch_seconds": rng.randint(1, 1200) / 2}  # halves: float sums stay exact
    elif kind == "follow":
        body = {"event_type": "game_follow", "schema_version": 1, "user_id": user,
                "game_id": game, "team_id": rng.choice(TEAMS)}
    elif kind == "score":
        minute = (time_ms - T0) // 60_000
        body = {"event_type": "score_update", "schema_version": 1, "game_id": game,
                "home_score": rng.randint(0, 5), "away_score": rng.randint(0, 5),
                "period": 1 + minute // 4, "clock_seconds": rng.randint(0, 720),
                "status": "scheduled" if minute < 2 + GAMES.index(game) else "live"}
        return {**envelope, **body}, game
    elif kind == "push":
        body = {"event_type": "push_open", "schema_version": 1, "user_id": user,
                "campaign_id": f"camp{rng.randint(1, 5)}"}
    else:
        body = {"event_type": "experiment_exposure", "schema_version": 1, "user_id": user,
                "experiment_id": f"exp{rng.randint(1, 8)}", "variant": rng.choice("ABC")}
    return {**envelope, **body}, user


POISON: list[bytes] = [
    b"{not json",
    b"[]",
    json_bytes({"event_type": "content_share", "schema_version": 1, "event_id": "p",
                "event_time": "2026-11-26T18:30:00Z"}),
    json_bytes({"event_type": "content_view", "schema_version": 7, "event_id": "p",
                "event_time": "2026-11-26T18:30:00Z"}),
    json_bytes({"event_type": "content_click", "schema_version": 1, "event_id": "p",
                "event_time": "2026-11-26T18:30:00Z", "user_id": "u1", "content_id": "c1",
                "position": "3"}),
    json_bytes({"event_type": "push_open", "schema_version": 1, "event_id": "p",
                "event_time": "2026-11-26 18:30:00", "user_id": "u1", "campaign_id": "x"}),
    b"\xf3\x89\x9a\xc2 a KPL magic with garbage behind it and no valid checksum",
    aggregate("u1", []),  # a well-formed KPL aggregate with no user record
    json.dumps({"event_type": "push_open", "schema_version": 1, "event_id": "p",
                "event_time": "2026-11-26T18:30:00Z", "user_id": "u1\ud800",
                "campaign_id": "x"}).encode(),  # a lone surrogate, escaped
    json.dumps({"event_type": "game_follow", "schema_version": 1, "event_id": "p",
                "event_time": "2026-11-26T18:30:00Z", "user_id": "u1", "game_id": "g1",
                "team_id": "t\ud800"}, ensure_ascii=False).encode("utf-8", "surrogatepass"),
    json_bytes({"event_type": "content_click", "schema_version": 1, "event_id": "p",
                "event_time": "2026-11-26T18:30:00Z", "user_id": "u1", "content_id": "c1",
                "position": 2**64}),  # an INT field is 64-bit
]


def _delay_ms(rng: random.Random) -> int:
    draw = rng.random()
    if draw < 0.02:
        return rng.randint(12, 25) * 60_000  # late for game_live (10 min) only
    if draw < 0.03:
        return rng.randint(35, 100) * 60_000  # late for game_live and content_trending
    if draw < 0.035:
        return rng.randint(130, 180) * 60_000  # late for every group
    return rng.randint(0, 8 * 60_000)  # out of order, within every lateness


def generate(rng: random.Random) -> Workload:
    logical: list[Generated] = []
    for n in range(UNIQUE_EVENTS):
        time_ms = T0 + rng.randrange(SPAN_MS)
        event, key = _event(rng, n, time_ms)
        logical.append(Generated(event, time_ms + _delay_ms(rng), key))
    copies = [
        Generated(g.event, g.arrival_ms + rng.randint(0, 60_000), g.partition_key,
                  duplicate_of=g.event["event_id"])
        for g in rng.sample(logical, UNIQUE_EVENTS // 20)
    ]
    poison = [
        Generated({}, T0 + rng.randrange(SPAN_MS), rng.choice(USERS), poison=rng.choice(POISON))
        for _ in range(UNIQUE_EVENTS // 100)
    ]
    workload = Workload({shard: [] for shard in SHARDS})
    by_shard: dict[str, list[Generated]] = {shard: [] for shard in SHARDS}
    for record in logical + copies + poison:
        shard = SHARDS[zlib.crc32(record.partition_key.encode()) % len(SHARDS)]
        by_shard[shard].append(record)
    for shard, generated in by_shard.items():
        generated.sort(key=lambda g: g.arrival_ms)
        # the second shard's sequence numbers have 129 digits, the most Kinesis allows
        sequence = SEQUENCE_BASE if shard == SHARDS[0] else 10**128
        index = 0
        while index < len(generated):
            sequence += rng.randint(1, 10**6)
            # One record in ten is a KPL aggregate of the next few records of one key.
            run = [generated[index]]
            if rng.random() < 0.1:
                while (index + len(run) < len(generated) and len(run) < 5
                       and generated[index + len(run)].partition_key == run[0].partition_key):
                    run.append(generated[index + len(run)])
            index += len(run)
            arrival_ms = run[0].arrival_ms  # an aggregate arrives as one record
            payloads = [g.poison if g.poison is not None else json_bytes(g.event) for g in run]
            data = aggregate(run[0].partition_key, payloads) if len(run) > 1 else payloads[0]
            record = StreamRecord(str(sequence), run[0].partition_key, data, arrival_ms / 1000,
                                  shard)
            workload.shards[shard].append(record)
            for g in run:
                if g.poison is not None:
                    workload.poison_sequence_numbers.add(record.sequence_number)
                elif g.duplicate_of is None:
                    workload.applied.append((g.event, arrival_ms))
    return workload


# ---- the oracle: plain Python over the de-duplicated valid events ------------------------------
def oracle(applied: list[tuple[dict[str, Any], int]]) -> dict[tuple[str, str], dict[str, Any]]:
    expected: dict[tuple[str, str], dict[str, Any]] = {}
    as_of_s = AS_OF // 1000
    for group in CATALOG.groups:
        events = [
            (event, _ms(event))
            for event, arrival in applied
            if event["event_type"] in group.sources
            and arrival - _ms(event) <= group.allowed_lateness_seconds * 1000
        ]
        keys = {
            event[CATALOG.latest(event["event_type"]).entity_keys[group.entity]]
            for event, _ in events
        }
        for key in keys:
            mine = [
                (event, time_ms) for event, time_ms in events
                if event[CATALOG.latest(event["event_type"]).entity_keys[group.entity]] == key
            ]
            kickoffs = [t for e, t in mine
                        if e["event_type"] == KICKOFF_EVENT and e["status"] == "live"]
            values: dict[str, Any] = {}
            for feature in group.features:
                chosen = [(e, t) for e, t in mine
                          if e["event_type"] in (feature.events or group.sources)]
                for window in feature.windows:
                    in_window = [(e, t) for e, t in chosen
                                 if _in_window(window, t // 1000, as_of_s, kickoffs)]
                    values[f"{feature.name}_{window.name}"] = _aggregate(feature, in_window)
            expected[(group.name, key)] = values
    return expected


def _ms(event: dict[str, Any]) -> int:
    from datetime import datetime

    moment = datetime.fromisoformat(event["event_time"].replace("Z", "+00:00"))
    return round(moment.timestamp() * 1000)


def _in_window(window: Any, time_s: int, as_of_s: int, kickoffs: list[int]) -> bool:
    if window.kind is WindowKind.LIFETIME:
        return True
    tile = SESSION_TILE_SECONDS if window.kind is WindowKind.SINCE_KICKOFF else window.tile_seconds
    start, current = time_s - time_s % tile, as_of_s - as_of_s % tile
    if window.kind is WindowKind.SLIDING:
        return current - window.size_seconds < start <= current
    if window.kind is WindowKind.TUMBLING:
        return start == current
    if not kickoffs:
        return False
    kickoff_s = min(kickoffs) // 1000
    return kickoff_s - kickoff_s % tile <= start <= current


def _aggregate(feature: Any, events: list[tuple[dict[str, Any], int]]) -> Any:
    if not events:
        return None  # what is served when no event falls in the window
    values = [(e[feature.field] if feature.field else None, t, e["event_id"]) for e, t in events]
    kind = feature.aggregation
    if kind is Aggregation.COUNT:
        return len(values)
    numbers = [v for v, _, _ in values]
    if kind is Aggregation.SUM:
        return sum(numbers)
    if kind is Aggregation.MEAN:
        return sum(numbers) / len(numbers) if numbers else None
    if kind is Aggregation.MAX:
        return max(numbers, default=None)
    if kind is Aggregation.MIN:
        return min(numbers, default=None)
    newest_first = sorted(values, key=lambda v: (v[1], v[2]), reverse=True)
    if kind is Aggregation.LAST:
        return newest_first[0][0] if newest_first else None
    if kind is Aggregation.LAST_N:
        return [v for v, _, _ in newest_first[: feature.size]]
    if kind is Aggregation.APPROX_DISTINCT:
        sketch = HyperLogLog()  # the oracle's own sketch of the exact distinct set
        for value in {v for v, _, _ in values}:
            sketch.add(value)
        return sketch.estimate()
    counts: dict[Any, int] = {}
    for value in numbers:
        counts[value] = counts.get(value, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))
    return [[value, count] for value, count in ranked[: feature.size]]


# ---- faults ------------------------------------------------------------------------------------
class SimulatedCrash(BaseException):
    """The execution environment dies (timeout, OOM): nothing in the handler may catch it."""


class Faults:
    """Random faults (own seed), plus a crash in every third invocation, a failed S3 put in
    every seventh and a non-retryable error on every 151st item write, so that each kind of
    fault happens in every run."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.invocations = 0
        self.puts = 0
        self.updates = itertools.count(1)  # next() is atomic: writes run on 4 threads
        self.crash_after: int | None = None  # UpdateItem calls left before this invocation dies
        self.counts = {"crash": 0, "throttle": 0, "unprocessed": 0, "item_error": 0,
                       "s3_error": 0}

    def arm(self) -> None:
        self.invocations += 1
        self.crash_after = self.rng.randint(0, 300) if self.invocations % 3 == 1 else None

    def maybe_die(self) -> None:
        if self.crash_after is not None and self.crash_after <= 0:
            self.counts["crash"] += 1
            raise SimulatedCrash

    def chance(self, name: str, probability: float) -> bool:
        if self.rng.random() < probability:
            self.counts[name] += 1
            return True
        return False


class FaultyDynamoDB:
    def __init__(self, real: Any, faults: Faults) -> None:
        self.real, self.faults = real, faults

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.faults.maybe_die()
        if self.faults.chance("throttle", 0.05):
            raise client_error("ProvisionedThroughputExceededException", "BatchGetItem")
        ((table, request),) = RequestItems.items()
        keys = request["Keys"]
        if len(keys) > 1 and self.faults.chance("unprocessed", 0.2):
            served, left = keys[: len(keys) // 2], keys[len(keys) // 2 :]
            response = self.real.batch_get_item(RequestItems={table: {**request, "Keys": served}})
            response["UnprocessedKeys"] = {table: {**request, "Keys": left}}
            return dict(response)
        return dict(self.real.batch_get_item(RequestItems=RequestItems))

    def update_item(self, **request: Any) -> dict[str, Any]:
        self.faults.maybe_die()
        if self.faults.chance("throttle", 0.03):
            raise client_error("ProvisionedThroughputExceededException", "UpdateItem")
        if next(self.faults.updates) % 151 == 0:  # not retryable: a partial batch failure
            self.faults.counts["item_error"] += 1
            raise client_error("ItemCollectionSizeLimitExceededException", "UpdateItem")
        response = dict(self.real.update_item(**request))
        if self.faults.crash_after is not None:
            self.faults.crash_after -= 1  # the write landed; the crash comes after it
        return response


class FaultyS3:
    def __init__(self, real: Any, faults: Faults) -> None:
        self.real, self.faults = real, faults

    def put_object(self, **request: Any) -> dict[str, Any]:
        self.faults.maybe_die()
        self.faults.puts += 1
        if self.faults.puts % 7 == 0:
            self.faults.counts["s3_error"] += 1
            raise client_error("SlowDown", "PutObject")
        return dict(self.real.put_object(**request))


# ---- the event source mapping ------------------------------------------------------------------
class Crashed(RuntimeError):
    """What the Lambda service sees of a ``SimulatedCrash``: the invocation failed."""


def drain(records: list[StreamRecord], faults: Faults, rng: random.Random) -> None:
    """Lambda's Kinesis poller over one shard, as the local platform emulates it
    (``localplatform.mapping_emulator``): partial failures resume at the lowest reported
    sequence number, crashes bisect the batch, and every record is retried until it succeeds.
    Batches are drawn at random sizes, so that retries meet other boundaries than first tries."""
    invocations = 0

    def invoke(event: dict[str, Any]) -> Any:
        nonlocal invocations
        invocations += 1
        if invocations >= 400:
            pytest.fail("the processor is not making progress")
        faults.arm()
        try:
            response = stream_processor.handler(event, LambdaContext())
        except SimulatedCrash as crash:
            raise Crashed("the execution environment died") from crash
        sequence_numbers = [record["kinesis"]["sequenceNumber"] for record in event["Records"]]
        failures = [item["itemIdentifier"] for item in response["batchItemFailures"]]
        if failures and failures != sequence_numbers[-len(failures):]:
            pytest.fail("report the lowest failed sequence number and every later one")
        return response

    delivery = BatchDelivery(
        MappingSettings(bisect_on_error=True, report_batch_item_failures=True,
                        retry_backoff_s=0.0),
        EXAMPLE_SOURCE, invoke, destination=None, sleep=lambda seconds: None,
    )
    position = 0
    while position < len(records):
        size = rng.randint(1_500, 6_000)
        report = delivery.deliver(records[position : position + size])
        assert not report.discarded, report
        position += size


# ---- the test ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with embedded_aws() as url:
        yield url


def test_online_store_equals_the_oracle_exactly_under_faults(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dynamodb, s3 = client("dynamodb", endpoint), client("s3", endpoint)
    create_feature_stores(dynamodb, s3, table=TABLE, bucket=BUCKET)
    rng = random.Random(SEED)
    workload = generate(rng)
    faults = Faults(SEED + 1)
    processor = stream_processor.configure(
        FaultyDynamoDB(dynamodb, faults), FaultyS3(s3, faults),
        {"ONLINE_TABLE_NAME": TABLE, "OFFLINE_BUCKET_NAME": BUCKET, "WRITE_CONCURRENCY": "4"},
    )
    processor.store.retry = RetryPolicy(base_delay_s=0.001, max_delay_s=0.01)
    monkeypatch.setattr(stream_processor, "_processor", processor)

    for shard in SHARDS:
        drain(workload.shards[shard], faults, rng)
    assert all(count > 0 for count in faults.counts.values()), faults.counts

    reader = FeatureClient(dynamodb, TABLE, clock_ms=lambda: AS_OF)  # as the API reads
    expected = oracle(workload.applied)
    actual = {
        (group, key): {
            name.split(".", 1)[1]: None if value is None else value.value
            for name, value in reader.get(
                CATALOG.group(group).entity, key, [group]).features.items()
        }
        for group, key in expected
    }
    mismatches = {
        key: {name: (actual[key][name], value) for name, value in values.items()
              if actual[key][name] != value}
        for key, values in expected.items()
    }
    assert {k: v for k, v in mismatches.items() if v} == {}
    assert len(expected) > 100

    # Every poison record is in a quarantine object, with its reason.
    quarantined: set[str] = set()
    # (pk, sk, tile seconds, tile start) -> (item version, tile state) of the newest line
    replayed: dict[tuple[str, str, str, str], tuple[int, Any]] = {}
    for listed in _objects(s3):
        body = s3.get_object(Bucket=BUCKET, Key=listed)["Body"].read()
        for line in body.splitlines():
            entry = json.loads(line)
            if listed.startswith("quarantine/") and entry["reason"] != "too_late":
                quarantined.add(entry["sequence_number"])
            elif listed.startswith("features/"):
                for section, tiles in entry["tiles"].items():
                    for start, state in tiles.items():
                        key = (entry["pk"], entry["sk"], section, start)
                        if key not in replayed or replayed[key][0] <= entry["version"]:
                            replayed[key] = (entry["version"], state)
    assert workload.poison_sequence_numbers <= quarantined
    # Replaying the feature log (per tile, the line with the highest item version) rebuilds
    # the final state of every tile of every item.
    final = {
        (item["pk"]["S"], item["sk"]["S"], section, start): state
        for page in dynamodb.get_paginator("scan").paginate(TableName=TABLE)
        for item in page["Items"]
        if not item["pk"]["S"].startswith(DEDUP_PREFIX)
        for section, tiles in json.loads(item["state"]["S"]).items()
        for start, state in tiles.items()
    }
    assert len(final) > 100
    assert {key: replayed[key][1] for key in final if key in replayed} == final


def _objects(s3: Any) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys
