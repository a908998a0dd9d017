"""Both Lambdas are deployed through a live alias by CodeDeploy, which shifts traffic
gradually and rolls back on its alarms; event sources and the API call the alias."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.conftest import SynthesizedPlatform
from tests.infra.template_queries import logical_id, only

CONFIGS = {"processing": "CodeDeployDefault.LambdaCanary10Percent5Minutes",
           "serving": "CodeDeployDefault.LambdaCanary10Percent10Minutes"}


def alias(platform: SynthesizedPlatform, name: str) -> tuple[str, dict[str, Any]]:
    template = platform.templates[name]
    alias_id = logical_id(template, "AWS::Lambda::Alias")
    return alias_id, template.find_resources("AWS::Lambda::Alias")[alias_id]


@pytest.mark.parametrize("name", ["processing", "serving"])
def test_live_alias_points_at_the_published_version_and_deploys_through_codedeploy(
    dev: SynthesizedPlatform, name: str,
) -> None:
    template = dev.templates[name]
    _, resource = alias(dev, name)
    version_id = logical_id(template, "AWS::Lambda::Version")
    assert resource["Properties"]["Name"] == "live"
    assert resource["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}
    update = resource["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    group_id = logical_id(template, "AWS::CodeDeploy::DeploymentGroup")
    assert update["DeploymentGroupName"] == {"Ref": group_id}


@pytest.mark.parametrize("name", ["processing", "serving"])
def test_deployment_group_is_a_canary_that_rolls_back_on_its_alarms(
    dev: SynthesizedPlatform, name: str,
) -> None:
    template = dev.templates[name]
    group = only(template, "AWS::CodeDeploy::DeploymentGroup")["Properties"]
    assert group["DeploymentConfigName"] == CONFIGS[name]
    assert set(group["AutoRollbackConfiguration"]["Events"]) >= {
        "DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"}
    alarm_ids = {alarm["Name"]["Ref"] for alarm in group["AlarmConfiguration"]["Alarms"]}
    alarms = template.find_resources("AWS::CloudWatch::Alarm")
    assert alarm_ids and alarm_ids <= set(alarms)
    for alarm_id in alarm_ids:
        props = alarms[alarm_id]["Properties"]
        assert props["EvaluationPeriods"] == 1
        assert "canary-rollback" in props["AlarmDescription"]


def test_processor_rollback_watches_the_alias_errors(dev: SynthesizedPlatform) -> None:
    alarms = {a["Properties"]["AlarmName"]: a["Properties"]
              for a in dev.processing.find_resources("AWS::CloudWatch::Alarm").values()}
    errors = alarms["Fastbreak-dev-ProcessorDeployErrors"]
    dimensions = {d["Name"]: d["Value"] for d in errors["Dimensions"]}
    assert errors["MetricName"] == "Errors"
    assert dimensions["Resource"]["Fn::Join"][1][-1] == ":live"


def test_api_rollback_watches_its_5xx_rate_and_alias_errors(dev: SynthesizedPlatform) -> None:
    alarms = {a["Properties"]["AlarmName"]: a["Properties"]
              for a in dev.serving.find_resources("AWS::CloudWatch::Alarm").values()}
    assert set(alarms) == {"Fastbreak-dev-FeatureApiDeployErrors",
                           "Fastbreak-dev-FeatureApiDeployServerErrors"}
    rate = alarms["Fastbreak-dev-FeatureApiDeployServerErrors"]
    assert rate["Threshold"] == 1.0
    names = {q["MetricStat"]["Metric"]["MetricName"] for q in rate["Metrics"] if "MetricStat" in q}
    assert names == {"5XXError", "Count"}


def test_mapping_invokes_the_live_alias(dev: SynthesizedPlatform) -> None:
    mapping = only(dev.processing, "AWS::Lambda::EventSourceMapping")["Properties"]
    alias_id, _ = alias(dev, "processing")
    assert mapping["FunctionName"]["Fn::Join"][1][-1] == ":live"
    assert {"Ref": alias_id} in str_refs(mapping["FunctionName"])


def test_api_integration_and_permissions_target_the_live_alias(
    dev: SynthesizedPlatform,
) -> None:
    alias_id, _ = alias(dev, "serving")
    for method in dev.serving.find_resources("AWS::ApiGateway::Method").values():
        uri = method["Properties"]["Integration"]["Uri"]
        assert {"Ref": alias_id} in str_refs(uri)
    for permission in dev.serving.find_resources("AWS::Lambda::Permission").values():
        assert permission["Properties"]["FunctionName"] == {"Ref": alias_id}


@pytest.mark.parametrize("name", ["processing", "serving"])
def test_codedeploy_role_has_no_managed_policy_and_reaches_only_its_alias(
    dev: SynthesizedPlatform, name: str,
) -> None:
    template = dev.templates[name]
    group = only(template, "AWS::CodeDeploy::DeploymentGroup")["Properties"]
    role_id = group["ServiceRoleArn"]["Fn::GetAtt"][0]
    role = template.find_resources("AWS::IAM::Role")[role_id]["Properties"]
    assert "ManagedPolicyArns" not in role
    (policy,) = [p["Properties"] for p in template.find_resources("AWS::IAM::Policy").values()
                 if p["Properties"]["Roles"] == [{"Ref": role_id}]]
    actions = {action for s in policy["PolicyDocument"]["Statement"]
               for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"lambda:GetAlias", "lambda:UpdateAlias",
                       "lambda:GetProvisionedConcurrencyConfig", "cloudwatch:DescribeAlarms"}
    for statement in policy["PolicyDocument"]["Statement"]:
        assert statement["Resource"] != "*"


def str_refs(value: Any) -> list[Any]:
    """Every {"Ref": ...} inside a template value."""
    if isinstance(value, dict):
        if set(value) == {"Ref"}:
            return [value]
        return [ref for item in value.values() for ref in str_refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in str_refs(item)]
    return []
