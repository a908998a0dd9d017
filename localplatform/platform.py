"""The whole local platform: embedded AWS, deployed templates, and the emulated services.

Everything is derived from the synthesized templates: functions and their environment, event
source mappings and their settings, the Firehose delivery, the API routes and the alarms.
``LocalPlatform`` is what the demo, the end-to-end tests and the benchmark start.
"""

from __future__ import annotations

import json
import logging
import shlex
import tempfile
import urllib.request
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localplatform import moto_fixes, output_capture
from localplatform.alarms import AlarmEvaluator, template_alarms
from localplatform.aliases import LocalAlias
from localplatform.api_gateway import LocalApiGateway
from localplatform.assembly import synthesize
from localplatform.aws_env import ACCOUNT, REGION, client, point_sdk_at
from localplatform.codedeploy import DeploymentGroupSpec, LocalDeployment
from localplatform.deploy import Deployment, DeploymentError, deploy
from localplatform.embedded_aws import embedded_aws
from localplatform.event_source_mapping import KinesisEventSourceMapping, destination_sender
from localplatform.firehose import DeliverySpec, FirehoseDelivery
from localplatform.kinesis_events import EventSource
from localplatform.lambda_runtime import FunctionSpec, Invocable, LocalFunction
from localplatform.mapping_emulator import MappingHooks, MappingSettings
from localplatform.metrics import MetricStore

PAGE_QUEUE = "fastbreak-local-pages"


@dataclass
class PlatformOptions:
    env_name: str = "dev"
    workdir: Path | None = None  # logs and the cloud assembly; a temporary folder if None
    # Local time compression for alarm periods (see alarms.py); 1 is CloudWatch's own pace.
    alarm_time_scale: float = 1.0
    # Firehose buffering interval override (its Lambda's and its destination's); None keeps
    # the template's.
    firehose_buffer_seconds: float | None = None
    # The consistency check judges entities last written at least this long ago (minutes); None
    # keeps the template's (20): a local run lasts a minute, and its delivery a few seconds.
    consistency_settle_minutes: float | None = None
    # Wait before the first retry of a failed batch (the emulator's, not the template's).
    retry_backoff_s: float = 1.0
    retry_backoff_cap_s: float = 30.0
    api_port: int = 0
    mapping_hooks: MappingHooks = field(default_factory=MappingHooks)
    # Where to write the platform's endpoint and resource names as shell exports while it
    # runs (removed when it stops); None writes nothing.
    env_file: Path | None = None


