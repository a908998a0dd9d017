"""The feature API: API Gateway REST with IAM authorization in front of a Lambda that reads
the online store.

Routes: ``GET /v1/features/{entity_type}/{entity_id}?groups=...`` and
``POST /v1/features/batch-get``. API Gateway rejects malformed requests before they cost a
Lambda invocation (request validators and a body model); the handler repeats the checks with
precise messages, since the model cannot know the feature catalog.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Stack, TimeZone
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from constructs_lib.defaults import (
    API_DEPLOYMENT,
    API_THROTTLE,
    LOG_RETENTION_DAYS,
    MONITORING,
    PROVISIONED_UTILIZATION_TARGET,
    READER_FUNCTION,
)
from constructs_lib.nag import acknowledge
from constructs_lib.powertools_function import PowertoolsFunction
from constructs_lib.props import ConstructPropsError, exactly_one, merge_props
from constructs_lib.safe_deployment import (
    RollbackAlarm,
    SafeDeployment,
    alias_errors,
    named_deployment_config,
)
from constructs_lib.secure_defaults import encrypted_log_group

HANDLER = "fastbreak.handlers.feature_api.handler"
SERVICE_NAME = "feature-api"
STAGE_NAME = "live"
MAX_BATCH_ENTITIES = 100
ACCESS_LOG_FORMAT = apigw.AccessLogFormat.json_with_standard_fields(
    caller=True,
    http_method=True,
    ip=True,
    protocol=True,
    request_time=True,
    resource_path=True,
    response_length=True,
    status=True,
    user=True,
)

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


@dataclass(frozen=True)
class GameWindow:
    """A recurring window of heavy reads (kickoffs on a Saturday afternoon): provisioned
    concurrency is raised to ``min_provisioned`` at ``start`` and back at ``end``.

    ``start`` and ``end`` are Application Auto Scaling cron expressions (six fields, minute
    hour day-of-month month day-of-week year, e.g. ``0 14 ? * SAT *``) in ``time_zone``.
    """

    name: str
    start: str
    end: str
    min_provisioned: int
    time_zone: str = "UTC"


@dataclass(frozen=True)
class ProvisionedConcurrency:
    """Provisioned concurrency of the reader's live alias, scaled by Application Auto Scaling
    between ``minimum`` and ``maximum`` to keep ``utilization_target`` of it in use."""

    minimum: int
    maximum: int
    utilization_target: float = PROVISIONED_UTILIZATION_TARGET
    game_windows: tuple[GameWindow, ...] = ()


class FeatureApi(Construct):
    """Exposes ``api``, ``stage``, ``function``, ``version``, ``alias``, ``role``,
    ``log_group``, ``access_log_group``, ``scaling`` (None without provisioned concurrency)
    and ``deployment``.

    Props, each merged kit defaults (``constructs_lib.defaults``) < user props < enforced:

    - ``function_props`` (``lambda_.Function``): memory, timeout, reserved concurrency...;
      the runtime, handler, code, role, log group, JSON logs and tracing are enforced.
    - ``api_props`` (``apigw.RestApi``): name, description, endpoint types...; IAM
      authorization on every method and no account-level CloudWatch role are enforced.
    - ``stage_props`` (``apigw.StageOptions``): throttling, logging level...; tracing, JSON
      access logs and never logging request bodies (they carry user ids) are enforced.
    - ``log_key`` (new, encrypted log groups) or ``existing_log_group`` and
      ``existing_access_log_group``, not both.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: Mapping[str, str],
        function_props: Mapping[str, Any] | None = None,
        api_props: Mapping[str, Any] | None = None,
        stage_props: Mapping[str, Any] | None = None,
        log_key: kms.IKey | None = None,
        existing_log_group: logs.ILogGroup | None = None,
        existing_access_log_group: logs.ILogGroup | None = None,
        log_retention_days: int = LOG_RETENTION_DAYS,
        provisioned_concurrency: ProvisionedConcurrency | None = None,
        deployment: str = API_DEPLOYMENT,
        rollback_5xx_percent: float = MONITORING["api_5xx_rate_percent"],
        name_prefix: str | None = None,
        runbook_base_url: str = "",
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
    ) -> None:
        super().__init__(scope, construct_id)
        existing = existing_log_group or existing_access_log_group
        exactly_one("FeatureApi", "existing_log_group", existing, "log_key", log_key)
        if log_key is None and (existing_log_group is None or existing_access_log_group is None):
            raise ConstructPropsError(
                "FeatureApi: pass both 'existing_log_group' and 'existing_access_log_group', "
                "or 'log_key' to create both"
            )
        deployment_config = named_deployment_config("FeatureApi", deployment)
        prefix = name_prefix or Stack.of(self).stack_name
        function_defaults = {
            **READER_FUNCTION,
            "description": "Fastbreak: serves features from the online store",
        }
        if provisioned_concurrency is not None:
            reserved = {**function_defaults, **(function_props or {})}.get(
                "reserved_concurrent_executions"
            )
            _check_provisioned(provisioned_concurrency, reserved)
        reader = PowertoolsFunction(
            self,
            "Reader",
            handler=HANDLER,
            service_name=SERVICE_NAME,
            environment=environment,
            reaches="DynamoDB and X-Ray",
            defaults=function_defaults,
            function_props=function_props,
            log_group=existing_log_group,
            log_key=log_key,
            log_retention_days=log_retention_days,
            provisioned_concurrency=(
                provisioned_concurrency.minimum if provisioned_concurrency else None
            ),
            removal_policy=removal_policy,
        )
        self.function: lambda_.Function = reader.function
        self.version = reader.version
        self.alias = reader.alias
        self.role = reader.role
        self.log_group = reader.log_group
        if existing_access_log_group is None:
            assert log_key is not None
            existing_access_log_group = encrypted_log_group(
                self, "AccessLogs", key=log_key, retention_days=log_retention_days,
                removal_policy=removal_policy,
            )
        self.access_log_group: logs.ILogGroup = existing_access_log_group
        stage_options = merge_props(
            "FeatureApi",
            {**API_THROTTLE, "stage_name": STAGE_NAME, "metrics_enabled": True,
             "logging_level": apigw.MethodLoggingLevel.ERROR},
            stage_props,
            {
                "tracing_enabled": True,
                "data_trace_enabled": False,  # never log request bodies: they carry user ids
                "access_log_destination": apigw.LogGroupLogDestination(self.access_log_group),
                "access_log_format": ACCESS_LOG_FORMAT,
            },
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            **merge_props(
                "FeatureApi",
                {
                    # Per environment: alarms select the API by this name.
                    "rest_api_name": f"{prefix}-FeatureApi",
                    "description": "Fastbreak feature API (IAM-signed requests only)",
                    "endpoint_types": [apigw.EndpointType.REGIONAL],
                },
                api_props,
                {
                    # The account-level role API Gateway logs with belongs to the account, not
                    # to this API: a stack that owned it would break logging for every API of
                    # the region when deleted (docs/architecture.md, "API Gateway logging").
                    "cloud_watch_role": False,
                    "default_method_options": apigw.MethodOptions(
                        authorization_type=apigw.AuthorizationType.IAM
                    ),
                    "deploy_options": apigw.StageOptions(**stage_options),
                },
            ),
        )
        self.stage = self.api.deployment_stage
        self._add_routes()
        self.scaling: lambda_.IScalableFunctionAttribute | None = None
        if provisioned_concurrency is not None:
            self.scaling = _scale(self.alias, provisioned_concurrency)
        self.deployment = SafeDeployment(
            self,
            "Deployment",
            alias=self.alias,
            deployment_config=deployment_config,
            name_prefix=prefix,
            runbook_base_url=runbook_base_url,
            alarms=[
                alias_errors(
                    "FeatureApiDeployErrors",
                    "The live alias of the feature API reader failed invocations.", self.alias,
                ),
                RollbackAlarm(
                    "FeatureApiDeployServerErrors",
                    f"Over {rollback_5xx_percent}% of feature requests failed with 5xx.",
                    server_error_rate(self.api),
                    rollback_5xx_percent,
                ),
            ],
        )
        self._acknowledge_findings()

    def _add_routes(self) -> None:
        integration = apigw.LambdaIntegration(self.alias, proxy=True)
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


