"""The feature API over the online store; its logs live in the storage stack."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from constructs_lib import FeatureApi
from constructs_lib.feature_api import GameWindow, ProvisionedConcurrency
from constructs_lib.grants import TABLE_READ_KEY_ACTIONS, allow_key_use
from stacks.settings import Settings
from stacks.storage_stack import StorageStack


class ServingStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings,
        storage: StorageStack, **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        api = settings.section("api")
        self.feature_api = FeatureApi(
            self,
            "FeatureApi",
            environment={
                "FASTBREAK_ENV": settings.env_name,
                "ONLINE_TABLE_NAME": storage.online_store.table.table_name,
            },
            function_props={"reserved_concurrent_executions": api["reserved_concurrency"]},
            stage_props={
                "throttling_rate_limit": api["throttle_rate_per_second"],
                "throttling_burst_limit": api["throttle_burst"],
            },
            existing_log_group=storage.reader_log_group,
            existing_access_log_group=storage.api_access_log_group,
            provisioned_concurrency=provisioned_concurrency(settings),
            deployment=api["deployment"],
            rollback_5xx_percent=settings.get("monitoring.api_5xx_rate_alarm_percent"),
            name_prefix=settings.name_prefix,
            runbook_base_url=settings.get("monitoring.runbook_base_url"),
        )
        role = self.feature_api.role
        # Read-only, and only what the read path does: BatchGetItem of the group items it can
        # name, one Query per (entity, audience group) for its entity and tile items.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["dynamodb:BatchGetItem", "dynamodb:Query"],
                resources=[storage.online_store.table.table_arn],
            )
        )
        table_key = storage.online_store.key
        if table_key is not None:
            allow_key_use(role, table_key, TABLE_READ_KEY_ACTIONS)


def provisioned_concurrency(settings: Settings) -> ProvisionedConcurrency | None:
    api = settings.section("api")
    if not api["provisioned_concurrency_max"]:
        return None
    return ProvisionedConcurrency(
        minimum=api["provisioned_concurrency_min"],
        maximum=api["provisioned_concurrency_max"],
        utilization_target=api["provisioned_utilization_target"],
        game_windows=tuple(
            GameWindow(window["name"], window["start"], window["end"],
                       window["min_provisioned"], window.get("time_zone", "UTC"))
            for window in api["game_windows"]
        ),
    )
