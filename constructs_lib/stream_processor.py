"""The Lambda stream processor: Kinesis event source mapping with Lambda's safety features on.

Bisect on error and ``ReportBatchItemFailures`` isolate a poison record instead of retrying a
whole batch forever; bounded retries and record age keep one bad shard from stalling; what
still fails lands in an encrypted on-failure queue with the batch's shard and sequence range.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from constructs_lib.nag import acknowledge
from constructs_lib.powertools_function import PowertoolsFunction
from constructs_lib.props import ConstructPropsError
from constructs_lib.secure_defaults import customer_managed_key, encrypted_queue

HANDLER = "fastbreak.handlers.stream_processor.handler"


class StreamProcessor(Construct):
    """Exposes ``function``, ``role``, ``log_group``, ``event_source``, ``on_failure_queue``
    and ``queue_key``.

    Memory: 1,024 MB by default, because Lambda's CPU share scales with memory and decoding
    plus aggregating a 1,000-record batch is CPU-bound; the timeout (60 s) covers a full batch
    with DynamoDB retries and backoff while staying far below the record age limit.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stream: kinesis.IStream,
        environment: Mapping[str, str],
        log_key: kms.IKey,
        batch_size: int = 1000,
        max_batching_window: Duration = Duration.seconds(1),
        parallelization_factor: int = 1,
        max_retry_attempts: int = 10,
        max_record_age: Duration = Duration.hours(6),
        memory_mb: int = 1024,
        timeout: Duration = Duration.seconds(60),
        reserved_concurrency: int = 50,
        log_retention_days: int = 30,
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
    ) -> None:
        super().__init__(scope, construct_id)
        if not 1 <= parallelization_factor <= 10:
            raise ConstructPropsError(
                "StreamProcessor: prop 'parallelization_factor' must be within 1..10"
            )
        if max_retry_attempts < 0:
            raise ConstructPropsError(
                "StreamProcessor: prop 'max_retry_attempts' must be bounded (0..10000); "
                "infinite retries let one poison batch block its shard"
            )
        processor = PowertoolsFunction(
            self,
            "Processor",
            handler=HANDLER,
            description="Fastbreak: turns events into features in the online store",
            service_name="stream-processor",
            environment=environment,
            memory_mb=memory_mb,
            timeout=timeout,
            reserved_concurrency=reserved_concurrency,
            log_key=log_key,
            log_retention_days=log_retention_days,
            removal_policy=removal_policy,
        )
        self.function: lambda_.Function = processor.function
        self.role = processor.role
        self.log_group = processor.log_group
        self.queue_key = customer_managed_key(
            self,
            "QueueKey",
            description="Fastbreak: encrypts the processor's on-failure queue",
            removal_policy=removal_policy,
        )
        # Records of batches that exhausted their retries: shard id and sequence range, for
        # replay from the stream while it still retains them.
        self.on_failure_queue: sqs.Queue = encrypted_queue(
            self, "OnFailureQueue", key=self.queue_key, retention=Duration.days(14)
        )
        self.event_source = sources.KinesisEventSource(
            stream,
            starting_position=lambda_.StartingPosition.TRIM_HORIZON,
            batch_size=batch_size,
            max_batching_window=max_batching_window,
            parallelization_factor=parallelization_factor,
            bisect_batch_on_error=True,
            report_batch_item_failures=True,
            retry_attempts=max_retry_attempts,
            max_record_age=max_record_age,
            on_failure=sources.SqsDlq(self.on_failure_queue),
            metrics_config=lambda_.MetricsConfig(
                metrics=[lambda_.MetricType.EVENT_COUNT, lambda_.MetricType.ERROR_COUNT]
            ),
        )
        self.function.add_event_source(self.event_source)
        lambda_dlq_reason = (
            "the processor is invoked synchronously by its Kinesis event source mapping; a "
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
        dead_letter_reason = (
            "this queue is itself the dead letter destination of the event source mapping; "
            "its messages are replay pointers that on-call drains by hand (docs/runbooks.md)"
        )
        acknowledge(
            self.on_failure_queue,
            {
                "AwsSolutions::AwsSolutions-SQS3": dead_letter_reason,
                "Serverless::Serverless-SQSRedrivePolicy": dead_letter_reason,
            },
        )
        queue_key_reason = (
            "granted by the event source mapping's on-failure destination on the queue's own "
            "key only, so that Lambda can encrypt failure records"
        )
        acknowledge(
            processor,
            {
                "AwsSolutions::AwsSolutions-IAM5[Action::kms:GenerateDataKey*]": queue_key_reason,
                "AwsSolutions::AwsSolutions-IAM5[Action::kms:ReEncrypt*]": queue_key_reason,
            },
        )
