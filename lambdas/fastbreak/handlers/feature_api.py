"""The feature API: API Gateway (REST, IAM auth) -> this Lambda -> the online store.

Thin on purpose: routing, HTTP status codes and metrics. Validation, reads and the window
merge are the ``FeatureClient``'s (``fastbreak.serving``), the same code services embed.

    GET  /v1/features/{entity_type}/{entity_id}?groups=a,b.feature
    POST /v1/features/batch-get   {"entities": [{"entity_type", "entity_id"}], "features": [...]}

Bad input is a 400 naming the field (a body over 64 KiB a 413); a store that keeps throttling
is a 503; anything else unexpected is a 500 with a request id and no stack trace (the trace goes
to the log). Every answer is JSON: one with a value that has no JSON form is a 500, never
``Infinity``.

Environment: ONLINE_TABLE_NAME, FASTBREAK_ENV, POWERTOOLS_SERVICE_NAME,
POWERTOOLS_METRICS_NAMESPACE (Fastbreak), READ_CONCURRENCY (default 16).
"""

from __future__ import annotations

import base64
import binascii
import gc
import os
import time
from collections.abc import Callable, Collection
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from fastbreak.engine.online_store import StoreUnavailable
from fastbreak.serving import (
    MAX_BODY_BYTES,
    FeatureClient,
    FeatureResult,
    InvalidRequest,
    ReadRequest,
)
from fastbreak.serving.client import wall_clock_ms
from fastbreak.serving.request import BodyTooLarge
from fastbreak.serving.response import json_text, result_json, single_json

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Fastbreak"))
# Alarms select their environment's metrics only: dev and prod may share an account.
metrics.set_default_dimensions(environment=os.environ.get("FASTBREAK_ENV", "local"))
# Error answers go through the resolver's serializer; feature answers are encoded by the routes
# (``_json``), so that a value with no JSON form fails inside the route, where it becomes a 500.
app = APIGatewayRestResolver(serializer=json_text)

_FEATURES_PREFIX = "/v1/features/"
_client: FeatureClient | None = None


_frozen = False


def configure(
    dynamodb: Any, environ: dict[str, str] | None = None,
    clock_ms: Callable[[], int] = wall_clock_ms,
) -> FeatureClient:
    """Build the client over the given DynamoDB client (the cold start does this with boto3;
    the local platform, tests and benchmarks pass their own client and clock)."""
    global _client
    env = os.environ if environ is None else environ
    _client = FeatureClient(
        dynamodb, env["ONLINE_TABLE_NAME"],
        concurrency=int(env.get("READ_CONCURRENCY", "16")), clock_ms=clock_ms,
    )
    # What the cold start built (the catalog's plan, boto3's service models, Powertools) lives
    # as long as the process: out of the collector's reach, a full collection no longer walks
    # it in the middle of a request (measured: p99 of a 50-user read on moto from about 100 ms
    # down to about 60 ms, bench.feature_read). Once per process: the first configure is the
    # cold start.
    global _frozen
    if not _frozen:
        gc.freeze()
        _frozen = True
    return _client


def _current() -> FeatureClient:
    if _client is None:
        import boto3
        from botocore.config import Config

        concurrency = int(os.environ.get("READ_CONCURRENCY", "16"))
        # Short timeouts: a caller is waiting. Throttling is retried by the reader with jitter.
        config = Config(
            max_pool_connections=concurrency, connect_timeout=1, read_timeout=2,
            retries={"mode": "standard", "total_max_attempts": 2},
        )
        return configure(boto3.client("dynamodb", config=config))
    return _client


# ---- routes ------------------------------------------------------------------------------------
@app.get("/v1/features/<entity_type>/<entity_id>")
def get_features(entity_type: str, entity_id: str) -> Response[str]:
    client = _current()
    _refuse_unknown_parameters({"groups"})
    # The path parameters as API Gateway decoded them (percent-decoded), not the resolver's
    # regex capture of the still-encoded path.
    params = app.current_event.path_parameters or {}
    request = client.validator.single(
        params.get("entity_type", entity_type), params.get("entity_id", entity_id),
        _requested_groups(),
    )
    return _json(single_json(_answer(client, request)))


@app.post("/v1/features/batch-get")
def batch_get() -> Response[str]:
    client = _current()
    _refuse_unknown_parameters(())
    request = client.validator.batch_body(_body_bytes())
    return _json(result_json(_answer(client, request)))


def _json(document: dict[str, Any]) -> Response[str]:
    return Response(status_code=HTTPStatus.OK.value, content_type=content_types.APPLICATION_JSON,
                    body=json_text(document))


