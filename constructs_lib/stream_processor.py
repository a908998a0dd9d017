"""A Lambda stream consumer: Kinesis event source mapping with Lambda's safety features on.

Two consumers are built with it: the stream processor (stage 1, on the events stream) and the
audience stage (stage 2, on the partials stream), one ``StreamFunctionSpec`` each. Bisect on
error and ``ReportBatchItemFailures`` isolate a poison record instead of retrying a whole batch
forever; bounded retries and record age keep one bad shard from stalling; what still fails lands
in an encrypted on-failure queue with the batch's shard and sequence range
(``python -m fastbreak_ops.redrive`` replays it). The mapping invokes the ``live`` alias, and a
new version reaches it through a canary that rolls back on errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsii
from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from constructs_lib.defaults import (
    AUDIENCE_EVENT_SOURCE,
    AUDIENCE_FUNCTION,
    LOG_RETENTION_DAYS,
    ON_FAILURE_QUEUE_RETENTION,
    PROCESSOR_DEPLOYMENT,
    PROCESSOR_EVENT_SOURCE,
    PROCESSOR_FUNCTION,
)
from constructs_lib.grants import QUEUE_SEND_KEY_ACTIONS, allow_key_use
from constructs_lib.nag import acknowledge
from constructs_lib.powertools_function import PowertoolsFunction
from constructs_lib.props import ConstructPropsError, exactly_one, merge_props
from constructs_lib.safe_deployment import (
    SafeDeployment,
    alias_errors,
    named_deployment_config,
)
from constructs_lib.secure_defaults import customer_managed_key

MAX_PARALLELIZATION_FACTOR = 10
MAX_RETRY_ATTEMPTS = 10_000


@dataclass(frozen=True)
class StreamFunctionSpec:
    """Which consumer a ``StreamProcessor`` builds: its handler, its kit defaults, and the
    names of what it adds (the Powertools service, the canary's rollback alarm)."""

    handler: str
    service_name: str
    description: str
    reaches: str
    function_defaults: Mapping[str, Any]
    event_source_defaults: Mapping[str, Any]
    deploy_alarm: str
    deploy_alarm_summary: str
    queue_purpose: str


PROCESSOR = StreamFunctionSpec(
    handler="fastbreak.handlers.stream_processor.handler",
    service_name="stream-processor",
    description="Fastbreak: turns events into features in the online store",
    reaches="Kinesis, DynamoDB, S3, SQS and X-Ray",
    function_defaults=PROCESSOR_FUNCTION,
    event_source_defaults=PROCESSOR_EVENT_SOURCE,
    deploy_alarm="ProcessorDeployErrors",
    deploy_alarm_summary="The live alias of the stream processor failed whole invocations.",
    queue_purpose="the processor's on-failure queue",
)
AUDIENCE_STAGE = StreamFunctionSpec(
    handler="fastbreak.handlers.audience_stage.handler",
    service_name="audience-stage",
    description="Fastbreak: merges audience partials into game and content features",
    reaches="Kinesis, DynamoDB, S3, SQS and X-Ray",
    function_defaults=AUDIENCE_FUNCTION,
    event_source_defaults=AUDIENCE_EVENT_SOURCE,
    deploy_alarm="AudienceDeployErrors",
    deploy_alarm_summary="The live alias of the audience stage failed whole invocations.",
    queue_purpose="the audience stage's on-failure queue",
)
# The stream processor's names, as other modules import them.
HANDLER = PROCESSOR.handler
SERVICE_NAME = PROCESSOR.service_name


class FailedBatchQueue(Construct):
    """The on-failure destination of a stream processor: an encrypted, TLS-only queue that
    keeps Lambda's failure records (shard id and sequence range, no data) as long as SQS
    allows. Exposes ``queue`` and ``key``.

    A stack of its own can own it, so that deleting the processor's stack does not delete the
    only pointers to records that left the stream unprocessed.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        queue_props: Mapping[str, Any] | None = None,
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
        purpose: str = PROCESSOR.queue_purpose,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = customer_managed_key(
            self,
            "Key",
            description=f"Fastbreak: encrypts {purpose}",
            removal_policy=removal_policy,
        )
        defaults: dict[str, Any] = {
            "retention_period": ON_FAILURE_QUEUE_RETENTION,
            "data_key_reuse": Duration.minutes(5),
            "removal_policy": removal_policy,
        }
        enforced: dict[str, Any] = {
            "encryption": sqs.QueueEncryption.KMS,
            "encryption_master_key": self.key,
            "enforce_ssl": True,
        }
        self.queue = sqs.Queue(
            self, "Queue", **merge_props("FailedBatchQueue", defaults, queue_props, enforced)
        )
        dead_letter_reason = (
            "this queue is itself the on-failure destination of the event source mapping; its "
            "messages are replay pointers that on-call redrives (python -m fastbreak_ops.redrive)"
        )
        acknowledge(
            self.queue,
            {
                "AwsSolutions::AwsSolutions-SQS3": dead_letter_reason,
                "Serverless::Serverless-SQSRedrivePolicy": dead_letter_reason,
            },
        )


@jsii.implements(lambda_.IEventSourceDlq)
class _QueueDestination:
    """The on-failure queue as a mapping destination, without the L2's grant (which adds
    ``kms:ReEncrypt*`` and ``kms:GenerateDataKey*``): the processor grants exact actions."""

    def __init__(self, queue: sqs.IQueue) -> None:
        self._queue = queue

    def bind(
        self, target: lambda_.IEventSourceMapping, target_handler: lambda_.IFunction
    ) -> lambda_.DlqDestinationConfig:
        return lambda_.DlqDestinationConfig(destination=self._queue.queue_arn)


class StreamProcessor(Construct):
    """A Kinesis consumer Lambda, the stream processor by default (``spec``: ``PROCESSOR`` or
    ``AUDIENCE_STAGE``). Exposes ``function``, ``version``, ``alias``, ``role``, ``log_group``,
    ``event_source``, ``on_failure_queue``, ``queue_key`` (None for an existing queue whose
    key it was not told) and ``deployment``.

    Props, each merged kit defaults (``constructs_lib.defaults``) < user props < enforced:

    - ``function_props`` (``lambda_.Function``): memory, timeout, reserved concurrency...;
      the runtime, handler, code, role, log group, JSON logs and tracing are enforced.
    - ``event_source_props`` (``KinesisEventSource``): batching, parallelization, retries,
      record age; bisect on error, ``ReportBatchItemFailures`` and the on-failure queue are
      enforced, and retries and record age must be bounded.
    - ``queue_props`` (``sqs.Queue``) or ``existing_on_failure_queue``, not both; the same for
      ``log_key`` (a new log group) and ``existing_log_group``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stream: kinesis.IStream,
        environment: Mapping[str, str],
        function_props: Mapping[str, Any] | None = None,
        event_source_props: Mapping[str, Any] | None = None,
        queue_props: Mapping[str, Any] | None = None,
        existing_on_failure_queue: sqs.IQueue | None = None,
        existing_on_failure_queue_key: kms.IKey | None = None,
        log_key: kms.IKey | None = None,
        existing_log_group: logs.ILogGroup | None = None,
        log_retention_days: int = LOG_RETENTION_DAYS,
        deployment: str = PROCESSOR_DEPLOYMENT,
        name_prefix: str | None = None,
        runbook_base_url: str = "",
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
        spec: StreamFunctionSpec = PROCESSOR,
    ) -> None:
        super().__init__(scope, construct_id)
        self.spec = spec
        exactly_one("StreamProcessor", "existing_on_failure_queue", existing_on_failure_queue,
                    "queue_props", queue_props)
        exactly_one("StreamProcessor", "existing_log_group", existing_log_group,
                    "log_key", log_key)
        deployment_config = named_deployment_config("StreamProcessor", deployment)
        prefix = name_prefix or Stack.of(self).stack_name
        processor = PowertoolsFunction(
            self,
            "Processor",
            handler=spec.handler,
            service_name=spec.service_name,
            environment=environment,
            reaches=spec.reaches,
            defaults={**spec.function_defaults, "description": spec.description},
            function_props=function_props,
            log_group=existing_log_group,
            log_key=log_key,
            log_retention_days=log_retention_days,
            removal_policy=removal_policy,
        )
        self.function: lambda_.Function = processor.function
        self.version = processor.version
        self.alias = processor.alias
        self.role = processor.role
        self.log_group = processor.log_group

        self.queue_key: kms.IKey | None = existing_on_failure_queue_key
        if existing_on_failure_queue is None:
            failed = FailedBatchQueue(self, "OnFailure", queue_props=queue_props,
                                      removal_policy=removal_policy,
                                      purpose=spec.queue_purpose)
            existing_on_failure_queue, self.queue_key = failed.queue, failed.key
        self.on_failure_queue: sqs.IQueue = existing_on_failure_queue
        # What the mapping does with the processor's role when it sends a failure record.
        self.role.add_to_policy(
            iam.PolicyStatement(actions=["sqs:SendMessage"],
                                resources=[self.on_failure_queue.queue_arn])
        )
        if self.queue_key is not None:
            allow_key_use(self.role, self.queue_key, QUEUE_SEND_KEY_ACTIONS)

        props = merge_props(
            "StreamProcessor",
            spec.event_source_defaults,
            event_source_props,
            {
                "bisect_batch_on_error": True,
                "report_batch_item_failures": True,
                "on_failure": _QueueDestination(self.on_failure_queue),
            },
        )
        _check_bounded(props)
        self.event_source = sources.KinesisEventSource(
            stream,
            **props,
            metrics_config=lambda_.MetricsConfig(
                metrics=[lambda_.MetricType.EVENT_COUNT, lambda_.MetricType.ERROR_COUNT]
            ),
        )
        self.alias.add_event_source(self.event_source)
        self.deployment = SafeDeployment(
            self,
            "Deployment",
            alias=self.alias,
            deployment_config=deployment_config,
            name_prefix=prefix,
            runbook_base_url=runbook_base_url,
            alarms=[alias_errors(spec.deploy_alarm, spec.deploy_alarm_summary, self.alias)],
        )
        lambda_dlq_reason = (
            "the function is invoked synchronously by its Kinesis event source mapping; a "
            "function DLQ applies only to async invocations, and failed batches go to the "
            "mapping's on-failure queue instead"
        )
        acknowledge(
            self.function,
            {
                "Serverless::Serverless-LambdaDLQ": lambda_dlq_reason,
                "NIST.800.53.R5::NIST.800.53.R5-LambdaDLQ": lambda_dlq_reason,
            },
        )


def _check_bounded(props: Mapping[str, Any]) -> None:
    factor = props.get("parallelization_factor", 1)
    if not 1 <= factor <= MAX_PARALLELIZATION_FACTOR:
        raise ConstructPropsError(
            "StreamProcessor: prop 'parallelization_factor' must be within "
            f"1..{MAX_PARALLELIZATION_FACTOR}"
        )
    retries = props.get("retry_attempts")
    if retries is None or not 0 <= retries <= MAX_RETRY_ATTEMPTS:
        raise ConstructPropsError(
            f"StreamProcessor: prop 'retry_attempts' must be bounded (0..{MAX_RETRY_ATTEMPTS}); "
            "infinite retries let one poison batch block its shard"
        )
    if props.get("max_record_age") is None:
        raise ConstructPropsError(
            "StreamProcessor: prop 'max_record_age' must be set; without it a failing batch "
            "is retried until the stream drops it, and never reaches the on-failure queue"
        )

