"""The raw events table: every user record of the events stream, one row each, as the stream
processor saw it.

The Firehose delivery's transformation Lambda runs the processor's own decode and validation on
each record (``RawTableTransform``, over ``raw_row``), so a row holds the event exactly as the
processor folds it: upcast to the latest schema version and enriched, with the record's Kinesis
position and arrival time and, for a record the processor refuses, the reason (``rejection``).
The training-set builder and the backfill read this table and apply the processor's remaining
rules themselves (duplicates, allowed lateness), which depend on more than one record.

Columns (``raw_columns``), after the envelope and the union of the catalog's payload fields:

- ``kinesis_shard_id``, ``kinesis_sequence_number`` (decimal text: up to 129 digits, more than a
  64-bit or Glue ``decimal(38)`` holds), ``kinesis_sub_sequence`` (index inside a KPL
  aggregate, 0 otherwise): the record's position, the order the processor applies a shard in;
- ``kinesis_partition_key``, ``kinesis_arrival_time`` (Kinesis' approximate arrival time, ms);
- ``rejection``: null for a valid event, else the ``fastbreak.engine.rejections.Reason`` code;
- ``raw_payload``: the record's bytes as text, only for a rejected record.

Partitions (``PARTITION_KEYS``): ``event_date``/``event_hour`` of the event time; a refused
record has no event time the processor trusts, so its row goes to the hour it arrived in.
"""

from __future__ import annotations

import binascii
import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastbreak.definitions.model import Catalog, FieldType
from fastbreak.engine.admission import Admission
from fastbreak.engine.kpl import is_aggregated
from fastbreak.engine.records import MAX_SEQUENCE_DIGITS, SourceRecord, UserRecord
from fastbreak.engine.rejections import Reason, Rejection
from fastbreak.engine.timestamps import format_ms, parse_event_time_ms
from fastbreak.engine.validation import Event

STR, INT, TIMESTAMP = FieldType.STRING, FieldType.INT, FieldType.TIMESTAMP

METADATA_COLUMNS: tuple[tuple[str, FieldType], ...] = (
    ("kinesis_shard_id", STR),
    ("kinesis_sequence_number", STR),
    ("kinesis_sub_sequence", INT),
    ("kinesis_partition_key", STR),
    ("kinesis_arrival_time", TIMESTAMP),
    ("rejection", STR),
    ("raw_payload", STR),
)
PARTITION_KEYS = ("event_date", "event_hour")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def raw_columns(catalog: Catalog) -> list[tuple[str, FieldType]]:
    """The raw table's columns: envelope, payload fields, then ``METADATA_COLUMNS``."""
    return [*catalog.offline_columns(), *METADATA_COLUMNS]


def raw_row(record: UserRecord, outcome: Event | Rejection) -> dict[str, Any]:
    """One row of the raw table, JSON-ready (timestamps in the envelope's ISO-8601 form), for
    a user record and what ``fastbreak.engine.admission.Admission`` made of it."""
    source = record.source
    position: dict[str, Any] = {
        "kinesis_shard_id": source.shard_id,
        "kinesis_sequence_number": source.sequence_number,
        "kinesis_sub_sequence": record.sub_index,
        "kinesis_partition_key": source.partition_key,
        "kinesis_arrival_time": format_ms(source.arrival_ms),
    }
    if isinstance(outcome, Event):
        return {
            "event_type": outcome.event_type,
            "schema_version": _schema_version(record.payload),
            "event_id": outcome.event_id,
            "event_time": format_ms(outcome.time_ms),
            **outcome.payload,
            **position,
            "rejection": None,
            "raw_payload": None,
        }
    return _rejected_row(position, outcome, record.payload)


def unplaced_row(arrival_ms: int, payload: bytes, rejection: Rejection) -> dict[str, Any]:
    """The row of a record whose Kinesis position cannot be read (the processor refuses such a
    record as ``bad_kinesis_record``): kept, with null position columns."""
    position = {name: None for name, _ in METADATA_COLUMNS[:4]}
    return _rejected_row({**position, "kinesis_arrival_time": format_ms(arrival_ms)}, rejection,
                         payload)


def partition_of(epoch_ms: int) -> dict[str, str]:
    """``event_date``/``event_hour`` values (UTC) of a time."""
    moment = _EPOCH + timedelta(milliseconds=epoch_ms)
    return {"event_date": f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}",
            "event_hour": f"{moment.hour:02d}"}


def _rejected_row(position: dict[str, Any], rejection: Rejection,
                  payload: bytes) -> dict[str, Any]:
    return {
        **position,
        "rejection": rejection.reason.value,
        "raw_payload": payload.decode("utf-8", "backslashreplace"),
    }