def server_error_rate(api: apigw.RestApi) -> cloudwatch.MathExpression:
    """The share of the API's requests answered 5xx, in percent, per minute."""
    return cloudwatch.MathExpression(
        expression="IF(requests > 0, 100 * errors / requests, 0)",
        using_metrics={
            "errors": api.metric_server_error(statistic="Sum", period=Duration.minutes(1)),
            "requests": api.metric_count(statistic="Sum", period=Duration.minutes(1)),
        },
        label="5xx rate (%)",
        period=Duration.minutes(1),
    )


def _check_provisioned(config: ProvisionedConcurrency, reserved: int | None) -> None:
    if not 1 <= config.minimum <= config.maximum:
        raise ConstructPropsError(
            "FeatureApi: prop 'provisioned_concurrency' needs 1 <= minimum <= maximum, got "
            f"{config.minimum}..{config.maximum}"
        )
    # Lambda carves provisioned concurrency out of the function's reserved concurrency.
    if reserved is not None and config.maximum > reserved:
        raise ConstructPropsError(
            f"FeatureApi: prop 'provisioned_concurrency' maximum {config.maximum} exceeds the "
            f"function's reserved concurrency {reserved}"
        )
    if not 0.1 <= config.utilization_target <= 0.9:
        raise ConstructPropsError(
            "FeatureApi: prop 'provisioned_concurrency' utilization_target must be within "
            "0.1..0.9"
        )
    for window in config.game_windows:
        if not config.minimum <= window.min_provisioned <= config.maximum:
            raise ConstructPropsError(
                f"FeatureApi: game window '{window.name}' min_provisioned "
                f"{window.min_provisioned} must be within {config.minimum}..{config.maximum}"
            )


def _scale(alias: lambda_.Alias, config: ProvisionedConcurrency
           ) -> lambda_.IScalableFunctionAttribute:
    scaling = alias.add_auto_scaling(min_capacity=config.minimum, max_capacity=config.maximum)
    scaling.scale_on_utilization(utilization_target=config.utilization_target)
    for window in config.game_windows:
        zone = TimeZone.of(window.time_zone)
        scaling.scale_on_schedule(
            f"{window.name}-start", schedule=appscaling.Schedule.expression(
                f"cron({window.start})"), min_capacity=window.min_provisioned, time_zone=zone,
        )
        scaling.scale_on_schedule(
            f"{window.name}-end", schedule=appscaling.Schedule.expression(
                f"cron({window.end})"), min_capacity=config.minimum, time_zone=zone,
        )
    return scaling
