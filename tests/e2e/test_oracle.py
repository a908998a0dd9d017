"""The oracle test: the online store, read back as the feature API reads it, must equal
features computed in plain Python from the de-duplicated valid events, exactly, after both
stages: the stream processor (stage 1) and the audience stage (stage 2).

Real DynamoDB, S3 and Kinesis APIs (moto in server mode on 127.0.0.1, real boto3
serialization; the partials stream is a moto stream), the real Lambda handlers of both stages,
and the local platform's event source mapping emulator for each, which re-delivers the way
Lambda does: partial batch failures resume at the lowest reported sequence number and function
errors bisect the batch, over batches of random sizes. Stage 1 runs with ParallelizationFactor
3: each shard's records go to three lanes by partition key, run concurrently (one thread each,
sharing the handler as one execution environment serves concurrent batches locally), so
concurrent batches of one shard interleave their positions. Stage 2 runs concurrently with
stage 1, on whatever has been emitted so far.

Faults, in each stage, with seeds of their own: crashes after part of the writes (DynamoDB
writes, the outbox, partials put to the stream), throttling, UnprocessedKeys, non-retryable item
errors, throttled and lost PutRecords entries, failing S3 puts; on top of that producer
duplicates, out-of-order event times within the lateness, events later than it, poison records
(lone surrogates among them), KPL aggregates and 129-digit sequence numbers.

moto answers ~250 UpdateItem calls/s, so the workload is sized (30 users, 12 minutes of event
time, large batches) to stay near a minute while keeping every fault in play.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from fastbreak.definitions import CATALOG, WindowKind
from fastbreak.definitions.model import Aggregation, Catalog
from fastbreak.engine import OnlineStore, RetryPolicy, S3Sink
from fastbreak.engine import audience as audience_engine
from fastbreak.engine.admission import Admission
from fastbreak.engine.cutover import CutOverRegistry
from fastbreak.engine.hll import HyperLogLog
from fastbreak.engine.kpl import aggregate
from fastbreak.engine.layout import OPERATIONAL_PREFIXES, OUTBOX_PREFIX, state_json
from fastbreak.engine.plan import KICKOFF_EVENT, SESSION_TILE_SECONDS
from fastbreak.engine.records import SourceRecord, read_source, user_records
from fastbreak.engine.timestamps import format_ms
from fastbreak.handlers import audience_stage, stream_processor
from fastbreak.offline.backfill import Backfill, BackfillRequest, BackfillSummary
from fastbreak.offline.raw import raw_row
from fastbreak.offline.raw_files import S3Options, write_raw
from fastbreak.serving import FeatureClient
from localplatform.embedded_aws import client, embedded_aws
from localplatform.event_source_mapping import lane_index
from localplatform.kinesis_events import (
    SEQUENCE_BASE,
    EventSource,
    StreamRecord,
    json_bytes,
    lambda_record,
)
from localplatform.lambda_context import LambdaContext
from localplatform.mapping_emulator import BatchDelivery, MappingSettings
from localplatform.memory_dynamodb import client_error
from localplatform.stores import StreamTail, create_feature_stores, create_partials_stream

pytestmark = pytest.mark.e2e

SEED = 20261126
T0 = 1_795_717_800_000  # 2026-11-26T18:30:00Z
SPAN_MS = 12 * 60 * 1000
AS_OF = T0 + SPAN_MS + 2 * 60 * 1000
UNIQUE_EVENTS = 20_000
SHARDS = ("shardId-000000000000", "shardId-000000000001")
PARALLELIZATION_FACTOR = 3  # stage 1's
TABLE, BUCKET, PARTIALS = "fastbreak-online", "fastbreak-offline", "fastbreak-partials"
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


def generate(rng: random.Random, unique_events: int = UNIQUE_EVENTS) -> Workload:
    logical: list[Generated] = []
    for n in range(unique_events):
        time_ms = T0 + rng.randrange(SPAN_MS)
        event, key = _event(rng, n, time_ms)
        logical.append(Generated(event, time_ms + _delay_ms(rng), key))
    copies = [
        Generated(g.event, g.arrival_ms + rng.randint(0, 60_000), g.partition_key,
                  duplicate_of=g.event["event_id"])
        for g in rng.sample(logical, unique_events // 20)
    ]
    poison = [
        Generated({}, T0 + rng.randrange(SPAN_MS), rng.choice(USERS), poison=rng.choice(POISON))
        for _ in range(unique_events // 100)
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
    """Random faults of one stage (own seed), plus a crash in every third invocation, a failed
    S3 put in every seventh and a non-retryable error on every 151st item write, so that each
    kind of fault happens in every run. Concurrent invocations (and their writes, on the
    store's threads) share one crash point: whichever invocation makes the write that reaches
    it dies."""

    def __init__(self, seed: int, writes_before_crash: int) -> None:
        self.rng = random.Random(seed)
        self.writes_before_crash = writes_before_crash  # at most, in a crashing invocation
        self._lock = threading.Lock()
        self.crash_after: int | None = None  # writes left before an invocation dies
        self.invocations = itertools.count(1)
        self.puts = itertools.count(1)
        self.updates = itertools.count(1)  # next() is atomic: writes run on several threads
        self.counts = {"crash": 0, "throttle": 0, "unprocessed": 0, "item_error": 0,
                       "s3_error": 0, "partials_throttled": 0}

    def arm(self) -> None:
        with self._lock:
            crash = next(self.invocations) % 3 == 1
            self.crash_after = self.rng.randint(0, self.writes_before_crash) if crash else None

    def maybe_die(self) -> None:
        with self._lock:
            dies = self.crash_after is not None and self.crash_after <= 0
            if dies:
                self.crash_after = None  # one invocation dies of it
        if dies:
            self.count("crash")
            raise SimulatedCrash

    def landed(self) -> None:
        """A write landed: the crash, when armed, comes that many writes later."""
        with self._lock:
            if self.crash_after is not None:
                self.crash_after -= 1

    def chance(self, name: str, probability: float) -> bool:
        with self._lock:
            hit = self.rng.random() < probability
        if hit:
            self.count(name)
        return hit

    def count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1


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
            self.faults.count("item_error")
            raise client_error("ItemCollectionSizeLimitExceededException", "UpdateItem")
        response = dict(self.real.update_item(**request))
        self.faults.landed()  # the write landed; the crash comes after it
        return response

    def _outbox(self, operation: str, **request: Any) -> dict[str, Any]:
        self.faults.maybe_die()
        if self.faults.chance("throttle", 0.03):
            raise client_error("ProvisionedThroughputExceededException", operation)
        response = dict(getattr(self.real, operation)(**request))
        self.faults.landed()
        return response

    def put_item(self, **request: Any) -> dict[str, Any]:
        return self._outbox("put_item", **request)

    def delete_item(self, **request: Any) -> dict[str, Any]:
        return self._outbox("delete_item", **request)

    def query(self, **request: Any) -> dict[str, Any]:
        self.faults.maybe_die()
        if self.faults.chance("throttle", 0.03):
            raise client_error("ProvisionedThroughputExceededException", "Query")
        return dict(self.real.query(**request))


class FaultyS3:
    def __init__(self, real: Any, faults: Faults) -> None:
        self.real, self.faults = real, faults

    def put_object(self, **request: Any) -> dict[str, Any]:
        self.faults.maybe_die()
        if next(self.faults.puts) % 7 == 0:
            self.faults.count("s3_error")
            raise client_error("SlowDown", "PutObject")
        return dict(self.real.put_object(**request))


class FaultyKinesis:
    """Stage 1's view of the partials stream: entries throttled (the others land), crashes
    after some records landed, and on every fifth call the invocation dies right after the
    stream took its records (they reach the audience stage twice)."""

    def __init__(self, real: Any, faults: Faults) -> None:
        self.real, self.faults = real, faults
        self.calls = itertools.count(1)

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.faults.maybe_die()
        throttled = {n for n in range(len(Records))
                     if self.faults.chance("partials_throttled", 0.05)}
        sent = [entry for n, entry in enumerate(Records) if n not in throttled]
        answers = iter(self.real.put_records(StreamName=StreamName, Records=sent)["Records"]
                       if sent else [])
        self.faults.landed()  # the records landed; a crash may come right after
        if next(self.calls) % 5 == 0:
            self.faults.count("crash")
            raise SimulatedCrash
        return {"Records": [
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow"}
            if n in throttled else next(answers)
            for n in range(len(Records))
        ]}


# ---- the event source mappings -----------------------------------------------------------------
class Crashed(RuntimeError):
    """What the Lambda service sees of a ``SimulatedCrash``: the invocation failed."""


class Stage:
    """One stage's Lambda service: the handler, its faults, and the event source mapping
    emulator (``localplatform.mapping_emulator``) for each of its shards or lanes."""

    def __init__(self, name: str, handler: Any, faults: Faults, stream: str) -> None:
        self.name, self.handler, self.faults = name, handler, faults
        self.source = EventSource(f"arn:aws:kinesis:us-east-1:123456789012:stream/{stream}",
                                  f"arn:aws:lambda:us-east-1:123456789012:function:{name}",
                                  "arn:aws:iam::123456789012:role/fastbreak", "us-east-1")
        self.invocations = itertools.count(1)
        self.invoked = 0  # read by other threads: how far the stage has got

    def invoke(self, event: dict[str, Any]) -> Any:
        self.invoked += 1
        if next(self.invocations) >= 2000:
            pytest.fail(f"the {self.name} is not making progress")
        self.faults.arm()
        try:
            response = self.handler(event, LambdaContext())
        except SimulatedCrash as crash:
            raise Crashed("the execution environment died") from crash
        sequence_numbers = [record["kinesis"]["sequenceNumber"] for record in event["Records"]]
        failures = [item["itemIdentifier"] for item in response["batchItemFailures"]]
        if failures and failures != sequence_numbers[-len(failures):]:
            pytest.fail("report the lowest failed sequence number and every later one")
        return response

    def drain(self, records: list[StreamRecord], rng: random.Random,
              sizes: tuple[int, int]) -> None:
        """Deliver ``records`` (one shard, or one lane of it) in batches of random sizes;
        every record is retried until it succeeds."""
        delivery = BatchDelivery(
            MappingSettings(bisect_on_error=True, report_batch_item_failures=True,
                            retry_backoff_s=0.0),
            self.source, self.invoke, destination=None, sleep=lambda seconds: None,
        )
        position = 0
        while position < len(records):
            size = rng.randint(*sizes)
            report = delivery.deliver(records[position : position + size])
            assert not report.discarded, report
            position += size


def run_stage_1(stage: Stage, workload: Workload, rng: random.Random) -> None:
    """Every shard with ParallelizationFactor lanes: a record's lane is its partition key's,
    as the emulated mapping assigns them; the lanes of all shards run at once."""
    lanes = [
        [r for r in workload.shards[shard]
         if lane_index(r.partition_key, PARALLELIZATION_FACTOR) == lane]
        for shard in SHARDS for lane in range(PARALLELIZATION_FACTOR)
    ]
    errors: list[BaseException] = []

    def drain(records: list[StreamRecord], seed: int) -> None:
        try:
            stage.drain(records, random.Random(seed), (500, 2_000))
        except BaseException as error:  # surfaced below: a thread cannot fail the test
            errors.append(error)

    threads = [threading.Thread(target=drain, args=(records, rng.randrange(2**32)))
               for records in lanes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def run_stage_2(stage: Stage, tail: StreamTail, rng: random.Random, done: threading.Event
                ) -> None:
    """The audience stage on what the partials stream holds, while stage 1 runs and once
    more after it: each shard's new records in batches of random sizes."""
    while True:
        finished = done.is_set()
        for records in tail.take().values():
            stage.drain(records, rng, (50, 400))
        if finished:
            return
        done.wait(0.2)


# ---- the test ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with embedded_aws() as url:
        yield url


def test_both_stages_equal_the_oracle_exactly_under_faults_with_parallel_batches(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dynamodb, s3 = client("dynamodb", endpoint), client("s3", endpoint)
    kinesis = client("kinesis", endpoint)
    create_feature_stores(dynamodb, s3, table=TABLE, bucket=BUCKET)
    create_partials_stream(kinesis, PARTIALS, shards=2)
    rng = random.Random(SEED)
    workload = generate(rng)
    environ = {"ONLINE_TABLE_NAME": TABLE, "OFFLINE_BUCKET_NAME": BUCKET, "WRITE_CONCURRENCY": "4",
               "PARTIALS_STREAM_NAME": PARTIALS,
               "PARALLELIZATION_FACTOR": str(PARALLELIZATION_FACTOR)}
    # stage 1 batches write hundreds of items; the audience stage's, tens
    faults1, faults2 = Faults(SEED + 1, 300), Faults(SEED + 2, 40)
    fast = RetryPolicy(base_delay_s=0.001, max_delay_s=0.01)
    processor = stream_processor.configure(
        FaultyDynamoDB(dynamodb, faults1), FaultyS3(s3, faults1), environ,
        kinesis=FaultyKinesis(kinesis, faults1),
    )
    processor.store.retry = processor.outbox.retry = fast
    assert processor.partials is not None
    processor.partials.retry = fast
    monkeypatch.setattr(stream_processor, "_processor", processor)
    merger = audience_stage.configure(FaultyDynamoDB(dynamodb, faults2),
                                      FaultyS3(s3, faults2), environ)
    merger.store.retry = fast
    monkeypatch.setattr(audience_stage, "_merger", merger)
    # Smaller entity items than a deployment's: the hot games and contents of this short
    # workload outgrow theirs, and their later tiles get tile items, under the same faults.
    monkeypatch.setattr(audience_engine, "ENTITY_ITEM_BYTES", 600)
    # What the stages did, to check that the paths this test is about were taken.
    completed, redelivered = itertools.count(), itertools.count()
    process1, process2 = processor.process, merger.process

    def recording1(records: Any) -> Any:
        result = process1(records)
        for _ in range(result.emissions_completed):
            next(completed)
        return result

    def recording2(records: Any) -> Any:
        result = process2(records)
        for _ in range(result.duplicate_partials):
            next(redelivered)
        return result

    monkeypatch.setattr(processor, "process", recording1)
    monkeypatch.setattr(merger, "process", recording2)

    stage1 = Stage("stream-processor", stream_processor.handler, faults1, "fastbreak-events")
    stage2 = Stage("audience-stage", audience_stage.handler, faults2, PARTIALS)
    stage1_done = threading.Event()
    audience = threading.Thread(
        target=run_stage_2, args=(stage2, StreamTail(kinesis, PARTIALS), random.Random(SEED + 3),
                                  stage1_done))
    audience.start()
    try:
        run_stage_1(stage1, workload, rng)
    finally:
        stage1_done.set()
        audience.join()
    assert all(count > 0 for count in faults1.counts.values()), faults1.counts
    assert all(count > 0 for name, count in faults2.counts.items()
               if name != "partials_throttled"), faults2.counts
    # Emissions left pending by a crash were completed by a re-delivery, and partials that
    # reached the stream twice were dropped by the audience stage.
    assert next(completed) > 0 and next(redelivered) > 0

    assert_equals_the_oracle(dynamodb, s3, TABLE, BUCKET, workload)


def assert_equals_the_oracle(dynamodb: Any, s3: Any, table: str, bucket: str,
                             workload: Workload) -> None:
    """The online store, read as the API reads, equals the oracle; every poison record is
    quarantined; no emission is left pending; the feature log rebuilds every item's tiles."""
    reader = FeatureClient(dynamodb, table, clock_ms=lambda: AS_OF)  # as the API reads
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
    assert {group for group, _ in expected} >= {"game_live", "content_trending"}

    items = [item for page in dynamodb.get_paginator("scan").paginate(TableName=table)
             for item in page["Items"]]
    pending = [item for item in items if item["pk"]["S"].startswith(OUTBOX_PREFIX)
               and "last" in item]
    assert pending == []  # every emission completed
    # Entities whose tiles all fit their entity item, and hot ones whose tiles outgrew it.
    audience_sks = {item["sk"]["S"] for item in items
                    if item["pk"]["S"].startswith(("game#", "content#"))}
    assert {sk.split("#")[1][:1] for sk in audience_sks} >= {"e", "t"}, sorted(audience_sks)[:20]

    # Every poison record is in a quarantine object, with its reason.
    quarantined: set[str] = set()
    # (pk, sk, tile seconds, tile start) -> (item version, tile state) of the newest line
    replayed: dict[tuple[str, str, str, str], tuple[int, Any]] = {}
    for listed in _objects(s3, bucket):
        if not listed.startswith(("quarantine/", "features/")):
            continue  # the raw table's Parquet files
        body = s3.get_object(Bucket=bucket, Key=listed)["Body"].read()
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
    # Replaying the feature log of both stages (per tile, the line with the highest item
    # version) rebuilds the final state of every tile of every item.
    final = {
        (item["pk"]["S"], item["sk"]["S"], section, start): state
        for item in items
        if not item["pk"]["S"].startswith(OPERATIONAL_PREFIXES)
        for section, tiles in json.loads(state_json(
            item["state"]["S"] if "S" in item["state"] else item["state"]["B"])).items()
        for start, state in tiles.items()
    }
    assert len(final) > 100
    assert {key: replayed[key][1] for key in final if key in replayed} == final


def _objects(s3: Any, bucket: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


# ---- the backfill: a release adds groups and features to the running platform ------------------
BACKFILL_EVENTS = 8_000
MINUTE = 60_000
DEPLOY = T0 + 4 * MINUTE  # the release takes over stage 1 and the audience stage (arrival time)
CUTOVER = T0 + 7 * MINUTE  # from when the release's new slots are folded live
NEW_GROUPS = ("user_affinity", "content_trending")
NEW_FEATURES = {"user_engagement": "push_opens", "game_live": "score_changes"}


def previous_catalog() -> Catalog:
    """The release before: without two groups (a user and an audience group), and without a
    feature of two others."""
    groups = tuple(
        dataclasses.replace(group, features=tuple(
            f for f in group.features if f.name != NEW_FEATURES.get(group.name)))
        for group in CATALOG.groups if group.name not in NEW_GROUPS
    )
    return dataclasses.replace(CATALOG, groups=groups).validate()


def raw_table(workload: Workload) -> list[dict[str, Any]]:
    """The raw table's rows, as its ingest writes them (a record that cannot be split into user
    records reaches neither the processor's fold nor the raw table's applied rows)."""
    admission = Admission(CATALOG)
    rows: list[dict[str, Any]] = []
    for records in workload.shards.values():
        for index, record in enumerate(records):
            source = read_source(lambda_record(record), index)
            assert isinstance(source, SourceRecord)
            decoded = user_records(source)
            if isinstance(decoded, list):
                rows.extend(raw_row(user_record, admission.admit(user_record))
                            for user_record in decoded)
    return rows


def arrived(workload: Workload, low: int, high: int) -> Workload:
    return Workload({shard: [r for r in records if low <= r.arrival * 1000 < high]
                     for shard, records in workload.shards.items()})


def test_a_backfill_overlapping_live_traffic_with_a_crash_and_reruns_equals_the_oracle(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous release processes the stream until DEPLOY; the new one records its new
    slots' cut-over at its first batch and goes on. The backfill runs while it does, with
    faults of its own: a first run dies part of the way; a second one runs while the new
    release folds the records after the cut-over (into the same items); a third, at the end,
    finds nothing left to do."""
    table, bucket, partials = f"{TABLE}-bf", f"{BUCKET}-bf", f"{PARTIALS}-bf"
    dynamodb, s3 = client("dynamodb", endpoint), client("s3", endpoint)
    kinesis = client("kinesis", endpoint)
    create_feature_stores(dynamodb, s3, table=table, bucket=bucket)
    create_partials_stream(kinesis, partials, shards=2)
    for name, value in (("AWS_ACCESS_KEY_ID", "fastbreak-local"),
                        ("AWS_SECRET_ACCESS_KEY", "fastbreak-local")):
        monkeypatch.setenv(name, value)  # pyarrow's S3 filesystem reads them from there
    s3_options = S3Options(endpoint, "us-east-1")
    rng = random.Random(SEED + 10)
    # Small entity items, as in the test above: hot entities get tile items too, and the
    # backfill's partials merge into both kinds.
    monkeypatch.setattr(audience_engine, "ENTITY_ITEM_BYTES", 600)
    workload = generate(rng, BACKFILL_EVENTS)
    write_raw(raw_table(workload), f"s3://{bucket}/raw", CATALOG, s3_options)
    fast = RetryPolicy(base_delay_s=0.001, max_delay_s=0.01)
    faults1, faults2 = Faults(SEED + 11, 300), Faults(SEED + 12, 40)
    environ = {"ONLINE_TABLE_NAME": table, "OFFLINE_BUCKET_NAME": bucket,
               "WRITE_CONCURRENCY": "4", "PARTIALS_STREAM_NAME": partials,
               "PARALLELIZATION_FACTOR": str(PARALLELIZATION_FACTOR)}

    def release(catalog: Catalog, settings: dict[str, str]) -> None:
        """Both stages' handlers of one release, over the faulty clients."""
        monkeypatch.setattr(stream_processor, "CATALOG", catalog)
        monkeypatch.setattr(audience_stage, "CATALOG", catalog)
        processor = stream_processor.configure(
            FaultyDynamoDB(dynamodb, faults1), FaultyS3(s3, faults1), {**environ, **settings},
            kinesis=FaultyKinesis(kinesis, faults1))
        processor.store.retry = processor.outbox.retry = fast
        assert processor.partials is not None
        processor.partials.retry = fast
        merger = audience_stage.configure(FaultyDynamoDB(dynamodb, faults2),
                                          FaultyS3(s3, faults2), environ)
        merger.store.retry = fast

    stage1 = Stage("stream-processor", stream_processor.handler, faults1, "fastbreak-events")
    stage2 = Stage("audience-stage", audience_stage.handler, faults2, partials)
    stage1_done = threading.Event()
    audience = threading.Thread(
        target=run_stage_2, args=(stage2, StreamTail(kinesis, partials),
                                  random.Random(SEED + 13), stage1_done))
    release(previous_catalog(), {})
    audience.start()
    backfills = BackfillThread(stage1, dynamodb, s3, table, bucket, s3_options, fast)
    after_cutover = threading.Thread(
        target=run_stage_1, args=(stage1, arrived(workload, CUTOVER + MINUTE, 2**62), rng))
    try:
        run_stage_1(stage1, arrived(workload, 0, DEPLOY), rng)
        # The new release: its processor's first batch records the new slots at its clock
        # plus the delay; the delay puts them at CUTOVER of the workload's (past) arrival times.
        now_ms = time.time_ns() // 1_000_000
        release(CATALOG, {"CUTOVER_DELAY_SECONDS": str((CUTOVER - now_ms) // 1000)})
        backfills.start()  # it waits for the cut-over, then runs (and dies) meanwhile
        run_stage_1(stage1, arrived(workload, DEPLOY, CUTOVER + MINUTE), rng)
        after_cutover.start()  # the records after the cut-over, folded live into new slots...
        backfills.resume.set()  # ... while the backfill runs again
        after_cutover.join()
    finally:
        backfills.resume.set()
        stage1_done.set()
        audience.join()
    backfills.join()
    assert backfills.errors == [] and backfills.crashed
    resumed = {group.group: group for group in backfills.resumed.groups}
    # the run that died had written some user items: the next one left them as they were
    assert resumed["user_affinity"].already_done > 0, resumed
    assert resumed["content_trending"].items_written > 0, resumed
    assert backfills.live_batches_meanwhile > 0  # the second run overlapped live traffic
    assert {(g.group, tuple(g.cutovers)) for g in backfills.resumed.groups
            if g.cutovers} == {(name, (backfills.cutover,)) for name in (
                *NEW_GROUPS, *NEW_FEATURES)}
    assert abs(backfills.cutover - CUTOVER) < 5_000

    # Once more after everything: nothing left to write.
    last = run_backfill(dynamodb, s3, table, bucket, s3_options, fast)
    assert sum(group.items_written for group in last.groups) == 0
    assert_equals_the_oracle(dynamodb, s3, table, bucket, workload)


def run_backfill(dynamodb: Any, s3: Any, table: str, bucket: str, s3_options: S3Options,
                 retry: RetryPolicy) -> BackfillSummary:
    request = BackfillRequest((*NEW_GROUPS, *NEW_FEATURES), f"s3://{bucket}/raw", table,
                              s3=s3_options)
    return Backfill(request, dynamodb, S3Sink(s3, bucket), CATALOG, retry=retry).run()


class BackfillThread(threading.Thread):
    """The backfill while the new release processes the stream: it waits for the cut-over to
    be recorded, dies after some writes (faults of its own besides), and once told to resume
    runs again, counting the live batches stage 1 ran meanwhile."""

    def __init__(self, stage1: Stage, dynamodb: Any, s3: Any, table: str, bucket: str,
                 s3_options: S3Options, retry: RetryPolicy) -> None:
        super().__init__()
        self.stage1 = stage1
        self.resume = threading.Event()
        self.live_batches_meanwhile = 0
        self.faults = Faults(SEED + 14, 0)
        self.args = (FaultyDynamoDB(dynamodb, self.faults), FaultyS3(s3, self.faults), table,
                     bucket, s3_options, retry)
        self.registry = CutOverRegistry(OnlineStore(dynamodb, table, retry))
        self.errors: list[BaseException] = []
        self.crashed = False
        self.cutover = 0
        self.resumed = BackfillSummary()

    def run(self) -> None:
        try:
            while True:  # the new release's first batch records the cut-over
                recorded = self.registry.read() or {}
                if ("user_affinity", 0, "top_teams") in recorded:
                    self.cutover = recorded[("user_affinity", 0, "top_teams")]
                    break
                time.sleep(0.05)
            self.faults.crash_after = 60  # the run dies after this many writes landed
            try:
                run_backfill(*self.args)
            except SimulatedCrash:
                self.crashed = True
            self.resume.wait()
            before = self.stage1.invoked
            self.resumed = run_backfill(*self.args)
            self.live_batches_meanwhile = self.stage1.invoked - before
        except BaseException as error:  # surfaced by the test: a thread cannot fail it
            self.errors.append(error)