def _schema_version(payload: bytes) -> int | None:
    """The version the producer wrote (the payload columns hold the upcast event)."""
    try:
        # A valid event's payload is UTF-8 JSON: decoding first skips json's encoding sniffing.
        version = json.loads(payload.decode()).get("schema_version")
    except (ValueError, AttributeError, RecursionError):
        return None
    return version if type(version) is int else None


# ---- the Firehose transformation -------------------------------------------------------------
OK, PROCESSING_FAILED = "Ok", "ProcessingFailed"
# Lambda refuses a synchronous response over 6 MB (the invocation then fails and Firehose sends
# the whole batch to the error prefix); the margin covers the response's own envelope.
RESPONSE_LIMIT_BYTES = 6 * 1024 * 1024
RESPONSE_BUDGET_BYTES = RESPONSE_LIMIT_BYTES - 64 * 1024


@dataclass
class TransformReport:
    """What one invocation made of its records (the handler publishes it as metrics)."""

    records_in: int = 0
    rows: int = 0  # Ok: valid events
    rejected: Counter[str] = field(default_factory=Counter)  # Ok: refused records, by reason
    unreadable: int = 0  # ProcessingFailed: no record id or no arrival time to partition by
    over_limit: int = 0  # ProcessingFailed: its row would pass the 6 MB response limit
    errors: list[str] = field(default_factory=list)  # bugs met, "recordId: error", for the log

    @property
    def failed(self) -> int:
        return self.unreadable + self.over_limit


