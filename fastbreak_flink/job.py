"""The audience stage as a PyFlink job: partials stream -> audience items in the online store.

The same merge as the Lambda stage (``fastbreak.engine.audience.AudienceMerger``), reached
through its ``process_sources`` entry point, with the same exactly-once rules: an item remembers,
per partials shard, the last position applied to it, and is written conditionally on what was
read. Flink adds keyed buffering, checkpoints and restarts:

1. the source reads the partials stream (its shard id and sequence number ride along);
2. ``entity_bucket`` keys every record by its audience entity's bucket, so an entity has one
   writer;
3. ``AudienceMergeFunction`` keeps a key's records in keyed state (checkpointed) and flushes
   them through the merge when the buffer is full, when the flush interval ends, or at the end
   of a bounded input. A flush that still fails after its retries fails the job: Flink restarts
   from the last checkpoint and re-delivers what came after it, which the merge skips where it
   was applied (the items' marks) and applies where it was not.

Run on Managed Service for Apache Flink by ``main`` (docs/flink-runtime.md); locally by
``fastbreak_flink.local``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pyflink.common import Types
from pyflink.datastream import (
    DataStream,
    KeyedProcessFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from fastbreak.definitions import CATALOG
from fastbreak.engine import AudienceMerger, AudienceSettings, OnlineStore, RetryPolicy
from fastbreak.engine.sinks import S3Sink
from fastbreak_flink.flush import (
    Flusher,
    FlushReport,
    PartialsRecord,
    entity_bucket,
    from_kinesis_row,
    summary,
)
from fastbreak_flink.settings import PROPERTY_GROUP, JobSettings, read_properties

RECORD_TYPE = Types.TUPLE([Types.STRING(), Types.STRING(), Types.LONG(), Types.STRING()])
KEYED_TYPE = Types.TUPLE([Types.INT(), Types.STRING(), Types.STRING(), Types.LONG(),
                          Types.STRING()])
# An event-time timer that only the end of a bounded input (or `stop --drain`) reaches: the
# last flush. Processing-time timers do not fire once the input has ended.
_DRAIN_AT = 2**63 - 2
OPERATOR_UID = "fastbreak-audience-merge"  # keeps savepoints restorable across code changes


def build_merger(settings: JobSettings) -> AudienceMerger:
    """The audience stage's merger over boto3 clients (the Lambda handler's wiring)."""
    import boto3  # the engine itself never imports it

    client_args: dict[str, str] = {}
    if settings.region:
        client_args["region_name"] = settings.region
    if settings.endpoint_url:
        client_args["endpoint_url"] = settings.endpoint_url
    store = OnlineStore(boto3.client("dynamodb", **client_args), settings.table_name,
                        RetryPolicy(), concurrency=settings.write_concurrency)
    sink = S3Sink(boto3.client("s3", **client_args), settings.bucket_name)
    return AudienceMerger(store, sink, CATALOG, AudienceSettings(
        quarantine_prefix=settings.quarantine_prefix,
        feature_log_prefix=settings.feature_log_prefix,
        remember_seconds=settings.remember_seconds,
    ))


class AudienceMergeFunction(KeyedProcessFunction):  # type: ignore[misc]
    """A key's partials records, buffered in keyed state and merged in flushes."""

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        self.buffer = runtime_context.get_list_state(
            ListStateDescriptor("partials", Types.PICKLED_BYTE_ARRAY()))
        self.buffered = runtime_context.get_state(ValueStateDescriptor("buffered", Types.LONG()))
        self.flush_at = runtime_context.get_state(ValueStateDescriptor("flush_at", Types.LONG()))
        self.flusher = Flusher(build_merger(self.settings), self.settings.flush_attempts)
        group = runtime_context.get_metrics_group().add_group("kinesisanalytics")
        self.counters = {name: group.counter(name) for name in summary(FlushReport())}

    def process_element(self, value: tuple[Any, ...], ctx: KeyedProcessFunction.Context
                        ) -> Iterable[str]:
        self.buffer.add(tuple(value[1:]))
        buffered = (self.buffered.value() or 0) + 1
        if buffered >= self.settings.flush_max_records:
            yield from self._flush()
            return
        self.buffered.update(buffered)
        if self.flush_at.value() is None:
            timers = ctx.timer_service()
            at = timers.current_processing_time() + self.settings.flush_interval_ms
            timers.register_processing_time_timer(at)
            timers.register_event_time_timer(_DRAIN_AT)
            self.flush_at.update(at)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
                 ) -> Iterable[str]:
        yield from self._flush()

    def _flush(self) -> Iterable[str]:
        records: list[PartialsRecord] = list(self.buffer.get() or ())
        self.buffer.clear()
        self.buffered.clear()
        self.flush_at.clear()
        if not records:
            return
        report = self.flusher.flush(records)
        described = summary(report)
        for name, value in described.items():
            self.counters[name].inc(value)
        self.flushed(records, report)
        yield json.dumps(described)

    def flushed(self, records: list[PartialsRecord], report: FlushReport) -> None:
        """Called after each successful flush (the local runner's drill and trace)."""


