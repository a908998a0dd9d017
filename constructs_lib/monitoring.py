"""On-call monitoring: the page topic, alarms with runbooks, and the dashboard.

One facade, one method per monitored component (as in cdk-monitoring-constructs). Every alarm
pages (alarm and OK transitions), is named for what it protects, takes its threshold from a
documented reason, and its description links the runbook section in docs/runbooks.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aws_cdk.aws_kinesisanalytics_flink_alpha as flink
from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from constructs_lib.consistency_check import SERVICE_NAME as CONSISTENCY_SERVICE
from constructs_lib.defaults import MONITORING
from constructs_lib.feature_api import server_error_rate
from constructs_lib.nag import acknowledge
from constructs_lib.powertools_function import METRICS_NAMESPACE
from constructs_lib.props import exactly_one, merge_props
from constructs_lib.runbooks import runbook_url
from constructs_lib.secure_defaults import customer_managed_key
from constructs_lib.stream_processor import AUDIENCE_STAGE
from constructs_lib.stream_processor import SERVICE_NAME as PROCESSOR_SERVICE

# The dimension every custom metric of the handlers carries (Powertools default dimensions,
# from FASTBREAK_ENV): one environment's alarms never count another's events.
ENVIRONMENT_DIMENSION = "environment"
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
    """Exposes ``page_topic``, ``topic_key`` (None for an existing topic), ``dashboard``,
    ``alarms`` (by name) and ``undelivered_pages`` (the subscriptions' dead-letter queue, None
    without subscriptions).

    ``name_prefix`` names every alarm and the dashboard, and scopes which alarms may publish
    to the page topic: one per environment, so environments cannot page each other.
    ``environment`` is the value of the ``environment`` dimension of the handlers' custom
    metrics that alarms select on. ``topic_props`` (``sns.Topic``: display name...) or
    ``existing_page_topic`` (an organisation's pager topic), not both; a new topic is always
    encrypted with its own key and refuses non-TLS publishers. An existing topic's owner must
    allow ``cloudwatch.amazonaws.com`` to publish to it (and to use its key).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name_prefix: str,
        environment: str,
        runbook_base_url: str = "",
        page_emails: Sequence[str] = (),
        page_https_endpoints: Sequence[str] = (),
        topic_props: Mapping[str, Any] | None = None,
        existing_page_topic: sns.ITopic | None = None,
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
    ) -> None:
        super().__init__(scope, construct_id)
        exactly_one("Monitoring", "existing_page_topic", existing_page_topic, "topic_props",
                    topic_props)
        self._prefix = name_prefix
        self._environment = environment
        self._runbook_base_url = runbook_base_url
        self.topic_key: kms.Key | None = None
        if existing_page_topic is None:
            existing_page_topic = self._page_topic(topic_props, removal_policy)
        self.page_topic: sns.ITopic = existing_page_topic
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{name_prefix}-overview",
            default_interval=Duration.hours(3),
        )
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        self._page = actions.SnsAction(self.page_topic)
        self.undelivered_pages: sqs.Queue | None = None
        if page_emails or page_https_endpoints:
            self.undelivered_pages = self._undelivered_pages_queue(removal_policy)
        for email in page_emails:
            self.page_topic.add_subscription(subscriptions.EmailSubscription(
                email, dead_letter_queue=self.undelivered_pages))
        for url in page_https_endpoints:
            self.page_topic.add_subscription(subscriptions.UrlSubscription(
                url, dead_letter_queue=self.undelivered_pages))
        if self.undelivered_pages is not None:
            self._add_alarms(AlarmSpec(
                "PagesUndelivered", "pages-undelivered",
                "SNS could not deliver a page to a subscriber (a pager endpoint refused it or "
                "an address bounced) after its retries; the page is kept in the undelivered "
                "pages queue.",
                self.undelivered_pages.metric_approximate_number_of_messages_visible(
                    statistic="Maximum", period=ONE_MINUTE),
                0, evaluation_periods=1, datapoints_to_alarm=1,
            ))

    def _undelivered_pages_queue(self, removal_policy: RemovalPolicy) -> sqs.Queue:
        """Where SNS keeps a page it could not deliver: without it a page that bounces is
        gone. Its own key: SNS must use it, and the topic's key policy cannot name the topic
        that is encrypted with it (a circular reference)."""
        key = customer_managed_key(
            self, "UndeliveredPagesKey",
            description="Fastbreak: encrypts pages SNS could not deliver",
            removal_policy=removal_policy,
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowThePageTopicToKeepUndeliveredPages",
                principals=[iam.ServicePrincipal("sns.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"ArnEquals": {"aws:SourceArn": self.page_topic.topic_arn}},
            )
        )
        queue = sqs.Queue(
            self, "UndeliveredPages",
            encryption=sqs.QueueEncryption.KMS, encryption_master_key=key,
            enforce_ssl=True, retention_period=Duration.days(14),
            removal_policy=removal_policy,
        )
        reason = (
            "this queue is itself the dead-letter queue of the page subscriptions; on-call "
            "reads the undelivered pages from it (docs/runbooks.md#pages-undelivered)"
        )
        acknowledge(queue, {"AwsSolutions::AwsSolutions-SQS3": reason,
                            "Serverless::Serverless-SQSRedrivePolicy": reason})
        return queue

    def _page_topic(
        self, topic_props: Mapping[str, Any] | None, removal_policy: RemovalPolicy
    ) -> sns.Topic:
        self.topic_key = customer_managed_key(
            self,
            "TopicKey",
            description="Fastbreak: encrypts the on-call page topic",
            removal_policy=removal_policy,
        )
        topic = sns.Topic(
            self,
            "PageTopic",
            **merge_props(
                "Monitoring",
                {"display_name": f"{self._prefix} on-call pages"},
                topic_props,
                {"master_key": self.topic_key, "enforce_ssl": True},
            ),
        )
        # CloudWatch publishes the alarm notifications, as a service: the topic policy must
        # allow it, and the key must let it encrypt them. Both only for this environment's
        # alarms in this account (the confused-deputy conditions).
        cloudwatch_principal = iam.ServicePrincipal("cloudwatch.amazonaws.com")
        stack = Stack.of(self)
        from_our_alarms = {
            "StringEquals": {"aws:SourceAccount": stack.account},
            "ArnLike": {"aws:SourceArn": stack.format_arn(
                service="cloudwatch", resource="alarm", resource_name=f"{self._prefix}-*",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )},
        }
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowAlarmsOfThisEnvironment",
                principals=[cloudwatch_principal],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions=from_our_alarms,
            )
        )
        self.topic_key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowAlarmsOfThisEnvironmentToEncrypt",
                principals=[cloudwatch_principal],
                # What the SNS documentation lists for AWS services publishing to a topic
                # encrypted with a customer-managed key.
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions=from_our_alarms,
            )
        )
        return topic

    # ---- one method per component --------------------------------------------------------
    def monitor_event_stream(
        self, stream: kinesis.IStream, *,
        iterator_age_seconds: int = MONITORING["iterator_age_seconds"],
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
        iterator_age_seconds: int = MONITORING["iterator_age_seconds"],
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
            namespace=METRICS_NAMESPACE,
            metric_name="RecordsInvalid",
            dimensions_map={"service": PROCESSOR_SERVICE,
                            ENVIRONMENT_DIMENSION: self._environment},
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

    def monitor_audience_stage(
        self,
        function: lambda_.IFunction,
        on_failure_queue: sqs.IQueue,
        partials: kinesis.IStream,
        *,
        iterator_age_seconds: int = MONITORING["iterator_age_seconds"],
    ) -> None:
        """Stage 2 and the partials stream that feeds it."""
        errors = function.metric_errors(statistic="Sum", period=ONE_MINUTE)
        throttles = function.metric_throttles(statistic="Sum", period=ONE_MINUTE)
        iterator_age = function.metric("IteratorAge", statistic="Maximum", period=ONE_MINUTE)
        failed_batches = on_failure_queue.metric_approximate_number_of_messages_visible(
            statistic="Maximum", period=ONE_MINUTE
        )
        write_exceeded = partials.metric_write_provisioned_throughput_exceeded(
            statistic="Sum", period=ONE_MINUTE
        )
        partials_in = partials.metric_incoming_records(statistic="Sum", period=ONE_MINUTE)
        duplicates = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE, metric_name="DuplicatePartials",
            dimensions_map={"service": AUDIENCE_STAGE.service_name,
                            ENVIRONMENT_DIMENSION: self._environment},
            statistic="Sum", period=ONE_MINUTE,
        )
        self._add_alarms(
            AlarmSpec(
                "AudienceErrors", "audience-stage-errors",
                "The audience stage fails whole invocations; game and content features stop "
                "updating while its shards retry.",
                errors, 0,
            ),
            AlarmSpec(
                "AudienceThrottles", "audience-stage-throttles",
                "The audience stage hit its reserved concurrency; partials shards wait.",
                throttles, 0, evaluation_periods=5, datapoints_to_alarm=3,
            ),
            AlarmSpec(
                "AudienceIteratorAge", "audience-stage-iterator-age",
                f"The audience stage reads partials over {iterator_age_seconds}s after stage 1 "
                "emitted them: game and content features are stale.",
                iterator_age, iterator_age_seconds * 1000,
            ),
            AlarmSpec(
                "AudienceFailedBatches", "audience-stage-failed-batches",
                "Partials batches exhausted their retries and went to the audience stage's "
                "on-failure queue: their events are not in game and content features until "
                "replayed.",
                failed_batches, 0, evaluation_periods=1, datapoints_to_alarm=1,
            ),
            _partials_write_throttled(write_exceeded),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Audience stage errors/throttles",
                                   left=[errors, throttles], width=8),
            cloudwatch.GraphWidget(title="Audience stage iterator age (ms)", left=[iterator_age],
                                   width=8),
            cloudwatch.GraphWidget(title="Partials in / re-emitted, failed batches",
                                   left=[partials_in, duplicates], right=[failed_batches],
                                   width=8),
            cloudwatch.GraphWidget(title="Partials stream write throttles", left=[write_exceeded],
                                   width=8),
        )

    def monitor_flink_audience_stage(
        self,
        application: flink.IApplication,
        partials: kinesis.IStream,
        *,
        iterator_age_seconds: int = MONITORING["iterator_age_seconds"],
    ) -> None:
        """Stage 2 on Managed Service for Apache Flink, and the partials stream."""
        downtime = application.metric_downtime(statistic="Maximum", period=ONE_MINUTE)
        failed_checkpoints = application.metric_number_of_failed_checkpoints(
            statistic="Maximum", period=FIVE_MINUTES)
        # fullRestarts counts since the job started: its rise over a period is the restarts
        # in that period.
        restarts_total = application.metric_full_restarts(statistic="Maximum", period=ONE_MINUTE)
        restarts = cloudwatch.MathExpression(
            expression="DIFF(restarts)",
            using_metrics={"restarts": restarts_total},
            label="Full restarts", period=ONE_MINUTE,
        )
        # The Kinesis source's lag behind the tip of the partials stream (its shards' worst).
        behind = application.metric("millisBehindLatest", statistic="Maximum", period=ONE_MINUTE)
        back_pressure = application.metric_back_pressured_time_ms_per_second(
            statistic="Maximum", period=ONE_MINUTE)
        write_exceeded = partials.metric_write_provisioned_throughput_exceeded(
            statistic="Sum", period=ONE_MINUTE)
        self._add_alarms(
            AlarmSpec(
                "AudienceFlinkDowntime", "audience-flink-downtime",
                "The audience stage's Flink job has not been running for 5 minutes (failing, "
                "restarting or stopped; an update or a scaling restart takes less): game and "
                "content features stop updating.",
                downtime, 0, evaluation_periods=5, datapoints_to_alarm=5,
            ),
            AlarmSpec(
                "AudienceFlinkCheckpointFailures", "audience-flink-checkpoint-failures",
                "Checkpoints of the audience stage's Flink job fail: a restart would re-read "
                "everything since the last good one, and snapshots on update may fail.",
                failed_checkpoints, 0, evaluation_periods=1, datapoints_to_alarm=1,
            ),
            AlarmSpec(
                "AudienceFlinkFullRestarts", "audience-flink-full-restarts",
                "The audience stage's Flink job restarted in 3 of the last 5 minutes: a flush "
                "keeps failing (DynamoDB, S3, KMS or the code) and the job loops.",
                restarts, 0, evaluation_periods=5, datapoints_to_alarm=3,
            ),
            AlarmSpec(
                "AudienceFlinkBehindLatest", "audience-flink-behind-latest",
                f"The audience stage's Flink job reads partials over {iterator_age_seconds}s "
                "behind the partials stream (back-pressure or too little parallelism): game "
                "and content features are stale.",
                behind, iterator_age_seconds * 1000,
            ),
            _partials_write_throttled(write_exceeded),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Audience stage (Flink) downtime / restarts",
                                   left=[downtime], right=[restarts], width=8),
            cloudwatch.GraphWidget(title="Audience stage (Flink) behind latest (ms)",
                                   left=[behind], right=[back_pressure], width=8),
            cloudwatch.GraphWidget(title="Audience stage (Flink) failed checkpoints",
                                   left=[failed_checkpoints], width=8),
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
        self, delivery_stream: firehose.IDeliveryStream, *,
        freshness_seconds: int = MONITORING["firehose_freshness_seconds"],
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
        self, api: apigw.RestApi, *,
        p99_latency_ms: int = MONITORING["api_p99_latency_ms"],
        server_error_percent: float = MONITORING["api_5xx_rate_percent"],
    ) -> None:
        latency = api.metric_latency(statistic="p99", period=ONE_MINUTE)
        requests = api.metric_count(statistic="Sum", period=ONE_MINUTE)
        error_rate = server_error_rate(api)
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

    def monitor_consistency_check(
        self, function: lambda_.IFunction, *, every: Duration = Duration.hours(1),
        below_percent: float = MONITORING["consistency_percent"],
    ) -> None:
        """The scheduled consistency check (``constructs_lib.consistency_check``): the lowest
        feature's share of served values the builder recomputes exactly, once per run."""
        rate = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE, metric_name="ConsistencyRate",
            dimensions_map={"service": CONSISTENCY_SERVICE,
                            ENVIRONMENT_DIMENSION: self._environment},
            statistic="Minimum", period=every,
        )
        errors = function.metric_errors(statistic="Sum", period=every)
        self._add_alarms(
            AlarmSpec(
                "ConsistencyBelowTarget", "consistency-below-target",
                f"Under {below_percent:g}% of a feature's sampled values, as the online store "
                "served them, match their recomputation from the raw events: events applied "
                "twice or lost, a corrupted item, or a processor far behind.",
                rate, below_percent, evaluation_periods=1, datapoints_to_alarm=1,
                comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            ),
            AlarmSpec(
                "ConsistencyCheckErrors", "consistency-check-errors",
                "The consistency check failed its run: the online store is not being checked.",
                errors, 0, evaluation_periods=1, datapoints_to_alarm=1,
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Consistency: lowest feature's share matched (%)",
                                   left=[rate], width=12),
            cloudwatch.GraphWidget(title="Consistency check errors", left=[errors], width=12),
        )

    # ---- shared ---------------------------------------------------------------------------
    def _add_alarms(self, *specs: AlarmSpec) -> None:
        for spec in specs:
            link = runbook_url(self._runbook_base_url, spec.runbook)
            alarm = cloudwatch.Alarm(
                self,
                spec.name,
                alarm_name=f"{self._prefix}-{spec.name}",
                alarm_description=f"{spec.summary} Runbook: {link}",
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


def _partials_write_throttled(write_exceeded: cloudwatch.IMetric) -> AlarmSpec:
    """The partials stream's alarm, whichever runtime runs the audience stage."""
    return AlarmSpec(
        "PartialsStreamWriteThrottled", "partials-stream-write-throttled",
        "Stage 1's partials are throttled by a shard of the partials stream (a hot game or "
        "content past a shard's 1,000 records/s or 1 MB/s): stage 1 retries, then fails its "
        "batches, and every group lags.",
        write_exceeded, 0, evaluation_periods=5, datapoints_to_alarm=3,
    )
