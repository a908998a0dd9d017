"""Partials stream -> audience items in the online store: the Lambda entry point of stage 2.

Thin like the stream processor's: read the environment, build the engine once per execution
environment, run the batch, publish metrics, return partial batch failures. The logic is in
``fastbreak.engine.audience``.

Environment: ONLINE_TABLE_NAME, OFFLINE_BUCKET_NAME, QUARANTINE_PREFIX (default quarantine/),
FEATURE_LOG_PREFIX (default features/), REMEMBER_SECONDS (how long identities of applied
partials are kept), FASTBREAK_ENV, POWERTOOLS_SERVICE_NAME, POWERTOOLS_METRICS_NAMESPACE
(Fastbreak), WRITE_CONCURRENCY (default 16).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext

from fastbreak.definitions import CATALOG
from fastbreak.engine import (
    AudienceMerger,
    AudienceResult,
    AudienceSettings,
    OnlineStore,
    RetryPolicy,
    S3Sink,
)
from fastbreak.engine.audience import DEFAULT_REMEMBER_SECONDS

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Fastbreak"))
metrics.set_default_dimensions(environment=os.environ.get("FASTBREAK_ENV", "local"))

_merger: AudienceMerger | None = None


def configure(dynamodb: Any, s3: Any, environ: Mapping[str, str] | None = None,
              kinesis: Any = None) -> AudienceMerger:
    """Build the audience stage over the given clients (``kinesis`` is unused: the same
    signature as the stream processor's, for the redrive)."""
    global _merger
    env = os.environ if environ is None else environ
    store = OnlineStore(dynamodb, env["ONLINE_TABLE_NAME"], RetryPolicy(),
                        concurrency=int(env.get("WRITE_CONCURRENCY", "16")))
    settings = AudienceSettings(
        quarantine_prefix=env.get("QUARANTINE_PREFIX", "quarantine/"),
        feature_log_prefix=env.get("FEATURE_LOG_PREFIX", "features/"),
        remember_seconds=int(env.get("REMEMBER_SECONDS", str(DEFAULT_REMEMBER_SECONDS))),
    )
    _merger = AudienceMerger(store, S3Sink(s3, env["OFFLINE_BUCKET_NAME"]), CATALOG, settings)
    return _merger


def _current() -> AudienceMerger:
    if _merger is None:
        import boto3  # the Lambda runtime ships boto3; the engine itself never imports it

        return configure(boto3.client("dynamodb"), boto3.client("s3"))
    return _merger


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    merger = _current()
    merger.store.retry.remaining_s = lambda: context.get_remaining_time_in_millis() / 1000
    result = merger.process(event.get("Records") or [])
    _publish(result)
    if result.failed_sequence_numbers:
        logger.warning(
            "reporting partial batch failure",
            extra={"failed": len(result.failed_sequence_numbers),
                   "from_sequence_number": result.failed_sequence_numbers[0]},
        )
    return result.batch_item_failures()


def _publish(result: AudienceResult) -> None:
    count = MetricUnit.Count
    metrics.add_metric("RecordsIn", count, result.records_in)
    metrics.add_metric("PartialsIn", count, result.partials_in)
    metrics.add_metric("RecordsInvalid", count, sum(result.invalid_by_reason.values()))
    metrics.add_metric("DuplicatePartials", count, result.duplicate_partials)
    metrics.add_metric("ItemsTooLarge", count, result.items_too_large)
    metrics.add_metric("ItemWrites", count, result.writes.writes)
    metrics.add_metric("ItemWriteRetries", count, result.writes.retries)
    metrics.add_metric("ItemWriteConflicts", count, result.writes.conflicts)
    metrics.add_metric("DedupWrites", count, result.dedup_writes)
    metrics.add_metric("RecordsFailed", count, len(result.failed_sequence_numbers))
    if result.freshness_lag_ms is not None:
        metrics.add_metric("FreshnessLagMs", MetricUnit.Milliseconds, result.freshness_lag_ms)
    for reason, invalid in result.invalid_by_reason.items():
        with single_metric(
            name="RecordsInvalid", unit=count, value=invalid, namespace=metrics.namespace,
            default_dimensions=metrics.default_dimensions,
        ) as metric:
            metric.add_dimension(name="reason", value=reason)
