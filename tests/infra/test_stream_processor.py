from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Template

from constructs_lib import ConstructPropsError, StreamProcessor
from constructs_lib.powertools_function import POWERTOOLS_LAYER_VERSION, POWERTOOLS_VERSION
from tests.infra.conftest import REPO, SynthesizedPlatform
from tests.infra.template_queries import logical_id, named, only

# The two consumers the Processing stack builds with the construct: stage 1 and stage 2.
CONSUMERS = ("StreamProcessor", "AudienceStage")


def mapping(platform: SynthesizedPlatform, consumer: str = "StreamProcessor") -> dict:
    return named(platform.processing, "AWS::Lambda::EventSourceMapping", consumer)["Properties"]


def processor(platform: SynthesizedPlatform, consumer: str = "StreamProcessor") -> dict:
    return named(platform.processing, "AWS::Lambda::Function", consumer)["Properties"]


def actions_of(platform: SynthesizedPlatform, consumer: str) -> set[str]:
    """Every action the consumer's role is allowed."""
    role = processor(platform, consumer)["Role"]["Fn::GetAtt"][0]
    return {
        action
        for policy in platform.processing.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        for action in ([statement["Action"]] if isinstance(statement["Action"], str)
                       else statement["Action"])
    }


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_the_asset_carries_orjson_for_python_3_14_on_arm64(
    dev: SynthesizedPlatform, consumer: str,
) -> None:
    key = processor(dev, consumer)["Code"]["S3Key"]  # "{asset hash}.zip"
    asset = Path(dev.assembly.directory) / f"asset.{key.removesuffix('.zip')}"
    assert (asset / "fastbreak" / "engine" / "processor.py").is_file()
    assert (asset / "fastbreak" / "engine" / "audience.py").is_file()
    assert (asset / "orjson" / "orjson.cpython-314-aarch64-linux-gnu.so").is_file()
    assert not list(asset.rglob("__pycache__"))


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_mapping_bisects_and_reports_item_failures(dev: SynthesizedPlatform, consumer: str) -> None:
    props = mapping(dev, consumer)
    assert props["BisectBatchOnFunctionError"] is True
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_mapping_bounds_retries_and_record_age(dev: SynthesizedPlatform, consumer: str) -> None:
    props = mapping(dev, consumer)
    assert 0 <= props["MaximumRetryAttempts"] <= 10
    assert 60 <= props["MaximumRecordAgeInSeconds"] <= 24 * 3600


def test_mapping_keeps_per_shard_order_by_default(dev: SynthesizedPlatform) -> None:
    props = mapping(dev)
    assert props["ParallelizationFactor"] == 1
    assert props["StartingPosition"] == "TRIM_HORIZON"
    assert props["BatchSize"] == 1000
    assert props["MaximumBatchingWindowInSeconds"] == 1


def test_the_audience_stage_reads_the_partials_stream(dev: SynthesizedPlatform) -> None:
    source = mapping(dev, "AudienceStage")["EventSourceArn"]["Fn::ImportValue"]
    (stream_id,) = [logical for logical in dev.storage.find_resources("AWS::Kinesis::Stream")
                    if logical.startswith("Partials")]
    assert stream_id in source
    assert mapping(dev, "AudienceStage")["ParallelizationFactor"] == 1


@pytest.mark.parametrize(("consumer", "queue"), [("StreamProcessor", "FailedBatchesQueue"),
                                                 ("AudienceStage", "AudienceFailedBatchesQueue")])
def test_failed_batches_go_to_the_storage_stacks_on_failure_queues(
    dev: SynthesizedPlatform, consumer: str, queue: str,
) -> None:
    destination = mapping(dev, consumer)["DestinationConfig"]["OnFailure"]["Destination"]
    (queue_id,) = [logical for logical in dev.storage.find_resources("AWS::SQS::Queue")
                   if logical.startswith(queue)]
    assert queue_id in destination["Fn::ImportValue"]


def test_on_failure_queues_are_kms_encrypted_and_tls_only(dev: SynthesizedPlatform) -> None:
    queues = dev.storage.find_resources("AWS::SQS::Queue")
    assert len(queues) == 2
    assert all("KmsMasterKeyId" in queue["Properties"] for queue in queues.values())
    for policy in dev.storage.find_resources("AWS::SQS::QueuePolicy").values():
        assert any(
            statement["Effect"] == "Deny"
            and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        )


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_consumers_run_python_3_14_on_arm64_with_active_tracing(
    dev: SynthesizedPlatform, consumer: str,
) -> None:
    props = processor(dev, consumer)
    assert props["Runtime"] == "python3.14"
    assert props["Architectures"] == ["arm64"]
    assert props["TracingConfig"] == {"Mode": "Active"}


