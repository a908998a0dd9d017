"""The Kinesis-sourced Firehose delivery to S3, emulated from its template definition.

moto's Firehose never reads a Kinesis source, buffers nothing and writes no Parquet
(ARCHITECTURE.md section 6), so this follows the template's ``ExtendedS3DestinationConfiguration``
itself: KPL de-aggregation (the engine's reader), the metadata-extraction query for dynamic
partitioning, buffering per partition by size and interval, Parquet with the Glue table's
columns, and failed records under the error output prefix. Publishes
``DeliveryToS3.DataFreshness`` and ``DeliveryToS3.Records``.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fastbreak.engine.kpl import KplError, deaggregate
from localplatform.deploy import DeployedStack
from localplatform.kinesis_events import StreamRecord
from localplatform.metrics import MetricStore
from localplatform.shard_reader import read_shard

_GLUE_TYPES: Mapping[str, pa.DataType] = {
    "string": pa.string(),
    "bigint": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("ms", tz="UTC"),
}
# The jq form CDK's MetadataExtractionProcessor is given here: {key: .field[from:to], ...}
_QUERY_ENTRY = re.compile(r"\s*(\w+)\s*:\s*\.(\w+)(?:\[(\d+):(\d+)\])?\s*")
_TIMESTAMP_FORMAT = re.compile(r"!\{timestamp:([^}]+)\}")

PartitionQuery = Callable[[Mapping[str, Any]], dict[str, str] | None]


class UnsupportedDeliveryError(ValueError):
    """The template asks for a delivery feature the emulator does not implement."""


@dataclass(frozen=True)
class DeliverySpec:
    name: str
    stream_name: str
    bucket: str
    prefix: str
    error_prefix: str
    buffer_bytes: int
    buffer_seconds: float
    deaggregate: bool
    partition_query: PartitionQuery | None
    schema: pa.Schema

    @staticmethod
    def from_template(stack: DeployedStack, logical_id: str) -> DeliverySpec:
        properties = stack.resolve(stack.template["Resources"][logical_id]["Properties"])
        destination = properties["ExtendedS3DestinationConfiguration"]
        processors = destination.get("ProcessingConfiguration", {}).get("Processors", [])
        query_text = _processor_parameter(processors, "MetadataExtraction",
                                          "MetadataExtractionQuery")
        conversion = destination.get("DataFormatConversionConfiguration", {})
        if not conversion.get("Enabled") or "ParquetSerDe" not in json.dumps(conversion):
            raise UnsupportedDeliveryError(f"{logical_id}: only Parquet conversion is emulated")
        table_name = conversion["SchemaConfiguration"]["TableName"]
        hints = destination.get("BufferingHints", {})
        return DeliverySpec(
            name=stack.physical_ids[logical_id],
            stream_name=properties["KinesisStreamSourceConfiguration"]["KinesisStreamARN"]
            .rsplit("/", 1)[-1],
            bucket=destination["BucketARN"].split(":::", 1)[1],
            prefix=destination.get("Prefix", ""),
            error_prefix=destination.get("ErrorOutputPrefix", ""),
            buffer_bytes=int(hints.get("SizeInMBs", 5)) * 1024 * 1024,
            buffer_seconds=float(hints.get("IntervalInSeconds", 300)),
            deaggregate=any(p.get("Type") == "RecordDeAggregation" for p in processors),
            partition_query=compile_partition_query(query_text) if query_text else None,
            schema=glue_schema(stack, table_name),
        )


def glue_schema(stack: DeployedStack, table_name: str) -> pa.Schema:
    """The Parquet schema of the template's Glue table (partition keys live in the path)."""
    for table in stack.resources("AWS::Glue::Table").values():
        table_input = table["Properties"]["TableInput"]
        if table_input["Name"] == table_name:
            columns = table_input["StorageDescriptor"]["Columns"]
            return pa.schema([(c["Name"], _GLUE_TYPES[c["Type"]]) for c in columns])
    raise UnsupportedDeliveryError(f"no Glue table {table_name!r} in {stack.name}")


