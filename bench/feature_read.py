"""Online reads: the feature API handler against the embedded store (moto in server mode).

Two shapes, p50 and p99 each: one user with its three groups (``GET``), and 50 users x 3
groups (``POST batch-get``). The baseline, timed in the same run and interleaved with the
measured reads, is the bare DynamoDB calls for the same keys: the calls the reader makes
(BatchGetItem for group items, 100 keys a call, with the same projection; a Query per sharded
group, none here since every user group has one item per user) on a thread pool of the same
size, with no validation, merge, JSON or handler. What remains is the serving code's own
cost. Target: p99 at most 1.5x the baseline's, judged on the median over repeats
(``bench.sampling``).

Two runs: against moto directly, and through ``bench.latency_proxy``, which adds a modelled
in-region round trip (3 ms) to every request of both sides. Absolute times are moto's, not
DynamoDB's: its server is one Python process, so parallel calls barely overlap.

The data is a day of activity of 50 fans over two shards, written by the real processor.
moto runs in its own process here (not ``embedded_aws``'s thread): a server thread in the
benchmark's process would take the GIL from the code being measured and blur the comparison.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import random
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.latency_proxy import MODEL_DELAY_MS, latency_proxy
from bench.results_format import BenchResult
from bench.sampling import compare, result, timed
from bench.server_process import server_process
from fastbreak.definitions import CATALOG
from fastbreak.engine.online_store import BATCH_GET_LIMIT
from fastbreak.engine.plan import compile_plan
from fastbreak.engine.timestamps import format_ms
from fastbreak.handlers import feature_api, stream_processor
from localplatform.api_gateway import Route, proxy_event
from localplatform.embedded_aws import HOST, client
from localplatform.kinesis_events import lambda_event, stream_of
from localplatform.lambda_context import LambdaContext
from localplatform.memory_kinesis import MemoryKinesis
from localplatform.stores import create_feature_stores

TABLE, BUCKET = "fastbreak-bench-online", "fastbreak-bench-offline"
NOW_MS = 1_795_000_000_000
USERS = [f"fan-{n:03d}" for n in range(50)]
GROUPS = ("user_engagement", "user_affinity", "user_experiments")
# moto's Query scans the whole table (no index), so its cost grows with the table: the data is
# kept small. Reads of user groups are BatchGetItem (point look-ups), which does not scan.
EVENTS_PER_USER = 8
CONCURRENCY = 16
# Samples per repeat: a p99 resting on the 5 (single) or 2 (batch) slowest samples of each
# repeat, and the median over the repeats (``bench.sampling``).
SINGLE_RUNS, BATCH_RUNS, REPEATS = 500, 200, 5
TARGET_RATIO = 1.5


def _workload(rng: random.Random) -> list[dict[str, Any]]:
    """Views, clicks, plays, follows and exposures over the last day, newest last."""
    events = []
    for user in USERS:
        for n in range(EVENTS_PER_USER):
            time_ms = NOW_MS - int(rng.random() ** 3 * 24 * 3600 * 1000)  # denser lately
            content = f"content-{rng.randrange(200)}"
            kind = rng.choice(["view", "view", "view", "click", "play", "follow", "exposure"])
            payloads: dict[str, dict[str, Any]] = {
                "view": {"event_type": "content_view", "content_id": content, "sport": "nba"},
                "click": {"event_type": "content_click", "content_id": content, "position": 3},
                "play": {"event_type": "video_play", "content_id": content, "game_id": "g-1",
                         "watch_seconds": 42.5},
                "follow": {"event_type": "game_follow", "game_id": "g-1",
                           "team_id": rng.choice(["celtics", "lakers", "bulls"])},
                "exposure": {"event_type": "experiment_exposure", "experiment_id": "rail-v2",
                             "variant": rng.choice("ab")},
            }
            payload = payloads[kind]
            events.append({**payload, "user_id": user, "schema_version": 1,
                           "event_id": f"{user}-{n}", "event_time": format_ms(time_ms),
                           "_time": time_ms})
    return sorted(events, key=lambda e: e["_time"])


def _load(rng: random.Random) -> None:
    """Feed the workload through the processor, per shard, in batches one hour wide."""
    sequence = {0: 0, 1: 0}
    batches: dict[int, list[dict[str, Any]]] = {0: [], 1: []}

    def flush(shard: int) -> None:
        batch = batches[shard]
        arrival_s = (batch[-1]["_time"] + 1000) / 1000
        documents = [{k: v for k, v in e.items() if k != "_time"} for e in batch]
        records = stream_of(documents, arrival_s, start=sequence[shard],
                            shard_id=f"shardId-00000000000{shard}")
        sequence[shard] += len(batch)
        with contextlib.redirect_stdout(io.StringIO()):
            result = stream_processor.handler(lambda_event(records), LambdaContext())
        assert result == {"batchItemFailures": []}, result
        batches[shard] = []

    for event in _workload(rng):
        shard = rng.randrange(2)
        batch = batches[shard]
        if batch and event["_time"] - batch[0]["_time"] > 3600 * 1000:
            flush(shard)
        batches[shard].append(event)
    for shard in batches:
        if batches[shard]:
            flush(shard)


class BareReads:
    """The baseline: the calls the reader sends for the same keys, on a pool of the same size.

    BatchGetItem for the group items (100 keys a call, eventually consistent, the same
    projection, unprocessed keys asked again), one paginated Query per sharded (entity, group)
    with the TTL filter; a lone call runs on the calling thread, as the reader does.
    """

    def __init__(self, dynamodb: Any) -> None:
        self.dynamodb = dynamodb
        self.pool = ThreadPoolExecutor(max_workers=CONCURRENCY)
        plan = compile_plan(CATALOG)
        self.sharded = {name for name, group in plan.groups.items() if group.sharded}

    def batch_get(self, keys: list[tuple[str, str]]) -> int:
        request: dict[str, Any] = {TABLE: {
            "Keys": [{"pk": {"S": pk}, "sk": {"S": group}} for pk, group in keys],
            "ProjectionExpression": "#pk, #sk, #state, #expires",
            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk", "#state": "state",
                                         "#expires": "expires_at"},
        }}
        found = 0
        while True:
            response = self.dynamodb.batch_get_item(RequestItems=request)
            found += len(response["Responses"].get(TABLE, ()))
            request = response.get("UnprocessedKeys") or {}
            if not request.get(TABLE, {}).get("Keys"):
                return found

    def query(self, key: tuple[str, str]) -> int:
        request: dict[str, Any] = {
            "TableName": TABLE,
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :prefix)",
            "FilterExpression": "attribute_not_exists(#expires) OR #expires > :now",
            "ProjectionExpression": "#pk, #sk, #state, #expires",
            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk", "#state": "state",
                                         "#expires": "expires_at"},
            "ExpressionAttributeValues": {":pk": {"S": key[0]}, ":prefix": {"S": key[1] + "#"},
                                          ":now": {"N": str(NOW_MS // 1000)}},
        }
        found = 0
        while True:
            page = self.dynamodb.query(**request)
            found += len(page["Items"])
            if "LastEvaluatedKey" not in page:
                return found
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def read(self, entities: list[tuple[str, str]], groups: tuple[str, ...]) -> int:
        keys = [(f"{kind}#{key}", group) for kind, key in entities for group in groups]
        points = [key for key in keys if key[1] not in self.sharded]
        calls: list[Callable[[], int]] = [
            functools.partial(self.batch_get, points[start : start + BATCH_GET_LIMIT])
            for start in range(0, len(points), BATCH_GET_LIMIT)
        ]
        calls.extend(functools.partial(self.query, key) for key in keys
                     if key[1] in self.sharded)
        if len(calls) == 1:
            return calls[0]()
        return sum(self.pool.map(lambda call: call(), calls))


GET_ROUTE = Route("/v1/features/{entity_type}/{entity_id}", "GET")
BATCH_ROUTE = Route("/v1/features/batch-get", "POST")


def single_event(user: str) -> dict[str, Any]:
    """``GET`` of one user's three groups, as API Gateway hands it to the handler."""
    return proxy_event(GET_ROUTE, f"/v1/features/user/{user}", "")


