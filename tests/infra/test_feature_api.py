from __future__ import annotations

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
