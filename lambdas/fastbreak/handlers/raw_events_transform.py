"""Kinesis -> Firehose -> S3 raw/: the data-transformation Lambda of the raw events delivery.

Thin on purpose: each Firehose record becomes a row of the raw table (the processor's own
admission of the record, its Kinesis position and arrival time) with its hour as dynamic
partitioning keys; the logic is ``fastbreak.offline.raw.RawTableTransform``. A record the
processor refuses is kept as a row with its reason; only a record that cannot be read at all
is answered ``ProcessingFailed`` (Firehose keeps it under the error prefix).

Environment: FASTBREAK_ENV, POWERTOOLS_SERVICE_NAME, POWERTOOLS_METRICS_NAMESPACE (Fastbreak).
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext

from fastbreak.definitions import CATALOG
from fastbreak.offline.raw import RawTableTransform, TransformReport

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Fastbreak"))
# Alarms select their environment's metrics only: dev and prod may share an account.
metrics.set_default_dimensions(environment=os.environ.get("FASTBREAK_ENV", "local"))

_transform: RawTableTransform | None = None


def _current() -> RawTableTransform:
    global _transform
    if _transform is None:  # the catalog is compiled once per execution environment
        _transform = RawTableTransform(CATALOG)
    return _transform


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response, report = _current().transform(event)
    _publish(report)
    for error in report.errors:
        logger.error("record failed in the transformation", extra={"error": error})
    if report.failed:
        logger.warning(
            "records answered ProcessingFailed (kept under the error prefix)",
            extra={"unreadable": report.unreadable, "over_response_limit": report.over_limit},
        )
    return response


def _publish(report: TransformReport) -> None:
    count = MetricUnit.Count
    metrics.add_metric("RawRecordsIn", count, report.records_in)
    metrics.add_metric("RawRows", count, report.rows)
    metrics.add_metric("RawRowsRejected", count, sum(report.rejected.values()))
    metrics.add_metric("RawRecordsUnreadable", count, report.unreadable)
    metrics.add_metric("RawRowsOverResponseLimit", count, report.over_limit)
    for reason, rejected in report.rejected.items():
        with single_metric(
            name="RawRowsRejected", unit=count, value=rejected, namespace=metrics.namespace,
            default_dimensions=metrics.default_dimensions,
        ) as metric:
            metric.add_dimension(name="reason", value=reason)
