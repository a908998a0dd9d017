from __future__ import annotations

import re
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms

from constructs_lib import ConstructPropsError, OfflineStore
from fastbreak.definitions import CATALOG
from fastbreak.offline.raw import PARTITION_KEYS, raw_columns
from stacks.storage_stack import FEATURE_LOG_COLUMNS
from tests.infra.conftest import SynthesizedPlatform
from tests.infra.template_queries import only


def buckets(platform: SynthesizedPlatform) -> dict[str, dict[str, Any]]:
    return platform.storage.find_resources("AWS::S3::Bucket")


def data_bucket(platform: SynthesizedPlatform) -> dict[str, Any]:
    [bucket] = [b for b in buckets(platform).values() if "LoggingConfiguration" in b["Properties"]]
    return bucket["Properties"]


def test_data_bucket_uses_kms_with_a_bucket_key(dev: SynthesizedPlatform) -> None:
    [rule] = data_bucket(dev)["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["BucketKeyEnabled"] is True
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"


def test_every_bucket_is_versioned_private_and_tls_only(dev: SynthesizedPlatform) -> None:
    policies = dev.storage.find_resources("AWS::S3::BucketPolicy")
    for bucket_id, bucket in buckets(dev).items():
        props = bucket["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True,
            "IgnorePublicAcls": True, "RestrictPublicBuckets": True,
        }
        [policy] = [p for p in policies.values()
                    if p["Properties"]["Bucket"] == {"Ref": bucket_id}]
        assert any(
            s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
            for s in policy["Properties"]["PolicyDocument"]["Statement"]
        )


def test_data_bucket_logs_access_and_tiers_raw_events(dev: SynthesizedPlatform) -> None:
    props = data_bucket(dev)
    assert props["LoggingConfiguration"]["LogFilePrefix"] == "offline-store/"
    rules = {rule["Id"]: rule for rule in props["LifecycleConfiguration"]["Rules"]
             if "Id" in rule}
    assert [t["StorageClass"] for t in rules["raw-events-tiering"]["Transitions"]] == [
        "STANDARD_IA", "GLACIER_IR"]
    assert rules["quarantine-expiry"]["ExpirationInDays"] == 30


def test_firehose_reads_the_events_stream_and_writes_partitioned_parquet(
    dev: SynthesizedPlatform,
) -> None:
    props = only(dev.storage, "AWS::KinesisFirehose::DeliveryStream")["Properties"]
    assert props["DeliveryStreamType"] == "KinesisStreamAsSource"
    s3 = props["ExtendedS3DestinationConfiguration"]
    assert s3["Prefix"] == ("raw/event_date=!{partitionKeyFromLambda:event_date}/"
                            "event_hour=!{partitionKeyFromLambda:event_hour}/")
    assert s3["ErrorOutputPrefix"] == (
        "raw-errors/!{firehose:error-output-type}/!{timestamp:yyyy-MM-dd}/")
    assert s3["DynamicPartitioningConfiguration"]["Enabled"] is True
    conversion = s3["DataFormatConversionConfiguration"]
    assert "ParquetSerDe" in conversion["OutputFormatConfiguration"]["Serializer"]
    assert s3["BufferingHints"]["SizeInMBs"] >= 64  # Parquet conversion's minimum


def glue_table(platform: SynthesizedPlatform, name: str) -> dict[str, Any]:
    [table] = [
        t["Properties"]["TableInput"]
        for t in platform.storage.find_resources("AWS::Glue::Table").values()
        if t["Properties"]["TableInput"]["Name"] == name
    ]
    return table


def test_raw_columns_are_the_transformations_rows_from_the_event_schemas(
    dev: SynthesizedPlatform,
) -> None:
    table = glue_table(dev, "raw_events")
    columns = [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
    assert columns == [(name, t.glue_type) for name, t in raw_columns(CATALOG)]
    assert columns[: len(CATALOG.offline_columns())] == [
        (name, t.glue_type) for name, t in CATALOG.offline_columns()]
    types = dict(columns)
    # Sequence numbers run to 128 digits: text, never a bigint or decimal(38).
    assert types["kinesis_sequence_number"] == "string"
    assert types["kinesis_arrival_time"] == "timestamp"
    assert (types["kinesis_sub_sequence"], types["rejection"], types["raw_payload"]) == (
        "bigint", "string", "string")


def transform_processor(platform: SynthesizedPlatform) -> dict[str, str | Any]:
    destination = only(platform.storage, "AWS::KinesisFirehose::DeliveryStream")[
        "Properties"]["ExtendedS3DestinationConfiguration"]
    assert destination["ProcessingConfiguration"]["Enabled"] is True
    [processor] = destination["ProcessingConfiguration"]["Processors"]
    assert processor["Type"] == "Lambda", "no jq extraction, no multi-record de-aggregation"
    return {p["ParameterName"]: p["ParameterValue"] for p in processor["Parameters"]}


def transform_function_id(platform: SynthesizedPlatform) -> str:
    [function_id] = [
        logical_id for logical_id, function in
        platform.storage.find_resources("AWS::Lambda::Function").items()
        if function["Properties"]["Handler"] == "fastbreak.handlers.raw_events_transform.handler"
    ]
    return function_id


def test_the_delivery_transforms_every_record_with_the_raw_table_lambda(
    dev: SynthesizedPlatform,
) -> None:
    parameters = transform_processor(dev)
    assert parameters["LambdaArn"] == {"Fn::GetAtt": [transform_function_id(dev), "Arn"]}
    # 1 MiB of the smallest valid events answers about 4.8 MiB: within Lambda's 6 MiB.
    assert (parameters["BufferSizeInMBs"], parameters["BufferIntervalInSeconds"],
            parameters["NumberOfRetries"]) == ("1", "60", "3")


def test_the_partitions_are_the_keys_the_lambda_returns(dev: SynthesizedPlatform) -> None:
    destination = only(dev.storage, "AWS::KinesisFirehose::DeliveryStream")[
        "Properties"]["ExtendedS3DestinationConfiguration"]
    keys = re.findall(r"!\{partitionKeyFromLambda:(\w+)\}", destination["Prefix"])
    assert tuple(keys) == PARTITION_KEYS
    table = glue_table(dev, "raw_events")
    assert tuple(k["Name"] for k in table["PartitionKeys"]) == PARTITION_KEYS


def statements(platform: SynthesizedPlatform) -> list[tuple[str, dict[str, Any]]]:
    """(policy logical id, statement) of every identity policy in the storage stack."""
    return [
        (policy_id, statement)
        for policy_id, policy in platform.storage.find_resources("AWS::IAM::Policy").items()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def test_only_the_delivery_may_invoke_the_transformation_and_only_it(
    dev: SynthesizedPlatform,
) -> None:
    function_arn = {"Fn::GetAtt": [transform_function_id(dev), "Arn"]}
    invokes = [(policy_id, statement) for policy_id, statement in statements(dev)
               if any(action.startswith("lambda:") for action in actions(statement))]
    [(policy_id, statement)] = invokes
    assert "DeliveryRole" in policy_id
    assert actions(statement) == ["lambda:GetFunctionConfiguration", "lambda:InvokeFunction"]
    assert statement["Resource"] == [function_arn, {"Fn::Join": ["", [function_arn, ":$LATEST"]]}]
    assert not [permission for permission in dev.storage.find_resources(
        "AWS::Lambda::Permission").values()
        if transform_function_id(dev) in str(permission["Properties"]["FunctionName"])]


def delivery_statements(platform: SynthesizedPlatform) -> list[dict[str, Any]]:
    [role_id] = [logical_id for logical_id in platform.storage.find_resources("AWS::IAM::Role")
                 if "DeliveryRole" in logical_id]
    [delivery] = platform.storage.find_resources("AWS::KinesisFirehose::DeliveryStream").values()
    destination = delivery["Properties"]["ExtendedS3DestinationConfiguration"]
    assert destination["RoleARN"] == {"Fn::GetAtt": [role_id, "Arn"]}
    return [statement for policy_id, statement in statements(platform)
            if policy_id.startswith(role_id.split("DeliveryRole")[0] + "DeliveryRole")]


def test_the_delivery_writes_only_raw_prefixes_and_never_deletes(
    dev: SynthesizedPlatform,
) -> None:
    granted = delivery_statements(dev)
    every_action = {action for statement in granted for action in actions(statement)}
    assert not any(action.startswith("s3:Delete") or "*" in action for action in every_action)
    assert "kms:ReEncryptFrom" not in every_action and "kms:Encrypt" not in every_action
    [objects] = [s for s in granted if "s3:PutObject" in actions(s)]
    prefixes = sorted(part["Fn::Join"][1][1] for part in objects["Resource"])
    assert prefixes == ["/raw-errors/*", "/raw/*"]
    [key] = [s for s in granted if "kms:GenerateDataKey" in actions(s)]
    assert "kms:ViaService" in key["Condition"]["StringEquals"]


def test_the_transformation_may_only_write_its_own_encrypted_log_and_traces(
    dev: SynthesizedPlatform,
) -> None:
    function = dev.storage.find_resources("AWS::Lambda::Function")[transform_function_id(dev)]
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    log_group_id = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    own = [statement for policy_id, statement in statements(dev)
           if dev.storage.find_resources("AWS::IAM::Policy")[policy_id]["Properties"]["Roles"]
           == [{"Ref": role_id}]]
    assert [(sorted(actions(s)), s["Resource"]) for s in own] == [
        (["logs:CreateLogStream", "logs:PutLogEvents"], {"Fn::GetAtt": [log_group_id, "Arn"]}),
        (["xray:PutTelemetryRecords", "xray:PutTraceSegments"], "*"),
    ]
    assert not dev.storage.find_resources("AWS::IAM::Role")[role_id]["Properties"].get(
        "ManagedPolicyArns")
    log_group = dev.storage.find_resources("AWS::Logs::LogGroup")[log_group_id]
    assert "KmsKeyId" in log_group["Properties"]
    assert function["Properties"]["TracingConfig"] == {"Mode": "Active"}


@pytest.mark.parametrize(("props", "message"), [
    ({"transform_buffer_size_mib": 4}, "'transform_buffer_size_mib' must be within 1..3"),
    ({"transform_retries": 0}, "'transform_retries' must be within 1..300"),
])
def test_transformation_props_out_of_range_are_refused_by_name(
    stack: cdk.Stack, props: dict[str, int], message: str,
) -> None:
    key = kms.Key(stack, "Key", enable_key_rotation=True)
    with pytest.raises(ConstructPropsError, match=message):
        OfflineStore(stack, "Offline", events=kinesis.Stream(stack, "Stream"), columns=[],
                     feature_log_columns=[], database_name="db", log_key=key, **props)


def test_athena_results_are_encrypted_and_enforced(dev: SynthesizedPlatform) -> None:
    config = only(dev.storage, "AWS::Athena::WorkGroup")["Properties"]["WorkGroupConfiguration"]
    assert config["EnforceWorkGroupConfiguration"] is True
    encryption = config["ResultConfiguration"]["EncryptionConfiguration"]
    assert encryption["EncryptionOption"] == "SSE_KMS"


def test_raw_partitions_are_projected_so_new_hours_need_no_crawler(
    dev: SynthesizedPlatform,
) -> None:
    parameters = glue_table(dev, "raw_events")["Parameters"]
    assert parameters["projection.enabled"] == "true"
    assert parameters["projection.event_hour.range"] == "0,23"
    template = parameters["storage.location.template"]["Fn::Join"][1][-1]
    assert template.endswith("/raw/event_date=${event_date}/event_hour=${event_hour}/")


def test_feature_log_table_reads_json_lines_by_date(dev: SynthesizedPlatform) -> None:
    table = glue_table(dev, "feature_log")
    assert [k["Name"] for k in table["PartitionKeys"]] == ["date"]
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"].endswith("JsonSerDe")
    assert [c["Name"] for c in table["StorageDescriptor"]["Columns"]] == [
        name for name, _ in FEATURE_LOG_COLUMNS
    ]