def compile_partition_query(query: str) -> PartitionQuery:
    body = query.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise UnsupportedDeliveryError(f"metadata extraction query {query!r} is not emulated")
    entries = []
    for part in body[1:-1].split(","):
        match = _QUERY_ENTRY.fullmatch(part)
        if match is None:
            raise UnsupportedDeliveryError(f"metadata extraction query {query!r} is not emulated")
        key, source, start, end = match.groups()
        entries.append((key, source, None if start is None else (int(start), int(end))))

    def extract(document: Mapping[str, Any]) -> dict[str, str] | None:
        keys = {}
        for key, source, window in entries:
            value = document.get(source)
            if not isinstance(value, str) or (window and len(value) < window[1]):
                return None  # jq yields null; Firehose routes the record to the error prefix
            keys[key] = value[window[0]:window[1]] if window else value
        return keys

    return extract


def render_prefix(template: str, keys: Mapping[str, str], now: datetime,
                  error_type: str = "") -> str:
    text = template.replace("!{firehose:error-output-type}", error_type)
    for key, value in keys.items():
        text = text.replace(f"!{{partitionKeyFromQuery:{key}}}", value)
    return _TIMESTAMP_FORMAT.sub(lambda m: _java_date(m.group(1), now), text)


def _java_date(pattern: str, now: datetime) -> str:
    for java, python in (("yyyy", "%Y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"),
                         ("mm", "%M"), ("ss", "%S")):
        pattern = pattern.replace(java, python)
    return now.strftime(pattern)


def _processor_parameter(processors: list[dict[str, Any]], kind: str, name: str) -> str | None:
    for processor in processors:
        if processor.get("Type") == kind:
            for parameter in processor.get("Parameters", []):
                if parameter["ParameterName"] == name:
                    return str(parameter["ParameterValue"])
    return None


@dataclass
class _Buffer:
    rows: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    opened_at: float = 0.0  # monotonic
    oldest_arrival: float = 0.0  # epoch seconds


@dataclass
class DeliveryStats:
    records_in: int = 0
    records_delivered: int = 0
    records_failed: int = 0
    objects: list[str] = field(default_factory=list)


