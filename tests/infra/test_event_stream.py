from __future__ import annotations

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kinesis as kinesis
from aws_cdk.assertions import Match, Template

from constructs_lib import ConstructPropsError, EventStream
from tests.infra.conftest import SynthesizedPlatform
from tests.infra.template_queries import named


@pytest.mark.parametrize("stream", ["Events", "Partials"])
def test_streams_are_encrypted_with_their_own_customer_managed_key(
    dev: SynthesizedPlatform, stream: str,
) -> None:
    props = named(dev.storage, "AWS::Kinesis::Stream", stream)["Properties"]
    assert props["StreamEncryption"]["EncryptionType"] == "KMS"
    key_id = props["StreamEncryption"]["KeyId"]["Fn::GetAtt"][0]
    assert key_id.startswith(stream) and key_id in dev.storage.find_resources("AWS::KMS::Key")


def test_every_customer_managed_key_rotates(dev: SynthesizedPlatform) -> None:
    for template in dev.templates.values():
        for key in template.find_resources("AWS::KMS::Key").values():
            assert key["Properties"]["EnableKeyRotation"] is True


@pytest.mark.parametrize("stream", ["Events", "Partials"])
def test_dev_streams_are_on_demand_with_one_day_retention(
    dev: SynthesizedPlatform, stream: str,
) -> None:
    props = named(dev.storage, "AWS::Kinesis::Stream", stream)["Properties"]
    assert props["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert props["RetentionPeriodHours"] == 24


@pytest.mark.parametrize("stream", ["Events", "Partials"])
def test_prod_streams_keep_seven_days(prod: SynthesizedPlatform, stream: str) -> None:
    props = named(prod.storage, "AWS::Kinesis::Stream", stream)["Properties"]
    assert props["RetentionPeriodHours"] == 168


def test_shard_count_switches_to_provisioned_mode(stack: cdk.Stack) -> None:
    EventStream(stack, "Events", shard_count=4)
    Template.from_stack(stack).has_resource_properties(
        "AWS::Kinesis::Stream",
        {"ShardCount": 4, "StreamModeDetails": {"StreamMode": "PROVISIONED"}},
    )


def test_user_props_override_defaults(stack: cdk.Stack) -> None:
    EventStream(stack, "Events", stream_props={"retention_period": cdk.Duration.hours(48)})
    Template.from_stack(stack).has_resource_properties(
        "AWS::Kinesis::Stream", {"RetentionPeriodHours": 48, "StreamEncryption": Match.any_value()}
    )


def test_turning_encryption_off_is_refused_naming_the_prop(stack: cdk.Stack) -> None:
    with pytest.raises(ConstructPropsError, match="'encryption' is enforced"):
        EventStream(
            stack, "Events", stream_props={"encryption": kinesis.StreamEncryption.UNENCRYPTED}
        )
