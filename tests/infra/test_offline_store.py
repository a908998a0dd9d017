from __future__ import annotations

from typing import Any

from fastbreak.definitions import CATALOG
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
    assert s3["Prefix"].startswith("raw/event_date=!{partitionKeyFromQuery:event_date}/")
    assert "event_hour=!{partitionKeyFromQuery:event_hour}" in s3["Prefix"]
    assert s3["ErrorOutputPrefix"].startswith("raw-errors/")
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


def test_glue_columns_come_from_the_event_schemas(dev: SynthesizedPlatform) -> None:
    table = glue_table(dev, "raw_events")
    columns = [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
    assert columns == [(name, t.glue_type) for name, t in CATALOG.offline_columns()]
    assert [k["Name"] for k in table["PartitionKeys"]] == ["event_date", "event_hour"]


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