class LocalPlatform:
    def __init__(self, options: PlatformOptions | None = None) -> None:
        self.options = options or PlatformOptions()
        self.metrics = MetricStore()
        self.functions: dict[str, LocalFunction] = {}
        # What callers invoke, by function name, "name:alias" or ARN: functions and aliases.
        self.invokers: dict[str, Invocable] = {}
        self.aliases: dict[str, LocalAlias] = {}  # by "name:alias"
        self.deployments: dict[str, LocalDeployment] = {}  # by "name:alias"
        self.mappings: list[KinesisEventSourceMapping] = []
        self.deliveries: list[FirehoseDelivery] = []
        self.api: LocalApiGateway | None = None
        self.alarms: AlarmEvaluator | None = None
        self._exit = ExitStack()
        self.endpoint_url = ""
        self.deployment: Deployment | None = None
        self.page_queue_url = ""

    # ---- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> LocalPlatform:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        output_capture.install()  # before any handler module is imported
        workdir = self.options.workdir
        if workdir is None:
            workdir = Path(self._exit.enter_context(tempfile.TemporaryDirectory(
                prefix="fastbreak-local-")))
        self.workdir = workdir
        (workdir / "logs").mkdir(parents=True, exist_ok=True)
        moto_fixes.apply()
        self.endpoint_url = self._exit.enter_context(embedded_aws())
        # moto keeps its state per process, not per server: a platform started after another
        # one (tests, benchmarks) starts from an empty account, as a fresh deployment does.
        urllib.request.urlopen(
            urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST"),
            timeout=30,
        ).close()
        # After the server starts (it sets its own level): moto's tracebacks for the 500s that
        # read_shard retries would scroll over the demo's progress.
        logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
        point_sdk_at(self.endpoint_url)
        templates = synthesize(workdir / "cdk.out", self.options.env_name)
        self.deployment = deploy(templates, self.endpoint_url)
        self._start_functions(self.deployment, workdir / "logs")
        self._subscribe_pages(self.deployment)
        self._start_mappings(self.deployment)
        self._start_deliveries(self.deployment)
        self._start_api(self.deployment)
        self.alarms = AlarmEvaluator(
            template_alarms(self.deployment), self.metrics, self.client("sns"),
            self.client("cloudwatch"), self.client("sqs"),
            time_scale=self.options.alarm_time_scale,
        )
        self.alarms.start()
        self._exit.callback(self.alarms.stop)
        if self.options.env_file is not None:
            self._write_env_file(self.options.env_file)

    def stop(self) -> None:
        self._exit.close()

    def client(self, service: str) -> Any:
        return client(service, self.endpoint_url)

    # ---- what the templates define -------------------------------------------------------
    def _start_functions(self, deployment: Deployment, log_dir: Path) -> None:
        by_logical_id: dict[tuple[str, str], LocalFunction] = {}
        for stack, logical_id, _ in deployment.each("AWS::Lambda::Function"):
            spec = FunctionSpec.from_template(stack, logical_id)
            settle = self.options.consistency_settle_minutes
            if settle is not None and spec.handler.endswith("consistency_check.handler"):
                spec = replace(spec, environment={**spec.environment,
                                                  "SETTLE_MINUTES": str(settle)})
            function = self.functions[spec.name] = LocalFunction(spec, self.metrics, log_dir)
            self.invokers[spec.name] = self.invokers[spec.arn] = function
            by_logical_id[stack.name, logical_id] = function
        # Each alias starts on the version the template publishes (the first: "1"), served by
        # the function itself.
        for stack, logical_id, resource in deployment.each("AWS::Lambda::Alias"):
            function = by_logical_id[stack.name, resource["Properties"]["FunctionName"]["Ref"]]
            function.spec = replace(function.spec, version="1")
            alias = LocalAlias(resource["Properties"]["Name"], "1", function, self.metrics)
            self.aliases[alias.qualified_name] = alias
            self.invokers[alias.qualified_name] = self.invokers[alias.arn] = alias
            group = DeploymentGroupSpec.of_alias(stack, logical_id)
            if group is not None:
                self.deployments[alias.qualified_name] = LocalDeployment(
                    group, alias, self._alarm_states, time_scale=self.options.alarm_time_scale
                )

    def _alarm_states(self) -> dict[str, str]:
        return self.alarms.states() if self.alarms is not None else {}

    def _start_mappings(self, deployment: Deployment) -> None:
        kinesis, sqs, sns = self.client("kinesis"), self.client("sqs"), self.client("sns")
        for stack, _, resource in deployment.each("AWS::Lambda::EventSourceMapping"):
            properties = stack.resolve(resource["Properties"])
            if ":kinesis:" not in properties["EventSourceArn"]:
                continue
            target = self.invokers[properties["FunctionName"]]
            if isinstance(target, LocalAlias):
                arn, role_arn, name = target.arn, target.role_arn, target.function_name
            else:
                assert isinstance(target, LocalFunction)
                arn, role_arn, name = target.spec.arn, target.spec.role_arn, target.spec.name
            settings = replace(MappingSettings.from_template(properties),
                               retry_backoff_s=self.options.retry_backoff_s,
                               retry_backoff_cap_s=self.options.retry_backoff_cap_s)
            mapping = KinesisEventSourceMapping(
                settings,
                EventSource(properties["EventSourceArn"], arn, role_arn, REGION),
                kinesis, target.invoke,
                destination_sender(settings.destination_arn, sqs, sns),
                self.metrics, name, self.options.mapping_hooks,
            )
            mapping.start()
            self._exit.callback(mapping.stop)
            self.mappings.append(mapping)

    def _start_deliveries(self, deployment: Deployment) -> None:
        for stack, logical_id, _ in deployment.each("AWS::KinesisFirehose::DeliveryStream"):
            spec = DeliverySpec.from_template(stack, logical_id)
            transform = (None if spec.transform is None
                         else self._function_of(spec.transform.lambda_arn))
            delivery = FirehoseDelivery(
                spec, self.client("kinesis"), self.client("s3"), self.metrics,
                invoke=None if transform is None else transform.invoke,
                buffer_seconds=self.options.firehose_buffer_seconds,
            )
            delivery.start()
            self._exit.callback(delivery.stop)
            self.deliveries.append(delivery)

    def _function_of(self, arn: str) -> LocalFunction:
        """The function an ARN names, qualified (version or alias) or not."""
        for function in self.functions.values():
            if arn == function.spec.arn or arn.startswith(function.spec.arn + ":"):
                return function
        raise DeploymentError(f"no function in the templates has the ARN {arn}")

    def _start_api(self, deployment: Deployment) -> None:
        for stack in deployment.stacks:
            if stack.resources("AWS::ApiGateway::RestApi"):
                self.api = LocalApiGateway.from_template(stack, self.invokers, self.metrics,
                                                         self.options.api_port)
                self.api.start()
                self._exit.callback(self.api.stop)

    def _subscribe_pages(self, deployment: Deployment) -> None:
        """An SQS queue on every topic alarms notify: what an on-call pager would receive."""
        sqs, sns = self.client("sqs"), self.client("sns")
        self.page_queue_url = sqs.create_queue(QueueName=PAGE_QUEUE)["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(
            QueueUrl=self.page_queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        topics = {
            topic
            for stack, _, alarm in deployment.each("AWS::CloudWatch::Alarm")
            for topic in stack.resolve(alarm["Properties"].get("AlarmActions", []))
        }
        for topic in topics:
            sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
                          Attributes={"RawMessageDelivery": "true"})

    def environment(self) -> dict[str, str]:
        """What a shell or a program needs to use this platform: the AWS SDK's standard
        settings (endpoint, region, dummy credentials) and the names of what it deployed."""
        names = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "fastbreak-local",
            "AWS_SECRET_ACCESS_KEY": "fastbreak-local",
            "FASTBREAK_STREAM": self.stream_name,
            "FASTBREAK_PARTIALS_STREAM": self.partials_stream_name,
            "FASTBREAK_ONLINE_TABLE": self.table_name,
            "FASTBREAK_OFFLINE_BUCKET": self.offline_bucket(),
            "FASTBREAK_ON_FAILURE_QUEUE_URL": self.on_failure_queue_url,
        }
        if self.api is not None:
            names["FASTBREAK_API_URL"] = self.api.url
        return names

    def _write_env_file(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = (
            "# The Fastbreak local platform, while it runs (written at start, removed at stop).\n"
            "# `source` this file: AWS SDKs and CLIs of the shell then talk to the platform.\n"
            + "".join(f"export {name}={shlex.quote(value)}\n"
                      for name, value in self.environment().items())
        )
        path.write_text(text)

        def remove() -> None:
            # Only our own: a platform started later may have written its own since.
            if path.exists() and path.read_text() == text:
                path.unlink()

        self._exit.callback(remove)

    # ---- conveniences for the demo, tests and benchmark ----------------------------------
    def physical_name(self, resource_type: str, prefix: str = "") -> str:
        """The one resource of a type (whose logical id starts with ``prefix``)."""
        assert self.deployment is not None
        found = [(stack, logical_id) for stack, logical_id, _ in
                 self.deployment.each(resource_type) if logical_id.startswith(prefix)]
        if len(found) != 1:
            raise DeploymentError(f"expected one {resource_type} {prefix}*, found {len(found)}")
        stack, logical_id = found[0]
        return stack.physical_ids[logical_id]

    @property
    def stream_name(self) -> str:
        """The events stream producers write to."""
        return self.physical_name("AWS::Kinesis::Stream", "Events")

    @property
    def partials_stream_name(self) -> str:
        return self.physical_name("AWS::Kinesis::Stream", "Partials")

    @property
    def table_name(self) -> str:
        return self.physical_name("AWS::DynamoDB::Table")

    @property
    def processor(self) -> LocalFunction:
        """The version of the stream processor that serves its live alias now."""
        return self._live("stream_processor.handler").current

    @property
    def audience_stage(self) -> LocalFunction:
        """The version of the audience stage that serves its live alias now."""
        return self._live("audience_stage.handler").current

    @property
    def processor_deployment(self) -> LocalDeployment:
        return self.deployments[self._live("stream_processor.handler").qualified_name]

    @property
    def reader_deployment(self) -> LocalDeployment:
        return self.deployments[self._live("feature_api.handler").qualified_name]

    @property
    def consistency_check(self) -> LocalAlias:
        """The consistency check's live alias, which its schedule invokes."""
        return self._live("consistency_check.handler")

    def run_consistency_check(self) -> dict[str, Any]:
        """What the check's schedule does every hour (the local platform runs no schedules):
        invoke it with EventBridge's scheduled event, once the offline store holds what the
        stream holds now. Returns the check's summary."""
        self.drain_deliveries()
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        response: dict[str, Any] = self.consistency_check.invoke({
            "version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event",
            "source": "aws.events", "account": ACCOUNT, "time": now, "region": REGION,
            "resources": [], "detail": {},
        })
        return response

    def _live(self, handler_suffix: str) -> LocalAlias:
        (alias,) = [alias for alias in self.aliases.values()
                    if alias.current.spec.handler.endswith(handler_suffix)]
        return alias

    @property
    def events_mapping(self) -> KinesisEventSourceMapping:
        """The stream processor's mapping (stage 1)."""
        return self._mapping_of(self.stream_name)

    @property
    def audience_mapping(self) -> KinesisEventSourceMapping:
        """The audience stage's mapping (stage 2)."""
        return self._mapping_of(self.partials_stream_name)

    def _mapping_of(self, stream_name: str) -> KinesisEventSourceMapping:
        (mapping,) = [m for m in self.mappings if m.stream_name == stream_name]
        return mapping

    @property
    def on_failure_queue_url(self) -> str:
        """The stream processor's on-failure queue."""
        return self._queue_url(self.events_mapping)

    @property
    def audience_on_failure_queue_url(self) -> str:
        return self._queue_url(self.audience_mapping)

    def _queue_url(self, mapping: KinesisEventSourceMapping) -> str:
        arn = mapping.settings.destination_arn
        assert arn is not None
        url: str = self.client("sqs").get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"]
        return url

    def offline_bucket(self) -> str:
        (delivery,) = self.deliveries
        return delivery.spec.bucket

    def drain_pages(self) -> list[dict[str, Any]]:
        """Alarm notifications delivered to the page queue since the last call."""
        sqs = self.client("sqs")
        pages: list[dict[str, Any]] = []
        while True:
            messages = sqs.receive_message(QueueUrl=self.page_queue_url,
                                           MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return pages
            for message in messages:
                pages.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.page_queue_url,
                                   ReceiptHandle=message["ReceiptHandle"])

    def wait_until_processed(self, timeout: float = 60.0) -> bool:
        """Everything put to the events stream so far processed by both stages: stage 1 first,
        then the audience stage, on what stage 1 emitted by then."""
        first = [self.events_mapping]
        rest = [mapping for mapping in self.mappings if mapping not in first]
        return all(mapping.wait_until_caught_up(timeout) for mapping in first + rest)

    def drain_deliveries(self, timeout: float = 60.0) -> bool:
        """Deliver what the stream holds now to the offline store (Firehose's buffers flushed)."""
        return all([delivery.drain(timeout) for delivery in self.deliveries])
