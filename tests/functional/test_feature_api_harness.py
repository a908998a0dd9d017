"""Shared by the serving tests (no tests here): an embedded AWS with the online store table,
the REAL stream processor writing into it, and the feature API handler reading from it.

Events go in as AWS-shaped Kinesis Lambda events; reads go through the handler with
API Gateway REST proxy events, so both handlers run exactly as deployed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest

from fastbreak.engine.timestamps import format_ms
from fastbreak.handlers import feature_api, stream_processor
from localplatform.embedded_aws import client, embedded_aws
from localplatform.kinesis_events import SHARD, lambda_event, stream_of
from localplatform.lambda_context import LambdaContext
from localplatform.stores import create_feature_stores

TABLE = "fastbreak-online"
BUCKET = "fastbreak-offline"
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
            at_ms: int | None = None) -> tuple[int, Any]:
        path = f"/v1/features/{entity_type}/{entity_id}"
        query = None if groups is None else {"groups": groups}
        event = rest_event("GET", "/v1/features/{entity_type}/{entity_id}", path, query=query,
                           path_parameters={"entity_type": entity_type, "entity_id": entity_id})
        return self.call(event, at_ms)

    def batch_get(self, body: Any, at_ms: int | None = None) -> tuple[int, Any]:
        text = body if isinstance(body, str | bytes) else json.dumps(body)
        event = rest_event("POST", "/v1/features/batch-get", "/v1/features/batch-get",
                           body=text if isinstance(text, str) else text.decode())
        return self.call(event, at_ms)

    def call(self, event: dict[str, Any], at_ms: int | None = None) -> tuple[int, Any]:
        self.clock.now_ms = T0_MS if at_ms is None else at_ms
        response = feature_api.handler(event, LambdaContext("fastbreak-feature-api"))
        assert response["multiValueHeaders"]["Content-Type"] == ["application/json"]
        return response["statusCode"], json.loads(response["body"])


def rest_event(
    method: str, resource: str, path: str, *, query: dict[str, str] | None = None,
    path_parameters: dict[str, str] | None = None, body: str | None = None,
) -> dict[str, Any]:
    """An API Gateway REST proxy event as Lambda receives it behind IAM authorization."""
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {"Accept": "application/json", "Host": "api.example.com"},
        "multiValueHeaders": {"Accept": ["application/json"], "Host": ["api.example.com"]},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": (
            None if query is None else {k: [v] for k, v in query.items()}
        ),
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/prod{quote(path)}",
            "stage": "prod",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "accountId": "123456789012",
            "apiId": "1234567890",
            "identity": {
                "userArn": "arn:aws:iam::123456789012:user/ranker",
                "caller": "AIDAEXAMPLE",
                "sourceIp": "127.0.0.1",
            },
            "requestTimeEpoch": T0_MS,
        },
        "body": body,
        "isBase64Encoded": False,
    }


@pytest.fixture(scope="module")
def world() -> Iterator[ServingWorld]:
    """One moto server per test module, with both handlers configured against it."""
    with embedded_aws() as endpoint:
        dynamodb = client("dynamodb", endpoint)
        s3 = client("s3", endpoint)
        create_feature_stores(dynamodb, s3, table=TABLE, bucket=BUCKET)
        environ = {"ONLINE_TABLE_NAME": TABLE, "OFFLINE_BUCKET_NAME": BUCKET}
        stream_processor.configure(dynamodb, s3, environ)
        world = ServingWorld(endpoint, dynamodb)
        feature_api.configure(dynamodb, environ, clock_ms=world.clock)
        yield world
