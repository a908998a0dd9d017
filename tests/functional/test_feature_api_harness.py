"""Shared by the serving tests (no tests here): an embedded AWS with the online store table,
the REAL stream processor and audience stage writing into it, and the feature API handler
reading from it.

Events go in as AWS-shaped Kinesis Lambda events; reads go through the handler with the API
Gateway REST proxy events the local API builds (``localplatform.api_gateway.proxy_event``), so
both handlers run exactly as deployed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from fastbreak.engine.timestamps import format_ms
from fastbreak.handlers import audience_stage, feature_api, stream_processor
from localplatform.api_gateway import Route, proxy_event
from localplatform.embedded_aws import client, embedded_aws
from localplatform.kinesis_events import SHARD, lambda_event, stream_of
from localplatform.lambda_context import LambdaContext
from localplatform.stores import StreamTail, create_feature_stores, create_partials_stream

TABLE = "fastbreak-online"
BUCKET = "fastbreak-offline"
PARTIALS = "fastbreak-partials"
T0_MS = 1_795_000_000_000  # 2026-11-18T11:06:40Z: a fixed "now" so windows are reproducible
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


@dataclass
class Clock:
    now_ms: int = T0_MS

    def __call__(self) -> int:
        return self.now_ms


@dataclass
class ServingWorld:
    endpoint: str
    dynamodb: Any
    partials: StreamTail
    clock: Clock = field(default_factory=Clock)
    _next_sequence: dict[str, int] = field(default_factory=dict)
    _next_event: int = 0

    # ---- writes, through the real processor ------------------------------------------------
    def feed(self, events: list[dict[str, Any]], shard_id: str = SHARD,
             delay_ms: int = 1000) -> None:
        """Process ``events`` (envelope filled in) as one Kinesis batch of ``shard_id``;
        each record reaches Kinesis ``delay_ms`` after the newest event time."""
        documents = [self.document(**event) for event in events]
        start = self._next_sequence.get(shard_id, 0)
        self._next_sequence[shard_id] = start + len(documents)
        newest = max(event["time_ms"] for event in events)
        records = stream_of(documents, (newest + delay_ms) / 1000, start=start,
                            shard_id=shard_id)
        result = stream_processor.handler(lambda_event(records), LambdaContext())
        assert result == {"batchItemFailures": []}
        for event in self.partials.events():  # the audience stage on what stage 1 emitted
            assert audience_stage.handler(event, LambdaContext()) == {"batchItemFailures": []}

    def document(self, event_type: str, time_ms: int, event_id: str | None = None,
                 **payload: Any) -> dict[str, Any]:
        self._next_event += 1
        return {
            "event_type": event_type,
            "schema_version": 1,
            "event_id": event_id or f"evt-{self._next_event:08d}",
            "event_time": format_ms(time_ms),
            **payload,
        }

    # ---- reads, through the API handler --------------------------------------------------
    def get(self, entity_type: str, entity_id: str, groups: str | None = None,
            at_ms: int | None = None, query: str | None = None) -> tuple[int, Any]:
        """``GET`` as a client sends it: the ids percent-encoded in the path."""
        path = f"/v1/features/{quote(entity_type, safe='')}/{quote(entity_id, safe='')}"
        if query is None:
            query = "" if groups is None else urlencode({"groups": groups})
        return self.call(proxy_event(GET_ROUTE, path, query, HEADERS), at_ms)

    def batch_get(self, body: Any, at_ms: int | None = None, query: str = "") -> tuple[int, Any]:
        if isinstance(body, bytes):
            data = body
        else:
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
        event = proxy_event(BATCH_ROUTE, "/v1/features/batch-get", query, HEADERS, data)
        return self.call(event, at_ms)

    def call(self, event: dict[str, Any], at_ms: int | None = None) -> tuple[int, Any]:
        self.clock.now_ms = T0_MS if at_ms is None else at_ms
        response = feature_api.handler(event, LambdaContext("fastbreak-feature-api"))
        assert response["multiValueHeaders"]["Content-Type"] == ["application/json"]
        return response["statusCode"], json.loads(response["body"])


GET_ROUTE = Route("/v1/features/{entity_type}/{entity_id}", "GET")
BATCH_ROUTE = Route("/v1/features/batch-get", "POST")
HEADERS = [("Accept", "application/json"), ("Content-Type", "application/json"),
           ("Host", "api.example.com")]


@pytest.fixture(scope="module")
def world() -> Iterator[ServingWorld]:
    """One moto server per test module, with both handlers configured against it."""
    with embedded_aws() as endpoint:
        dynamodb = client("dynamodb", endpoint)
        s3 = client("s3", endpoint)
        kinesis = client("kinesis", endpoint)
        create_feature_stores(dynamodb, s3, table=TABLE, bucket=BUCKET)
        create_partials_stream(kinesis, PARTIALS)
        environ = {"ONLINE_TABLE_NAME": TABLE, "OFFLINE_BUCKET_NAME": BUCKET,
                   "PARTIALS_STREAM_NAME": PARTIALS}
        stream_processor.configure(dynamodb, s3, environ, kinesis=kinesis)
        audience_stage.configure(dynamodb, s3, environ)
        world = ServingWorld(endpoint, dynamodb, StreamTail(kinesis, PARTIALS))
        feature_api.configure(dynamodb, environ, clock_ms=world.clock)
        yield world
