"""Stateful resources: the events stream, the partials stream, the online store and the offline
store.

Kept apart from compute so that redeploying processors or the API never touches data, and so
that prod can retain this stack's resources when everything else is torn down.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from constructs import Construct

from constructs_lib import (
    ConsistencyCheck,
    EventStream,
    OfflineStore,
    OnlineStore,
    TrainingSetJob,
)
from constructs_lib.offline_store import FEATURE_LOG_PREFIX, RAW_PREFIX
from constructs_lib.secure_defaults import encrypted_log_group, log_encryption_key
from constructs_lib.stream_processor import AUDIENCE_STAGE, FailedBatchQueue
from fastbreak.definitions import Catalog
from fastbreak.offline.raw import raw_columns
from stacks.settings import Settings

# The keys of a feature log line (``fastbreak.engine.processor``); a functional test runs the
# real processor and checks that its lines have exactly these keys.
FEATURE_LOG_COLUMNS = (
    ("pk", "string"),
    ("sk", "string"),
    ("group", "string"),
    ("entity", "string"),
    ("entity_key", "string"),
    ("shard_id", "string"),  # the shard whose batch wrote the line
    ("hw", "string"),  # that shard's "{sequence number}.{sub-sequence}": up to 128 digits
    ("version", "bigint"),  # the item's write count: orders an item's lines across shards
    ("event_time_ms", "bigint"),  # newest event time folded into the item, epoch ms
    # JSON {tile seconds: {tile start: {slot: state}}} of the tiles the write changed ("0"/"0":
    # lifetime), each in its absolute state: the item's own format (online-store-layout.md)
    ("tiles", "string"),
    ("visible_ms", "bigint"),  # processor clock once the write succeeded; null for a re-log
)


class StorageStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, catalog: Catalog,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        stream = settings.section("stream")
        online = settings.section("online_store")
        offline = settings.section("offline_store")

        self.events = EventStream(
            self,
            "Events",
            retention=Duration.hours(stream["retention_hours"]),
            shard_count=stream["shard_count"] if stream["mode"] == "provisioned" else None,
            removal_policy=_removal(online["retain_on_delete"]),
        )
        # Stage 1's audience partials, partitioned by game or content, on their way to the
        # audience stage: in flight, like the events, so it lives and is retained with them.
        self.partials = EventStream(
            self,
            "Partials",
            retention=Duration.hours(stream["retention_hours"]),
            removal_policy=_removal(online["retain_on_delete"]),
            purpose="the partials stream (stage 1 to the audience stage)",
        )
        self.online_store = OnlineStore(
            self,
            "OnlineStore",
            deletion_protection=online["deletion_protection"],
            removal_policy=_removal(online["retain_on_delete"]),
        )
        offline_removal = _removal(offline["retain_on_delete"])
        database_name = f"fastbreak_{settings.env_name}"
        self.log_key = log_encryption_key(self, "LogKey", removal_policy=offline_removal)
        self.offline_store = OfflineStore(
            self,
            "OfflineStore",
            events=self.events.stream,
            # The raw table's rows are built by the transformation from the same catalog.
            columns=[(name, field_type.glue_type) for name, field_type in
                     raw_columns(catalog)],
            feature_log_columns=FEATURE_LOG_COLUMNS,
            database_name=database_name,
            log_key=self.log_key,
            environment={"FASTBREAK_ENV": settings.env_name},
            buffer_size_mib=offline["firehose_buffer_mb"],
            buffer_interval=Duration.seconds(offline["firehose_buffer_seconds"]),
            raw_infrequent_access_after=Duration.days(offline["raw_infrequent_access_days"]),
            raw_glacier_after=Duration.days(offline["raw_glacier_days"]),
            quarantine_expiry=Duration.days(offline["quarantine_expiry_days"]),
            access_log_expiry_days=offline["access_log_expiry_days"],
            log_retention_days=settings.get("log_retention_days"),
            removal_policy=offline_removal,
        )
        # Here, with the offline store: the job's log groups are encrypted with the store's key,
        # whose policy only this stack can extend.
        self.training_set_job = TrainingSetJob(
            self,
            "TrainingSetJob",
            bucket=self.offline_store.bucket,
            key=self.offline_store.key,
            database_name=database_name,
            log_retention_days=settings.get("log_retention_days"),
            removal_policy=offline_removal,
        )
        CfnOutput(
            self, "TrainingSetJobName", value=self.training_set_job.job.job_name,
            description="The training-set Glue job: aws glue start-job-run --job-name <this> "
            "(docs/training-sets.md)",
        )
        self._add_operational_records(settings)
        self.consistency_check = self._consistency_check(settings)
        # A named export, so that consumers' policies (and their cdk-nag acknowledgements) name
        # a stable "<stack>-OfflineBucketArn" rather than a generated export id.
        self.offline_bucket_arn: str = self.export_value(
            self.offline_store.bucket.bucket_arn, name=f"{construct_id}-OfflineBucketArn"
        )

    def _consistency_check(self, settings: Settings) -> ConsistencyCheck | None:
        """The hourly online/offline consistency check: in the stack that owns both stores, the
        two things it reads."""
        check = settings.section("consistency")
        if not check["enabled"]:
            return None
        return ConsistencyCheck(
            self,
            "ConsistencyCheck",
            table=self.online_store.table,
            table_key=self.online_store.key,
            bucket=self.offline_store.bucket,
            bucket_key=self.offline_store.key,
            environment={"FASTBREAK_ENV": settings.env_name},
            raw_prefix=RAW_PREFIX,
            feature_log_prefix=FEATURE_LOG_PREFIX,
            every=Duration.minutes(check["every_minutes"]),
            sample_size=check["sample_size"],
            lookback=Duration.minutes(check["lookback_minutes"]),
            settle=Duration.minutes(check["settle_minutes"]),
            max_window=Duration.hours(check["max_window_hours"]),
            function_props={"memory_size": check["memory_mb"]},
            log_key=self.log_key,
            log_retention_days=settings.get("log_retention_days"),
            removal_policy=_removal(settings.get("offline_store.retain_on_delete")),
        )

    def _add_operational_records(self, settings: Settings) -> None:
        """What must outlive the compute stacks: the on-failure queues of both stages (the only
        pointers to records that left a stream unprocessed) and the logs of the processor, the
        audience stage and the API. Deleting Processing or Serving leaves them; prod retains
        them with this stack."""
        retain_stream = settings.get("online_store.retain_on_delete")
        self.failed_batches = FailedBatchQueue(
            self, "FailedBatches", removal_policy=_removal(retain_stream)
        )
        self.audience_failed_batches = FailedBatchQueue(
            self, "AudienceFailedBatches", removal_policy=_removal(retain_stream),
            purpose=AUDIENCE_STAGE.queue_purpose,
        )
        # Retained exactly as long as the key that encrypts them: a log group whose key is
        # deleted cannot be read.
        log_removal = _removal(settings.get("offline_store.retain_on_delete"))
        retention = settings.get("log_retention_days")
        (self.processor_log_group, self.audience_log_group, self.reader_log_group,
         self.api_access_log_group) = (
            encrypted_log_group(self, name, key=self.log_key, retention_days=retention,
                                removal_policy=log_removal)
            for name in ("ProcessorLogs", "AudienceLogs", "FeatureApiLogs",
                         "FeatureApiAccessLogs")
        )
        if settings.get("audience.runtime") == "flink":
            # Named, as the offline bucket's ARN: the Flink application's role and its cdk-nag
            # acknowledgements name its log streams by it.
            self.audience_log_group_name: str = self.export_value(
                self.audience_log_group.log_group_name,
                name=f"{self.stack_name}-AudienceLogGroupName")
        CfnOutput(
            self, "OnFailureQueueUrl", value=self.failed_batches.queue.queue_url,
            description="The processor's on-failure queue: python -m fastbreak_ops.redrive "
            "--queue-url <this>",
        )
        CfnOutput(
            self, "AudienceOnFailureQueueUrl",
            value=self.audience_failed_batches.queue.queue_url,
            description="The audience stage's on-failure queue: python -m "
            "fastbreak_ops.redrive --queue-url <this>",
        )


def _removal(retain: bool) -> RemovalPolicy:
    return RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY
