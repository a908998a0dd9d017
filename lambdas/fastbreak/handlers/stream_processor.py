"""Kinesis -> online store: the Lambda entry point of the stream processor.

Thin on purpose: read the environment, build the engine once per execution environment (the
catalog is validated there, so a bad definition fails the cold start, not a batch), run the
batch, publish metrics, return partial batch failures. The logic is in ``fastbreak.engine``.

Environment: ONLINE_TABLE_NAME, OFFLINE_BUCKET_NAME, PARTIALS_STREAM_NAME (where audience
partials go), QUARANTINE_PREFIX (default quarantine/), FEATURE_LOG_PREFIX (default features/),
PARALLELIZATION_FACTOR (the mapping's, default 1), CUTOVER_DELAY_SECONDS (how long after it first
meets a new feature slot the processor starts folding it, ``fastbreak.engine.cutover``; default
1800), FASTBREAK_ENV, POWERTOOLS_SERVICE_NAME,
POWERTOOLS_METRICS_NAMESPACE (Fastbreak), WRITE_CONCURRENCY (default 16).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext

from fastbreak.definitions import CATALOG
from fastbreak.engine import (
    BatchResult,
    OnlineStore,
    PartialsSink,
    ProcessorSettings,
    RetryPolicy,
    S3Sink,
    StreamProcessor,
)
from fastbreak.engine.cutover import DEFAULT_DELAY_MS

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Fastbreak"))
# Alarms select their environment's metrics only: dev and prod may share an account.
metrics.set_default_dimensions(environment=os.environ.get("FASTBREAK_ENV", "local"))

_processor: StreamProcessor | None = None


def configure(
    dynamodb: Any, s3: Any, environ: Mapping[str, str] | None = None, kinesis: Any = None,
) -> StreamProcessor:
    """Build the processor over the given clients (the cold start does this with boto3;
    the local platform, tests, benchmarks and the redrive pass their own)."""
    global _processor
    env = os.environ if environ is None else environ
    store = OnlineStore(
        dynamodb,
        env["ONLINE_TABLE_NAME"],
        RetryPolicy(),
        concurrency=int(env.get("WRITE_CONCURRENCY", "16")),
    )
    settings = ProcessorSettings(
        quarantine_prefix=env.get("QUARANTINE_PREFIX", "quarantine/"),
        feature_log_prefix=env.get("FEATURE_LOG_PREFIX", "features/"),
        parallelization_factor=int(env.get("PARALLELIZATION_FACTOR", "1")),
        cutover_delay_ms=int(env.get("CUTOVER_DELAY_SECONDS", DEFAULT_DELAY_MS // 1000)) * 1000,
    )
    partials = None
    if env.get("PARTIALS_STREAM_NAME"):
        if kinesis is None:
            import boto3  # the Lambda runtime ships boto3; the engine itself never imports it

            kinesis = boto3.client("kinesis")
        partials = PartialsSink(kinesis, env["PARTIALS_STREAM_NAME"], store.retry)
    _processor = StreamProcessor(store, S3Sink(s3, env["OFFLINE_BUCKET_NAME"]), CATALOG, settings,
                                 partials=partials)
    return _processor


def _current() -> StreamProcessor:
    if _processor is None:
        import boto3

        return configure(boto3.client("dynamodb"), boto3.client("s3"))
    return _processor


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    processor = _current()
    # Leave the retry loops enough time to report before Lambda's own timeout.
    processor.store.retry.remaining_s = lambda: context.get_remaining_time_in_millis() / 1000
    with _collector_paused():
        result = processor.process(event.get("Records") or [])
    _publish(result)
    if result.failed_sequence_numbers:
        logger.warning(
            "reporting partial batch failure",
            extra={"failed": len(result.failed_sequence_numbers),
                   "from_sequence_number": result.failed_sequence_numbers[0]},
        )
    return result.batch_item_failures()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch runs.

    A 10,000-record batch allocates a few hundred thousand containers that live until the
    batch ends; with the collector on, CPython walks them (and the whole heap of boto3 and
    Powertools) many times per batch, for nothing: the engine's batch objects form no
    cycles and are freed by reference counting when the batch ends. One invocation runs at a
    time per execution environment, so the switch cannot race another batch.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _publish(result: BatchResult) -> None:
    count = MetricUnit.Count
    metrics.add_metric("RecordsIn", count, result.records_in)
    metrics.add_metric("RecordsValid", count, result.records_valid)
    metrics.add_metric("RecordsInvalid", count, sum(result.invalid_by_reason.values()))
    metrics.add_metric("LateEvents", count, result.late_events)
    metrics.add_metric("MismatchedEvents", count, result.mismatched_events)
    metrics.add_metric("DuplicateEvents", count, result.duplicate_events)
    metrics.add_metric("ItemsTooLarge", count, result.items_too_large)
    metrics.add_metric("ItemWrites", count, result.writes.writes)
    metrics.add_metric("ItemWriteRetries", count, result.writes.retries)
    metrics.add_metric("ItemWriteConflicts", count, result.writes.conflicts)
    metrics.add_metric("DedupWrites", count, result.dedup_writes)
    metrics.add_metric("PartialsEmitted", count, result.partials_emitted)
    metrics.add_metric("EmissionsCompleted", count, result.emissions_completed)
    metrics.add_metric("RecordsFailed", count, len(result.failed_sequence_numbers))
    if result.freshness_lag_ms is not None:
        metrics.add_metric("FreshnessLagMs", MetricUnit.Milliseconds, result.freshness_lag_ms)
    # The total above (environment only) is what alarms watch; per-reason series are for triage.
    for reason, invalid in result.invalid_by_reason.items():
        with single_metric(
            name="RecordsInvalid", unit=count, value=invalid, namespace=metrics.namespace,
            default_dimensions=metrics.default_dimensions,
        ) as metric:
            metric.add_dimension(name="reason", value=reason)
