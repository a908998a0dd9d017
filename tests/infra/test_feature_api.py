from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Template

from constructs_lib import ConstructPropsError, FeatureApi
from constructs_lib.feature_api import GameWindow, ProvisionedConcurrency
from tests.infra.conftest import SynthesizedPlatform
from tests.infra.template_queries import only


def test_every_method_requires_iam_and_a_request_validator(dev: SynthesizedPlatform) -> None:
    methods = dev.serving.find_resources("AWS::ApiGateway::Method")
    assert len(methods) == 2
    for method in methods.values():
        assert method["Properties"]["AuthorizationType"] == "AWS_IAM"
        assert "RequestValidatorId" in method["Properties"]


def test_routes_are_the_documented_ones(dev: SynthesizedPlatform) -> None:
    parts = {r["Properties"]["PathPart"]
             for r in dev.serving.find_resources("AWS::ApiGateway::Resource").values()}
    assert parts == {"v1", "features", "{entity_type}", "{entity_id}", "batch-get"}


def test_batch_get_body_model_caps_entities_at_100_and_refuses_unknown_fields(
    dev: SynthesizedPlatform,
) -> None:
    model = only(dev.serving, "AWS::ApiGateway::Model")["Properties"]["Schema"]
    assert model["properties"]["entities"]["maxItems"] == 100
    assert model["additionalProperties"] is False
    assert model["properties"]["entities"]["items"]["additionalProperties"] is False


