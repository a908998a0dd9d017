"""The two stream consumers, wired to the storage stack's streams, stores, on-failure queues and
log groups: the stream processor (stage 1: events stream -> user group items, and audience
partials to the partials stream) and the audience stage (stage 2: partials stream -> game and
content items), on Lambda or, with 'audience.runtime' flink, on Managed Service for Apache
Flink."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from constructs_lib import StreamProcessor
from constructs_lib.defaults import FLINK_JOB
from constructs_lib.flink_application import FlinkApplication
from constructs_lib.grants import (
    OBJECT_WRITE_KEY_ACTIONS,
    STREAM_READ_KEY_ACTIONS,
    STREAM_WRITE_KEY_ACTIONS,
    TABLE_READ_WRITE_KEY_ACTIONS,
    allow_key_use,
)
from constructs_lib.nag import acknowledge, iam5_resource_finding
from constructs_lib.offline_store import FEATURE_LOG_PREFIX, QUARANTINE_PREFIX
from constructs_lib.stream_processor import AUDIENCE_STAGE
from fastbreak_flink.settings import PROPERTY_GROUP, as_properties
from stacks.settings import Settings, cutover_delay_seconds, remember_seconds
from stacks.storage_stack import StorageStack


class ProcessingStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings,
        storage: StorageStack, **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        processor = settings.section("processor")
        offline_bucket = storage.offline_store.bucket
        self.processor = StreamProcessor(
            self,
            "StreamProcessor",
            stream=storage.events.stream,
            environment={
                "FASTBREAK_ENV": settings.env_name,
                "ONLINE_TABLE_NAME": storage.online_store.table.table_name,
                "OFFLINE_BUCKET_NAME": offline_bucket.bucket_name,
                "QUARANTINE_PREFIX": QUARANTINE_PREFIX,
                "FEATURE_LOG_PREFIX": FEATURE_LOG_PREFIX,
                "PARTIALS_STREAM_NAME": storage.partials.stream.stream_name,
                # Above 1, the processor refuses to apply to a user group an event whose
                # partition key is not that user (docs/exactly-once.md).
                "PARALLELIZATION_FACTOR": str(processor["parallelization_factor"]),
                # When a release's new feature slots go live: after its canaries.
                "CUTOVER_DELAY_SECONDS": str(cutover_delay_seconds(settings)),
            },
            function_props=_function_props(processor),
            event_source_props=_event_source_props(processor),
            existing_on_failure_queue=storage.failed_batches.queue,
            existing_on_failure_queue_key=storage.failed_batches.key,
            existing_log_group=storage.processor_log_group,
            deployment=processor["deployment"],
            name_prefix=settings.name_prefix,
            runbook_base_url=settings.get("monitoring.runbook_base_url"),
        )
        role = self.processor.role
        # What the engine calls: BatchGetItem of the touched items and its dedup memory, one
        # conditional UpdateItem per item; for its outbox (pending emissions) PutItem, Query
        # and DeleteItem. No Scan: the processor never searches the table.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["dynamodb:BatchGetItem", "dynamodb:UpdateItem", "dynamodb:PutItem",
                         "dynamodb:Query", "dynamodb:DeleteItem"],
                resources=[storage.online_store.table.table_arn],
            )
        )
        table_key = storage.online_store.key
        if table_key is not None:
            allow_key_use(role, table_key, TABLE_READ_WRITE_KEY_ACTIONS)
        # Audience partials: PutRecords to the partials stream only.
        role.add_to_policy(
            iam.PolicyStatement(actions=["kinesis:PutRecords"],
                                resources=[storage.partials.stream.stream_arn])
        )
        allow_key_use(role, storage.partials.key, STREAM_WRITE_KEY_ACTIONS)
        self._write_offline_prefixes(self.processor.role, storage, "processor")

        # The audience stage runs on Lambda or on Managed Flink ('audience.runtime'): the same
        # merge, the same grants (docs/flink-runtime.md).
        self.audience: StreamProcessor | None = None
        self.audience_flink: FlinkApplication | None = None
        if settings.get("audience.runtime") == "flink":
            self.audience_flink = self._flink_audience_stage(settings, storage, table_key)
        else:
            self.audience = self._lambda_audience_stage(settings, storage, table_key)

    def _lambda_audience_stage(
        self, settings: Settings, storage: StorageStack, table_key: kms.IKey | None,
    ) -> StreamProcessor:
        audience = settings.section("audience")
        offline_bucket = storage.offline_store.bucket

        consumer = StreamProcessor(
            self,
            "AudienceStage",
            spec=AUDIENCE_STAGE,
            stream=storage.partials.stream,
            environment={
                "FASTBREAK_ENV": settings.env_name,
                "ONLINE_TABLE_NAME": storage.online_store.table.table_name,
                "OFFLINE_BUCKET_NAME": offline_bucket.bucket_name,
                "QUARANTINE_PREFIX": QUARANTINE_PREFIX,
                "FEATURE_LOG_PREFIX": FEATURE_LOG_PREFIX,
                "REMEMBER_SECONDS": str(remember_seconds(settings)),
            },
            function_props=_function_props(audience),
            event_source_props=_event_source_props(audience),
            existing_on_failure_queue=storage.audience_failed_batches.queue,
            existing_on_failure_queue_key=storage.audience_failed_batches.key,
            existing_log_group=storage.audience_log_group,
            deployment=audience["deployment"],
            name_prefix=settings.name_prefix,
            runbook_base_url=settings.get("monitoring.runbook_base_url"),
        )
        # The audience stage reads its items and its dedup memory and writes them conditionally.
        consumer.role.add_to_policy(
            iam.PolicyStatement(
                actions=["dynamodb:BatchGetItem", "dynamodb:UpdateItem"],
                resources=[storage.online_store.table.table_arn],
            )
        )
        if table_key is not None:
            allow_key_use(consumer.role, table_key, TABLE_READ_WRITE_KEY_ACTIONS)
        self._write_offline_prefixes(consumer.role, storage, "audience stage")
        return consumer

    def _flink_audience_stage(
        self, settings: Settings, storage: StorageStack, table_key: kms.IKey | None,
    ) -> FlinkApplication:
        flink = settings.section("flink")
        code: dict[str, Any] = {"code_zip": flink["code_zip"]} if flink["code_zip"] else {
            "code_bucket": s3.Bucket.from_bucket_name(self, "FlinkCodeBucket",
                                                      flink["code_bucket_name"]),
            "code_key": flink["code_key"],
            "code_encryption_key": kms.Key.from_key_arn(
                self, "FlinkCodeKey", flink["code_kms_key_arn"])
            if flink["code_kms_key_arn"] else None,
        }
        application = FlinkApplication(
            self,
            "AudienceStageFlink",
            log_group=logs.LogGroup.from_log_group_name(
                self, "AudienceLogs", storage.audience_log_group_name),
            job_property_group=PROPERTY_GROUP,
            job_properties=as_properties({
                "table_name": storage.online_store.table.table_name,
                "bucket_name": storage.offline_store.bucket.bucket_name,
                "stream_arn": storage.partials.stream.stream_arn,
                "region": self.region,
                "quarantine_prefix": QUARANTINE_PREFIX,
                "feature_log_prefix": FEATURE_LOG_PREFIX,
                "remember_seconds": remember_seconds(settings),
                **{name: flink[name] for name in FLINK_JOB},
            }),
            application_name=f"{settings.name_prefix}-audience-stage",
            application_props={
                "parallelism": flink["parallelism"],
                "parallelism_per_kpu": flink["parallelism_per_kpu"],
                "auto_scaling_enabled": flink["autoscaling"],
                "checkpoint_interval": Duration.seconds(flink["checkpoint_interval_seconds"]),
            },
            **code,
        )
        role = application.role
        # The job reads the partials stream (polling: no enhanced fan-out consumer to manage).
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["kinesis:DescribeStreamSummary", "kinesis:ListShards",
                     "kinesis:GetShardIterator", "kinesis:GetRecords"],
            resources=[storage.partials.stream.stream_arn],
        ))
        allow_key_use(role, storage.partials.key, STREAM_READ_KEY_ACTIONS)
        # The merge's calls, as the Lambda stage's: its items and its dedup memory.
        role.add_to_principal_policy(iam.PolicyStatement(
            actions=["dynamodb:BatchGetItem", "dynamodb:UpdateItem"],
            resources=[storage.online_store.table.table_arn],
        ))
        if table_key is not None:
            allow_key_use(role, table_key, TABLE_READ_WRITE_KEY_ACTIONS)
        self._write_offline_prefixes(role, storage, "audience stage (Flink)")
        return application

    def _write_offline_prefixes(self, role: iam.IRole, storage: StorageStack, who: str) -> None:
        """PutObject under the quarantine and feature-log prefixes of the offline store only;
        it never reads raw data."""
        prefixes = {
            QUARANTINE_PREFIX: "invalid records, one object per batch named by shard and "
            "sequence range",
            FEATURE_LOG_PREFIX: "feature log objects, one per batch named by shard and "
            "sequence range",
        }
        object_arns = {prefix: f"{storage.offline_bucket_arn}/{prefix}*" for prefix in prefixes}
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["s3:PutObject"], resources=list(object_arns.values()))
        )
        acknowledge(
            role,
            {
                iam5_resource_finding(self, arn): (
                    f"PutObject only, under {prefix} of the offline store: {why} of the {who}, "
                    "so the key is unknown until the batch arrives"
                )
                for (prefix, arn), why in zip(object_arns.items(), prefixes.values(), strict=True)
            },
        )
        allow_key_use(role, storage.offline_store.key, OBJECT_WRITE_KEY_ACTIONS)


def _function_props(stage: Mapping[str, Any]) -> dict[str, Any]:
    """A stream consumer's Lambda settings (``processor.*`` or ``audience.*``) as props."""
    return {
        "memory_size": stage["memory_mb"],
        "timeout": Duration.seconds(stage["timeout_seconds"]),
        "reserved_concurrent_executions": stage["reserved_concurrency"],
    }


def _event_source_props(stage: Mapping[str, Any]) -> dict[str, Any]:
    """A stream consumer's event source mapping settings as props."""
    return {
        "batch_size": stage["batch_size"],
        "max_batching_window": Duration.seconds(stage["max_batching_window_seconds"]),
        "parallelization_factor": stage["parallelization_factor"],
        "retry_attempts": stage["max_retry_attempts"],
        "max_record_age": Duration.seconds(stage["max_record_age_seconds"]),
    }
