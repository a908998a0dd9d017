"""Preparing a synthesized template for moto's CloudFormation, and resolving it afterwards."""

from __future__ import annotations

from typing import Any

import pytest

from localplatform.assembly import StackTemplate
from localplatform.intrinsics import Resolver, UnresolvableError
from localplatform.template_prep import prepare

SUPPORTED = {"AWS::Kinesis::Stream", "AWS::KMS::Key", "AWS::CloudWatch::Dashboard",
             "AWS::Lambda::EventSourceMapping", "AWS::SNS::Topic"}
TEMPLATE: dict[str, Any] = {
    "Resources": {
        "Key": {"Type": "AWS::KMS::Key",
                "Properties": {"Tags": [{"Key": "team", "Value": "platform"}]}},
        "Stream": {"Type": "AWS::Kinesis::Stream", "Properties": {}},
        "Alarm": {"Type": "AWS::CloudWatch::Alarm",
                  "Properties": {"AlarmName": "Fastbreak-dev-ProcessorErrors"}},
        "Dashboard": {"Type": "AWS::CloudWatch::Dashboard", "DependsOn": ["Alarm", "Stream"],
                      "Properties": {"Body": {"Fn::GetAtt": ["Alarm", "Arn"]}}},
        "Delivery": {"Type": "AWS::KinesisFirehose::DeliveryStream", "Properties": {}},
        "Mapping": {"Type": "AWS::Lambda::EventSourceMapping", "Properties": {}},
    },
    "Outputs": {"DeliveryName": {"Value": {"Ref": "Delivery"}}},
}


def test_skipped_and_emulated_resources_are_taken_out_and_named_locally() -> None:
    prepared = prepare(StackTemplate("Fastbreak-dev-Storage", TEMPLATE), SUPPORTED)
    assert sorted(prepared.for_moto["Resources"]) == ["Dashboard", "Key", "Stream"]
    assert prepared.local_names == {
        "Alarm": "Fastbreak-dev-ProcessorErrors",
        "Delivery": "Fastbreak-dev-Storage-Delivery",
        "Mapping": "Fastbreak-dev-Storage-Mapping",
    }


def test_references_to_taken_out_resources_become_their_local_names() -> None:
    prepared = prepare(StackTemplate("Fastbreak-dev-Storage", TEMPLATE), SUPPORTED)
    dashboard = prepared.for_moto["Resources"]["Dashboard"]
    assert dashboard["Properties"]["Body"] == (
        "arn:aws:cloudwatch:us-east-1:123456789012:alarm:Fastbreak-dev-ProcessorErrors")
    assert dashboard["DependsOn"] == ["Stream"]
    assert prepared.for_moto["Outputs"]["DeliveryName"]["Value"] == (
        "Fastbreak-dev-Storage-Delivery")


def test_kms_key_tags_are_dropped_for_moto_and_kept_in_the_original() -> None:
    prepared = prepare(StackTemplate("Fastbreak-dev-Storage", TEMPLATE), SUPPORTED)
    assert "Tags" not in prepared.for_moto["Resources"]["Key"]["Properties"]
    assert prepared.original["Resources"]["Key"]["Properties"]["Tags"]


def test_the_resolver_resolves_what_cdk_emits() -> None:
    resolver = Resolver(
        {"Resources": {"Stream": {"Type": "AWS::Kinesis::Stream"},
                       "Queue": {"Type": "AWS::SQS::Queue"}}},
        {"Stream": "events-1", "Queue": "https://sqs.us-east-1.amazonaws.com/123/failures"},
        {"Storage:TableName": "online-1"},
        "Fastbreak-dev-Processing",
    )
    assert resolver.resolve({
        "table": {"Fn::ImportValue": "Storage:TableName"},
        "stream": {"Fn::GetAtt": ["Stream", "Arn"]},
        "queue": {"Fn::GetAtt": "Queue.QueueName"},
        "joined": {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":x"]]},
        "sub": {"Fn::Sub": "${AWS::Region}/${Stream}/${Queue.Arn}"},
    }) == {
        "table": "online-1",
        "stream": "arn:aws:kinesis:us-east-1:123456789012:stream/events-1",
        "queue": "failures",
        "joined": "arn:aws:x",
        "sub": "us-east-1/events-1/arn:aws:sqs:us-east-1:123456789012:failures",
    }


@pytest.mark.parametrize("value", [{"Ref": "Missing"}, {"Fn::ImportValue": "nope"},
                                   {"Fn::FindInMap": ["a", "b", "c"]}])
def test_the_resolver_refuses_what_it_cannot_resolve(value: dict[str, Any]) -> None:
    resolver = Resolver({"Resources": {}}, {}, {}, "stack")
    with pytest.raises(UnresolvableError):
        resolver.resolve(value)