def test_stage_traces_throttles_and_writes_json_access_logs(dev: SynthesizedPlatform) -> None:
    stage = only(dev.serving, "AWS::ApiGateway::Stage")["Properties"]
    assert stage["TracingEnabled"] is True
    assert stage["AccessLogSetting"]["Format"].startswith("{")
    [settings] = stage["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == 500
    assert settings["ThrottlingBurstLimit"] == 1000
    assert settings["DataTraceEnabled"] is False


def test_prod_api_allows_more_traffic(prod: SynthesizedPlatform) -> None:
    [settings] = only(prod.serving, "AWS::ApiGateway::Stage")["Properties"]["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == 2000


def test_reader_can_only_read_the_online_store(dev: SynthesizedPlatform) -> None:
    dynamodb_actions = {
        action
        for policy in dev.serving.find_resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        for action in ([statement["Action"]] if isinstance(statement["Action"], str)
                       else statement["Action"])
        if action.startswith("dynamodb:")
    }
    assert dynamodb_actions == {"dynamodb:BatchGetItem", "dynamodb:Query"}


def test_no_stack_owns_the_account_level_api_gateway_logging_role(
    dev: SynthesizedPlatform, prod: SynthesizedPlatform,
) -> None:
    for platform in (dev, prod):
        for template in platform.templates.values():
            assert template.find_resources("AWS::ApiGateway::Account") == {}
            for role in template.find_resources("AWS::IAM::Role").values():
                assert "AmazonAPIGatewayPushToCloudWatchLogs" not in json.dumps(role)


def test_reader_acknowledgement_names_only_what_the_reader_reaches(
    dev: SynthesizedPlatform,
) -> None:
    report = json.loads((Path(dev.assembly.directory) / "validation-report.json").read_text())
    (reason,) = [
        violation["reason"]
        for plugin in report["pluginReports"]
        for violation in plugin.get("suppressedViolations", [])
        if violation["acknowledgedId"].endswith("LambdaInsideVPC")
        and violation["acknowledgedAt"].startswith("Fastbreak-dev-Serving/")
    ]
    assert "reaches only DynamoDB and X-Ray" in reason


def test_prod_reader_keeps_provisioned_concurrency_scaled_on_utilization(
    prod: SynthesizedPlatform,
) -> None:
    alias = only(prod.serving, "AWS::Lambda::Alias")["Properties"]
    assert alias["ProvisionedConcurrencyConfig"] == {"ProvisionedConcurrentExecutions": 10}
    target = only(prod.serving, "AWS::ApplicationAutoScaling::ScalableTarget")["Properties"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (10, 100)
    assert target["ScalableDimension"] == "lambda:function:ProvisionedConcurrency"
    policy = only(prod.serving, "AWS::ApplicationAutoScaling::ScalingPolicy")["Properties"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 0.7
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "LambdaProvisionedConcurrencyUtilization")


def test_dev_reader_has_no_provisioned_concurrency(dev: SynthesizedPlatform) -> None:
    assert "ProvisionedConcurrencyConfig" not in only(dev.serving, "AWS::Lambda::Alias")[
        "Properties"]
    assert dev.serving.find_resources("AWS::ApplicationAutoScaling::ScalableTarget") == {}


def reader_api(stack: cdk.Stack, **props: Any) -> FeatureApi:
    key = kms.Key(stack, "LogKey", enable_key_rotation=True)
    return FeatureApi(stack, "Api", environment={}, log_key=key, **props)


def test_game_windows_raise_provisioned_concurrency_and_lower_it_after(
    stack: cdk.Stack,
) -> None:
    window = GameWindow("saturday", "0 14 ? * SAT *", "0 20 ? * SAT *", 80, "Europe/London")
    reader_api(stack, function_props={"reserved_concurrent_executions": 100},
               provisioned_concurrency=ProvisionedConcurrency(10, 100, game_windows=(window,)))
    target = only(Template.from_stack(stack), "AWS::ApplicationAutoScaling::ScalableTarget")
    actions = {a["ScheduledActionName"]: a for a in target["Properties"]["ScheduledActions"]}
    start, end = actions["saturday-start"], actions["saturday-end"]
    assert start["Schedule"] == "cron(0 14 ? * SAT *)"
    assert start["ScalableTargetAction"] == {"MinCapacity": 80}
    assert end["Schedule"] == "cron(0 20 ? * SAT *)"
    assert end["ScalableTargetAction"] == {"MinCapacity": 10}
    assert start["Timezone"] == "Europe/London"


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"api_props": {"cloud_watch_role": True}}, "'cloud_watch_role' is enforced"),
        ({"api_props": {"default_method_options": apigw.MethodOptions(
            authorization_type=apigw.AuthorizationType.NONE)}},
         "'default_method_options' is enforced"),
        ({"stage_props": {"data_trace_enabled": True}}, "'data_trace_enabled' is enforced"),
        ({"function_props": {"runtime": lambda_.Runtime.PYTHON_3_12}}, "'runtime' is enforced"),
        ({"provisioned_concurrency": ProvisionedConcurrency(10, 60)},
         "maximum 60 exceeds the function's reserved concurrency 50"),
    ],
)
def test_forbidden_feature_api_props_are_refused_naming_the_prop(
    stack: cdk.Stack, props: dict[str, Any], message: str,
) -> None:
    with pytest.raises(ConstructPropsError, match=message):
        reader_api(stack, **props)


def test_existing_log_groups_and_a_log_key_together_are_refused(stack: cdk.Stack) -> None:
    group = logs.LogGroup.from_log_group_name(stack, "Existing", "reader")
    with pytest.raises(ConstructPropsError, match="either 'existing_log_group' or 'log_key'"):
        reader_api(stack, existing_log_group=group, existing_access_log_group=group)


def test_user_props_override_the_kit_defaults(stack: cdk.Stack) -> None:
    reader_api(stack, function_props={"memory_size": 1024},
               stage_props={"throttling_rate_limit": 42},
               api_props={"rest_api_name": "features"})
    template = Template.from_stack(stack)
    assert only(template, "AWS::Lambda::Function")["Properties"]["MemorySize"] == 1024
    [settings] = only(template, "AWS::ApiGateway::Stage")["Properties"]["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == 42
    assert only(template, "AWS::ApiGateway::RestApi")["Properties"]["Name"] == "features"
