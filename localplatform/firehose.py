"""The Kinesis-sourced Firehose delivery to S3, emulated from its template definition.

moto's Firehose never reads a Kinesis source, buffers nothing and writes no Parquet, so this
follows the template's ``ExtendedS3DestinationConfiguration`` itself, in Firehose's order:

1. KPL de-aggregation, which Firehose does by itself for a Kinesis source
   (``localplatform.firehose_events.user_records``);
2. the ``Lambda`` processor: records buffered by its ``BufferSizeInMBs`` and
   ``BufferIntervalInSeconds``, the function invoked (in-process, the real handler) with
   AWS-shaped events, ``NumberOfRetries`` retries of a failed invocation, and each record's
   answer applied: ``Ok`` (its data and ``partitionKeys``), ``Dropped``, ``ProcessingFailed``;
3. dynamic partitioning: ``!{partitionKeyFromLambda:...}`` from the function's keys,
   ``!{partitionKeyFromQuery:...}`` from a ``MetadataExtraction`` query of the jq form
   ``{key: .field[a:b], ...}``;
4. format conversion to Parquet with the Glue table's columns (OpenX JSON SerDe rules), buffered
   per partition by ``SizeInMBs`` and ``IntervalInSeconds``.

A record that fails a step goes to ``ErrorOutputPrefix`` (``processing-failed`` or
``format-conversion-failed``) as Firehose writes it, with its data. Publishes
``DeliveryToS3.Records``, ``DeliveryToS3.DataFreshness``, ``ExecuteProcessing.Success`` and
``ExecuteProcessing.Duration``, ``SucceedProcessing.Records``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from localplatform.aws_env import ACCOUNT, REGION
from localplatform.deploy import DeployedStack
from localplatform.firehose_events import (
    FirehoseRecord,
    read_answers,
    transformation_event,
    user_records,
)
from localplatform.kinesis_events import StreamRecord
from localplatform.lambda_runtime import FunctionError
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
_PARTITION_KEY = re.compile(r"!\{partitionKeyFrom(Lambda|Query):(\w+)\}")
# The time stamps the OpenX JSON SerDe reads (Firehose's record format conversion guide).
_OPENX_ISO = re.compile(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d{1,9})?Z")
_OPENX_SPACED = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2}) (\d\d:\d\d:\d\d)(\.\d{1,9})?")
_INT64 = range(-(2**63), 2**63)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

# Lambda refuses a synchronous response over 6 MB: the invocation fails.
LAMBDA_RESPONSE_LIMIT_BYTES = 6 * 1024 * 1024
# Firehose's defaults for a Lambda processor without explicit parameters (S3 destinations).
_LAMBDA_DEFAULTS = {"BufferSizeInMBs": "1", "BufferIntervalInSeconds": "60",
                    "NumberOfRetries": "3"}
_EMULATED_PROCESSORS = {"Lambda", "MetadataExtraction"}

PartitionQuery = Callable[[Mapping[str, Any]], dict[str, str] | None]
Invoke = Callable[[Mapping[str, Any]], Any]


class UnsupportedDeliveryError(ValueError):
    """The template asks for a delivery feature the emulator does not implement."""


@dataclass(frozen=True)
class TransformSpec:
    """The delivery's ``Lambda`` processor."""

    lambda_arn: str
    buffer_bytes: int
    buffer_seconds: float
    retries: int


