"""The online feature store: one DynamoDB table of tiles and latest values.

Key schema (see docs/online-store-layout.md): ``pk`` = ``{entity_type}#{entity_id}`` and
``sk`` = ``{group}`` (or ``{group}#...`` for an audience group's entity and tile items), both
strings, so a reader names a group's item in a BatchGetItem, or Queries an audience group's
items. ``expires_at`` (epoch
seconds) lets DynamoDB drop items whose every tile fell out of every window; readers still
check it, as TTL deletion is lazy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

from constructs_lib.nag import acknowledge
from constructs_lib.props import exactly_one, merge_props
from constructs_lib.secure_defaults import customer_managed_key

PARTITION_KEY = "pk"
SORT_KEY = "sk"
TTL_ATTRIBUTE = "expires_at"


class OnlineStore(Construct):
    """Exposes ``table`` and ``key`` (None when an existing table is passed in).

    ``dynamodb.Table`` rather than ``TableV2``: TableV2 synthesizes a GlobalTable, which the
    embedded local platform's CloudFormation (moto's) cannot create.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        deletion_protection: bool = False,
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
        table_props: Mapping[str, Any] | None = None,
        existing_table: dynamodb.ITable | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        exactly_one("OnlineStore", "existing_table", existing_table, "table_props", table_props)
        self.key: kms.Key | None = None
        if existing_table is not None:
            self.table: dynamodb.ITable = existing_table
            return
        self.key = customer_managed_key(
            self,
            "Key",
            description="Fastbreak: encrypts the online feature store",
            removal_policy=removal_policy,
        )
        defaults: dict[str, Any] = {
            "billing_mode": dynamodb.BillingMode.PAY_PER_REQUEST,
            "point_in_time_recovery_specification": dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            "deletion_protection": deletion_protection,
            "removal_policy": removal_policy,
            # Shows the hottest partition keys: the first thing to look at on a throttle page.
            "contributor_insights_specification": dynamodb.ContributorInsightsSpecification(
                enabled=True
            ),
        }
        enforced: dict[str, Any] = {
            "partition_key": dynamodb.Attribute(
                name=PARTITION_KEY, type=dynamodb.AttributeType.STRING
            ),
            "sort_key": dynamodb.Attribute(name=SORT_KEY, type=dynamodb.AttributeType.STRING),
            "time_to_live_attribute": TTL_ATTRIBUTE,
            "encryption": dynamodb.TableEncryption.CUSTOMER_MANAGED,
            "encryption_key": self.key,
        }
        self.table = dynamodb.Table(
            self, "Table", **merge_props("OnlineStore", defaults, table_props, enforced)
        )
        acknowledge(
            self.table,
            {
                "NIST.800.53.R5::NIST.800.53.R5-DynamoDBInBackupPlan": (
                    "point-in-time recovery keeps 35 days of continuous backups that restore "
                    "the table to any second; the items are derived state (tiles folded from "
                    "the events, which the offline store keeps as raw Parquet), so a second "
                    "copy in an AWS Backup vault would only double their storage cost"
                )
            },
        )
