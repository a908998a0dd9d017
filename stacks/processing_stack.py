"""The Lambda stream processor, wired to the storage stack's stream, stores, on-failure queue
and log group."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from constructs_lib import StreamProcessor
from constructs_lib.grants import (
    OBJECT_WRITE_KEY_ACTIONS,
    TABLE_READ_WRITE_KEY_ACTIONS,
    allow_key_use,
)
from constructs_lib.nag import acknowledge, iam5_resource_finding
from constructs_lib.offline_store import FEATURE_LOG_PREFIX, QUARANTINE_PREFIX
from stacks.settings import Settings
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
            },
            function_props={
                "memory_size": processor["memory_mb"],
                "timeout": Duration.seconds(processor["timeout_seconds"]),
                "reserved_concurrent_executions": processor["reserved_concurrency"],
            },
            event_source_props={
                "batch_size": processor["batch_size"],
                "max_batching_window": Duration.seconds(processor["max_batching_window_seconds"]),
                "parallelization_factor": processor["parallelization_factor"],
                "retry_attempts": processor["max_retry_attempts"],
                "max_record_age": Duration.seconds(processor["max_record_age_seconds"]),
            },
            existing_on_failure_queue=storage.failed_batches.queue,
            existing_on_failure_queue_key=storage.failed_batches.key,
            existing_log_group=storage.processor_log_group,
            deployment=processor["deployment"],
            name_prefix=settings.name_prefix,
            runbook_base_url=settings.get("monitoring.runbook_base_url"),
        )
        role = self.processor.role
        # What the engine calls: BatchGetItem of the touched items and its dedup memory, one
        # conditional UpdateItem per item. No Query, Scan or DeleteItem: the processor never
        # searches and never removes features.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["dynamodb:BatchGetItem", "dynamodb:UpdateItem"],
                resources=[storage.online_store.table.table_arn],
            )
        )
        table_key = storage.online_store.key
        if table_key is not None:
            allow_key_use(role, table_key, TABLE_READ_WRITE_KEY_ACTIONS)
        # Writes only under its two prefixes of the offline store; it never reads raw data.
        prefixes = {
            QUARANTINE_PREFIX: "invalid records, one object per batch named by shard and "
            "sequence range",
            FEATURE_LOG_PREFIX: "feature log objects, one per batch named by shard and "
            "sequence range",
        }
        object_arns = {prefix: f"{storage.offline_bucket_arn}/{prefix}*" for prefix in prefixes}
        role.add_to_policy(
            iam.PolicyStatement(actions=["s3:PutObject"], resources=list(object_arns.values()))
        )
        acknowledge(
            self.processor.role,
            {
                iam5_resource_finding(self, arn): (
                    f"PutObject only, under {prefix} of the offline store: {why}, so the key "
                    "is unknown until the batch arrives"
                )
                for (prefix, arn), why in zip(object_arns.items(), prefixes.values(), strict=True)
            },
        )
        allow_key_use(role, storage.offline_store.key, OBJECT_WRITE_KEY_ACTIONS)
