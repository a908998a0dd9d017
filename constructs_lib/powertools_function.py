"""A Python Lambda with the kit's defaults: python3.14 on arm64, the public Powertools layer,
active tracing, its own encrypted log group, and a role with no AWS-managed policies.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from constructs_lib.nag import acknowledge
from constructs_lib.secure_defaults import encrypted_log_group

LAMBDA_ASSET_DIR = Path(__file__).resolve().parent.parent / "lambdas"

# The public layer's version number for the Powertools release pinned in requirements.txt
# (3.31.1). Bump both together: the layer carries the library the handlers import.
POWERTOOLS_VERSION = "3.31.1"
POWERTOOLS_LAYER_VERSION = 36
POWERTOOLS_LAYER_ACCOUNT = "017000801446"

RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64

# Keep tests, caches and local tooling out of the asset that is uploaded to Lambda.
ASSET_EXCLUDES = ["**/__pycache__", "**/*.pyc", "**/.mypy_cache", "**/.pytest_cache"]


def powertools_layer_arn(region: str) -> str:
    return (
        f"arn:aws:lambda:{region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-python314-arm64:{POWERTOOLS_LAYER_VERSION}"
    )


class PowertoolsFunction(Construct):
    """Exposes ``function``, ``role`` and ``log_group``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: str,
        description: str,
        service_name: str,
        environment: Mapping[str, str],
        memory_mb: int,
        timeout: Duration,
        reserved_concurrency: int,
        log_key: kms.IKey,
        log_retention_days: int,
        removal_policy: RemovalPolicy,
        reaches: str = "Kinesis, DynamoDB, S3 and X-Ray",
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group: logs.LogGroup = encrypted_log_group(
            self,
            "LogGroup",
            key=log_key,
            retention_days=log_retention_days,
            removal_policy=removal_policy,
        )
        # An explicit role instead of the L2 default, which attaches the AWS-managed
        # AWSLambdaBasicExecutionRole with logs:* on every log group of the account.
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Fastbreak {service_name}: writes only to its own log group",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        layer = lambda_.LayerVersion.from_layer_version_arn(
            self, "PowertoolsLayer", powertools_layer_arn(Stack.of(self).region)
        )
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=handler,
            code=lambda_.Code.from_asset(str(LAMBDA_ASSET_DIR), exclude=ASSET_EXCLUDES),
            layers=[layer],
            description=description,
            memory_size=memory_mb,
            timeout=timeout,
            reserved_concurrent_executions=reserved_concurrency,
            tracing=lambda_.Tracing.ACTIVE,
            role=self.role,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            environment={
                "POWERTOOLS_SERVICE_NAME": service_name,
                "POWERTOOLS_METRICS_NAMESPACE": "Fastbreak",
                "POWERTOOLS_LOG_LEVEL": "INFO",
                **environment,
            },
        )
        acknowledge(
            self,
            {
                "AwsSolutions::AwsSolutions-IAM5[Resource::*]": (
                    "xray:PutTraceSegments and xray:PutTelemetryRecords, added by active "
                    "tracing, support no resource-level permissions"
                ),
                "NIST.800.53.R5::NIST.800.53.R5-IAMNoInlinePolicy": (
                    f"the inline policy of the {service_name} role holds the grants of this one "
                    "function; a customer-managed policy would be attached to nothing else"
                ),
                "NIST.800.53.R5::NIST.800.53.R5-LambdaInsideVPC": (
                    f"{service_name} reaches only {reaches} through "
                    "IAM-authorized AWS endpoints; a VPC would add NAT cost and cold-start time "
                    "without shielding any private resource"
                ),
            },
        )
