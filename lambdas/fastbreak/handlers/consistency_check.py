"""The scheduled online/offline consistency check: an EventBridge schedule invokes it every hour.

Thin on purpose: read the environment, run ``fastbreak.offline.consistency.check_consistency``
on the entities last written in the lookback (ending ``SETTLE_MINUTES`` ago), publish the
figures, log the first mismatches. The offline store's raw table and feature log are read in
place (pyarrow's S3 filesystem), the online store through DynamoDB.

Metrics (namespace Fastbreak, dimensions service and environment): ``ConsistencyRate``, the
lowest feature's share of exact matches in percent (what the alarm watches: one diverging
feature among many shows); ``ConsistencyValuesChecked``; ``ConsistencyMismatches``; and per
feature that did not match every time (dimension ``feature`` added: only those, so that a
healthy platform pays for no per-feature metric) ``FeatureConsistencyRate``. A run with nothing
to check publishes only ``ConsistencyValuesChecked`` 0.

Environment: ONLINE_TABLE_NAME, OFFLINE_BUCKET_NAME, RAW_PREFIX (default raw/),
FEATURE_LOG_PREFIX (default features/), SAMPLE_SIZE (entities per group, default 100),
LOOKBACK_MINUTES (default 60), SETTLE_MINUTES (default 20), MAX_WINDOW_HOURS (features of longer
windows are left out: the raw table is read back that far; default 24), FASTBREAK_ENV,
POWERTOOLS_SERVICE_NAME, POWERTOOLS_METRICS_NAMESPACE (Fastbreak). AWS_ENDPOINT_URL, where set
(the local platform), is the S3 endpoint pyarrow reads from.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext

from fastbreak.definitions import CATALOG
from fastbreak.offline.consistency import (
    ConsistencyReport,
    ConsistencyRequest,
    check_consistency,
    recent,
)
from fastbreak.offline.raw_files import S3Options

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Fastbreak"))
# Alarms select their environment's metrics only: dev and prod may share an account.
metrics.set_default_dimensions(environment=os.environ.get("FASTBREAK_ENV", "local"))

_dynamodb: Any = None
_environment: dict[str, str] = {}


def configure(dynamodb: Any, environ: Mapping[str, str] | None = None) -> None:
    """Read the environment and take the DynamoDB client to read the online store with (the
    cold start does this with boto3's)."""
    global _dynamodb, _environment
    _dynamodb = dynamodb
    _environment = dict(os.environ if environ is None else environ)


def request_from(env: Mapping[str, str], now_ms: int) -> ConsistencyRequest:
    """This run's check: the entities last written in the lookback, up to the settle time ago
    (minutes, fractions allowed)."""
    bucket = env["OFFLINE_BUCKET_NAME"]
    since, until = recent(now_ms, round(float(env.get("LOOKBACK_MINUTES", "60")) * 60_000),
                          round(float(env.get("SETTLE_MINUTES", "20")) * 60_000))
    return ConsistencyRequest(
        raw=f"s3://{bucket}/{env.get('RAW_PREFIX', 'raw/').rstrip('/')}",
        feature_log=f"s3://{bucket}/{env.get('FEATURE_LOG_PREFIX', 'features/').rstrip('/')}",
        table=env["ONLINE_TABLE_NAME"], since_ms=since, until_ms=until,
        sample=int(env.get("SAMPLE_SIZE", "100")),
        max_window_ms=int(env.get("MAX_WINDOW_HOURS", "24")) * 3_600_000,
        s3=S3Options(env.get("AWS_ENDPOINT_URL"), env.get("AWS_REGION")),
    )


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if _dynamodb is None:
        import boto3  # the Lambda runtime ships boto3; the engine never imports it

        configure(boto3.client("dynamodb"))
    request = request_from(_environment, time.time_ns() // 1_000_000)
    if not os.access(os.getcwd(), os.W_OK):
        # DuckDB spills under the working folder; in Lambda that is the read-only code folder.
        os.chdir(tempfile.gettempdir())
    report = check_consistency(request, _dynamodb, CATALOG)
    _publish(report)
    for mismatch in report.mismatches:
        logger.warning("a served value differs from its recomputation", extra={
            "feature": mismatch.feature, "entity_key": mismatch.entity_key,
            "at_ms": mismatch.at_ms, "served": repr(mismatch.online),
            "recomputed": repr(mismatch.offline),
        })
    summary = {"rate": report.rate, "lowest_rate": report.lowest_rate,
               "values": report.checked, "entities": report.entities,
               "skipped": report.skipped}
    logger.info("consistency checked", extra=summary)
    return summary


def _publish(report: ConsistencyReport) -> None:
    metrics.add_metric("ConsistencyValuesChecked", MetricUnit.Count, report.checked)
    if not report.checked:
        return
    metrics.add_metric("ConsistencyRate", MetricUnit.Percent, report.lowest_rate * 100)
    metrics.add_metric("ConsistencyMismatches", MetricUnit.Count,
                       report.checked - report.matched)
    for feature in report.features:
        if not feature.checked or feature.matched == feature.checked:
            continue
        with single_metric(
            name="FeatureConsistencyRate", unit=MetricUnit.Percent, value=feature.rate * 100,
            namespace=metrics.namespace, default_dimensions=metrics.default_dimensions,
        ) as metric:
            metric.add_dimension(name="feature", value=feature.feature)