def batch_event(users: list[str]) -> dict[str, Any]:
    body = json.dumps({"entities": [{"entity_type": "user", "entity_id": user} for user in users],
                       "features": list(GROUPS)})
    return proxy_event(BATCH_ROUTE, "/v1/features/batch-get", "", (), body.encode())


def _api(event: dict[str, Any]) -> Callable[[], Any]:
    def call() -> Any:
        with contextlib.redirect_stdout(io.StringIO()):  # the EMF line per invocation
            response = feature_api.handler(event, LambdaContext())
        assert response["statusCode"] == 200, response
        return response

    return call


def _moto_process() -> contextlib.AbstractContextManager[str]:
    return server_process("moto.server", "-H", HOST)


@contextlib.contextmanager
def loaded_store() -> Iterator[str]:
    """moto in its own process, holding the workload as the processor wrote it."""
    with _moto_process() as endpoint:
        dynamodb = client("dynamodb", endpoint)
        s3 = client("s3", endpoint)
        create_feature_stores(dynamodb, s3, table=TABLE, bucket=BUCKET)
        # The reads are of user groups, which stage 1 writes itself; what it emits for the
        # audience groups goes to an in-process stream nothing reads.
        stream_processor.configure(dynamodb, s3, {"ONLINE_TABLE_NAME": TABLE,
                                                  "OFFLINE_BUCKET_NAME": BUCKET,
                                                  "PARTIALS_STREAM_NAME": "partials"},
                                   kinesis=MemoryKinesis(4))
        _load(random.Random(7))
        print(f"loaded {len(USERS) * EVENTS_PER_USER} events", file=sys.stderr)
        yield endpoint