@dataclass(frozen=True)
class DeliverySpec:
    name: str
    stream_name: str
    stream_arn: str
    bucket: str
    prefix: str
    error_prefix: str
    buffer_bytes: int
    buffer_seconds: float
    transform: TransformSpec | None
    partition_query: PartitionQuery | None
    schema: pa.Schema

    @property
    def arn(self) -> str:
        return f"arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/{self.name}"

    @staticmethod
    def from_template(stack: DeployedStack, logical_id: str) -> DeliverySpec:
        properties = stack.resolve(stack.template["Resources"][logical_id]["Properties"])
        destination = properties["ExtendedS3DestinationConfiguration"]
        processing = destination.get("ProcessingConfiguration", {})
        processors = processing.get("Processors", []) if processing.get("Enabled", True) else []
        unsupported = {p.get("Type") for p in processors} - _EMULATED_PROCESSORS
        if unsupported:
            raise UnsupportedDeliveryError(
                f"{logical_id}: processors {sorted(map(str, unsupported))} are not emulated")
        query_text = _processor_parameters(processors, "MetadataExtraction").get(
            "MetadataExtractionQuery")
        conversion = destination.get("DataFormatConversionConfiguration", {})
        if not conversion.get("Enabled") or "ParquetSerDe" not in json.dumps(conversion):
            raise UnsupportedDeliveryError(f"{logical_id}: only Parquet conversion is emulated")
        table_name = conversion["SchemaConfiguration"]["TableName"]
        hints = destination.get("BufferingHints", {})
        stream_arn = properties["KinesisStreamSourceConfiguration"]["KinesisStreamARN"]
        return DeliverySpec(
            name=stack.physical_ids[logical_id],
            stream_name=stream_arn.rsplit("/", 1)[-1],
            stream_arn=stream_arn,
            bucket=destination["BucketARN"].split(":::", 1)[1],
            prefix=destination.get("Prefix", ""),
            error_prefix=destination.get("ErrorOutputPrefix", ""),
            buffer_bytes=int(hints.get("SizeInMBs", 5)) * 1024 * 1024,
            buffer_seconds=float(hints.get("IntervalInSeconds", 300)),
            transform=_transform_spec(processors),
            partition_query=compile_partition_query(query_text) if query_text else None,
            schema=glue_schema(stack, table_name),
        )


def _transform_spec(processors: list[dict[str, Any]]) -> TransformSpec | None:
    if not any(p.get("Type") == "Lambda" for p in processors):
        return None
    parameters = {**_LAMBDA_DEFAULTS, **_processor_parameters(processors, "Lambda")}
    return TransformSpec(
        lambda_arn=parameters["LambdaArn"],
        buffer_bytes=int(float(parameters["BufferSizeInMBs"]) * 1024 * 1024),
        buffer_seconds=float(parameters["BufferIntervalInSeconds"]),
        retries=int(parameters["NumberOfRetries"]),
    )


def glue_schema(stack: DeployedStack, table_name: str) -> pa.Schema:
    """The Parquet schema of the template's Glue table (partition keys live in the path)."""
    for table in stack.resources("AWS::Glue::Table").values():
        table_input = table["Properties"]["TableInput"]
        if table_input["Name"] == table_name:
            columns = table_input["StorageDescriptor"]["Columns"]
            return arrow_schema((c["Name"], c["Type"]) for c in columns)
    raise UnsupportedDeliveryError(f"no Glue table {table_name!r} in {stack.name}")


def arrow_schema(columns: Iterable[tuple[str, str]]) -> pa.Schema:
    """The Parquet schema Firehose writes for (name, Glue type) columns."""
    return pa.schema([(name, _GLUE_TYPES[glue_type]) for name, glue_type in columns])


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


def render_prefix(template: str, keys: Mapping[str, Mapping[str, str]], now: datetime,
                  error_type: str = "") -> str | None:
    """The prefix with its expressions evaluated; ``keys`` maps "Lambda"/"Query" to that
    source's partition keys. None if a partition key is missing (Firehose's error case)."""
    text = template.replace("!{firehose:error-output-type}", error_type)
    missing = False

    def key(match: re.Match[str]) -> str:
        nonlocal missing
        value = keys.get(match.group(1), {}).get(match.group(2))
        missing = missing or value is None
        return value or ""

    text = _PARTITION_KEY.sub(key, text)
    if missing:
        return None
    return _TIMESTAMP_FORMAT.sub(lambda m: _java_date(m.group(1), now), text)


def _java_date(pattern: str, now: datetime) -> str:
    for java, python in (("yyyy", "%Y"), ("MM", "%m"), ("dd", "%d"), ("HH", "%H"),
                         ("mm", "%M"), ("ss", "%S")):
        pattern = pattern.replace(java, python)
    return now.strftime(pattern)