def audience_stage(records: DataStream, settings: JobSettings,
                   merge: AudienceMergeFunction | None = None) -> DataStream:
    """The keyed merge over a stream of ``PartialsRecord``: flush summaries (JSON) out."""
    buckets = settings.key_buckets
    keyed = records.map(
        lambda record: (entity_bucket(record, buckets), *record), output_type=KEYED_TYPE,
    ).name("key by audience entity").key_by(lambda keyed: keyed[0], key_type=Types.INT())
    return keyed.process(merge or AudienceMergeFunction(settings), output_type=Types.STRING()
                         ).name("audience merge").uid(OPERATOR_UID)


def kinesis_source_ddl(settings: JobSettings) -> str:
    """The partials stream as a table: the record's bytes and where it sat (AWS connector 6:
    metadata columns ``shard-id``, ``sequence-number`` and ``timestamp``)."""
    if not settings.stream_arn or not settings.region:
        raise ValueError(f"property group {PROPERTY_GROUP}: stream_arn and region must be set")
    return f"""
        CREATE TABLE partials (
            `data` BYTES,
            `shard_id` VARCHAR(128) NOT NULL METADATA FROM 'shard-id' VIRTUAL,
            `sequence_number` VARCHAR(128) NOT NULL METADATA FROM 'sequence-number' VIRTUAL,
            `arrival` TIMESTAMP_LTZ(3) NOT NULL METADATA FROM 'timestamp' VIRTUAL
        ) WITH (
            'connector' = 'kinesis',
            'stream.arn' = '{settings.stream_arn}',
            'aws.region' = '{settings.region}',
            'source.init.position' = '{settings.initial_position}',
            'format' = 'raw'
        )"""


def kinesis_records(env: StreamExecutionEnvironment, settings: JobSettings) -> DataStream:
    from pyflink.table import StreamTableEnvironment

    tables = StreamTableEnvironment.create(env)
    tables.execute_sql(kinesis_source_ddl(settings))
    rows = tables.to_data_stream(tables.from_path("partials"))
    return rows.map(
        lambda row: from_kinesis_row(row["shard_id"], row["sequence_number"],
                                     _epoch_ms(row["arrival"]), bytes(row["data"])),
        output_type=RECORD_TYPE,
    ).name("partials records")


def _epoch_ms(value: Any) -> int:
    if isinstance(value, int):
        return value
    return int(value.timestamp() * 1000)


def configure(env: StreamExecutionEnvironment) -> None:
    """What the job sets itself; checkpointing, parallelism and restarts are the application's
    configuration on Managed Flink (constructs_lib/flink_application.py)."""
    from pyflink.common import Configuration

    config = Configuration()
    # Python operators run in the JVM's embedded interpreter: several times the throughput of
    # the process mode for this job's per-record work.
    config.set_string("python.execution-mode", "thread")
    env.configure(config)


def main() -> None:
    settings = JobSettings.from_properties(read_properties())
    # On Managed Flink the zip's `jarfile` (the Kinesis connector) is on the classpath already.
    env = StreamExecutionEnvironment.get_execution_environment()
    configure(env)
    audience_stage(kinesis_records(env, settings), settings)
    env.execute("fastbreak-audience-stage")




if __name__ == "__main__":
    main()
