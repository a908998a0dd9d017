"""The feature API: API Gateway REST with IAM authorization in front of a Lambda that reads
the online store.

Routes: ``GET /v1/features/{entity_type}/{entity_id}?groups=...`` and
``POST /v1/features/batch-get``. API Gateway rejects malformed requests before they cost a
Lambda invocation (request validators and a body model); the handler repeats the checks with
precise messages, since the model cannot know the feature catalog.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from constructs_lib.nag import acknowledge
from constructs_lib.powertools_function import PowertoolsFunction
from constructs_lib.secure_defaults import encrypted_log_group

HANDLER = "fastbreak.handlers.feature_api.handler"
MAX_BATCH_ENTITIES = 100

BATCH_GET_SCHEMA = apigw.JsonSchema(
    schema=apigw.JsonSchemaVersion.DRAFT4,
    title="BatchGetFeatures",
    type=apigw.JsonSchemaType.OBJECT,
    required=["entities"],
    additional_properties=False,
    properties={
        "entities": apigw.JsonSchema(
            type=apigw.JsonSchemaType.ARRAY,
            min_items=1,
            max_items=MAX_BATCH_ENTITIES,
            items=apigw.JsonSchema(
                type=apigw.JsonSchemaType.OBJECT,
                required=["entity_type", "entity_id"],
                additional_properties=False,
                properties={
                    "entity_type": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING),
                    "entity_id": apigw.JsonSchema(
                        type=apigw.JsonSchemaType.STRING, min_length=1, max_length=128
                    ),
                },
            ),
        ),
        "features": apigw.JsonSchema(
            type=apigw.JsonSchemaType.ARRAY,
            items=apigw.JsonSchema(type=apigw.JsonSchemaType.STRING),
        ),
    },
)


class FeatureApi(Construct):
    """Exposes ``api``, ``stage``, ``function``, ``role``, ``log_group`` and
    ``access_log_group``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: Mapping[str, str],
        log_key: kms.IKey,
        throttle_rate_per_second: int = 500,
        throttle_burst: int = 1000,
        reserved_concurrency: int = 50,
        log_retention_days: int = 30,
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
    ) -> None:
        super().__init__(scope, construct_id)
        reader = PowertoolsFunction(
            self,
            "Reader",
            handler=HANDLER,
            description="Fastbreak: serves features from the online store",
            service_name="feature-api",
            environment=environment,
            # Reads are I/O-bound; 512 MB gives enough CPU to merge 100 entities' tiles.
            memory_mb=512,
            timeout=Duration.seconds(10),
            reserved_concurrency=reserved_concurrency,
            log_key=log_key,
            log_retention_days=log_retention_days,
            removal_policy=removal_policy,
        )
        self.function: lambda_.Function = reader.function
        self.role = reader.role
        self.log_group = reader.log_group
        self.access_log_group: logs.LogGroup = encrypted_log_group(
            self,
            "AccessLogs",
            key=log_key,
            retention_days=log_retention_days,
            removal_policy=removal_policy,
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            description="Fastbreak feature API (IAM-signed requests only)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=removal_policy,
            default_method_options=apigw.MethodOptions(
                authorization_type=apigw.AuthorizationType.IAM
            ),
            deploy_options=apigw.StageOptions(
                stage_name="live",
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # never log request bodies: they carry user ids
                throttling_rate_limit=throttle_rate_per_second,
                throttling_burst_limit=throttle_burst,
                access_log_destination=apigw.LogGroupLogDestination(self.access_log_group),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
            ),
        )
        self.stage = self.api.deployment_stage
        integration = apigw.LambdaIntegration(self.function, proxy=True)
        validator = self.api.add_request_validator(
            "RequestValidator", validate_request_parameters=True, validate_request_body=True
        )
        batch_model = self.api.add_model(
            "BatchGetModel", content_type="application/json", schema=BATCH_GET_SCHEMA
        )
        features = self.api.root.add_resource("v1").add_resource("features")
        entity = features.add_resource("{entity_type}").add_resource("{entity_id}")
        entity.add_method(
            "GET",
            integration,
            request_validator=validator,
            request_parameters={
                "method.request.path.entity_type": True,
                "method.request.path.entity_id": True,
                "method.request.querystring.groups": False,
            },
        )
        features.add_resource("batch-get").add_method(
            "POST",
            integration,
            request_validator=validator,
            request_models={"application/json": batch_model},
        )
        self._acknowledge_findings()

    def _acknowledge_findings(self) -> None:
        sync_reason = (
            "API Gateway invokes the reader synchronously and returns its errors to the "
            "caller; a function DLQ applies only to async invocations"
        )
        acknowledge(
            self.function,
            {
                "Serverless::Serverless-LambdaDLQ": sync_reason,
                "NIST.800.53.R5::NIST.800.53.R5-LambdaDLQ": sync_reason,
            },
        )
        waf_reason = (
            "every method requires SigV4-signed requests from IAM principals of the account, "
            "and the stage throttles; unsigned traffic is refused before any integration runs. "
            "Attach a web ACL if the API is shared outside the account"
        )
        for method in self.api.methods:
            acknowledge(
                method,
                {
                    "AwsSolutions::AwsSolutions-COG4": (
                        "callers are ML services with AWS roles, authorized by SigV4 (IAM); "
                        "there are no end users to sign in through Cognito"
                    )
                },
            )
        acknowledge(
            self.stage,
            {
                "NIST.800.53.R5::NIST.800.53.R5-APIGWAssociatedWithWAF": waf_reason,
                "AwsSolutions::AwsSolutions-APIG3": waf_reason,
                "NIST.800.53.R5::NIST.800.53.R5-APIGWCacheEnabledAndEncrypted": (
                    "features change every second during a live game; a response cache would "
                    "serve stale features, so the API reads the online store on every request"
                ),
                "NIST.800.53.R5::NIST.800.53.R5-APIGWSSLEnabled": (
                    "the only backend is a Lambda proxy integration, reached by API Gateway "
                    "inside AWS; a client certificate authenticates HTTP backends only"
                ),
            },
        )
        acknowledge(
            self.api,
            {
                "AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/"
                "service-role/AmazonAPIGatewayPushToCloudWatchLogs]": (
                    "the account-level role API Gateway needs to write this API's access and "
                    "execution logs; AWS maintains the policy's log actions for that service"
                ),
            },
        )