def _refuse_unknown_parameters(known: Collection[str]) -> None:
    """A parameter the route does not take (``as_of``, ``window``...) would otherwise be
    ignored: the caller would believe it was applied."""
    event = app.current_event
    names = set(event.multi_value_query_string_parameters or {})
    names |= set(event.query_string_parameters or {})
    unknown = sorted(names - set(known))
    if unknown:
        takes = f"only {sorted(known)}" if known else "none"
        shown = [name[:40] for name in unknown[:10]]  # caller input, echoed bounded
        raise InvalidRequest(shown[0], f"unknown query parameters {shown}; this route takes "
                                       f"{takes}")


def _body_bytes() -> bytes | None:
    """The request body as sent: API Gateway base64-encodes bodies it does not pass as text."""
    event = app.current_event
    body = event.body
    if body is None:
        return None
    if not event.is_base64_encoded:
        # A JSON event can carry a lone surrogate ("\ud800"): kept, so that the UTF-8 check
        # refuses it instead of the encoder raising.
        return body.encode("utf-8", "surrogatepass")
    if len(body) > (MAX_BODY_BYTES + 2) // 3 * 4:
        raise BodyTooLarge("body", f"is over {MAX_BODY_BYTES} bytes")  # before decoding it
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error:
        raise InvalidRequest("body", "is marked base64-encoded but is not base64") from None


def _requested_groups() -> list[str] | None:
    event = app.current_event
    values = (event.multi_value_query_string_parameters or {}).get("groups")
    if values is None:
        single = (event.query_string_parameters or {}).get("groups")
        values = None if single is None else [single]
    if values is None:
        return None
    return [name.strip() for value in values for name in value.split(",")]


@tracer.capture_method(capture_response=False)
def _answer(client: FeatureClient, request: ReadRequest) -> FeatureResult:
    started = time.perf_counter()
    result = client.read(request)
    _publish(result, (time.perf_counter() - started) * 1000)
    return result


def _publish(result: FeatureResult, latency_ms: float) -> None:
    values = sum(len(answer.features) for answer in result.entities)
    missing = sum(answer.missing for answer in result.entities)
    metrics.add_metric("ReadLatencyMs", MetricUnit.Milliseconds, latency_ms)
    metrics.add_metric("EntitiesPerRequest", MetricUnit.Count, len(result.entities))
    metrics.add_metric("MissingRate", MetricUnit.Percent, 100 * missing / values if values else 0)
    # One age per entity (at most 100, the EMF limit per metric): how long since the entity's
    # newest served value was an event. Its percentiles show how fresh answers are.
    for answer in result.entities:
        age = answer.freshest_age_ms
        if age is not None:
            metrics.add_metric("FeatureAgeMs", MetricUnit.Milliseconds, age)


# ---- errors ------------------------------------------------------------------------------------
def _error(status: HTTPStatus, code: str, message: str, **extra: Any) -> Response[Any]:
    return Response(
        status_code=status.value,
        content_type=content_types.APPLICATION_JSON,
        body={"error": code, "message": message, **extra},
    )


def _invalid(error: InvalidRequest) -> Response[Any]:
    metrics.add_metric("InvalidRequests", MetricUnit.Count, 1)
    if isinstance(error, BodyTooLarge):
        return _error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request_too_large", str(error),
                      field=error.field)
    return _error(HTTPStatus.BAD_REQUEST, "invalid_request", str(error), field=error.field)


def _unavailable(error: StoreUnavailable) -> Response[Any]:
    logger.warning("online store unavailable", extra={"reason": str(error)})
    metrics.add_metric("StoreUnavailable", MetricUnit.Count, 1)
    return _error(HTTPStatus.SERVICE_UNAVAILABLE, "store_unavailable",
                  "the online store is throttling; retry with backoff")


def _unexpected(error: Exception) -> Response[Any]:
    logger.exception("unexpected error")
    metrics.add_metric("ServerErrors", MetricUnit.Count, 1)
    return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error",
                  "unexpected error; quote the request id to the platform team",
                  request_id=app.lambda_context.aws_request_id)


def _not_found(_: Exception) -> Response[Any]:
    event = app.current_event
    params = event.path_parameters or {}
    if (event.http_method == "GET" and event.path.startswith(_FEATURES_PREFIX)
            and {"entity_type", "entity_id"} <= set(params)):
        # API Gateway matched {entity_type}/{entity_id}, but the resolver's route pattern
        # refused a character of the id: bad input, so a 400 that says which, not a 404.
        try:
            _current().validator.entity(params["entity_type"], params["entity_id"], "")
        except InvalidRequest as error:
            return _invalid(error)
        return _invalid(InvalidRequest("entity_id", "contains characters not allowed in an id"))
    metrics.add_metric("UnknownRoutes", MetricUnit.Count, 1)
    return _error(HTTPStatus.NOT_FOUND, "not_found", f"no route {event.http_method} {event.path}")


# Registered by call, not as decorators: Powertools' decorators are untyped (mypy --strict).
app.exception_handler(InvalidRequest)(_invalid)
app.exception_handler(StoreUnavailable)(_unavailable)
app.exception_handler(Exception)(_unexpected)
app.not_found(_not_found)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
