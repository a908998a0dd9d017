"""training_set_parity: what the feature API answered vs what the training-set builder computes,
for the same events and times, feature by feature, every group of the catalog.

The real stream processor handler applies the events (late, duplicate, future-dated and refused
ones among them; three shards) to an online store in moto (server mode), the audience stage's
handler merges what it emitted to the partials stream (moto's Kinesis), and ``FeatureClient``,
the feature API's own read path, answers at chosen times. The same records, as the raw table's
ingest writes them, go to the builder:

- **as served**: the processor is fed what had reached the stream by each time and read then;
  the builder runs with ``as_served``;
- **event time**: read after everything arrived; the builder runs in its default mode (its SQL
  path where it covers the feature).

A value counts as equal when the value and its event time are both identical.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.results_format import BenchResult
from fastbreak.definitions import CATALOG
from fastbreak.engine.admission import Admission
from fastbreak.engine.records import SourceRecord, read_source, user_records
from fastbreak.engine.timestamps import format_ms
from fastbreak.handlers import audience_stage, stream_processor
from fastbreak.offline.builder import TrainingSetRequest, build_training_set
from fastbreak.offline.raw import raw_row
from fastbreak.offline.raw_files import write_raw
from fastbreak.serving.client import FeatureClient
from localplatform.embedded_aws import client, embedded_aws
from localplatform.kinesis_events import EventSource, StreamRecord, lambda_event
from localplatform.lambda_context import LambdaContext
from localplatform.stores import StreamTail, create_feature_stores, create_partials_stream

T0 = 1_795_717_800_000
MINUTE = 60_000
TABLE, BUCKET = "parity-online", "parity-offline"
SHARDS = ("shardId-000000000000", "shardId-000000000001", "shardId-000000000002")
USERS = [f"fan-{n:02d}" for n in range(24)]
GAMES = ["game-1", "game-2", "game-3"]
CONTENTS = [f"clip-{n:02d}" for n in range(12)]
SOURCE = EventSource("arn:aws:kinesis:us-east-1:123456789012:stream/events",
                     "arn:aws:lambda:us-east-1:123456789012:function:processor",
                     "arn:aws:iam::123456789012:role/processor", "us-east-1")
ENTITIES = (("user", USERS[:8]), ("game", GAMES), ("content", CONTENTS[:6]))
CHECKPOINTS = [T0 + minutes * MINUTE for minutes in (7, 31, 64, 95, 118, 150)]


def run() -> list[BenchResult]:
    records = stream(random.Random(9))
    with tempfile.TemporaryDirectory() as scratch, embedded_aws() as endpoint:
        folder = Path(scratch)
        write_raw(raw_rows(records), str(folder / "raw"), CATALOG)
        served = compare(endpoint, folder, records, CHECKPOINTS, as_served=True)
        # every event time is at most 5 minutes after its arrival: from then on, event time
        # and arrival agree on what is in the store
        last = int(max(record.arrival for record in records) * 1000)
        after = [last + minutes * MINUTE for minutes in (5, 8, 25, 75)]
        final = compare(endpoint, folder, records, after, as_served=False)
    equal, total, present = (a + b for a, b in zip(served, final, strict=True))
    share = 100.0 * equal / total
    return [BenchResult(
        "training_set_parity", round(share, 3),
        f"% of {total:,} values equal ({present:,} not null; value and event time; "
        f"{served[1]:,} as served at "
        f"{len(CHECKPOINTS)} times, {final[1]:,} by event time after the last arrival)",
        "the feature API's answers (FeatureClient over the processor's online store in moto)",
        100.0, round(share / 100, 5), "100 %", equal == total,
    )]


def compare(endpoint: str, folder: Path, records: list[StreamRecord], times: list[int],
            as_served: bool) -> tuple[int, int, int]:
    """(values equal, values compared, of which not null) between the online answers and the
    training set."""
    dynamodb, s3 = client("dynamodb", endpoint), client("s3", endpoint)
    kinesis = client("kinesis", endpoint)
    table = f"{TABLE}-{'served' if as_served else 'final'}"
    create_feature_stores(dynamodb, s3, table=table, bucket=f"{BUCKET}-{table}")
    create_partials_stream(kinesis, f"{table}-partials")
    environ = {"ONLINE_TABLE_NAME": table, "OFFLINE_BUCKET_NAME": f"{BUCKET}-{table}",
               "WRITE_CONCURRENCY": "4", "PARTIALS_STREAM_NAME": f"{table}-partials"}
    stream_processor.configure(dynamodb, s3, environ, kinesis=kinesis)
    audience_stage.configure(dynamodb, s3, environ)
    partials = StreamTail(kinesis, f"{table}-partials")
    spine = [{"user_id": user, "game_id": game, "content_id": content, "timestamp": at}
             for at in times for user, game, content in zip(
                 ENTITIES[0][1], GAMES * 3, ENTITIES[2][1] * 2, strict=False)]
    pq.write_table(pa.Table.from_pylist(spine), folder / "spine.parquet")
    groups = tuple(group.name for group in CATALOG.groups)
    built, _ = build_training_set(TrainingSetRequest(
        str(folder / "spine.parquet"), groups, str(folder / "raw"), as_served=as_served))
    delivered: set[str] = set()
    equal = compared = present = 0
    for at in sorted(set(times)):
        arrived = [r for r in records if r.arrival * 1000 <= at or not as_served]
        apply(arrived, delivered, partials)
        reader = FeatureClient(dynamodb, table, clock_ms=_Clock(at))
        rows = [row for row, spine_row in enumerate(spine) if spine_row["timestamp"] == at]
        for row in rows:
            refs = [(entity, str(spine[row][CATALOG.entity(entity).key_field]))
                    for entity, _ in ENTITIES]
            answer = reader.batch_get(refs)
            for entity_answer in answer.entities:
                for name, value in entity_answer.features.items():
                    column = name.replace(".", "__", 1)
                    got = built[column][row].as_py()
                    got_time = built[column + "__event_time"][row].as_py()
                    expected = None if value is None else _plain(value.value)
                    expected_time = None if value is None else value.event_time_ms
                    found_time = None if got_time is None else round(got_time.timestamp() * 1000)
                    compared += 1
                    present += value is not None
                    equal += got == expected and found_time == expected_time
    return equal, compared, present


def apply(records: list[StreamRecord], delivered: set[str], partials: StreamTail) -> None:
    """Deliver the records not delivered yet, shard by shard in order, in batches of 25, then
    what stage 1 emitted to the audience stage."""
    for shard in SHARDS:
        pending = [r for r in records if r.shard_id == shard
                   and r.sequence_number not in delivered]
        for start in range(0, len(pending), 25):
            batch = pending[start : start + 25]
            with contextlib.redirect_stdout(io.StringIO()):
                response = stream_processor.handler(lambda_event(batch, SOURCE), _context())
            assert response == {"batchItemFailures": []}, response
            delivered.update(r.sequence_number for r in batch)
    for event in partials.events():
        with contextlib.redirect_stdout(io.StringIO()):
            response = audience_stage.handler(event, _context())
        assert response == {"batchItemFailures": []}, response


def stream(rng: random.Random) -> list[StreamRecord]:
    """Three hours of fans, games and content: about 2,000 records, a few late (some beyond
    their groups' lateness), duplicated, dated ahead of their arrival, or malformed."""
    sent: list[tuple[int, str, bytes]] = []
    for n, document in enumerate(_documents(rng)):
        time_ms = int(document.pop("_time"))
        document["event_time"] = format_ms(time_ms)
        document["event_id"] = f"p-{n}"
        fate = rng.random()
        if fate < 0.03:
            arrival = time_ms + rng.randint(5, 150) * MINUTE  # late
        elif fate < 0.04:
            arrival = time_ms - rng.randint(1_000, 280_000)  # dated ahead of its arrival
        else:
            arrival = time_ms + rng.randint(50, 2_500)
        key = str(document.get("user_id") or document.get("game_id"))
        shard = SHARDS[sum(key.encode()) % len(SHARDS)]
        payload = json.dumps(document).encode()
        sent.append((arrival, shard, payload))
        if fate > 0.97:  # a producer retry
            sent.append((arrival + rng.randint(100, 20_000), shard, payload))
        if fate > 0.995:
            sent.append((arrival, shard, payload[: len(payload) // 2]))  # cut short
    sent.sort()
    return [StreamRecord(str(49590338271490256608559692538361571095921575989136588898 + n * 11),
                         "pk", payload, arrival / 1000, shard)
            for n, (arrival, shard, payload) in enumerate(sent)]


def _documents(rng: random.Random) -> Iterator[dict[str, Any]]:
    for game in GAMES:  # a kickoff and score changes for each game
        start = T0 + rng.randint(0, 40) * MINUTE
        for tick in range(12):
            status = "scheduled" if tick == 0 else ("final" if tick == 11 else "live")
            yield {"event_type": "score_update", "schema_version": 1, "game_id": game,
                   "home_score": tick // 2, "away_score": tick // 3, "period": 1 + tick // 4,
                   "clock_seconds": tick * 300, "status": status,
                   "_time": start + tick * 9 * MINUTE}
    for _ in range(1_800):
        user = rng.choice(USERS)
        at = T0 + rng.randint(0, 170 * MINUTE)
        kind = rng.random()
        base = {"user_id": user, "_time": at}
        if kind < 0.4:
            yield {**base, "event_type": "content_view", "schema_version": 2,
                   "content_id": rng.choice(CONTENTS), "sport": rng.choice(["nba", "nfl"]),
                   "surface": "home"}
        elif kind < 0.7:
            yield {**base, "event_type": "video_play", "schema_version": 1,
                   "content_id": rng.choice(CONTENTS), "game_id": rng.choice(GAMES),
                   "watch_seconds": rng.randint(1, 900) / 4}
        elif kind < 0.8:
            yield {**base, "event_type": "content_click", "schema_version": 1,
                   "content_id": rng.choice(CONTENTS), "position": rng.randint(0, 20)}
        elif kind < 0.9:
            yield {**base, "event_type": "game_follow", "schema_version": 1,
                   "game_id": rng.choice(GAMES), "team_id": f"team-{rng.randint(0, 7)}"}
        elif kind < 0.95:
            yield {**base, "event_type": "push_open", "schema_version": 1,
                   "campaign_id": "c-1"}
        else:
            yield {**base, "event_type": "experiment_exposure", "schema_version": 1,
                   "experiment_id": f"x-{rng.randint(0, 3)}", "variant": rng.choice("ab")}


def raw_rows(records: list[StreamRecord]) -> list[dict[str, Any]]:
    """The raw table's rows for ``records``: the processor's own admission of each."""
    admission = Admission(CATALOG)
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        source = read_source(lambda_event([record], SOURCE)["Records"][0], index)
        assert isinstance(source, SourceRecord)
        decoded = user_records(source)
        assert isinstance(decoded, list)
        rows.extend(raw_row(user_record, admission.admit(user_record)) for user_record in decoded)
    return rows


def _plain(value: Any) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], list):
        return [{"value": v, "count": c} for v, c in value]  # top_k, as the training set has it
    return value


def _context() -> LambdaContext:
    return LambdaContext.invocation("parity-processor", SOURCE.function_arn, 1024, 300.0)


class _Clock:
    def __init__(self, at_ms: int) -> None:
        self.at_ms = at_ms

    def __call__(self) -> int:
        return self.at_ms
