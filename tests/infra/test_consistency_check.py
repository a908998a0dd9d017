"""The scheduled consistency check: a function that reads only what it checks, run by a
schedule, one run at a time, with the builder's engine in its asset; its alarm; and the
processor's cut-over delay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stacks.settings import SettingsError, cutover_delay_seconds, load_settings
from tests.infra.conftest import SynthesizedPlatform, environments, synthesize
from tests.infra.template_queries import named

# Lambda's limit on a function's unzipped code and layers, and what the Powertools layer is
# given of it (it carries pydantic and the X-Ray SDK: well below).
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
POWERTOOLS_LAYER_ALLOWANCE = 40 * 1024 * 1024


def function(platform: SynthesizedPlatform) -> dict[str, Any]:
    return named(platform.storage, "AWS::Lambda::Function", "ConsistencyCheck")["Properties"]


def statements(platform: SynthesizedPlatform) -> list[dict[str, Any]]:
    policy = named(platform.storage, "AWS::IAM::Policy", "ConsistencyCheck")
    return list(policy["Properties"]["PolicyDocument"]["Statement"])


def test_the_check_runs_the_handler_one_run_at_a_time_with_room_for_the_builder(
    dev: SynthesizedPlatform,
) -> None:
    props = function(dev)
    assert props["Handler"] == "fastbreak.handlers.consistency_check.handler"
    assert props["ReservedConcurrentExecutions"] == 1
    assert props["MemorySize"] == 3008 and props["Timeout"] == 900
    assert props["EphemeralStorage"] == {"Size": 2048}
    variables = props["Environment"]["Variables"]
    assert {name: variables[name] for name in (
        "RAW_PREFIX", "FEATURE_LOG_PREFIX", "SAMPLE_SIZE", "LOOKBACK_MINUTES", "SETTLE_MINUTES",
        "MAX_WINDOW_HOURS", "FASTBREAK_ENV")} == {
        "RAW_PREFIX": "raw/", "FEATURE_LOG_PREFIX": "features/", "SAMPLE_SIZE": "100",
        "LOOKBACK_MINUTES": "60", "SETTLE_MINUTES": "20", "MAX_WINDOW_HOURS": "24",
        "FASTBREAK_ENV": "dev"}
    config = named(dev.storage, "AWS::Lambda::EventInvokeConfig", "ConsistencyCheck")
    assert config["Properties"]["MaximumRetryAttempts"] == 0


def test_a_schedule_runs_the_live_alias_every_hour(dev: SynthesizedPlatform) -> None:
    rule = named(dev.storage, "AWS::Events::Rule", "ConsistencyCheck")["Properties"]
    assert rule["ScheduleExpression"] == "rate(1 hour)" and rule["State"] == "ENABLED"
    [target] = rule["Targets"]
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 0}
    alias_id = next(iter(dev.storage.find_resources("AWS::Lambda::Alias", {
        "Properties": {"FunctionName": {"Ref": _function_id(dev)}}})))
    assert target["Arn"] == {"Ref": alias_id}


def _function_id(platform: SynthesizedPlatform) -> str:
    return next(logical for logical in platform.storage.find_resources("AWS::Lambda::Function")
                if logical.startswith("ConsistencyCheck"))


def test_the_role_reads_the_table_and_the_two_prefixes_and_writes_nothing(
    dev: SynthesizedPlatform,
) -> None:
    granted = {action for statement in statements(dev)
               for action in ([statement["Action"]] if isinstance(statement["Action"], str)
                              else statement["Action"])}
    assert granted == {
        "dynamodb:BatchGetItem", "dynamodb:Query", "s3:GetObject", "s3:ListBucket",
        "kms:Decrypt", "kms:DescribeKey", "logs:CreateLogStream", "logs:PutLogEvents",
        "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    [objects] = [s for s in statements(dev) if s["Action"] == "s3:GetObject"]
    rendered = str(objects["Resource"])
    assert "/raw/*" in rendered and "/features/*" in rendered and "quarantine" not in rendered
    [listing] = [s for s in statements(dev) if s["Action"] == "s3:ListBucket"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["raw/*", "features/*"]}}


def test_the_asset_carries_the_builders_engine_within_lambdas_size_limit(
    dev: SynthesizedPlatform,
) -> None:
    code = function(dev)["Code"]
    asset = Path(dev.assembly.directory) / f"asset.{code['S3Key'].removesuffix('.zip')}"
    assert (asset / "pyarrow").is_dir() and (asset / "duckdb").is_dir()
    assert (asset / "fastbreak" / "handlers" / "consistency_check.py").is_file()
    assert not list(asset.glob("pyarrow/include"))  # build-time files left out
    size = sum(path.stat().st_size for path in asset.rglob("*") if path.is_file())
    assert size <= LAMBDA_UNZIPPED_LIMIT - POWERTOOLS_LAYER_ALLOWANCE, size


def test_the_consistency_alarm_pages_when_a_feature_falls_below_its_target(
    dev: SynthesizedPlatform,
) -> None:
    alarm = named(dev.monitoring, "AWS::CloudWatch::Alarm", "MonitoringConsistencyBelowTarget")
    props = alarm["Properties"]
    assert props["MetricName"] == "ConsistencyRate" and props["Namespace"] == "Fastbreak"
    assert {d["Name"]: d["Value"] for d in props["Dimensions"]} == {
        "service": "consistency-check", "environment": "dev"}
    assert (props["Statistic"], props["Period"]) == ("Minimum", 3600)
    assert (props["ComparisonOperator"], props["Threshold"]) == ("LessThanThreshold", 99)
    assert "Runbook: docs/runbooks.md#consistency-below-target" in props["AlarmDescription"]


def test_the_check_can_be_turned_off(tmp_path: Path) -> None:
    platform = synthesize("dev", tmp_path, dev={"consistency": {"enabled": False}})
    assert not [logical for logical in platform.storage.find_resources("AWS::Lambda::Function")
                if logical.startswith("ConsistencyCheck")]
    assert not platform.monitoring.find_resources("AWS::CloudWatch::Alarm", {
        "Properties": {"MetricName": "ConsistencyRate"}})


@pytest.mark.parametrize(("section", "values", "setting"), [
    ("consistency", {"sample_size": 0}, "consistency.sample_size"),
    ("consistency", {"every_minutes": 1}, "consistency.every_minutes"),
    ("monitoring", {"consistency_alarm_percent": 0}, "monitoring.consistency_alarm_percent"),
])
def test_a_bad_setting_is_refused_by_name(section: str, values: dict[str, Any],
                                          setting: str) -> None:
    with pytest.raises(SettingsError, match=setting.replace(".", r"\.")):
        load_settings("dev", environments(dev={section: values}))


def test_the_processor_goes_live_on_new_slots_after_the_canaries(dev: SynthesizedPlatform) -> None:
    processor = named(dev.processing, "AWS::Lambda::Function", "StreamProcessor")["Properties"]
    delay = int(processor["Environment"]["Variables"]["CUTOVER_DELAY_SECONDS"])
    # the default canaries wait 5 minutes; the functions time out after 60 s; and 15 minutes
    assert delay == 300 + 60 + 900
    slow = load_settings("dev", environments(dev={
        "audience": {"deployment": "linear_10_percent_every_3_minutes"}}))
    assert cutover_delay_seconds(slow) == 1800 + 60 + 900
