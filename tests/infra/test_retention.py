"""What must outlive the compute stacks lives in Storage: the on-failure queue and the logs.
Prod retains them (and their keys) and keeps its logs 365 days; deleting Processing or
Serving deletes no queue, log group or key."""

from __future__ import annotations

import pytest

from tests.infra.conftest import SynthesizedPlatform

KEPT = ("AWS::SQS::Queue", "AWS::Logs::LogGroup", "AWS::KMS::Key")


@pytest.mark.parametrize("name", ["processing", "serving"])
def test_compute_stacks_own_no_queue_log_group_or_key(
    prod: SynthesizedPlatform, name: str,
) -> None:
    template = prod.templates[name]
    for resource_type in KEPT:
        assert template.find_resources(resource_type) == {}, (name, resource_type)


def test_prod_retains_the_on_failure_queue_and_every_log_group_with_their_keys(
    prod: SynthesizedPlatform,
) -> None:
    storage = prod.storage
    for resource_type in KEPT:
        resources = storage.find_resources(resource_type)
        assert resources
        for logical, resource in resources.items():
            assert resource["DeletionPolicy"] == "Retain", logical
    for logical, group in storage.find_resources("AWS::Logs::LogGroup").items():
        assert group["Properties"]["RetentionInDays"] == 365, logical


def test_dev_can_be_torn_down(dev: SynthesizedPlatform) -> None:
    for resource_type in KEPT:
        for logical, resource in dev.storage.find_resources(resource_type).items():
            assert resource["DeletionPolicy"] == "Delete", logical


def test_the_queue_url_is_an_output_for_redrive(dev: SynthesizedPlatform) -> None:
    outputs = dev.storage.to_json()["Outputs"]
    assert "python -m fastbreak_ops.redrive" in outputs["OnFailureQueueUrl"]["Description"]
