"""Every Lambda that serves traffic (the two stream consumers and the feature API's reader) is
deployed through a live alias by CodeDeploy, which shifts traffic gradually and rolls back on
its alarms; event sources and the API call the alias."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.conftest import SynthesizedPlatform
from tests.infra.template_queries import named

# (stack, construct id) of each alias, and its canary
CONFIGS = {("processing", "StreamProcessor"): "CodeDeployDefault.LambdaCanary10Percent5Minutes",
           ("processing", "AudienceStage"): "CodeDeployDefault.LambdaCanary10Percent5Minutes",
           ("serving", "FeatureApi"): "CodeDeployDefault.LambdaCanary10Percent10Minutes"}


def _of(template: Any, resource_type: str, prefix: str) -> tuple[str, dict[str, Any]]:
    (found,) = [(logical, resource) for logical, resource in
                template.find_resources(resource_type).items() if logical.startswith(prefix)]
    return found


def alias(platform: SynthesizedPlatform, name: str, prefix: str) -> tuple[str, dict[str, Any]]:
    return _of(platform.templates[name], "AWS::Lambda::Alias", prefix)


@pytest.mark.parametrize(("name", "prefix"), list(CONFIGS))
def test_live_alias_points_at_the_published_version_and_deploys_through_codedeploy(
    dev: SynthesizedPlatform, name: str, prefix: str,
) -> None:
    template = dev.templates[name]
    _, resource = alias(dev, name, prefix)
    version_id, _ = _of(template, "AWS::Lambda::Version", prefix)
    assert resource["Properties"]["Name"] == "live"
    assert resource["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}
    update = resource["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    group_id, _ = _of(template, "AWS::CodeDeploy::DeploymentGroup", prefix)
    assert update["DeploymentGroupName"] == {"Ref": group_id}


@pytest.mark.parametrize(("name", "prefix"), list(CONFIGS))
def test_deployment_group_is_a_canary_that_rolls_back_on_its_alarms(
    dev: SynthesizedPlatform, name: str, prefix: str,
) -> None:
    template = dev.templates[name]
    group = named(template, "AWS::CodeDeploy::DeploymentGroup", prefix)["Properties"]
    assert group["DeploymentConfigName"] == CONFIGS[(name, prefix)]
    assert set(group["AutoRollbackConfiguration"]["Events"]) >= {
        "DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"}
    alarm_ids = {alarm["Name"]["Ref"] for alarm in group["AlarmConfiguration"]["Alarms"]}
    alarms = template.find_resources("AWS::CloudWatch::Alarm")
    assert alarm_ids and alarm_ids <= set(alarms)
    for alarm_id in alarm_ids:
        props = alarms[alarm_id]["Properties"]
        assert props["EvaluationPeriods"] == 1
        assert "canary-rollback" in props["AlarmDescription"]


@pytest.mark.parametrize("alarm", ["ProcessorDeployErrors", "AudienceDeployErrors"])
def test_consumer_rollbacks_watch_their_alias_errors(dev: SynthesizedPlatform, alarm: str) -> None:
    alarms = {a["Properties"]["AlarmName"]: a["Properties"]
              for a in dev.processing.find_resources("AWS::CloudWatch::Alarm").values()}
    assert set(alarms) == {"Fastbreak-dev-ProcessorDeployErrors",
                           "Fastbreak-dev-AudienceDeployErrors"}
    errors = alarms[f"Fastbreak-dev-{alarm}"]
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


@pytest.mark.parametrize("prefix", ["StreamProcessor", "AudienceStage"])
def test_mappings_invoke_the_live_alias(dev: SynthesizedPlatform, prefix: str) -> None:
    mapping = named(dev.processing, "AWS::Lambda::EventSourceMapping", prefix)["Properties"]
    alias_id, _ = alias(dev, "processing", prefix)
    assert mapping["FunctionName"]["Fn::Join"][1][-1] == ":live"
    assert {"Ref": alias_id} in str_refs(mapping["FunctionName"])


def test_api_integration_and_permissions_target_the_live_alias(
    dev: SynthesizedPlatform,
) -> None:
    alias_id, _ = alias(dev, "serving", "FeatureApi")
    for method in dev.serving.find_resources("AWS::ApiGateway::Method").values():
        uri = method["Properties"]["Integration"]["Uri"]
        assert {"Ref": alias_id} in str_refs(uri)
    for permission in dev.serving.find_resources("AWS::Lambda::Permission").values():
        assert permission["Properties"]["FunctionName"] == {"Ref": alias_id}


@pytest.mark.parametrize(("name", "prefix"), list(CONFIGS))
def test_codedeploy_role_has_no_managed_policy_and_reaches_only_its_alias(
    dev: SynthesizedPlatform, name: str, prefix: str,
) -> None:
    template = dev.templates[name]
    group = named(template, "AWS::CodeDeploy::DeploymentGroup", prefix)["Properties"]
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