def _processor_parameters(processors: list[dict[str, Any]], kind: str) -> dict[str, str]:
    for processor in processors:
        if processor.get("Type") == kind:
            return {p["ParameterName"]: str(p["ParameterValue"])
                    for p in processor.get("Parameters", [])}
    return {}


class ConversionError(ValueError):
    """A value the OpenX JSON SerDe would not convert to its column's type."""


def openx_value(value: Any, column_type: pa.DataType) -> Any:
    """A JSON value as the OpenX JSON SerDe reads it into a column of ``column_type``
    (timestamps as epoch milliseconds, which Arrow takes for a ``timestamp('ms')``)."""
    converted = _CONVERTERS[column_type](value)
    if converted is _REFUSED:
        raise ConversionError(f"{value!r:.60} is not a {column_type}")
    return converted


_REFUSED = object()


def _string(value: Any) -> Any:
    if type(value) is str:
        return value
    if isinstance(value, dict | list):
        return json.dumps(value)  # a nested value reaches a string column as JSON text
    return _REFUSED


def _integer(value: Any) -> Any:
    return value if type(value) is int and value in _INT64 else _REFUSED


def _double(value: Any) -> Any:
    return float(value) if type(value) in (int, float) else _REFUSED


def _boolean(value: Any) -> Any:
    return value if type(value) is bool else _REFUSED


def _timestamp(value: Any) -> Any:
    epoch_ms = _openx_epoch_ms(value)
    return _REFUSED if epoch_ms is None else epoch_ms


# The Python type a column takes unconverted (a bigint's range is still checked).
_AS_IS: dict[pa.DataType, type] = {pa.string(): str, pa.float64(): float, pa.bool_(): bool}
_CONVERTERS: dict[pa.DataType, Callable[[Any], Any]] = {
    pa.string(): _string, pa.int64(): _integer, pa.int32(): _integer, pa.float64(): _double,
    pa.bool_(): _boolean, _GLUE_TYPES["timestamp"]: _timestamp,
}


def _openx_epoch_ms(value: Any) -> int | None:
    if type(value) is str:
        iso = _OPENX_ISO.fullmatch(value)
        if iso:
            return _epoch_ms(f"{iso.group(1)}T{iso.group(2)}", iso.group(3))
        spaced = _OPENX_SPACED.fullmatch(value)
        if spaced:
            year, month, day, clock, fraction = spaced.groups()
            return _epoch_ms(f"{year}-{int(month):02d}-{int(day):02d}T{clock}", fraction)
        return None
    if type(value) is int:  # epoch milliseconds or seconds
        return value if abs(value) >= 10**11 else value * 1000
    if type(value) is float and math.isfinite(value):  # floating point epoch seconds
        return round(value * 1000)
    return None


def _epoch_ms(text: str, fraction: str | None) -> int | None:
    try:
        moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        return None
    return (moment - _EPOCH) // _MS + int((fraction or ".0")[1:4].ljust(3, "0"))


@dataclass
class _Buffer:
    rows: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0
    opened_at: float = 0.0  # monotonic
    oldest_arrival: float = 0.0  # epoch seconds


@dataclass
class DeliveryStats:
    records_in: int = 0  # user records read from the stream
    records_delivered: int = 0  # rows written under the prefix
    records_failed: int = 0  # records written under the error prefix
    records_dropped: int = 0  # answered Dropped by the function
    invocations: int = 0
    failed_invocations: int = 0
    objects: list[str] = field(default_factory=list)