class RawTableTransform:
    """The raw table's Firehose data transformation: one Firehose event in, its response out.

    Each record is handled on its own: a record that cannot be read, or that meets a bug, is
    answered ``ProcessingFailed`` (Firehose keeps it under the error prefix) and the others
    are unaffected. A record the processor would refuse is still a row (``Ok``), with the
    reason and its bytes; nothing is ``Dropped``.
    """

    def __init__(self, catalog: Catalog, *, admission: Admission | None = None,
                 response_budget_bytes: int = RESPONSE_BUDGET_BYTES) -> None:
        self.admission = admission or Admission(catalog)
        self.response_budget_bytes = response_budget_bytes
        # OpenX's JSON SerDe reads only the envelope's timestamp form; payload timestamps are
        # accepted in any ISO-8601 form with a zone, so they are rewritten to it.
        self._payload_timestamps = tuple(
            name for name, kind in catalog.offline_columns()
            if kind is TIMESTAMP and name != "event_time"
        )

    def transform(self, event: Mapping[str, Any]) -> tuple[dict[str, Any], TransformReport]:
        records = event.get("records")
        records = records if isinstance(records, list) else []
        report = TransformReport(records_in=len(records))
        answered = [self._answer(record, report.errors) for record in records]
        kept = self._within_budget([answer for answer, _ in answered])
        for answer, (_, verdict) in zip(kept, answered, strict=True):
            if verdict is None:
                report.unreadable += 1
            elif answer["result"] != OK:
                report.over_limit += 1
            elif verdict:
                report.rejected[verdict] += 1
            else:
                report.rows += 1
        return {"records": kept}, report

    # ---- one record ----------------------------------------------------------------------
    def _answer(self, record: Any, errors: list[str]) -> tuple[dict[str, Any], str | None]:
        """The record's answer and its verdict: "" for a valid event, the reason code for a
        refused record, None for one that cannot be read."""
        record_id = record.get("recordId") if isinstance(record, Mapping) else None
        if not isinstance(record_id, str):
            return _failed(str(record_id or "")), None
        try:
            row = self._row(record)
        except Exception as error:  # a bug must not fail the batch: Firehose keeps the record
            errors.append(f"{record_id}: {type(error).__name__}: {error}"[:500])
            row = None
        if row is None:
            return _failed(record_id), None
        document, partition = row
        answer = {"recordId": record_id, "result": OK, "data": _encode(document),
                  "metadata": {"partitionKeys": partition}}
        return answer, document["rejection"] or ""

    def _row(self, record: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]] | None:
        metadata = record.get("kinesisRecordMetadata")
        metadata = metadata if isinstance(metadata, Mapping) else {}
        kinesis_arrival = _epoch_ms(metadata.get("approximateArrivalTimestamp"))
        arrival = kinesis_arrival
        if arrival is None:
            arrival = _epoch_ms(record.get("approximateArrivalTimestamp"))
        if arrival is None:
            return None  # no hour to partition it by
        data = record.get("data")
        if not isinstance(data, str):
            missing = Rejection(Reason.BAD_KINESIS_RECORD, "the record has no data")
            return unplaced_row(arrival, b"", missing), partition_of(arrival)
        source = _source(metadata, kinesis_arrival, data)
        payload = _decode(data)
        raw = payload if payload is not None else data.encode()
        if isinstance(source, Rejection):
            return unplaced_row(arrival, raw, source), partition_of(arrival)
        user_record = UserRecord(source, _sub_sequence(metadata), raw)
        outcome = self._admit(user_record, payload)
        row = raw_row(user_record, outcome)
        if isinstance(outcome, Event):
            self._normalize_timestamps(row)
            return row, partition_of(outcome.time_ms)
        return row, partition_of(arrival)

    def _admit(self, record: UserRecord, payload: bytes | None) -> Event | Rejection:
        if payload is None:
            return Rejection(Reason.BAD_BASE64, "data is not valid base64")
        if is_aggregated(payload):
            # Firehose de-aggregates KPL records before the Lambda and passes on, whole, an
            # aggregate it could not parse: the processor refuses the same record as corrupt.
            return Rejection(Reason.KPL_CORRUPT, "a KPL aggregate Firehose could not split")
        return self.admission.admit(record)

    def _normalize_timestamps(self, row: dict[str, Any]) -> None:
        for name in self._payload_timestamps:
            value = row.get(name)
            if isinstance(value, str):
                epoch_ms = parse_event_time_ms(value)
                if epoch_ms is not None:
                    row[name] = format_ms(epoch_ms)

    # ---- the response --------------------------------------------------------------------
    def _within_budget(self, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The answers, the last rows turned ``ProcessingFailed`` while the response would pass
        the budget (Firehose then keeps those records under the error prefix)."""
        quoted_ids = [len(json.dumps(answer["recordId"])) for answer in answers]
        fallbacks = [_FAILED_SIZE + quoted for quoted in quoted_ids]
        total, reserve = 0, sum(fallbacks)
        kept = []
        for answer, fallback in zip(answers, fallbacks, strict=True):
            reserve -= fallback
            size = _size(answer) if answer["result"] == OK else fallback
            if total + size + reserve > self.response_budget_bytes:
                answer, size = _failed(answer["recordId"]), fallback
            kept.append(answer)
            total += size
        return kept


def _failed(record_id: str) -> dict[str, Any]:
    return {"recordId": record_id, "result": PROCESSING_FAILED}


def _size(answer: dict[str, Any]) -> int:
    """Bytes of the answer in the response's JSON (``json.dumps``' separators), and the ", "
    that joins it to the next. The base64 ``data`` needs no escaping: it is counted, not
    encoded again."""
    data = answer.get("data")
    if data is None:
        return len(json.dumps(answer)) + 2
    return len(json.dumps({**answer, "data": ""})) + len(data) + 2


# The size of a ProcessingFailed answer, and its ", ", but for its quoted record id.
_FAILED_SIZE = len(json.dumps({"recordId": "", "result": PROCESSING_FAILED})) - len('""') + len(
    ", ")


def _encode(row: dict[str, Any]) -> str:
    try:
        text = json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        data = text.encode()
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape: keep it escaped
        data = json.dumps(row, separators=(",", ":"), allow_nan=False).encode()
    return binascii.b2a_base64(data + b"\n", newline=False).decode("ascii")


def _decode(data: str) -> bytes | None:
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def _source(metadata: Mapping[str, Any], arrival_ms: int | None,
            data: str) -> SourceRecord | Rejection:
    if not metadata:
        return Rejection(Reason.BAD_KINESIS_RECORD, "the record has no kinesisRecordMetadata")
    shard_id = metadata.get("shardId")
    sequence_number = metadata.get("sequenceNumber")
    partition_key = metadata.get("partitionKey", "")
    if not (isinstance(sequence_number, str) and sequence_number.isascii()
            and sequence_number.isdigit() and len(sequence_number) <= MAX_SEQUENCE_DIGITS):
        return Rejection(Reason.BAD_KINESIS_RECORD, "sequenceNumber is not a decimal string")
    if not isinstance(shard_id, str) or not shard_id:
        return Rejection(Reason.BAD_KINESIS_RECORD, "shardId is missing")
    if arrival_ms is None:
        return Rejection(Reason.BAD_KINESIS_RECORD, "approximateArrivalTimestamp is missing")
    if _sub_sequence(metadata) < 0:
        return Rejection(Reason.BAD_KINESIS_RECORD, "subsequenceNumber is not an integer")
    return SourceRecord(0, sequence_number, int(sequence_number), shard_id,
                        partition_key if isinstance(partition_key, str) else str(partition_key),
                        arrival_ms, data)


def _sub_sequence(metadata: Mapping[str, Any]) -> int:
    """The index inside a KPL aggregate; 0 for a record that was not aggregated (Firehose
    sends 0 or an empty string); -1 if it is not a number."""
    value = metadata.get("subsequenceNumber")
    if value is None or value == "":
        return 0
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return -1


def _epoch_ms(value: Any) -> int | None:
    """Firehose sends arrival times as epoch milliseconds; its documentation's sample event
    shows ISO-8601 text in ``kinesisRecordMetadata``: both are read."""
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        return int(value) if value >= 0 else None
    if isinstance(value, str):
        if value.isascii() and value.isdigit():
            return int(value)
        return parse_event_time_ms(value)
    return None
