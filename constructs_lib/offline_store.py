"""The offline store: an S3 data lake of raw events, the feature log and quarantined records,
with a Glue catalog, Firehose delivery from the events stream and an Athena workgroup.

The delivery's data-transformation Lambda (``fastbreak.handlers.raw_events_transform``) makes
each stream record a row of the raw table: the stream processor's own verdict on the record,
its Kinesis position and arrival time, and its hour as dynamic partitioning keys.

Prefixes of the data bucket:
- ``raw/event_date=YYYY-MM-DD/event_hour=HH/``: every record of the stream, Parquet, from
  Firehose (the hour of the event time; of the arrival time for a refused record).
- ``raw-errors/``: what Firehose could not read, convert or partition, kept for replay.
- ``features/``: the feature log (what the online store was told, with event time).
- ``quarantine/``: invalid records with the reason, written by the processor.
- ``athena-results/``: query results of the workgroup.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from constructs_lib.grants import glue_table_arns
from constructs_lib.nag import acknowledge, iam5_resource_finding
from constructs_lib.powertools_function import PowertoolsFunction
from constructs_lib.props import ConstructPropsError
from constructs_lib.secure_defaults import (
    access_log_bucket,
    customer_managed_key,
    encrypted_data_bucket,
    encrypted_log_group,
)

RAW_PREFIX = "raw/"
RAW_ERROR_PREFIX = "raw-errors/"
FEATURE_LOG_PREFIX = "features/"
QUARANTINE_PREFIX = "quarantine/"
ATHENA_RESULTS_PREFIX = "athena-results/"

TRANSFORM_HANDLER = "fastbreak.handlers.raw_events_transform.handler"
# The transformation Lambda returns these keys (``fastbreak.offline.raw.PARTITION_KEYS``): the
# hour of the event's own time, so a late event lands in the partition of the hour it happened.
PARTITION_KEYS = ("event_date", "event_hour")
RAW_OBJECT_PREFIX = RAW_PREFIX + "".join(
    f"{key}=!{{partitionKeyFromLambda:{key}}}/" for key in PARTITION_KEYS
)
RAW_ERROR_OBJECT_PREFIX = (
    RAW_ERROR_PREFIX + "!{firehose:error-output-type}/!{timestamp:yyyy-MM-dd}/"
)


class OfflineStore(Construct):
    """Exposes ``bucket``, ``access_log_bucket``, ``key``, ``database``, ``raw_table``,
    ``feature_log_table``, ``delivery_stream``, ``delivery_log_group``, ``transform_function``
    (with ``transform_role`` and ``transform_log_group``) and ``workgroup``.

    ``columns`` are the raw table's (name, Glue type) pairs, derived by the stack from the
    feature definitions (``fastbreak.offline.raw.raw_columns``) so that the table cannot drift
    from the event schemas; ``feature_log_columns`` those of the processor's feature log lines.

    Transformation: Firehose invokes the function with ``transform_buffer_size_mib`` (1-3) of
    records or after ``transform_buffer_interval``; 1 MiB of the smallest valid events makes
    a response of about 4.8 MiB, within Lambda's 6 MiB (docs/architecture.md). Throttled or
    failed invocations are retried ``transform_retries`` times, then the batch goes to
    ``raw-errors/processing-failed/``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        events: kinesis.IStream,
        columns: Sequence[tuple[str, str]],
        feature_log_columns: Sequence[tuple[str, str]],
        database_name: str,
        log_key: kms.IKey,
        environment: dict[str, str] | None = None,
        buffer_size_mib: int = 64,
        buffer_interval: Duration = Duration.seconds(300),
        transform_buffer_size_mib: int = 1,
        transform_buffer_interval: Duration = Duration.seconds(60),
        transform_retries: int = 3,
        transform_memory_mb: int = 1024,
        transform_timeout: Duration = Duration.seconds(60),
        transform_reserved_concurrency: int = 20,
        raw_infrequent_access_after: Duration = Duration.days(30),
        raw_glacier_after: Duration = Duration.days(90),
        quarantine_expiry: Duration = Duration.days(30),
        access_log_expiry_days: int = 90,
        log_retention_days: int = 30,
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
    ) -> None:
        super().__init__(scope, construct_id)
        _check_transform_props(transform_buffer_size_mib, transform_retries)
        stack = Stack.of(self)
        self.key = customer_managed_key(
            self,
            "Key",
            description="Fastbreak: encrypts the offline store and its query results",
            removal_policy=removal_policy,
        )
        self.access_log_bucket = access_log_bucket(
            self,
            "AccessLogs",
            expiry_days=access_log_expiry_days,
            removal_policy=removal_policy,
        )
        self.bucket = encrypted_data_bucket(
            self,
            "Bucket",
            key=self.key,
            access_logs=self.access_log_bucket,
            access_log_prefix="offline-store/",
            lifecycle_rules=_lifecycle_rules(
                raw_infrequent_access_after, raw_glacier_after, quarantine_expiry
            ),
            removal_policy=removal_policy,
        )

        self.database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=stack.account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=database_name,
                description="Fastbreak offline store: raw events and the feature log",
            ),
        )
        self.raw_table = glue.CfnTable(
            self,
            "RawEventsTable",
            catalog_id=stack.account,
            database_name=database_name,
            table_input=glue.CfnTable.TableInputProperty(
                name="raw_events",
                description=(
                    "Every record of the events stream with the stream processor's verdict, "
                    "Kinesis position and arrival time, partitioned by event hour"
                ),
                table_type="EXTERNAL_TABLE",
                parameters={
                    "classification": "parquet",
                    "EXTERNAL": "TRUE",
                    # Partition projection: Athena computes partitions from the prefix
                    # pattern, so new hours are queryable without crawlers or MSCK REPAIR.
                    "projection.enabled": "true",
                    **_projected_date("event_date"),
                    "projection.event_hour.type": "integer",
                    "projection.event_hour.range": "0,23",
                    "projection.event_hour.digits": "2",
                    "storage.location.template": self.bucket.s3_url_for_object(
                        f"{RAW_PREFIX}event_date=${{event_date}}/event_hour=${{event_hour}}/"
                    ),
                },
                partition_keys=[
                    glue.CfnTable.ColumnProperty(name=key, type="string") for key in PARTITION_KEYS
                ],
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    columns=_glue_columns(columns),
                    location=self.bucket.s3_url_for_object(RAW_PREFIX),
                    input_format="org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                    output_format=(
                        "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
                    ),
                    serde_info=glue.CfnTable.SerdeInfoProperty(
                        serialization_library=(
                            "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
                        )
                    ),
                ),
            ),
        )
        self.raw_table.node.add_dependency(self.database)
        self.feature_log_table = glue.CfnTable(
            self,
            "FeatureLogTable",
            catalog_id=stack.account,
            database_name=database_name,
            table_input=glue.CfnTable.TableInputProperty(
                name="feature_log",
                description=(
                    "What the online store was told: each written item's full state with its "
                    "event time and high-water mark, one JSON line per item and batch"
                ),
                table_type="EXTERNAL_TABLE",
                parameters={
                    "classification": "json",
                    "EXTERNAL": "TRUE",
                    "projection.enabled": "true",
                    **_projected_date("date"),
                    "storage.location.template": self.bucket.s3_url_for_object(
                        f"{FEATURE_LOG_PREFIX}date=${{date}}/"
                    ),
                },
                partition_keys=[glue.CfnTable.ColumnProperty(name="date", type="string")],
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    columns=_glue_columns(feature_log_columns),
                    location=self.bucket.s3_url_for_object(FEATURE_LOG_PREFIX),
                    input_format="org.apache.hadoop.mapred.TextInputFormat",
                    output_format=(
                        "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat"
                    ),
                    serde_info=glue.CfnTable.SerdeInfoProperty(
                        # OpenX hands the nested "state" object to a string column as JSON.
                        serialization_library="org.openx.data.jsonserde.JsonSerDe"
                    ),
                ),
            ),
        )
        self.feature_log_table.node.add_dependency(self.database)

        self.delivery_log_group: logs.LogGroup = encrypted_log_group(
            self,
            "DeliveryLogs",
            key=log_key,
            retention_days=log_retention_days,
            removal_policy=removal_policy,
        )
        transform = PowertoolsFunction(
            self,
            "RawTransform",
            handler=TRANSFORM_HANDLER,
            service_name="raw-events-transform",
            reaches="X-Ray",
            environment=dict(environment or {}),
            defaults={
                "description": "Fastbreak: makes each events stream record a row of the raw table",
                "memory_size": transform_memory_mb,
                "timeout": transform_timeout,
                "reserved_concurrent_executions": transform_reserved_concurrency,
            },
            log_key=log_key,
            log_retention_days=log_retention_days,
            removal_policy=removal_policy,
        )
        self.transform_function: lambda_.Function = transform.function
        self.transform_role: iam.Role = transform.role
        self.transform_log_group: logs.ILogGroup = transform.log_group
        self.delivery_role = self._delivery_role(database_name, stack)
        destination = firehose.S3Bucket(
            self.bucket,
            # Immutable: the L2's own grants (read-write on the whole bucket, ReEncrypt on the
            # key) are dropped; ``_delivery_role`` grants exactly what the delivery does.
            role=self.delivery_role.without_policy_updates(),
            data_output_prefix=RAW_OBJECT_PREFIX,
            error_output_prefix=RAW_ERROR_OBJECT_PREFIX,
            buffering_interval=buffer_interval,
            buffering_size=Size.mebibytes(buffer_size_mib),
            encryption_key=self.key,
            logging_config=firehose.EnableLogging(self.delivery_log_group),
            # Firehose de-aggregates KPL records of a Kinesis source by itself, before this
            # processor; no multi-record de-aggregation, which would split a record the stream
            # processor sees as one (and refuses) into several.
            processors=[
                firehose.LambdaFunctionProcessor(
                    self.transform_function,
                    buffer_size=Size.mebibytes(transform_buffer_size_mib),
                    buffer_interval=transform_buffer_interval,
                    retries=transform_retries,
                )
            ],
            dynamic_partitioning=firehose.DynamicPartitioningProps(
                enabled=True, retry_duration=Duration.seconds(300)
            ),
            data_format_conversion=firehose.DataFormatConversionProps(
                input_format=firehose.InputFormat.OPENX_JSON,
                output_format=firehose.OutputFormat.PARQUET,
                schema_configuration=firehose.SchemaConfiguration.from_cfn_table(self.raw_table),
            ),
        )
        self.delivery_stream = firehose.DeliveryStream(
            self,
            "RawDelivery",
            source=firehose.KinesisStreamSource(events),
            destination=destination,
        )
        self.delivery_stream.node.add_dependency(self.raw_table)
        # Firehose checks its permissions when the stream is created: the role's policy first.
        self.delivery_stream.node.add_dependency(self.delivery_role)
        self._acknowledge_findings()

        self.workgroup = athena.CfnWorkGroup(
            self,
            "Workgroup",
            name=f"{database_name}-analysts",
            description="Fastbreak offline store queries, with encrypted results",
            state="ENABLED",
            recursive_delete_option=removal_policy is RemovalPolicy.DESTROY,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                # Scanning more than 100 GB in one query is a mistake, not an analysis.
                bytes_scanned_cutoff_per_query=100 * 1024**3,
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=self.bucket.s3_url_for_object(ATHENA_RESULTS_PREFIX),
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_KMS", kms_key=self.key.key_arn
                    ),
                ),
            ),
        )

    def _delivery_role(self, database_name: str, stack: Stack) -> iam.Role:
        """What the delivery does to the destination, and nothing else: write objects under
        raw/ and raw-errors/ (never delete or read elsewhere), encrypt them with the store's key
        through S3, read the raw table's schema, invoke the transformation, write its log."""
        role = iam.Role(
            self,
            "DeliveryRole",
            assumed_by=iam.ServicePrincipal(
                "firehose.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            ),
            description="Fastbreak raw delivery: writes raw/ and raw-errors/ of the offline store",
        )
        written = [self.bucket.arn_for_objects(f"{prefix}*")
                   for prefix in (RAW_PREFIX, RAW_ERROR_PREFIX)]
        statements = [
            # GetObject on its own prefixes only: AWS's policy for an S3 destination lists it.
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObject"],
                resources=written,
            ),
            iam.PolicyStatement(
                actions=["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                resources=[self.bucket.bucket_arn],
            ),
            iam.PolicyStatement(
                actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=[self.key.key_arn],
                conditions={
                    "StringEquals": {"kms:ViaService": f"s3.{stack.region}.amazonaws.com"},
                    # The bucket uses an S3 Bucket Key: the context is the bucket, not the object.
                    "StringLike": {"kms:EncryptionContext:aws:s3:arn": [
                        self.bucket.bucket_arn, self.bucket.arn_for_objects("*"),
                    ]},
                },
            ),
            iam.PolicyStatement(
                actions=["glue:GetTable", "glue:GetTableVersion", "glue:GetTableVersions"],
                resources=glue_table_arns(stack, database_name, "raw_events"),
            ),
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction", "lambda:GetFunctionConfiguration"],
                resources=[self.transform_function.function_arn,
                           f"{self.transform_function.function_arn}:$LATEST"],
            ),
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.delivery_log_group.log_group_arn],
            ),
        ]
        for statement in statements:
            role.add_to_policy(statement)
        return role

    def _acknowledge_findings(self) -> None:
        acknowledge(
            self.delivery_stream,
            {
                "AwsSolutions::AwsSolutions-KDF1": (
                    "The delivery stream reads from the KMS-encrypted events stream; with a "
                    "Kinesis source Firehose cannot set its own SSE, and it writes to the bucket "
                    "with the offline store's CMK"
                ),
                "NIST.800.53.R5::NIST.800.53.R5-IAMNoInlinePolicy": (
                    "the Firehose L2 generates one inline policy for the role that reads the "
                    "events stream, used by this delivery stream only; a customer-managed policy "
                    "would be attached nowhere else"
                ),
            },
        )
        partitions = (
            "Firehose names each object under a partition prefix computed per record "
            "(raw/event_date=.../event_hour=..., raw-errors/<error type>/<day>/), so the object "
            "ARN ends in a wildcard; the role may write, and read back, nothing outside them"
        )
        acknowledge(
            self.delivery_role,
            {
                iam5_resource_finding(self, self.bucket.arn_for_objects(f"{RAW_PREFIX}*")):
                    partitions,
                iam5_resource_finding(self, self.bucket.arn_for_objects(f"{RAW_ERROR_PREFIX}*")):
                    partitions,
                "NIST.800.53.R5::NIST.800.53.R5-IAMNoInlinePolicy": (
                    "one inline policy for this delivery role, used by this delivery stream "
                    "only; a customer-managed policy would be attached nowhere else"
                ),
            },
        )
        synchronous = (
            "Firehose invokes the transformation synchronously; a function DLQ covers only "
            "async invocations, and records of an invocation that fails after its retries are "
            "kept under raw-errors/processing-failed/"
        )
        acknowledge(
            self.transform_function,
            {
                "Serverless::Serverless-LambdaDLQ": synchronous,
                "NIST.800.53.R5::NIST.800.53.R5-LambdaDLQ": synchronous,
            },
        )
        acknowledge(
            Stack.of(self),
            {
                "CloudFormation-Validate::W7001": (
                    "the Firehose L2 adds a mapping of Firehose CIDR blocks for Redshift and "
                    "HTTP destinations; this S3 delivery does not look it up"
                )
            },
        )
        acknowledge(
            self.access_log_bucket,
            {
                "NIST.800.53.R5::NIST.800.53.R5-S3DefaultEncryptionKMS": (
                    "S3 server access log delivery supports only SSE-S3 on the target bucket"
                ),
                "NIST.800.53.R5::NIST.800.53.R5-S3BucketReplicationEnabled": (
                    "access logs of a single-region kit; versioned, and expire after their "
                    "retention, so a replica would only double their cost"
                ),
            },
        )
        acknowledge(
            self.bucket,
            {
                "NIST.800.53.R5::NIST.800.53.R5-S3BucketReplicationEnabled": (
                    "the kit is single-region and owns no second-region bucket; the bucket is "
                    "versioned and retained in prod, and raw events can be re-delivered while "
                    "the stream retains them. Add replication with a bucket of your DR region."
                ),
            },
        )


