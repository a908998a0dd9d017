"""The whole platform of one environment: four stacks and the cdk-nag packs over them."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import App, Environment, Tags, Validations
from cdk_nag import AwsSolutionsChecks, NIST80053R5Checks, ServerlessChecks

from fastbreak.definitions import Catalog
from fastbreak.engine.plan import compile_plan
from stacks.monitoring_stack import MonitoringStack
from stacks.processing_stack import ProcessingStack
from stacks.serving_stack import ServingStack
from stacks.settings import Settings, check_deployable
from stacks.storage_stack import StorageStack


@dataclass(frozen=True)
class Platform:
    storage: StorageStack
    processing: ProcessingStack
    serving: ServingStack
    monitoring: MonitoringStack

    @property
    def stacks(self) -> tuple[StorageStack, ProcessingStack, ServingStack, MonitoringStack]:
        return (self.storage, self.processing, self.serving, self.monitoring)


def build_platform(
    app: App, settings: Settings, catalog: Catalog, *, env: Environment | None = None
) -> Platform:
    # The plan the processor compiles at cold start: a definition it would refuse (an item
    # that could outgrow DynamoDB's limit, say) fails the synth instead, naming the group.
    compile_plan(catalog)
    check_deployable(settings)
    prefix = settings.name_prefix
    storage = StorageStack(
        app, f"{prefix}-Storage", settings=settings, catalog=catalog, env=env,
        termination_protection=settings.is_production,
        description="Fastbreak: events and partials streams, online store and offline store",
    )
    processing = ProcessingStack(
        app, f"{prefix}-Processing", settings=settings, storage=storage, env=env,
        description="Fastbreak: the Lambda stream processor and the audience stage",
    )
    serving = ServingStack(
        app, f"{prefix}-Serving", settings=settings, storage=storage, env=env,
        description="Fastbreak: the feature API",
    )
    monitoring = MonitoringStack(
        app, f"{prefix}-Monitoring", settings=settings, storage=storage,
        processing=processing, serving=serving, env=env,
        description="Fastbreak: alarms, dashboard and the on-call page topic",
    )
    platform = Platform(storage, processing, serving, monitoring)
    for stack in platform.stacks:
        Tags.of(stack).add("fastbreak:environment", settings.env_name)
        Tags.of(stack).add("fastbreak:component", stack.stack_name.rsplit("-", 1)[-1].lower())
    return platform


def apply_nag_packs(app: App) -> None:
    """The three packs Fastbreak must pass; findings fail synth unless acknowledged."""
    Validations.of(app).add_plugins(
        AwsSolutionsChecks(app), ServerlessChecks(app), NIST80053R5Checks(app)
    )
