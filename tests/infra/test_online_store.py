from __future__ import annotations

import aws_cdk as cdk
import pytest
from aws_cdk import aws_dynamodb as dynamodb

from constructs_lib import ConstructPropsError, OnlineStore
from tests.infra.conftest import SynthesizedPlatform
from tests.infra.template_queries import only


def table(platform: SynthesizedPlatform) -> dict:
    return only(platform.storage, "AWS::DynamoDB::Table")


def test_key_schema_is_string_pk_and_sk(dev: SynthesizedPlatform) -> None:
    props = table(dev)["Properties"]
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert {"AttributeName": "sk", "AttributeType": "S"} in props["AttributeDefinitions"]


def test_table_is_on_demand_with_pitr_and_ttl(dev: SynthesizedPlatform) -> None:
    props = table(dev)["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


def test_table_is_encrypted_with_a_customer_managed_key(dev: SynthesizedPlatform) -> None:
    sse = table(dev)["Properties"]["SSESpecification"]
    assert sse["SSEEnabled"] is True
    assert sse["SSEType"] == "KMS"
    assert "KMSMasterKeyId" in sse


def test_dev_table_can_be_torn_down(dev: SynthesizedPlatform) -> None:
    resource = table(dev)
    assert resource["DeletionPolicy"] == "Delete"
    assert not resource["Properties"].get("DeletionProtectionEnabled", False)


def test_prod_table_is_protected_and_retained(prod: SynthesizedPlatform) -> None:
    resource = table(prod)
    assert resource["DeletionPolicy"] == "Retain"
    assert resource["Properties"]["DeletionProtectionEnabled"] is True


def test_prod_storage_stack_has_termination_protection(prod: SynthesizedPlatform,
                                                       dev: SynthesizedPlatform) -> None:
    assert prod.platform.storage.termination_protection is True
    assert dev.platform.storage.termination_protection is False


def test_existing_table_and_table_props_together_are_refused(stack: cdk.Stack) -> None:
    existing = dynamodb.Table.from_table_name(stack, "Existing", "features")
    with pytest.raises(ConstructPropsError, match="either 'existing_table' or 'table_props'"):
        OnlineStore(stack, "Store", existing_table=existing,
                    table_props={"deletion_protection": True})


def test_changing_the_key_schema_is_refused(stack: cdk.Stack) -> None:
    with pytest.raises(ConstructPropsError, match="'partition_key' is enforced"):
        OnlineStore(stack, "Store", table_props={"partition_key": dynamodb.Attribute(
            name="id", type=dynamodb.AttributeType.STRING)})
