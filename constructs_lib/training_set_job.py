"""The training-set builder at scale: an AWS Glue 5.1 PySpark job (Spark 3.5, Python 3.11) that
runs the Spark engine (``fastbreak.offline.spark_engine``) over the offline store's raw table.

What is shipped, with no Docker: the entry script (``fastbreak/offline/glue_job.py``) as the
job's script, and the ``fastbreak`` package as one zip of its Python files
(``--extra-py-files``); Glue 5.1 provides pyarrow, pandas and boto3.

Secure defaults, none of them a prop:

- a role that Glue alone may assume (this account's jobs), allowed exactly what a run does:
  read the raw table's schema from the Glue Data Catalog (``GetTable`` on that table), read
  ``raw/`` and ``training-sets/`` and write ``training-sets/`` of the offline bucket (never
  delete, never another prefix), use the bucket's CMK only through S3 for that bucket, read the
  job's two assets, write its three log groups, put metrics in the ``Glue`` namespace;
- a security configuration that encrypts with that CMK what Glue writes to S3, CloudWatch Logs
  and job bookmarks; the job's logs can quote data, so they are encrypted like the data;
- its log groups created ahead of Glue (the names Glue gives them under that security
  configuration) with the kit's retention, the CMK's policy letting CloudWatch Logs use the key
  for those three and no other.

Job props (``job_props``) merge as every construct's: ``defaults.TRAINING_SET_JOB`` < user props
< what the construct enforces (the Glue version the package is written for, the script, the
role, the security configuration, the logging).
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import ArnFormat, RemovalPolicy, Stack
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from constructs_lib.defaults import LOG_RETENTION_DAYS, TRAINING_SET_JOB
from constructs_lib.grants import glue_table_arns
from constructs_lib.nag import acknowledge, iam5_resource_finding
from constructs_lib.powertools_function import LAMBDA_ASSET_DIR
from constructs_lib.props import ConstructPropsError, merge_props
from constructs_lib.secure_defaults import log_retention

PACKAGE_DIR = LAMBDA_ASSET_DIR / "fastbreak"
JOB_SCRIPT = PACKAGE_DIR / "offline" / "glue_job.py"
TRAINING_SETS_PREFIX = "training-sets/"
RAW_TABLE_ARGUMENT = "--raw-table"
TRAINING_SETS_ARGUMENT = "--training-sets"
# Glue 5.1: Spark 3.5.6, Python 3.11, Java 17, pyarrow 22 and pandas 2.3 provided.
GLUE_VERSION = glue.GlueVersion.V5_1
# The job props a user may set (``job_props``); the rest is the construct's.
JOB_PROP_NAMES = ("worker_type", "number_of_workers", "timeout", "max_retries",
                  "max_concurrent_runs", "job_run_queuing_enabled", "description", "job_name")
# CloudWatch Logs' own names under a security configuration: Glue writes a run's output and
# error logs to the first two, its continuous (driver and executor) log to the third.
OUTPUT_LOG = "/aws-glue/jobs/{config}-role/{role}/output"
ERROR_LOG = "/aws-glue/jobs/{config}-role/{role}/error"
CONTINUOUS_LOG = "/aws-glue/jobs/logs-v2-{config}"


class TrainingSetJob(Construct):
    """Exposes ``job``, ``role``, ``security_configuration``, ``log_groups`` (output, error,
    continuous), ``script`` and ``package`` (the two assets).

    ``bucket`` and ``key``: the offline store's bucket and its CMK (a key of this stack: its
    policy is extended for the job's log groups). ``database_name``/``raw_table_name``: the raw
    events table in the Glue Data Catalog, whose location the job reads; ``raw_prefix`` its
    prefix in ``bucket``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        key: kms.IKey,
        database_name: str,
        raw_table_name: str = "raw_events",
        raw_prefix: str = "raw/",
        job_props: Mapping[str, Any] | None = None,
        log_retention_days: int = LOG_RETENTION_DAYS,
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
    ) -> None:
        super().__init__(scope, construct_id)
        unknown = sorted(set(job_props or {}) - set(JOB_PROP_NAMES))
        if unknown:
            raise ConstructPropsError(
                f"TrainingSetJob: prop '{unknown[0]}' of job_props is not one of "
                f"{', '.join(JOB_PROP_NAMES)} (the rest is enforced by the construct)"
            )
        stack = Stack.of(self)
        config_name = f"{stack.stack_name}-{construct_id}"
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(
                "glue.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            ),
            description="Fastbreak training-set job: reads raw/ and writes training-sets/",
        )
        names = {"config": config_name, "role": self.role.role_name}
        # Named, not referenced: the key's policy names them and they name the key.
        self._log_group_names = {
            "output": OUTPUT_LOG.format(**names), "error": ERROR_LOG.format(**names),
            "continuous": CONTINUOUS_LOG.format(**names),
        }
        self._let_logs_use(key, stack)
        self.log_groups: dict[str, logs.LogGroup] = {
            name: logs.LogGroup(
                self, f"{name.capitalize()}Logs", log_group_name=log_group_name,
                encryption_key=key, retention=log_retention(log_retention_days),
                removal_policy=removal_policy,
            )
            for name, log_group_name in self._log_group_names.items()
        }
        self.security_configuration = glue.SecurityConfiguration(
            self,
            "SecurityConfiguration",
            security_configuration_name=config_name,
            s3_encryption=glue.S3Encryption.kms(key),
            cloud_watch_encryption=glue.CloudWatchEncryption.kms(key),
            job_bookmarks_encryption=glue.JobBookmarksEncryption.client_side_kms(key),
        )
        self.script = s3_assets.Asset(self, "Script", path=str(JOB_SCRIPT))
        self.package = s3_assets.Asset(self, "Package", path=str(package_archive()))
        props = merge_props("TrainingSetJob", TRAINING_SET_JOB, job_props, {})
        self.job = glue.PySparkEtlJob(
            self,
            "Job",
            # Immutable: the L2 would grant read on the whole assets bucket; ``_grant`` gives
            # the role exactly the two objects.
            role=self.role.without_policy_updates(),
            script=glue.Code.from_bucket(self.script.bucket, self.script.s3_object_key),
            extra_python_files=[
                glue.Code.from_bucket(self.package.bucket, self.package.s3_object_key)],
            glue_version=GLUE_VERSION,
            security_configuration=self.security_configuration,
            continuous_logging=glue.ContinuousLoggingProps(
                enabled=True, log_group=self.log_groups["continuous"], quiet=True),
            enable_metrics=True,
            worker_configuration=glue.WorkerConfiguration(
                worker_type=props["worker_type"], number_of_workers=props["number_of_workers"]),
            timeout=props["timeout"],
            max_retries=props["max_retries"],
            max_concurrent_runs=props["max_concurrent_runs"],
            job_run_queuing_enabled=props["job_run_queuing_enabled"],
            description=props["description"],
            job_name=props.get("job_name"),
            default_arguments={
                RAW_TABLE_ARGUMENT: f"{database_name}.{raw_table_name}",
                TRAINING_SETS_ARGUMENT: bucket.s3_url_for_object(TRAINING_SETS_PREFIX),
                # Every run builds what it is asked for from the whole raw table.
                "--job-bookmark-option": "job-bookmark-disable",
            },
        )
        self.job.node.add_dependency(*self.log_groups.values())
        self._grant(bucket, key, database_name, raw_table_name, raw_prefix, stack)
        self._acknowledge_findings(bucket, raw_prefix)

    def _let_logs_use(self, key: kms.IKey, stack: Stack) -> None:
        """CloudWatch Logs encrypts the job's three log groups with the key: its documented
        control is the log group's ARN in the encryption context."""
        added = key.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowTrainingSetJobLogGroups",
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
            actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*",
                     "kms:Describe*"],
            resources=["*"],
            conditions={"ArnEquals": {"kms:EncryptionContext:aws:logs:arn": [
                self._log_group_arn(name) for name in self._log_group_names.values()]}},
        ))
        if not added.statement_added:
            raise ConstructPropsError(
                "TrainingSetJob: prop 'key' must be a key of this stack: its policy must let "
                "CloudWatch Logs encrypt the job's log groups"
            )

    def _log_group_arn(self, name: str) -> str:
        return Stack.of(self).format_arn(service="logs", resource="log-group",
                                         resource_name=name,
                                         arn_format=ArnFormat.COLON_RESOURCE_NAME)

    def _grant(self, bucket: s3.IBucket, key: kms.IKey, database_name: str,
               raw_table_name: str, raw_prefix: str, stack: Stack) -> None:
        statements = [
            iam.PolicyStatement(
                sid="ReadRawTableSchema",
                actions=["glue:GetTable"],
                resources=glue_table_arns(stack, database_name, raw_table_name),
            ),
            iam.PolicyStatement(
                sid="ReadRawEventsAndSpines",
                actions=["s3:GetObject"],
                resources=[bucket.arn_for_objects(f"{raw_prefix}*"),
                           bucket.arn_for_objects(f"{TRAINING_SETS_PREFIX}*")],
            ),
            iam.PolicyStatement(
                sid="WriteTrainingSets",
                actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[bucket.arn_for_objects(f"{TRAINING_SETS_PREFIX}*")],
            ),
            iam.PolicyStatement(
                sid="ListThosePrefixes",
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{raw_prefix}*",
                                                         f"{TRAINING_SETS_PREFIX}*"]}},
            ),
            iam.PolicyStatement(
                sid="UseTheBucketKeyThroughS3",
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                resources=[key.key_arn],
                conditions={
                    "StringEquals": {"kms:ViaService": f"s3.{stack.region}.amazonaws.com"},
                    # The bucket uses an S3 Bucket Key: the context is the bucket, not the object.
                    "StringLike": {"kms:EncryptionContext:aws:s3:arn": [
                        bucket.bucket_arn, bucket.arn_for_objects("*")]},
                },
            ),
            iam.PolicyStatement(
                sid="ReadTheJobAssets",
                actions=["s3:GetObject"],
                resources=[asset.bucket.arn_for_objects(asset.s3_object_key)
                           for asset in (self.script, self.package)],
            ),
            iam.PolicyStatement(
                sid="WriteTheJobLogs",
                actions=["logs:CreateLogGroup", "logs:AssociateKmsKey", "logs:CreateLogStream",
                         "logs:PutLogEvents"],
                resources=[arn for name in self._log_group_names.values()
                           for arn in (self._log_group_arn(name),
                                       f"{self._log_group_arn(name)}:*")],
            ),
            iam.PolicyStatement(
                sid="PutJobMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": "Glue"}},
            ),
        ]
        for statement in statements:
            self.role.add_to_policy(statement)

    def _acknowledge_findings(self, bucket: s3.IBucket, raw_prefix: str) -> None:
        findings = {
            iam5_resource_finding(self, bucket.arn_for_objects(f"{raw_prefix}*")): (
                "the job reads the raw table's Parquet files, which Firehose names per event "
                "hour under raw/event_date=.../event_hour=...; nothing outside raw/"),
            iam5_resource_finding(self, bucket.arn_for_objects(f"{TRAINING_SETS_PREFIX}*")): (
                "spines and training sets are named by the run's arguments, under "
                "training-sets/ only; the job may not delete, nor write another prefix"),
            "AwsSolutions::AwsSolutions-IAM5[Resource::*]": (
                "cloudwatch:PutMetricData has no resource-level permissions; it is limited to "
                "the Glue namespace by condition"),
            "NIST.800.53.R5::NIST.800.53.R5-IAMNoInlinePolicy": (
                "one inline policy for this job's role, used by this job only; a "
                "customer-managed policy would be attached nowhere else"),
        }
        for name in self._log_group_names.values():
            findings[iam5_resource_finding(self, f"{self._log_group_arn(name)}:*")] = (
                "Glue names a log stream per job run and executor inside the job's own log "
                "group; the grant is limited to that group")
        acknowledge(self.role, findings)


def package_archive() -> Path:
    """The ``fastbreak`` package as a zip of its Python files (and ``py.typed``), byte for byte
    the same for the same sources (fixed times, sorted names), so that the asset's hash changes
    only when the code does. Written once per content to the temporary folder."""
    files = sorted(
        path for path in PACKAGE_DIR.rglob("*")
        if path.is_file() and path.suffix in (".py", ".typed") and "__pycache__" not in path.parts
    )
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(PACKAGE_DIR.parent)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    archive = Path(tempfile.gettempdir()) / f"fastbreak-glue-{digest.hexdigest()[:16]}" / \
        "fastbreak.zip"
    if not archive.exists():
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_name(f".{uuid.uuid4().hex}.partial")  # another synth may race
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zipped:
            for path in files:
                info = zipfile.ZipInfo(str(path.relative_to(PACKAGE_DIR.parent)),
                                       date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zipped.writestr(info, path.read_bytes())
        partial.replace(archive)
    return archive