def serve_from(endpoint: str) -> Any:
    """Point the API handler at ``endpoint``; the DynamoDB client it reads with."""
    from botocore.config import Config

    dynamodb = client("dynamodb", endpoint, config=Config(max_pool_connections=CONCURRENCY))
    feature_api.configure(dynamodb, {"ONLINE_TABLE_NAME": TABLE,
                                     "READ_CONCURRENCY": str(CONCURRENCY)},
                          clock_ms=lambda: NOW_MS)
    return dynamodb


# (name, shape, users, samples per repeat)
SHAPES = (
    ("single", "1 user x 3 groups", USERS[:1], SINGLE_RUNS),
    ("batch50", "50 users x 3 groups", USERS, BATCH_RUNS),
)
# (name suffix, what the reads go through)
ROUTES = (("", "moto"), ("_rtt3ms", f"moto + {MODEL_DELAY_MS:g} ms per request"))


def event_for(users: list[str]) -> dict[str, Any]:
    return single_event(users[0]) if len(users) == 1 else batch_event(users)


def run() -> list[BenchResult]:
    results: list[BenchResult] = []
    with loaded_store() as endpoint, latency_proxy(endpoint) as modelled:
        for suffix, route in ROUTES:
            bare = BareReads(serve_from(modelled if suffix else endpoint))
            for shape_name, shape, users, runs in SHAPES:
                name = f"feature_read_{shape_name}{suffix}"
                entities = [("user", user) for user in users]
                for measured in compare(
                    timed(_api(event_for(users))),
                    timed(functools.partial(bare.read, entities, GROUPS)),
                    runs=runs, repeats=REPEATS, label=name,
                ):
                    results.append(result(
                        name, f"ms, {shape}, API handler, {route}",
                        "bare DynamoDB calls for the same keys", measured,
                        f"<= {TARGET_RATIO}x the bare calls", lambda r: r <= TARGET_RATIO, runs,
                    ))
    return results


if __name__ == "__main__":
    for outcome in run():
        print(json.dumps(outcome.to_json()))
