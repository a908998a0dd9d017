"""A PyFlink application on Managed Service for Apache Flink, with the kit's defaults.

Built on the ``aws-kinesisanalytics-flink-alpha`` L2 (``Application``, runtime Flink 2.2):

- the code is a zip (``fastbreak_flink.package``: the Python code, its Python dependencies and
  one jar of connectors) in S3, ``code_bucket`` + ``code_key`` (``code_encryption_key`` when a
  customer-managed key encrypts it: the role may decrypt with it, nothing more), or a local
  zip that CDK uploads as an asset (``code_zip``); one of the two;
- the role is the application's own, allowed to read the code object (not its bucket), write
  its log stream and nothing else: the stack grants what the job reaches (``role``). The L2
  would grant read on the whole code bucket and ``cloudwatch:PutMetricData`` in every
  namespace; it gets the role without policy updates, and this construct states the grants;
- logs go to ``log_group`` (the stack's encrypted group), at INFO;
- checkpoints, snapshots and autoscaling on (``defaults.FLINK_APPLICATION``);
- the run options (``kinesis.analytics.flink.run.options``) name the zip's entry point, its
  jar and its Python folder; ``job_properties`` become the job's property group.

``application_props`` (the L2's props) override the defaults except what is enforced: the
runtime, the code, the role, the log group and the property groups. Exposes ``application``,
``role`` and ``log_group``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aws_cdk.aws_kinesisanalytics_flink_alpha as flink
from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from constructs_lib.defaults import FLINK_APPLICATION
from constructs_lib.nag import acknowledge, iam5_resource_finding
from constructs_lib.props import ConstructPropsError, merge_props
from fastbreak_flink.settings import ZIP_ENTRY, ZIP_JAR, ZIP_PYTHON

RUN_OPTIONS_GROUP = "kinesis.analytics.flink.run.options"
# The zip's layout, as fastbreak_flink.package writes it.
RUN_OPTIONS: Mapping[str, str] = {"python": ZIP_ENTRY, "jarfile": ZIP_JAR, "pyFiles": ZIP_PYTHON}


class FlinkApplication(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        log_group: logs.ILogGroup,
        job_property_group: str,
        job_properties: Mapping[str, str],
        code_bucket: s3.IBucket | None = None,
        code_key: str | None = None,
        code_encryption_key: kms.IKey | None = None,
        code_zip: str | None = None,
        application_name: str | None = None,
        application_props: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        code_bucket, code_key = _code_object(self, code_bucket, code_key, code_encryption_key,
                                             code_zip)
        if job_property_group == RUN_OPTIONS_GROUP:
            raise ConstructPropsError(
                f"FlinkApplication: prop 'job_property_group' cannot be {RUN_OPTIONS_GROUP}")
        self.log_group = log_group
        self.role = iam.Role(
            self, "Role",
            assumed_by=iam.ServicePrincipal("kinesisanalytics.amazonaws.com"),
            description="Fastbreak: the audience stage's Flink application",
        )
        enforced: dict[str, Any] = {
            "runtime": flink.Runtime.FLINK_2_2,
            "code": flink.ApplicationCode.from_bucket(code_bucket, code_key),
            "role": self.role.without_policy_updates(),
            "log_group": log_group,
            "property_groups": {RUN_OPTIONS_GROUP: dict(RUN_OPTIONS),
                                job_property_group: dict(job_properties)},
        }
        if application_name is not None:
            enforced["application_name"] = application_name
        props = merge_props(
            "FlinkApplication",
            {**FLINK_APPLICATION, "log_level": flink.LogLevel.INFO,
             "metrics_level": flink.MetricsLevel.APPLICATION},
            application_props, enforced,
        )
        self.application = flink.Application(self, "Application", **props)
        self._grant_service_needs(code_bucket, code_key, code_encryption_key, log_group)

    def _grant_service_needs(self, bucket: s3.IBucket, key: str,
                             encryption_key: kms.IKey | None, log_group: logs.ILogGroup) -> None:
        """What Managed Flink itself does with the role: fetch the code, write the log
        stream, publish the application's metrics."""
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["s3:GetObject", "s3:GetObjectVersion"],
            resources=[bucket.arn_for_objects(key)]))
        if encryption_key is not None:
            self.role.add_to_principal_policy(iam.PolicyStatement(
                actions=["kms:Decrypt"], resources=[encryption_key.key_arn]))
        stack = Stack.of(self)
        any_log_group = stack.format_arn(service="logs", resource="log-group", resource_name="*",
                                         arn_format=ArnFormat.COLON_RESOURCE_NAME)
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["logs:DescribeLogGroups"], resources=[any_log_group]))
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["logs:DescribeLogStreams"], resources=[log_group.log_group_arn]))
        streams = stack.format_arn(
            service="logs", resource="log-group",
            resource_name=f"{log_group.log_group_name}:log-stream:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME)
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["logs:PutLogEvents"], resources=[streams]))
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"], resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": "AWS/KinesisAnalytics"}}))
        acknowledge(self.role, {
            "AwsSolutions::AwsSolutions-IAM5[Resource::*]": (
                "cloudwatch:PutMetricData supports no resource-level permission; the condition "
                "keeps it to the AWS/KinesisAnalytics namespace"),
            iam5_resource_finding(self, any_log_group): (
                "logs:DescribeLogGroups lists log groups, and supports no narrower resource: "
                "Managed Flink calls it to check the application's log group"),
            iam5_resource_finding(self, log_group.log_group_arn): (
                "DescribeLogStreams in the application's log group (its ARN ends in ':*')"),
            iam5_resource_finding(self, streams): (
                "PutLogEvents in the application's log group: Managed Flink writes its log "
                "stream there (the stream's ARN is not known to IAM before it exists)"),
            "NIST.800.53.R5::NIST.800.53.R5-IAMNoInlinePolicy": (
                "the inline policy of the Flink application's role holds the grants of this one "
                "application; a customer-managed policy would be attached to nothing else"),
        })


def _code_object(scope: Construct, bucket: s3.IBucket | None, key: str | None,
                 encryption_key: kms.IKey | None, zip_path: str | None
                 ) -> tuple[s3.IBucket, str]:
    """Where the application zip is: the object given, or the asset CDK uploads."""
    in_s3 = bucket is not None or key is not None
    if in_s3 and zip_path is not None:
        raise ConstructPropsError(
            "FlinkApplication: pass either 'code_bucket' and 'code_key' or 'code_zip', not both")
    if zip_path is not None:
        if encryption_key is not None:
            raise ConstructPropsError(
                "FlinkApplication: 'code_encryption_key' is for a zip in 'code_bucket'")
        asset = s3_assets.Asset(scope, "Code", path=zip_path)
        return asset.bucket, asset.s3_object_key
    if bucket is None or not key:
        raise ConstructPropsError(
            "FlinkApplication: the application zip is 'code_bucket' with 'code_key', or "
            "'code_zip'")
    return bucket, key