def test_processor_uses_the_powertools_layer_pinned_in_requirements(
    dev: SynthesizedPlatform,
) -> None:
    layers = json.dumps(processor(dev)["Layers"])
    layer = f"AWSLambdaPowertoolsPythonV3-python314-arm64:{POWERTOOLS_LAYER_VERSION}"
    assert f":017000801446:layer:{layer}" in layers
    requirements = (REPO / "requirements.txt").read_text()
    assert f"aws-lambda-powertools[tracer,parser]=={POWERTOOLS_VERSION}" in requirements


@pytest.mark.parametrize(("consumer", "memory", "reserved"),
                         [("StreamProcessor", 1024, 50), ("AudienceStage", 512, 20)])
def test_memory_timeout_and_concurrency_are_set(
    dev: SynthesizedPlatform, consumer: str, memory: int, reserved: int,
) -> None:
    props = processor(dev, consumer)
    assert props["MemorySize"] == memory
    assert props["Timeout"] == 60
    assert props["ReservedConcurrentExecutions"] == reserved


@pytest.mark.parametrize(("consumer", "group"), [("StreamProcessor", "ProcessorLogs"),
                                                 ("AudienceStage", "AudienceLogs")])
def test_consumers_log_to_their_own_encrypted_group_with_retention(
    dev: SynthesizedPlatform, consumer: str, group: str,
) -> None:
    export = processor(dev, consumer)["LoggingConfig"]["LogGroup"]["Fn::ImportValue"]
    (group_id,) = [logical for logical in dev.storage.find_resources("AWS::Logs::LogGroup")
                   if logical.startswith(group)]
    group = dev.storage.find_resources("AWS::Logs::LogGroup")[group_id]["Properties"]
    assert f"Ref{group_id}" in export
    assert group["RetentionInDays"] == 30
    assert "KmsKeyId" in group


def test_processor_environment_names_its_stores_and_the_partials_stream(
    dev: SynthesizedPlatform,
) -> None:
    variables = processor(dev)["Environment"]["Variables"]
    assert {"ONLINE_TABLE_NAME", "OFFLINE_BUCKET_NAME", "QUARANTINE_PREFIX",
            "FEATURE_LOG_PREFIX", "POWERTOOLS_SERVICE_NAME", "PARTIALS_STREAM_NAME"} <= set(
                variables)
    assert variables["QUARANTINE_PREFIX"] == "quarantine/"
    assert variables["PARALLELIZATION_FACTOR"] == "1"


def test_the_audience_stage_remembers_partials_past_stage_1s_record_age(
    dev: SynthesizedPlatform, prod: SynthesizedPlatform,
) -> None:
    for platform, age in ((dev, 6 * 3600), (prod, 24 * 3600)):
        variables = processor(platform, "AudienceStage")["Environment"]["Variables"]
        assert int(variables["REMEMBER_SECONDS"]) == age + 3600
        assert variables["POWERTOOLS_SERVICE_NAME"] == "audience-stage"


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_handlers_are_importable_from_the_asset(dev: SynthesizedPlatform, consumer: str) -> None:
    module_name, function_name = processor(dev, consumer)["Handler"].rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module_name), function_name))


def test_roles_attach_no_aws_managed_policies(dev: SynthesizedPlatform) -> None:
    for name in ("processing", "serving"):
        template = dev.templates[name]
        function_roles = {
            props["Properties"]["Role"]["Fn::GetAtt"][0]
            for props in template.find_resources("AWS::Lambda::Function").values()
        }
        for role_id in function_roles:
            role = template.find_resources("AWS::IAM::Role")[role_id]["Properties"]
            assert "ManagedPolicyArns" not in role, role_id


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"parallelization_factor": 11}, "'parallelization_factor' must be within 1..10"),
        ({"retry_attempts": -1}, "'retry_attempts' must be bounded"),
        ({"max_record_age": None}, "'max_record_age' must be set"),
    ],
)
def test_unsafe_mapping_props_are_refused(stack: cdk.Stack, props: dict, message: str) -> None:
    key = kms.Key(stack, "Key", enable_key_rotation=True)
    stream = kinesis.Stream(stack, "Stream")
    with pytest.raises(ConstructPropsError, match=message):
        StreamProcessor(stack, "Processor", stream=stream, environment={}, log_key=key,
                        event_source_props=props)


