"""On-call monitoring: the page topic, alarms with runbooks, and the dashboard.

One facade, one method per monitored component (as in cdk-monitoring-constructs). Every alarm
pages (alarm and OK transitions), is named for what it protects, takes its threshold from a
documented reason, and its description links the runbook section in docs/runbooks.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from constructs_lib.secure_defaults import customer_managed_key

RUNBOOK_DOC = "docs/runbooks.md"
FIVE_MINUTES = Duration.minutes(5)
ONE_MINUTE = Duration.minutes(1)


@dataclass(frozen=True)
class AlarmSpec:
    """What an alarm protects and why its threshold is what it is."""

    name: str
    runbook: str  # anchor in docs/runbooks.md
    summary: str
    metric: cloudwatch.IMetric
    threshold: float
    evaluation_periods: int = 3
    datapoints_to_alarm: int = 2
    comparison: cloudwatch.ComparisonOperator = (
        cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
    )


class Monitoring(Construct):
    """Exposes ``page_topic``, ``topic_key``, ``dashboard`` and ``alarms`` (by name)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name_prefix: str,
        runbook_base_url: str = "",
        page_emails: Sequence[str] = (),
        page_https_endpoints: Sequence[str] = (),
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
    ) -> None:
        super().__init__(scope, construct_id)
        self._prefix = name_prefix
        self._runbook_base_url = runbook_base_url.rstrip("/")
        self.topic_key = customer_managed_key(
            self,
            "TopicKey",
            description="Fastbreak: encrypts the on-call page topic",
            removal_policy=removal_policy,
        )
        # CloudWatch publishes alarm notifications; it needs the key to encrypt them.
        self.topic_key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        self.page_topic = sns.Topic(
            self,
            "PageTopic",
            display_name=f"{name_prefix} on-call pages",
            master_key=self.topic_key,
            enforce_ssl=True,
        )
        for email in page_emails:
            self.page_topic.add_subscription(subscriptions.EmailSubscription(email))
        for url in page_https_endpoints:
            self.page_topic.add_subscription(subscriptions.UrlSubscription(url))
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{name_prefix}-overview",
            default_interval=Duration.hours(3),
        )
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        self._page = actions.SnsAction(self.page_topic)

    # ---- one method per component --------------------------------------------------------
    def monitor_event_stream(
        self, stream: kinesis.IStream, *, iterator_age_seconds: int
    ) -> None:
        iterator_age = stream.metric_get_records_iterator_age_milliseconds(
            statistic="Maximum", period=ONE_MINUTE
        )
        write_exceeded = stream.metric_write_provisioned_throughput_exceeded(
            statistic="Sum", period=ONE_MINUTE
        )
        read_exceeded = stream.metric_read_provisioned_throughput_exceeded(
            statistic="Sum", period=ONE_MINUTE
        )
        self._add_alarms(
            AlarmSpec(
                "EventsStreamIteratorAge", "events-stream-iterator-age",
                f"The oldest unread event is over {iterator_age_seconds}s old: a consumer is "
                "behind and features are stale.",
                iterator_age, iterator_age_seconds * 1000,
            ),
            AlarmSpec(
                "EventsStreamWriteThrottled", "events-stream-write-throttled",
                "Producers are throttled on the events stream; events wait in producer "
                "retries or are dropped by producers that give up.",
                write_exceeded, 0, evaluation_periods=5, datapoints_to_alarm=3,
            ),
            AlarmSpec(
                "EventsStreamReadThrottled", "events-stream-read-throttled",
                "Consumers of the events stream are throttled; more than two shared-throughput "
                "consumers or a hot shard.",
                read_exceeded, 0, evaluation_periods=5, datapoints_to_alarm=3,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Events in (records/min)",
                left=[stream.metric_incoming_records(statistic="Sum", period=ONE_MINUTE)],
                width=8,
            ),
            cloudwatch.GraphWidget(title="Iterator age (ms)", left=[iterator_age], width=8),
            cloudwatch.GraphWidget(
                title="Stream throttling", left=[write_exceeded, read_exceeded], width=8
            ),
        )

    def monitor_stream_processor(
        self,
        function: lambda_.IFunction,
        on_failure_queue: sqs.IQueue,
        *,
        iterator_age_seconds: int,
    ) -> None:
        errors = function.metric_errors(statistic="Sum", period=ONE_MINUTE)
        throttles = function.metric_throttles(statistic="Sum", period=ONE_MINUTE)
        iterator_age = function.metric(
            "IteratorAge", statistic="Maximum", period=ONE_MINUTE
        )
        failed_batches = on_failure_queue.metric_approximate_number_of_messages_visible(
            statistic="Maximum", period=ONE_MINUTE
        )
        invalid = cloudwatch.Metric(
            namespace="Fastbreak",
            metric_name="RecordsInvalid",
            dimensions_map={"service": "stream-processor"},
            statistic="Sum",
            period=FIVE_MINUTES,
        )
        self._add_alarms(
            AlarmSpec(
                "ProcessorErrors", "processor-errors",
                "The stream processor fails whole invocations (not single records); its "
                "shards retry and fall behind.",
                errors, 0,
            ),
            AlarmSpec(
                "ProcessorThrottles", "processor-throttles",
                "The processor hit its reserved concurrency; shards wait for a free slot.",
                throttles, 0, evaluation_periods=5, datapoints_to_alarm=3,
            ),
            AlarmSpec(
                "ProcessorIteratorAge", "processor-iterator-age",
                f"The processor reads events over {iterator_age_seconds}s after they arrived: "
                "online features are stale.",
                iterator_age, iterator_age_seconds * 1000,
            ),
            AlarmSpec(
                "ProcessorFailedBatches", "processor-failed-batches",
                "Batches exhausted their retries and went to the on-failure queue: their events "
                "are not in the online store until replayed.",
                failed_batches, 0, evaluation_periods=1, datapoints_to_alarm=1,
            ),
            AlarmSpec(
                "ProcessorQuarantineSurge", "processor-quarantine-surge",
                "Over 1,000 invalid events in 5 minutes: a producer ships a broken schema.",
                invalid, 1000, evaluation_periods=1, datapoints_to_alarm=1,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Processor errors/throttles", left=[errors, throttles],
                                   width=8),
            cloudwatch.GraphWidget(title="Processor iterator age (ms)", left=[iterator_age],
                                   width=8),
            cloudwatch.GraphWidget(title="Failed batches / invalid events",
                                   left=[failed_batches], right=[invalid], width=8),
        )

    def monitor_online_store(self, table: dynamodb.ITable) -> None:
        operations = [
            dynamodb.Operation.GET_ITEM,
            dynamodb.Operation.BATCH_GET_ITEM,
            dynamodb.Operation.QUERY,
            dynamodb.Operation.UPDATE_ITEM,
            dynamodb.Operation.BATCH_WRITE_ITEM,
        ]
        throttled = table.metric_throttled_requests_for_operations(
            operations=operations, period=ONE_MINUTE
        )
        system_errors = table.metric_system_errors_for_operations(
            operations=operations, period=ONE_MINUTE
        )
        self._add_alarms(
            AlarmSpec(
                "OnlineStoreThrottles", "online-store-throttles",
                "DynamoDB throttles the online store: a hot partition (a marquee game) or an "
                "account limit. Writes retry and lag; reads may fail.",
                throttled, 0, evaluation_periods=5, datapoints_to_alarm=3,
            ),
            AlarmSpec(
                "OnlineStoreSystemErrors", "online-store-system-errors",
                "DynamoDB returns 5xx for the online store: an AWS-side problem.",
                system_errors, 0,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Online store throttled requests", left=[throttled],
                                   width=12),
            cloudwatch.GraphWidget(title="Online store system errors", left=[system_errors],
                                   width=12),
        )

    def monitor_offline_delivery(
        self, delivery_stream: firehose.IDeliveryStream, *, freshness_seconds: int
    ) -> None:
        freshness = delivery_stream.metric(
            "DeliveryToS3.DataFreshness", statistic="Maximum", period=FIVE_MINUTES
        )
        self._add_alarms(
            AlarmSpec(
                "OfflineDeliveryFreshness", "offline-delivery-freshness",
                f"Raw events reach S3 over {freshness_seconds}s after they entered Firehose: "
                "training data and backfills lag.",
                freshness, freshness_seconds,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Firehose data freshness (s)", left=[freshness],
                                   width=12),
        )

    def monitor_feature_api(
        self, api: apigw.RestApi, *, p99_latency_ms: int, server_error_percent: float
    ) -> None:
        latency = api.metric_latency(statistic="p99", period=ONE_MINUTE)
        requests = api.metric_count(statistic="Sum", period=ONE_MINUTE)
        server_errors = api.metric_server_error(statistic="Sum", period=ONE_MINUTE)
        error_rate = cloudwatch.MathExpression(
            expression="IF(requests > 0, 100 * errors / requests, 0)",
            using_metrics={"errors": server_errors, "requests": requests},
            label="5xx rate (%)",
            period=ONE_MINUTE,
        )
        self._add_alarms(
            AlarmSpec(
                "FeatureApiServerErrors", "feature-api-server-errors",
                f"Over {server_error_percent}% of feature requests fail with 5xx: ranking "
                "services fall back to defaults.",
                error_rate, server_error_percent,
            ),
            AlarmSpec(
                "FeatureApiLatencyP99", "feature-api-latency",
                f"p99 latency of the feature API is over {p99_latency_ms} ms, the budget a "
                "ranking request leaves for features.",
                latency, p99_latency_ms, evaluation_periods=5, datapoints_to_alarm=3,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Feature API requests / 5xx rate", left=[requests],
                                   right=[error_rate], width=12),
            cloudwatch.GraphWidget(title="Feature API p99 latency (ms)", left=[latency],
                                   width=12),
        )

    # ---- shared ---------------------------------------------------------------------------
    def _add_alarms(self, *specs: AlarmSpec) -> None:
        for spec in specs:
            base = f"{self._runbook_base_url}/" if self._runbook_base_url else ""
            runbook_url = f"{base}{RUNBOOK_DOC}#{spec.runbook}"
            alarm = cloudwatch.Alarm(
                self,
                spec.name,
                alarm_name=f"{self._prefix}-{spec.name}",
                alarm_description=f"{spec.summary} Runbook: {runbook_url}",
                metric=spec.metric,
                threshold=spec.threshold,
                evaluation_periods=spec.evaluation_periods,
                datapoints_to_alarm=spec.datapoints_to_alarm,
                comparison_operator=spec.comparison,
                # No data means no traffic, not a failure; traffic alarms cover silence.
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            alarm.add_alarm_action(self._page)
            alarm.add_ok_action(self._page)
            self.alarms[spec.name] = alarm
        self.dashboard.add_widgets(
            *(cloudwatch.AlarmStatusWidget(alarms=[self.alarms[s.name]], width=4, height=3)
              for s in specs)
        )