class FirehoseDelivery:
    def __init__(self, spec: DeliverySpec, kinesis: Any, s3: Any, metrics: MetricStore,
                 *, buffer_seconds: float | None = None) -> None:
        self.spec = spec
        self.kinesis = kinesis
        self.s3 = s3
        self.metrics = metrics
        # The demo shortens the template's interval so that a one-minute run shows files.
        self.buffer_seconds = spec.buffer_seconds if buffer_seconds is None else buffer_seconds
        self.stats = DeliveryStats()
        self._buffers: dict[str, _Buffer] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._columns = {name.lower(): name for name in spec.schema.names}

    def start(self) -> None:
        shards = self.kinesis.list_shards(StreamName=self.spec.stream_name)["Shards"]
        for shard in shards:
            self._spawn(read_shard, self.kinesis, self.spec.stream_name, shard["ShardId"],
                        "TRIM_HORIZON", self._stop, self._accept, self.metrics)
        self._spawn(self._flush_when_due)

    def stop(self, flush: bool = True) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if flush:
            self.flush(force=True)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name="firehose", daemon=True)
        self._threads.append(thread)
        thread.start()

    # ---- records in ----------------------------------------------------------------------
    def _accept(self, records: list[StreamRecord]) -> None:
        errors: list[tuple[str, bytes]] = []
        with self._lock:
            for record in records:
                for payload in self._payloads(record, errors):
                    self._add(record, payload, errors)
        for error_type, payload in errors:
            self._write_error(error_type, payload)

    def _payloads(self, record: StreamRecord, errors: list[tuple[str, bytes]]) -> list[bytes]:
        if not self.spec.deaggregate:
            return [record.data]
        try:
            return deaggregate(record.data)
        except KplError:
            errors.append(("processing-failed", record.data))
            return []

    def _add(self, record: StreamRecord, payload: bytes,
             errors: list[tuple[str, bytes]]) -> None:
        self.stats.records_in += 1
        try:
            document = json.loads(payload)
        except ValueError:
            document = None
        keys = (
            self.spec.partition_query(document)
            if isinstance(document, dict) and self.spec.partition_query else {}
        )
        if not isinstance(document, dict) or keys is None:
            errors.append(("processing-failed", payload))
            return
        row = self._row(document)
        if row is None:
            errors.append(("format-conversion-failed", payload))
            return
        prefix = render_prefix(self.spec.prefix, keys, datetime.now(UTC))
        buffer = self._buffers.get(prefix)
        if buffer is None:
            buffer = self._buffers[prefix] = _Buffer(opened_at=time.monotonic(),
                                                     oldest_arrival=record.arrival)
        buffer.rows.append(row)
        buffer.size += len(payload)
        buffer.oldest_arrival = min(buffer.oldest_arrival, record.arrival)
        if buffer.size >= self.spec.buffer_bytes:
            self._write(prefix, self._buffers.pop(prefix))

    def _row(self, document: Mapping[str, Any]) -> dict[str, Any] | None:
        """OpenX JSON SerDe: keys matched case-insensitively, unknown keys dropped."""
        row: dict[str, Any] = {}
        for key, value in document.items():
            column = self._columns.get(key.lower())
            if column is None or value is None:
                continue
            if self.spec.schema.field(column).type == _GLUE_TYPES["timestamp"]:
                try:
                    value = datetime.fromisoformat(str(value))
                except ValueError:
                    return None
            row[column] = value
        return row

    # ---- objects out ---------------------------------------------------------------------
    def _flush_when_due(self) -> None:
        while not self._stop.wait(0.5):
            self.flush(force=False)

    def flush(self, force: bool) -> None:
        with self._lock:
            now = time.monotonic()
            due = [prefix for prefix, buffer in self._buffers.items()
                   if force or now - buffer.opened_at >= self.buffer_seconds]
            for prefix in due:
                self._write(prefix, self._buffers.pop(prefix))

    def _write(self, prefix: str, buffer: _Buffer) -> None:
        try:
            table = pa.Table.from_pylist(buffer.rows, schema=self.spec.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            for row in buffer.rows:
                self._write_error("format-conversion-failed", json.dumps(row, default=str)
                                  .encode())
            return
        sink = io.BytesIO()
        pq.write_table(table, sink)
        now = datetime.now(UTC)
        key = (f"{prefix}{self.spec.name}-1-{now:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}.parquet")
        self.s3.put_object(Bucket=self.spec.bucket, Key=key, Body=sink.getvalue())
        self.stats.records_delivered += len(buffer.rows)
        self.stats.objects.append(key)
        dimensions = {"DeliveryStreamName": self.spec.name}
        self.metrics.put("AWS/Firehose", "DeliveryToS3.Records", len(buffer.rows), dimensions)
        self.metrics.put("AWS/Firehose", "DeliveryToS3.DataFreshness",
                         time.time() - buffer.oldest_arrival, dimensions)

    def _write_error(self, error_type: str, payload: bytes) -> None:
        prefix = render_prefix(self.spec.error_prefix, {}, datetime.now(UTC), error_type)
        line = json.dumps({"errorCode": error_type,
                           "rawData": payload.decode("utf-8", "backslashreplace")})
        key = f"{prefix}{self.spec.name}-1-{uuid.uuid4()}"
        self.s3.put_object(Bucket=self.spec.bucket, Key=key, Body=line.encode() + b"\n")
        with self._lock:
            self.stats.records_failed += 1
