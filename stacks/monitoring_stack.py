"""Alarms, dashboard and the page topic over every other stack."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_sns as sns
from constructs import Construct

from constructs_lib import Monitoring
from stacks.processing_stack import ProcessingStack
from stacks.serving_stack import ServingStack
from stacks.settings import Settings
from stacks.storage_stack import StorageStack


class MonitoringStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings,
        storage: StorageStack, processing: ProcessingStack, serving: ServingStack,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        monitoring = settings.section("monitoring")
        existing_topic = (
            sns.Topic.from_topic_arn(self, "PagerTopic", monitoring["page_topic_arn"])
            if monitoring["page_topic_arn"] else None
        )
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            name_prefix=settings.name_prefix,
            environment=settings.env_name,
            runbook_base_url=monitoring["runbook_base_url"],
            page_emails=monitoring["page_emails"],
            page_https_endpoints=monitoring["page_https_endpoints"],
            existing_page_topic=existing_topic,
        )
        iterator_age = monitoring["iterator_age_alarm_seconds"]
        self.monitoring.monitor_event_stream(
            storage.events.stream, iterator_age_seconds=iterator_age
        )
        self.monitoring.monitor_stream_processor(
            processing.processor.function,
            storage.failed_batches.queue,
            iterator_age_seconds=iterator_age,
        )
        if processing.audience_flink is not None:
            self.monitoring.monitor_flink_audience_stage(
                processing.audience_flink.application,
                storage.partials.stream,
                iterator_age_seconds=iterator_age,
            )
        else:
            assert processing.audience is not None
            self.monitoring.monitor_audience_stage(
                processing.audience.function,
                storage.audience_failed_batches.queue,
                storage.partials.stream,
                iterator_age_seconds=iterator_age,
            )
        self.monitoring.monitor_online_store(storage.online_store.table)
        self.monitoring.monitor_offline_delivery(
            storage.offline_store.delivery_stream,
            freshness_seconds=monitoring["firehose_freshness_alarm_seconds"],
        )
        self.monitoring.monitor_feature_api(
            serving.feature_api.api,
            p99_latency_ms=monitoring["api_p99_latency_alarm_ms"],
            server_error_percent=monitoring["api_5xx_rate_alarm_percent"],
        )
        if storage.consistency_check is not None:
            self.monitoring.monitor_consistency_check(
                storage.consistency_check.function,
                every=Duration.minutes(settings.get("consistency.every_minutes")),
                below_percent=monitoring["consistency_alarm_percent"],
            )
