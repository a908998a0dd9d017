"""The training-set Glue job: Glue 5.1 running the shipped entry script and package, a role
allowed exactly what a run does, everything it writes encrypted with the offline store's CMK,
its logs made ahead with the kit's retention; and job props that the construct refuses."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template

from constructs_lib import ConstructPropsError, TrainingSetJob
from constructs_lib.training_set_job import JOB_SCRIPT, PACKAGE_DIR, package_archive
from tests.infra.conftest import SynthesizedPlatform
from tests.infra.template_queries import logical_id, only


def job(platform: SynthesizedPlatform) -> dict[str, Any]:
    properties: dict[str, Any] = only(platform.storage, "AWS::Glue::Job")["Properties"]
    return properties


def role_statements(platform: SynthesizedPlatform) -> dict[str, dict[str, Any]]:
    role = job(platform)["Role"]["Fn::GetAtt"][0]
    policies = platform.storage.find_resources("AWS::IAM::Policy").values()
    [policy] = [p["Properties"] for p in policies if p["Properties"]["Roles"] == [{"Ref": role}]]
    return {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}


def resolved(value: Any) -> str:
    """A template value with intrinsics rendered as text, for comparisons by pattern."""
    return json.dumps(value, sort_keys=True)


def test_the_job_is_glue_5_1_pyspark_with_the_entry_script_and_the_package(
    dev: SynthesizedPlatform,
) -> None:
    properties = job(dev)
    assert properties["GlueVersion"] == "5.1"
    assert properties["Command"]["Name"] == "glueetl"
    assert properties["Command"]["PythonVersion"] == "3"
    assets = Path(dev.assembly.directory)
    script = properties["Command"]["ScriptLocation"]["Fn::Join"][1][-1].lstrip("/")
    package = properties["DefaultArguments"]["--extra-py-files"]["Fn::Join"][1][-1].lstrip("/")
    assert (assets / f"asset.{script}").read_bytes() == JOB_SCRIPT.read_bytes()
    with zipfile.ZipFile(assets / f"asset.{package}") as zipped:
        names = set(zipped.namelist())
    assert "fastbreak/offline/spark_engine.py" in names
    assert "fastbreak/engine/fold.py" in names
    assert not any("__pycache__" in name for name in names)


def test_the_default_arguments_name_the_raw_table_and_the_training_sets_folder(
    dev: SynthesizedPlatform,
) -> None:
    arguments = job(dev)["DefaultArguments"]
    bucket = logical_id_of_bucket(dev)
    assert arguments["--raw-table"] == "fastbreak_dev.raw_events"
    assert arguments["--training-sets"] == {
        "Fn::Join": ["", ["s3://", {"Ref": bucket}, "/training-sets/"]]}
    assert arguments["--job-bookmark-option"] == "job-bookmark-disable"


def logical_id_of_bucket(platform: SynthesizedPlatform) -> str:
    [bucket] = [name for name, b in platform.storage.find_resources("AWS::S3::Bucket").items()
                if "LoggingConfiguration" in b["Properties"]]
    return bucket


def test_a_security_configuration_encrypts_s3_logs_and_bookmarks_with_the_offline_cmk(
    dev: SynthesizedPlatform,
) -> None:
    configuration = only(dev.storage, "AWS::Glue::SecurityConfiguration")["Properties"]
    assert job(dev)["SecurityConfiguration"] == {
        "Ref": logical_id(dev.storage, "AWS::Glue::SecurityConfiguration")}
    bucket = dev.storage.find_resources("AWS::S3::Bucket")[logical_id_of_bucket(dev)]
    [rule] = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    offline_key = rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]
    encryption = configuration["EncryptionConfiguration"]
    assert encryption["S3Encryptions"] == [{"S3EncryptionMode": "SSE-KMS",
                                            "KmsKeyArn": offline_key}]
    assert encryption["CloudWatchEncryption"] == {"CloudWatchEncryptionMode": "SSE-KMS",
                                                  "KmsKeyArn": offline_key}
    assert encryption["JobBookmarksEncryption"] == {"JobBookmarksEncryptionMode": "CSE-KMS",
                                                    "KmsKeyArn": offline_key}


def test_the_job_logs_to_its_own_encrypted_log_groups_kept_as_the_environment_says(
    dev: SynthesizedPlatform, prod: SynthesizedPlatform,
) -> None:
    for platform, days in ((dev, 30), (prod, 365)):
        groups = {name: g["Properties"] for name, g in
                  platform.storage.find_resources("AWS::Logs::LogGroup").items()
                  if name.startswith("TrainingSetJob")}
        names = sorted(resolved(g["LogGroupName"]) for g in groups.values())
        assert len(names) == 3
        assert any("/output" in n for n in names) and any("/error" in n for n in names)
        assert any("/aws-glue/jobs/logs-v2-Fastbreak-" in n for n in names)
        for group in groups.values():
            assert group["RetentionInDays"] == days
            assert "KmsKeyId" in group
        continuous = job(platform)["DefaultArguments"]["--continuous-log-logGroup"]["Ref"]
        assert continuous in groups


def test_cloudwatch_logs_may_use_the_cmk_for_the_job_log_groups_only(
    dev: SynthesizedPlatform,
) -> None:
    statements = [s for key in dev.storage.find_resources("AWS::KMS::Key").values()
                  for s in key["Properties"]["KeyPolicy"]["Statement"]
                  if s.get("Sid") == "AllowTrainingSetJobLogGroups"]
    [statement] = statements
    arns = statement["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"]
    assert len(arns) == 3
    assert all("/aws-glue/jobs/" in resolved(arn) for arn in arns)


def test_the_role_reads_raw_and_training_sets_and_writes_only_training_sets(
    dev: SynthesizedPlatform,
) -> None:
    statements = role_statements(dev)
    reads = resolved(statements["ReadRawEventsAndSpines"]["Resource"])
    assert '"/raw/*"' in reads and '"/training-sets/*"' in reads
    write = statements["WriteTrainingSets"]
    assert sorted(write["Action"]) == ["s3:AbortMultipartUpload", "s3:PutObject"]
    assert resolved(write["Resource"]).count("/training-sets/*") == 1
    everything = [a for s in statements.values()
                  for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert not [a for a in everything if "Delete" in a or a.endswith("*")]
    listing = statements["ListThosePrefixes"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["raw/*", "training-sets/*"]}}


def test_the_role_reads_only_the_raw_table_from_the_catalog(dev: SynthesizedPlatform) -> None:
    statement = role_statements(dev)["ReadRawTableSchema"]
    assert statement["Action"] == "glue:GetTable"
    resources = resolved(statement["Resource"])
    assert ":table/fastbreak_dev/raw_events" in resources
    assert ":database/fastbreak_dev" in resources


def test_the_role_uses_the_cmk_only_through_s3_for_the_offline_bucket(
    dev: SynthesizedPlatform,
) -> None:
    statement = role_statements(dev)["UseTheBucketKeyThroughS3"]
    assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert "kms:ViaService" in statement["Condition"]["StringEquals"]
    assert "kms:EncryptionContext:aws:s3:arn" in statement["Condition"]["StringLike"]


def test_the_role_reads_exactly_the_two_assets_and_puts_metrics_in_the_glue_namespace(
    dev: SynthesizedPlatform,
) -> None:
    statements = role_statements(dev)
    assets = statements["ReadTheJobAssets"]["Resource"]
    assert len(assets) == 2 and all("*" not in resolved(asset) for asset in assets)
    metrics = statements["PutJobMetrics"]
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Glue"}}


def test_only_glue_of_this_account_assumes_the_role(dev: SynthesizedPlatform) -> None:
    role = job(dev)["Role"]["Fn::GetAtt"][0]
    trust = dev.storage.find_resources("AWS::IAM::Role")[role]["Properties"]
    [statement] = trust["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "glue.amazonaws.com"}
    assert "aws:SourceAccount" in statement["Condition"]["StringEquals"]
    assert "ManagedPolicyArns" not in trust


def test_the_stack_outputs_the_job_name(dev: SynthesizedPlatform) -> None:
    output = dev.storage.to_json()["Outputs"]["TrainingSetJobName"]
    assert output["Value"] == {"Ref": logical_id(dev.storage, "AWS::Glue::Job")}


def test_the_package_archive_is_the_same_bytes_for_the_same_sources() -> None:
    first = package_archive()
    assert package_archive() == first
    with zipfile.ZipFile(first) as zipped:
        listed = sorted(zipped.namelist())
    expected = sorted(str(p.relative_to(PACKAGE_DIR.parent)) for p in PACKAGE_DIR.rglob("*.py")
                      if "__pycache__" not in p.parts)
    assert [name for name in listed if name.endswith(".py")] == expected


def construct(stack: cdk.Stack, **job_props: Any) -> TrainingSetJob:
    key = kms.Key(stack, "Key")
    bucket = s3.Bucket(stack, "Bucket", encryption_key=key)
    return TrainingSetJob(stack, "Job", bucket=bucket, key=key, database_name="db",
                          job_props=job_props or None)


def test_job_props_override_the_defaults(stack: cdk.Stack) -> None:
    construct(stack, number_of_workers=10, timeout=cdk.Duration.hours(6))
    properties = only(Template.from_stack(stack), "AWS::Glue::Job")["Properties"]
    assert (properties["NumberOfWorkers"], properties["Timeout"]) == (10, 360)
    assert properties["WorkerType"] == "G.1X"  # the default kept


@pytest.mark.parametrize("prop", ["glue_version", "role", "security_configuration", "script"])
def test_a_job_prop_the_construct_enforces_is_refused_by_name(stack: cdk.Stack, prop: str) -> None:
    with pytest.raises(ConstructPropsError, match=f"prop '{prop}'"):
        construct(stack, **{prop: "anything"})


def test_a_key_of_another_stack_is_refused(stack: cdk.Stack) -> None:
    imported = kms.Key.from_key_arn(
        stack, "Imported", "arn:aws:kms:us-east-1:111111111111:key/abcd")
    bucket = s3.Bucket(stack, "Bucket")
    with pytest.raises(ConstructPropsError, match="prop 'key'"):
        TrainingSetJob(stack, "Job", bucket=bucket, key=imported, database_name="db")
