"""The feature API over the online store."""

from __future__ import annotations

from typing import Any

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from constructs_lib import FeatureApi
from constructs_lib.grants import TABLE_READ_KEY_ACTIONS, allow_key_use
from constructs_lib.secure_defaults import log_encryption_key
from stacks.settings import Settings
from stacks.storage_stack import StorageStack


class ServingStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings,
        storage: StorageStack, **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        api = settings.section("api")
        self.log_key = log_encryption_key(self, "LogKey", removal_policy=RemovalPolicy.DESTROY)
        self.feature_api = FeatureApi(
            self,
            "FeatureApi",
            environment={
                "FASTBREAK_ENV": settings.env_name,
                "ONLINE_TABLE_NAME": storage.online_store.table.table_name,
            },
            log_key=self.log_key,
            throttle_rate_per_second=api["throttle_rate_per_second"],
            throttle_burst=api["throttle_burst"],
            reserved_concurrency=api["reserved_concurrency"],
            log_retention_days=settings.get("log_retention_days"),
        )
        role = self.feature_api.role
        # Read-only, and only what the read path does: BatchGetItem of the group items it can
        # name, one Query per (entity, group) stored as per-shard partials.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["dynamodb:BatchGetItem", "dynamodb:Query"],
                resources=[storage.online_store.table.table_arn],
            )
        )
        table_key = storage.online_store.key
        if table_key is not None:
            allow_key_use(role, table_key, TABLE_READ_KEY_ACTIONS)
