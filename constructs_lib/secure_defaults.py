"""Secure building blocks shared by the Fastbreak constructs (the kit's ``*-defaults``).

Each returns a resource with encryption, TLS-only access and bounded retention already set, so
a construct composes them instead of repeating the same dozen properties.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct


def customer_managed_key(
    scope: Construct, construct_id: str, *, description: str, removal_policy: RemovalPolicy
) -> kms.Key:
    """A KMS key with yearly rotation; deleting it waits the maximum 30 days."""
    return kms.Key(
        scope,
        construct_id,
        description=description,
        enable_key_rotation=True,
        pending_window=Duration.days(30),
        removal_policy=removal_policy,
    )


def log_encryption_key(
    scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy
) -> kms.Key:
    """A key CloudWatch Logs may use only for this stack's log groups.

    CloudWatch Logs names the log group in the encryption context of every KMS call; that
    condition is its documented confused-deputy control (it sends no ``aws:SourceArn``).
    CloudFormation names a log group ``<stack name>-<logical id>-<suffix>`` when the template
    does not, so the pattern admits exactly the groups of this stack.
    """
    key = customer_managed_key(
        scope,
        construct_id,
        description="Fastbreak: encrypts the CloudWatch log groups of this stack",
        removal_policy=removal_policy,
    )
    stack = Stack.of(scope)
    key.add_to_resource_policy(
        iam.PolicyStatement(
            sid="AllowLogGroupsOfThisStack",
            principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
            # The actions the CloudWatch Logs documentation lists for an encrypted log group.
            actions=[
                "kms:Encrypt*",
                "kms:Decrypt*",
                "kms:ReEncrypt*",
                "kms:GenerateDataKey*",
                "kms:Describe*",
            ],
            resources=["*"],
            conditions={
                "ArnLike": {
                    "kms:EncryptionContext:aws:logs:arn": stack.format_arn(
                        service="logs", resource="log-group",
                        resource_name=f"{stack.stack_name}-*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                }
            },
        )
    )
    return key


def encrypted_log_group(
    scope: Construct,
    construct_id: str,
    *,
    key: kms.IKey,
    retention_days: int,
    removal_policy: RemovalPolicy,
) -> logs.LogGroup:
    return logs.LogGroup(
        scope,
        construct_id,
        encryption_key=key,
        retention=log_retention(retention_days),
        removal_policy=removal_policy,
    )


_RETENTION_BY_DAYS = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


def log_retention(days: int) -> logs.RetentionDays:
    if days not in _RETENTION_BY_DAYS:
        raise ValueError(f"{days} is not a CloudWatch Logs retention period")
    return _RETENTION_BY_DAYS[days]


def access_log_bucket(
    scope: Construct, construct_id: str, *, expiry_days: int, removal_policy: RemovalPolicy
) -> s3.Bucket:
    """Target of S3 server access logs: SSE-S3, because log delivery cannot use SSE-KMS."""
    return s3.Bucket(
        scope,
        construct_id,
        encryption=s3.BucketEncryption.S3_MANAGED,
        enforce_ssl=True,
        minimum_tls_version=1.2,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        versioned=True,
        lifecycle_rules=[
            s3.LifecycleRule(
                expiration=Duration.days(expiry_days),
                noncurrent_version_expiration=Duration.days(7),
                abort_incomplete_multipart_upload_after=Duration.days(1),
            )
        ],
        removal_policy=removal_policy,
        auto_delete_objects=False,
    )


def encrypted_data_bucket(
    scope: Construct,
    construct_id: str,
    *,
    key: kms.IKey,
    access_logs: s3.IBucket,
    access_log_prefix: str,
    lifecycle_rules: list[s3.LifecycleRule],
    removal_policy: RemovalPolicy,
) -> s3.Bucket:
    """SSE-KMS with a bucket key (one KMS call per object batch, not per object), versioned,
    TLS-only, private, access-logged."""
    return s3.Bucket(
        scope,
        construct_id,
        encryption=s3.BucketEncryption.KMS,
        encryption_key=key,
        bucket_key_enabled=True,
        enforce_ssl=True,
        minimum_tls_version=1.2,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        versioned=True,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=access_log_prefix,
        lifecycle_rules=lifecycle_rules,
        removal_policy=removal_policy,
    )