class FirehoseDelivery:
    def __init__(self, spec: DeliverySpec, kinesis: Any, s3: Any, metrics: MetricStore,
                 *, invoke: Invoke | None = None, buffer_seconds: float | None = None) -> None:
        if spec.transform is not None and invoke is None:
            raise UnsupportedDeliveryError(
                f"{spec.name}: no local function for {spec.transform.lambda_arn}")
        self.spec = spec
        self.kinesis = kinesis
        self.s3 = s3
        self.metrics = metrics
        self.invoke = invoke
        # The demo shortens the template's intervals (the function's and the destination's)
        # so that a one-minute run shows files.
        self.buffer_seconds = spec.buffer_seconds if buffer_seconds is None else buffer_seconds
        self.transform_seconds = (
            0.0 if spec.transform is None
            else spec.transform.buffer_seconds if buffer_seconds is None
            else min(buffer_seconds, spec.transform.buffer_seconds)
        )
        self.stats = DeliveryStats()
        self._dimensions = {"DeliveryStreamName": spec.name}
        self._pending: list[FirehoseRecord] = []
        self._pending_bytes = 0
        self._pending_since = 0.0  # monotonic
        self._buffers: dict[str, _Buffer] = {}
        self._lock = threading.Lock()  # the buffers
        self._processing = threading.Lock()  # one batch through the function at a time
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._read_to_end: dict[str, float] = {}  # shard -> start of its last poll at the end
        self._shards: list[str] = []
        self._columns = {field.name.lower(): (field.name, _AS_IS.get(field.type),
                                              _CONVERTERS[field.type])
                         for field in spec.schema}

    def start(self) -> None:
        shards = self.kinesis.list_shards(StreamName=self.spec.stream_name)["Shards"]
        self._shards = [shard["ShardId"] for shard in shards]
        for shard_id in self._shards:
            self._spawn(read_shard, self.kinesis, self.spec.stream_name, shard_id,
                        "TRIM_HORIZON", self._stop, self._accept, self.metrics,
                        read_to_end=self._reader_at_end(shard_id))
        self._spawn(self._flush_when_due)

    def stop(self, flush: bool = True) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if flush:
            self.flush(force=True)

    def drain(self, timeout: float = 60.0) -> bool:
        """Read what the stream holds now, then deliver everything buffered: what a test or
        the demo calls before reading the offline store. False if the readers did not reach
        the end of every shard in time."""
        since = time.monotonic()
        read = False
        while not read and not self._stop.is_set() and time.monotonic() < since + timeout:
            time.sleep(0.05)
            with self._lock:
                read = all(self._read_to_end.get(shard, -1.0) >= since for shard in self._shards)
        self.flush(force=True)
        return read

    def _spawn(self, target: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        thread = threading.Thread(target=target, args=args, kwargs=kwargs, name="firehose",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _reader_at_end(self, shard_id: str) -> Callable[[float], None]:
        def at_end(polled_at: float) -> None:
            with self._lock:
                self._read_to_end[shard_id] = polled_at

        return at_end

    # ---- records in ----------------------------------------------------------------------
    def _accept(self, records: list[StreamRecord]) -> None:
        user = [user_record for record in records for user_record in user_records(record)]
        with self._lock:
            self.stats.records_in += len(user)
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.extend(user)
            self._pending_bytes += sum(len(record.data) for record in user)
        self._process(force=False)

    def _process(self, force: bool) -> None:
        with self._processing:
            while True:
                with self._lock:
                    batch = self._take(force)
                if not batch:
                    return
                if self.spec.transform is None:
                    self._deliver_all((record, record.data, {}) for record in batch)
                else:
                    self._transform(batch)

    def _take(self, force: bool) -> list[FirehoseRecord]:
        transform = self.spec.transform
        if not self._pending:
            return []
        if transform is not None and not force and (
            self._pending_bytes < transform.buffer_bytes
            and time.monotonic() - self._pending_since < self.transform_seconds
        ):
            return []
        limit = transform.buffer_bytes if transform is not None else self._pending_bytes
        taken, size = 0, 0
        while taken < len(self._pending) and (taken == 0 or size < limit):
            size += len(self._pending[taken].data)
            taken += 1
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        self._pending_bytes -= size
        return batch

    # ---- the Lambda processor ------------------------------------------------------------
    def _transform(self, batch: list[FirehoseRecord]) -> None:
        transform = self.spec.transform
        assert transform is not None and self.invoke is not None
        event = transformation_event(
            batch, invocation_id=str(uuid.uuid4()), delivery_stream_arn=self.spec.arn,
            source_stream_arn=self.spec.stream_arn, region=REGION)
        response, error = None, ""
        for _ in range(transform.retries + 1):
            started = time.monotonic()
            self.stats.invocations += 1
            try:
                response = self.invoke(event)
                if len(json.dumps(response)) > LAMBDA_RESPONSE_LIMIT_BYTES:
                    raise FunctionError("Function.ResponseSizeTooLarge",
                                        "response over Lambda's 6 MB")
            except FunctionError as failure:
                response, error = None, str(failure)
                self.stats.failed_invocations += 1
            self.metrics.put("AWS/Firehose", "ExecuteProcessing.Duration",
                             (time.monotonic() - started) * 1000, self._dimensions)
            self.metrics.put("AWS/Firehose", "ExecuteProcessing.Success",
                             0.0 if response is None else 1.0, self._dimensions)
            if response is not None:
                break
        if response is None:
            self._processing_failed(batch, "Lambda.FunctionError", error, transform.lambda_arn)
            return
        delivered, failed = [], []
        for record, answer in zip(batch, read_answers(response, batch), strict=True):
            if isinstance(answer, str):
                failed.append((record, "Lambda.InvalidResponse", answer))
            elif answer.result == "Dropped":
                self.stats.records_dropped += 1
            elif answer.result == "ProcessingFailed":
                failed.append((record, "Lambda.ProcessingFailed",
                               "the function answered ProcessingFailed"))
            else:
                assert answer.data is not None
                delivered.append((record, answer.data, answer.partition_keys))
        self.metrics.put("AWS/Firehose", "SucceedProcessing.Records",
                         len(batch) - len(failed), self._dimensions)
        for record, code, message in failed:
            self._processing_failed([record], code, message, transform.lambda_arn)
        self._deliver_all(delivered)

    def _processing_failed(self, records: list[FirehoseRecord], code: str, message: str,
                           lambda_arn: str = "") -> None:
        now_ms = int(time.time() * 1000)
        self._write_errors("processing-failed", [
            {"attemptsMade": (self.spec.transform.retries + 1) if self.spec.transform else 1,
             "arrivalTimestamp": record.arrival_ms, "errorCode": code, "errorMessage": message,
             "attemptEndingTimestamp": now_ms, "rawData": _b64(record.data),
             "lambdaArn": lambda_arn}
            for record in records
        ])

    # ---- partitioning and format conversion ----------------------------------------------
    def _deliver_all(
        self, items: Iterable[tuple[FirehoseRecord, bytes, Mapping[str, str]]],
    ) -> None:
        unpartitioned: list[FirehoseRecord] = []
        unconverted: list[tuple[FirehoseRecord, bytes, str]] = []
        Keys = tuple[tuple[str, str], ...]
        prefixes: dict[tuple[Keys, Keys], str | None] = {}
        now = datetime.now(UTC)
        with self._lock:
            for record, data, lambda_keys in items:
                try:
                    document = json.loads(data.decode())  # UTF-8, as the SerDe reads it
                except ValueError:
                    document = None
                if not isinstance(document, dict):
                    unconverted.append((record, data, "the record is not a JSON object"))
                    continue
                query = self.spec.partition_query
                query_keys = (query(document) if query else None) or {}
                # Records of a batch share a few partitions: render each prefix once.
                partition = (tuple(lambda_keys.items()), tuple(query_keys.items()))
                if partition not in prefixes:
                    prefixes[partition] = render_prefix(
                        self.spec.prefix, {"Lambda": lambda_keys, "Query": query_keys}, now)
                prefix = prefixes[partition]
                if prefix is None:
                    unpartitioned.append(record)
                    continue
                try:
                    row = self._row(document)
                except ConversionError as error:
                    unconverted.append((record, data, str(error)))
                    continue
                self._buffer(prefix, row, len(data), record.arrival_ms / 1000)
        if unpartitioned:
            self._processing_failed(unpartitioned, "DynamicPartitioning.MissingKey",
                                    "a partition key of the prefix has no value")
        if unconverted:
            self._format_conversion_failed(unconverted)

    def _row(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """OpenX JSON SerDe: keys matched case-insensitively, unknown keys dropped, each value
        converted to its column's type or the record refused."""
        row: dict[str, Any] = {}
        columns = self._columns
        for key, value in document.items():
            column = columns.get(key) or columns.get(key.lower())
            if column is None or value is None:
                continue
            name, exact, convert = column
            if type(value) is exact:  # the common case: nothing to convert
                row[name] = value
                continue
            converted = convert(value)
            if converted is _REFUSED:
                raise ConversionError(f"{name}: {value!r:.60} is not a "
                                      f"{self.spec.schema.field(name).type}")
            row[name] = converted
        return row

    def _buffer(self, prefix: str, row: dict[str, Any], size: int, arrival: float) -> None:
        buffer = self._buffers.get(prefix)
        if buffer is None:
            buffer = self._buffers[prefix] = _Buffer(opened_at=time.monotonic(),
                                                     oldest_arrival=arrival)
        buffer.rows.append(row)
        buffer.size += size
        buffer.oldest_arrival = min(buffer.oldest_arrival, arrival)
        if buffer.size >= self.spec.buffer_bytes:
            self._write(prefix, self._buffers.pop(prefix))

    def _format_conversion_failed(self, failed: list[tuple[FirehoseRecord, bytes, str]]) -> None:
        now_ms = int(time.time() * 1000)
        self._write_errors("format-conversion-failed", [
            {"attemptsMade": 1, "arrivalTimestamp": record.arrival_ms,
             "lastErrorCode": "DataFormatConversion.InvalidSchema",
             "lastErrorMessage": message, "attemptEndingTimestamp": now_ms,
             "rawData": _b64(data), "sequenceNumber": record.sequence_number,
             "subSequenceNumber": record.sub_sequence}
            for record, data, message in failed
        ])

    # ---- objects out ---------------------------------------------------------------------
    def _flush_when_due(self) -> None:
        while not self._stop.wait(0.5):
            self.flush(force=False)

    def flush(self, force: bool) -> None:
        self._process(force)
        with self._lock:
            now = time.monotonic()
            due = [prefix for prefix, buffer in self._buffers.items()
                   if force or now - buffer.opened_at >= self.buffer_seconds]
            for prefix in due:
                self._write(prefix, self._buffers.pop(prefix))

    def _write(self, prefix: str, buffer: _Buffer) -> None:
        schema = self.spec.schema
        table = pa.table([_column([row.get(column.name) for row in buffer.rows], column.type)
                          for column in schema], schema=schema)
        sink = io.BytesIO()
        pq.write_table(table, sink)
        now = datetime.now(UTC)
        key = f"{prefix}{self.spec.name}-1-{now:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}.parquet"
        self.s3.put_object(Bucket=self.spec.bucket, Key=key, Body=sink.getvalue())
        self.stats.records_delivered += len(buffer.rows)
        self.stats.objects.append(key)
        self.metrics.put("AWS/Firehose", "DeliveryToS3.Records", len(buffer.rows),
                         self._dimensions)
        self.metrics.put("AWS/Firehose", "DeliveryToS3.DataFreshness",
                         time.time() - buffer.oldest_arrival, self._dimensions)

    def _write_errors(self, error_type: str, documents: list[dict[str, Any]]) -> None:
        if not documents:
            return
        now = datetime.now(UTC)
        prefix = render_prefix(self.spec.error_prefix, {}, now, error_type) or ""
        body = "".join(json.dumps(document) + "\n" for document in documents)
        key = f"{prefix}{self.spec.name}-1-{now:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}"
        self.s3.put_object(Bucket=self.spec.bucket, Key=key, Body=body.encode())
        with self._lock:
            self.stats.records_failed += len(documents)


def _column(values: list[Any], column_type: pa.DataType) -> pa.Array:
    if pa.types.is_timestamp(column_type):
        # Timestamps are epoch ms here; Arrow builds them from Python ints 50 times slower
        # than an int64 array cast to the timestamp type.
        return pa.array(values, pa.int64()).cast(column_type)
    return pa.array(values, column_type)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
