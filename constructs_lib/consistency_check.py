"""The scheduled online/offline consistency check: a Lambda that an EventBridge schedule runs.

Each run recomputes, with the training-set builder, a sample of the values the online store
served in the last period and publishes the share that match exactly
(``fastbreak.handlers.consistency_check``; alarm ``ConsistencyBelowTarget`` in ``Monitoring``).
It reads what it checks and nothing else: the offline bucket's ``raw/`` and ``features/``
prefixes, and the online store table (BatchGetItem and Query). The function carries the
builder's engine (pyarrow, DuckDB) in its asset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Size
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from constructs_lib.defaults import CONSISTENCY_FUNCTION, LOG_RETENTION_DAYS
from constructs_lib.grants import TABLE_READ_KEY_ACTIONS, allow_key_use
from constructs_lib.nag import acknowledge, iam5_resource_finding
from constructs_lib.powertools_function import OFFLINE_WHEELS, PowertoolsFunction

HANDLER = "fastbreak.handlers.consistency_check.handler"
SERVICE_NAME = "consistency-check"
# What an object read from the SSE-KMS bucket needs of its key.
OBJECT_READ_KEY_ACTIONS = ("kms:Decrypt",)


class ConsistencyCheck(Construct):
    """Exposes ``function``, ``role``, ``log_group``, ``alias`` and ``schedule`` (the rule).

    ``defaults`` (``CONSISTENCY_FUNCTION``) < ``function_props`` < what the kit enforces (the
    handler, the asset with the builder's engine, one run at a time).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        table: dynamodb.ITable,
        table_key: kms.IKey | None,
        bucket: s3.IBucket,
        bucket_key: kms.IKey,
        environment: Mapping[str, str],
        raw_prefix: str,
        feature_log_prefix: str,
        every: Duration = Duration.hours(1),
        sample_size: int = 100,
        lookback: Duration = Duration.hours(1),
        settle: Duration = Duration.minutes(20),
        max_window: Duration = Duration.hours(24),
        function_props: Mapping[str, Any] | None = None,
        log_key: kms.IKey | None = None,
        log_group: logs.ILogGroup | None = None,
        log_retention_days: int = LOG_RETENTION_DAYS,
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
    ) -> None:
        super().__init__(scope, construct_id)
        function = PowertoolsFunction(
            self,
            "Function",
            handler=HANDLER,
            service_name=SERVICE_NAME,
            environment={
                **environment,
                "ONLINE_TABLE_NAME": table.table_name,
                "OFFLINE_BUCKET_NAME": bucket.bucket_name,
                "RAW_PREFIX": raw_prefix,
                "FEATURE_LOG_PREFIX": feature_log_prefix,
                "SAMPLE_SIZE": str(sample_size),
                "LOOKBACK_MINUTES": str(int(lookback.to_minutes())),
                "SETTLE_MINUTES": str(int(settle.to_minutes())),
                "MAX_WINDOW_HOURS": str(int(max_window.to_hours())),
            },
            reaches="DynamoDB, S3 and X-Ray",
            defaults={
                "description": "Fastbreak: recomputes a sample of the served features from "
                               "the raw events and publishes the share that match",
                **CONSISTENCY_FUNCTION,
                # DuckDB spills to /tmp when a check reads more than memory holds.
                "ephemeral_storage_size": Size.gibibytes(2),
            },
            function_props={
                **(function_props or {}),
                # One run at a time: a run that outlasts the period must not double up.
                "reserved_concurrent_executions": 1,
                # A run that fails is not retried: the next scheduled one checks again.
                "retry_attempts": 0,
            },
            log_group=log_group,
            log_key=log_key,
            log_retention_days=log_retention_days,
            removal_policy=removal_policy,
            wheels=OFFLINE_WHEELS,
        )
        self.function: lambda_.Function = function.function
        self.role: iam.Role = function.role
        self.log_group: logs.ILogGroup = function.log_group
        self.alias: lambda_.Alias = function.alias
        # The check's reads, nothing more: the group items (BatchGetItem) and an audience
        # entity's items (Query); the raw table and the feature log.
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["dynamodb:BatchGetItem", "dynamodb:Query"], resources=[table.table_arn]))
        if table_key is not None:
            allow_key_use(self.role, table_key, TABLE_READ_KEY_ACTIONS)
        prefixes = [raw_prefix, feature_log_prefix]
        object_arns = [bucket.arn_for_objects(f"{prefix}*") for prefix in prefixes]
        self.role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"],
                                                    resources=object_arns))
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["s3:ListBucket"], resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{prefix}*" for prefix in prefixes]}}))
        allow_key_use(self.role, bucket_key, OBJECT_READ_KEY_ACTIONS)
        self.schedule = events.Rule(
            self,
            "Schedule",
            description="Fastbreak: runs the online/offline consistency check",
            schedule=events.Schedule.rate(every),
            targets=[targets.LambdaFunction(self.alias, retry_attempts=0)],
        )
        prefix_reads = (
            f"GetObject only, under {raw_prefix} and {feature_log_prefix} of the offline store: "
            "the check reads the raw table's and the feature log's partitions of the days it "
            "checks, whose object keys are made as the data arrives"
        )
        acknowledge(self.role, {iam5_resource_finding(self, arn): prefix_reads
                                for arn in object_arns})
        no_dead_letters = (
            "a scheduled check with nothing to deliver: a failed run is not retried, the next "
            "schedule runs the check again, and its errors page (ConsistencyCheckErrors)"
        )
        acknowledge(self.function, {
            "Serverless::Serverless-LambdaDLQ": no_dead_letters,
            "Serverless::Serverless-LambdaAsyncFailureDestination": no_dead_letters,
            "NIST.800.53.R5::NIST.800.53.R5-LambdaDLQ": no_dead_letters,
        })
        acknowledge(self.schedule, {"Serverless::Serverless-EventBusDLQ": no_dead_letters})
