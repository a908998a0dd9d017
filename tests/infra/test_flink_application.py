"""The audience stage on Managed Service for Apache Flink: 'audience.runtime' flink, the
``FlinkApplication`` construct, its role, its alarms, and the settings that choose it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Match, Template

from constructs_lib import ConstructPropsError, FlinkApplication
from constructs_lib.flink_application import RUN_OPTIONS_GROUP
from fastbreak_flink.settings import PROPERTY_GROUP, ZIP_ENTRY, ZIP_JAR, ZIP_PYTHON, JobSettings
from stacks import load_settings
from stacks.settings import SettingsError, check_deployable
from tests.infra.conftest import REPO, SynthesizedPlatform, environments, synthesize
from tests.infra.template_queries import only

CODE = {"code_bucket_name": "fastbreak-artifacts", "code_key": "flink/audience-stage.zip",
        "code_kms_key_arn": "arn:aws:kms:us-east-1:123456789012:key/"
                            "1234abcd-12ab-34cd-56ef-1234567890ab"}
FLINK_ALARMS = ("AudienceFlinkDowntime", "AudienceFlinkCheckpointFailures",
                "AudienceFlinkFullRestarts", "AudienceFlinkBehindLatest")


@pytest.fixture(scope="module")
def flink(tmp_path_factory: pytest.TempPathFactory) -> SynthesizedPlatform:
    # synthesize() applies the three cdk-nag packs and raises on any unacknowledged finding
    return synthesize("dev", tmp_path_factory.mktemp("cdk-flink"),
                      dev={"audience": {"runtime": "flink"}, "flink": CODE})


def _application(platform: SynthesizedPlatform) -> dict[str, Any]:
    return only(platform.processing, "AWS::KinesisAnalyticsV2::Application")["Properties"]


def _statements(platform: SynthesizedPlatform) -> list[dict[str, Any]]:
    policies = platform.processing.find_resources("AWS::IAM::Policy")
    flink_policies = [policy for logical, policy in policies.items()
                      if logical.startswith("AudienceStageFlinkRole")]
    assert len(flink_policies) == 1
    statements: list[dict[str, Any]] = flink_policies[0]["Properties"]["PolicyDocument"][
        "Statement"]
    return statements


def _actions(statement: dict[str, Any]) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def test_flink_runtime_runs_flink_2_2_with_checkpoints_snapshots_and_autoscaling(
        flink: SynthesizedPlatform) -> None:
    application = _application(flink)
    assert application["RuntimeEnvironment"] == "FLINK-2_2"
    configuration = application["ApplicationConfiguration"]
    flink_configuration = configuration["FlinkApplicationConfiguration"]
    assert flink_configuration["CheckpointConfiguration"] == {
        "ConfigurationType": "CUSTOM", "CheckpointingEnabled": True,
        "CheckpointInterval": 60_000, "MinPauseBetweenCheckpoints": 5_000}
    assert flink_configuration["ParallelismConfiguration"] == {
        "ConfigurationType": "CUSTOM", "AutoScalingEnabled": True, "Parallelism": 2,
        "ParallelismPerKPU": 1}
    assert configuration["ApplicationSnapshotConfiguration"] == {"SnapshotsEnabled": True}
    assert flink_configuration["MonitoringConfiguration"]["LogLevel"] == "INFO"


def test_flink_runtime_replaces_the_audience_lambda_and_its_mapping(
        flink: SynthesizedPlatform, dev: SynthesizedPlatform) -> None:
    def audience_functions(platform: SynthesizedPlatform) -> list[str]:
        return [logical for logical in platform.processing.find_resources("AWS::Lambda::Function")
                if logical.startswith("AudienceStage")]

    assert audience_functions(dev) and not audience_functions(flink)
    assert len(flink.processing.find_resources("AWS::Lambda::EventSourceMapping")) == 1
    assert dev.processing.find_resources("AWS::KinesisAnalyticsV2::Application") == {}


def test_run_options_name_the_zip_layout_the_packager_writes(flink: SynthesizedPlatform) -> None:
    groups = {group["PropertyGroupId"]: group["PropertyMap"] for group in
              _application(flink)["ApplicationConfiguration"]["EnvironmentProperties"][
                  "PropertyGroups"]}
    assert groups[RUN_OPTIONS_GROUP] == {"python": ZIP_ENTRY, "jarfile": ZIP_JAR,
                                         "pyFiles": ZIP_PYTHON}


def test_job_properties_are_what_the_job_parses(flink: SynthesizedPlatform) -> None:
    groups = {group["PropertyGroupId"]: group["PropertyMap"] for group in
              _application(flink)["ApplicationConfiguration"]["EnvironmentProperties"][
                  "PropertyGroups"]}
    # tokens (the table, bucket, stream and region) stand in as their JSON
    properties = {name: value if isinstance(value, str) else json.dumps(value)
                  for name, value in groups[PROPERTY_GROUP].items()}
    settings = JobSettings.from_properties(properties)
    assert "ImportValue" in settings.table_name and "ImportValue" in settings.stream_arn
    assert settings.key_buckets == 8 and settings.flush_interval_ms == 1000
    assert settings.remember_seconds == 6 * 3600 + 3600  # the stage-1 record age, and an hour


def test_flink_role_reads_the_code_object_not_its_bucket(flink: SynthesizedPlatform) -> None:
    reads = [s for s in _statements(flink) if _actions(s) & {"s3:GetObject", "s3:GetObject*"}]
    assert len(reads) == 1
    assert _actions(reads[0]) == {"s3:GetObject", "s3:GetObjectVersion"}
    assert json.dumps(reads[0]["Resource"]).endswith('flink/audience-stage.zip"]]}')
    decrypts = [s for s in _statements(flink) if _actions(s) == {"kms:Decrypt"}]
    assert any(CODE["code_kms_key_arn"] in json.dumps(s["Resource"]) for s in decrypts)


def test_flink_role_has_the_lambda_stages_data_grants_and_no_wildcard_action(
        flink: SynthesizedPlatform) -> None:
    statements = _statements(flink)
    actions = set().union(*(_actions(statement) for statement in statements))
    assert not any(action.endswith("*") for action in actions)
    assert {"dynamodb:BatchGetItem", "dynamodb:UpdateItem", "s3:PutObject",
            "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards"} <= actions
    assert not {"dynamodb:Scan", "dynamodb:PutItem", "dynamodb:DeleteItem", "s3:GetBucketAcl",
                "kinesis:PutRecords"} & actions
    metrics = next(s for s in statements if _actions(s) == {"cloudwatch:PutMetricData"})
    assert metrics["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "AWS/KinesisAnalytics"}}


def test_flink_application_logs_to_the_audience_log_group(flink: SynthesizedPlatform) -> None:
    logging = only(flink.processing, "AWS::KinesisAnalyticsV2::ApplicationCloudWatchLoggingOption")
    assert "AudienceLogGroupName" in json.dumps(logging["Properties"])
    exported = [output for output in flink.storage.to_json()["Outputs"].values()
                if output.get("Export", {}).get("Name") ==
                "Fastbreak-dev-Storage-AudienceLogGroupName"]
    assert len(exported) == 1


def test_flink_alarms_exist_and_link_runbook_sections(flink: SynthesizedPlatform) -> None:
    runbooks = (REPO / "docs" / "runbooks.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
               for heading in re.findall(r"^## (.+)$", runbooks, flags=re.MULTILINE)}
    alarms = {alarm["Properties"]["AlarmName"]: alarm["Properties"] for alarm in
              flink.monitoring.find_resources("AWS::CloudWatch::Alarm").values()}
    for name in FLINK_ALARMS:
        description = alarms[f"Fastbreak-dev-{name}"]["AlarmDescription"]
        anchor = re.search(r"docs/runbooks\.md#([a-z0-9-]+)", description)
        assert anchor and anchor.group(1) in anchors, (name, description)
    assert "Fastbreak-dev-AudienceErrors" not in alarms  # the Lambda stage's, not built


def test_full_restarts_alarm_counts_restarts_per_minute(flink: SynthesizedPlatform) -> None:
    flink.monitoring.has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": "Fastbreak-dev-AudienceFlinkFullRestarts",
        "Metrics": Match.array_with([Match.object_like({"Expression": "DIFF(restarts)"})]),
    })


def test_millis_behind_latest_threshold_is_the_iterator_age_setting(
        flink: SynthesizedPlatform) -> None:
    flink.monitoring.has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": "Fastbreak-dev-AudienceFlinkBehindLatest",
        "MetricName": "millisBehindLatest",
        "Threshold": 60_000,  # monitoring.iterator_age_alarm_seconds, in ms
    })


# ---- settings ---------------------------------------------------------------------------------
def _load(**sections: Any) -> Any:
    return load_settings("dev", environments(dev=sections))


def test_audience_runtime_defaults_to_lambda() -> None:
    assert _load().get("audience.runtime") == "lambda"


def test_an_unknown_audience_runtime_fails_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match=r"'audience\.runtime' must be one of lambda, flink"):
        _load(audience={"runtime": "spark"})


def test_flink_runtime_without_a_zip_fails_naming_the_settings() -> None:
    with pytest.raises(SettingsError, match=r"'flink\.code_zip'.*neither is set"):
        _load(audience={"runtime": "flink"})


def test_flink_runtime_with_a_zip_in_s3_and_a_local_zip_fails() -> None:
    with pytest.raises(SettingsError, match="both are set"):
        _load(audience={"runtime": "flink"}, flink={**CODE, "code_zip": "app.zip"})


def test_a_code_key_without_its_bucket_fails_naming_both() -> None:
    with pytest.raises(SettingsError, match=r"'flink\.code_bucket_name' and 'flink\.code_key'"):
        _load(audience={"runtime": "flink"}, flink={"code_key": "app.zip"})


def test_a_local_zip_that_is_not_a_file_fails_the_synth(tmp_path: Path) -> None:
    settings = _load(audience={"runtime": "flink"},
                     flink={"code_zip": str(tmp_path / "missing.zip")})
    with pytest.raises(SettingsError, match=r"'flink\.code_zip' names .* not a file"):
        check_deployable(settings)


def test_flink_settings_out_of_range_fail_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match=r"'flink\.key_buckets' must be an integer"):
        _load(flink={"key_buckets": 0})
    with pytest.raises(SettingsError, match=r"'flink\.initial_position' must be one of"):
        _load(flink={"initial_position": "AT_TIMESTAMP"})


# ---- the construct, in a stack of its own -----------------------------------------------------
def _construct(stack: cdk.Stack, **props: Any) -> FlinkApplication:
    log_group = logs.LogGroup(stack, "Logs")
    return FlinkApplication(stack, "App", log_group=log_group, job_property_group="job",
                            job_properties={"table_name": "t"}, **props)


def test_a_local_zip_becomes_an_asset_the_role_may_read(stack: cdk.Stack, tmp_path: Path) -> None:
    zip_path = tmp_path / "app.zip"
    zip_path.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    application = _construct(stack, code_zip=str(zip_path))
    template = Template.from_stack(stack)
    reads = [s for policy in template.find_resources("AWS::IAM::Policy").values()
             for s in policy["Properties"]["PolicyDocument"]["Statement"]
             if "s3:GetObject" in _actions(s)]
    assert len(reads) == 1 and "AssetParameters" not in json.dumps(reads)
    assert application.role is not None


def test_code_in_s3_and_a_local_zip_together_are_refused(stack: cdk.Stack) -> None:
    bucket = s3.Bucket.from_bucket_name(stack, "Code", "artifacts")
    with pytest.raises(ConstructPropsError, match="either 'code_bucket' and 'code_key' or "
                                                  "'code_zip'"):
        _construct(stack, code_bucket=bucket, code_key="a.zip", code_zip="a.zip")


def test_no_code_is_refused(stack: cdk.Stack) -> None:
    with pytest.raises(ConstructPropsError, match="the application zip is 'code_bucket'"):
        _construct(stack)


def test_the_runtime_cannot_be_overridden(stack: cdk.Stack) -> None:
    import aws_cdk.aws_kinesisanalytics_flink_alpha as flink_alpha

    bucket = s3.Bucket.from_bucket_name(stack, "Code", "artifacts")
    with pytest.raises(ConstructPropsError, match="prop 'runtime' is enforced"):
        _construct(stack, code_bucket=bucket, code_key="a.zip",
                   application_props={"runtime": flink_alpha.Runtime.FLINK_1_20})


def test_user_props_override_the_kit_defaults(stack: cdk.Stack) -> None:
    bucket = s3.Bucket.from_bucket_name(stack, "Code", "artifacts")
    _construct(stack, code_bucket=bucket, code_key="a.zip",
               application_props={"parallelism": 6, "auto_scaling_enabled": False})
    Template.from_stack(stack).has_resource_properties("AWS::KinesisAnalyticsV2::Application", {
        "ApplicationConfiguration": {"FlinkApplicationConfiguration": {
            "ParallelismConfiguration": Match.object_like(
                {"Parallelism": 6, "AutoScalingEnabled": False})}},
    })


def test_the_run_options_group_cannot_be_the_jobs(stack: cdk.Stack) -> None:
    bucket = s3.Bucket.from_bucket_name(stack, "Code", "artifacts")
    with pytest.raises(ConstructPropsError, match="'job_property_group' cannot be"):
        FlinkApplication(stack, "App", log_group=logs.LogGroup(stack, "Logs"),
                         job_property_group=RUN_OPTIONS_GROUP, job_properties={},
                         code_bucket=bucket, code_key="a.zip")


def test_flink_templates_lint_without_errors(flink: SynthesizedPlatform) -> None:
    from tests.infra.test_cfn_lint import errors

    for stack in (flink.platform.processing, flink.platform.storage, flink.platform.monitoring):
        template = json.loads(
            (Path(flink.assembly.directory) / f"{stack.stack_name}.template.json").read_text())
        assert errors(template) == [], stack.stack_name