def _check_transform_props(buffer_size_mib: int, retries: int) -> None:
    if not 1 <= buffer_size_mib <= 3:
        raise ConstructPropsError(
            "OfflineStore: prop 'transform_buffer_size_mib' must be within 1..3: Firehose buffers "
            "at most 3 MB for a Lambda, and the rows must fit Lambda's 6 MB response"
        )
    if not 1 <= retries <= 300:
        # The L2 leaves a 0 out of the template, which Firehose then reads as its default, 3.
        raise ConstructPropsError("OfflineStore: prop 'transform_retries' must be within 1..300")


def _glue_columns(pairs: Sequence[tuple[str, str]]) -> list[glue.CfnTable.ColumnProperty]:
    return [glue.CfnTable.ColumnProperty(name=name, type=glue_type) for name, glue_type in pairs]


def _projected_date(column: str) -> dict[str, str]:
    """Partition projection of a yyyy-MM-dd partition column, from 2020 to today."""
    return {
        f"projection.{column}.type": "date",
        f"projection.{column}.format": "yyyy-MM-dd",
        f"projection.{column}.range": "2020-01-01,NOW",
        f"projection.{column}.interval": "1",
        f"projection.{column}.interval.unit": "DAYS",
    }


def _lifecycle_rules(
    infrequent_access_after: Duration, glacier_after: Duration, quarantine_expiry: Duration
) -> list[s3.LifecycleRule]:
    return [
        s3.LifecycleRule(
            id="raw-events-tiering",
            prefix=RAW_PREFIX,
            transitions=[
                s3.Transition(
                    storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                    transition_after=infrequent_access_after,
                ),
                s3.Transition(
                    storage_class=s3.StorageClass.GLACIER_INSTANT_RETRIEVAL,
                    transition_after=glacier_after,
                ),
            ],
        ),
        s3.LifecycleRule(
            id="feature-log-tiering",
            prefix=FEATURE_LOG_PREFIX,
            transitions=[
                s3.Transition(
                    storage_class=s3.StorageClass.INFREQUENT_ACCESS,
                    transition_after=infrequent_access_after,
                )
            ],
        ),
        s3.LifecycleRule(id="quarantine-expiry", prefix=QUARANTINE_PREFIX,
                         expiration=quarantine_expiry),
        s3.LifecycleRule(id="raw-errors-expiry", prefix=RAW_ERROR_PREFIX,
                         expiration=quarantine_expiry),
        s3.LifecycleRule(id="athena-results-expiry", prefix=ATHENA_RESULTS_PREFIX,
                         expiration=Duration.days(7)),
        s3.LifecycleRule(
            id="old-versions-and-uploads",
            noncurrent_version_expiration=Duration.days(30),
            abort_incomplete_multipart_upload_after=Duration.days(1),
        ),
    ]