@pytest.mark.parametrize(("consumer", "expected"), [
    ("StreamProcessor", {"dynamodb:BatchGetItem", "dynamodb:UpdateItem", "dynamodb:PutItem",
                         "dynamodb:Query", "dynamodb:DeleteItem"}),
    ("AudienceStage", {"dynamodb:BatchGetItem", "dynamodb:UpdateItem"}),
])
def test_consumers_may_only_call_what_their_engine_calls_on_the_table(
    dev: SynthesizedPlatform, consumer: str, expected: set[str],
) -> None:
    actions = {action for action in actions_of(dev, consumer) if action.startswith("dynamodb:")}
    assert actions == expected


def test_only_stage_1_writes_partials_and_only_to_the_partials_stream(
    dev: SynthesizedPlatform,
) -> None:
    writes = {"kinesis:PutRecord", "kinesis:PutRecords"}
    assert writes & actions_of(dev, "StreamProcessor") == {"kinesis:PutRecords"}
    assert writes & actions_of(dev, "AudienceStage") == set()
    role = processor(dev)["Role"]["Fn::GetAtt"][0]
    (statement,) = [
        statement
        for policy in dev.processing.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Action"] == "kinesis:PutRecords"
    ]
    assert "PartialsStream" in json.dumps(statement["Resource"])


def processor_under_test(stack: cdk.Stack, **props: Any) -> StreamProcessor:
    stream = kinesis.Stream(stack, "Stream")
    if "existing_log_group" not in props:
        props["log_key"] = kms.Key(stack, "Key", enable_key_rotation=True)
    return StreamProcessor(stack, "Processor", stream=stream, environment={}, **props)


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"event_source_props": {"bisect_batch_on_error": False}},
         "'bisect_batch_on_error' is enforced"),
        ({"event_source_props": {"report_batch_item_failures": False}},
         "'report_batch_item_failures' is enforced"),
        ({"function_props": {"tracing": lambda_.Tracing.DISABLED}}, "'tracing' is enforced"),
        ({"queue_props": {"enforce_ssl": False}}, "'enforce_ssl' is enforced"),
        ({"deployment": "all_at_twice"}, "'deployment' must be one of all_at_once"),
    ],
)
def test_forbidden_processor_props_are_refused_naming_the_prop(
    stack: cdk.Stack, props: dict[str, Any], message: str,
) -> None:
    with pytest.raises(ConstructPropsError, match=message):
        processor_under_test(stack, **props)


def test_existing_queue_and_queue_props_together_are_refused(stack: cdk.Stack) -> None:
    queue = sqs.Queue(stack, "Existing", enforce_ssl=True)
    with pytest.raises(ConstructPropsError,
                       match="either 'existing_on_failure_queue' or 'queue_props'"):
        processor_under_test(stack, existing_on_failure_queue=queue,
                             queue_props={"retention_period": cdk.Duration.days(4)})


def test_existing_log_group_and_a_log_key_together_are_refused(stack: cdk.Stack) -> None:
    group = logs.LogGroup.from_log_group_name(stack, "Group", "processor")
    key = kms.Key(stack, "OtherKey", enable_key_rotation=True)
    with pytest.raises(ConstructPropsError, match="either 'existing_log_group' or 'log_key'"):
        processor_under_test(stack, existing_log_group=group, log_key=key)


def test_standalone_processor_builds_its_own_queue_and_log_group(stack: cdk.Stack) -> None:
    processor_under_test(stack, event_source_props={"batch_size": 500},
                         function_props={"memory_size": 2048})
    template = Template.from_stack(stack)
    mapping_props = only(template, "AWS::Lambda::EventSourceMapping")["Properties"]
    assert mapping_props["BatchSize"] == 500
    assert mapping_props["BisectBatchOnFunctionError"] is True
    assert only(template, "AWS::Lambda::Function")["Properties"]["MemorySize"] == 2048
    queue_id = logical_id(template, "AWS::SQS::Queue")
    assert mapping_props["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": [queue_id, "Arn"]}
    only(template, "AWS::Logs::LogGroup")


def test_processor_sends_failure_records_with_exact_key_actions(
    dev: SynthesizedPlatform,
) -> None:
    actions = {
        action
        for policy in dev.processing.find_resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        for action in ([statement["Action"]] if isinstance(statement["Action"], str)
                       else statement["Action"])
    }
    assert "sqs:SendMessage" in actions
    assert not {action for action in actions if action.startswith("kms:") and "*" in action}
