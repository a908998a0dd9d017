"""The raw events table: every user record of the events stream, one row each, as the stream
processor saw it.

The Firehose delivery's transformation Lambda runs the processor's own decode and validation on
each record (``raw_row``), so a row holds the event exactly as the processor folds it: upcast to
the latest schema version and enriched, with the record's Kinesis position and arrival time and,
for a record the processor refuses, the reason (``rejection``). The training-set builder and the
backfill read this table and apply the processor's remaining rules themselves (duplicates,
allowed lateness), which depend on more than one record.

Columns (``raw_columns``), after the envelope and the union of the catalog's payload fields:

- ``kinesis_shard_id``, ``kinesis_sequence_number`` (decimal text: up to 129 digits, more than a
  64-bit or Glue ``decimal(38)`` holds), ``kinesis_sub_sequence`` (index inside a KPL
  aggregate, 0 otherwise): the record's position, the order the processor applies a shard in;
- ``kinesis_partition_key``, ``kinesis_arrival_time`` (Kinesis' approximate arrival time, ms);
- ``rejection``: null for a valid event, else the ``fastbreak.engine.rejections.Reason`` code;
- ``raw_payload``: the record's bytes as text, only for a rejected record.

Partitions: ``event_date``/``event_hour`` of the event time (of the arrival time when the event
has none).
"""

from __future__ import annotations

import json
from typing import Any

from fastbreak.definitions.model import Catalog, FieldType
from fastbreak.engine.records import UserRecord
from fastbreak.engine.rejections import Rejection
from fastbreak.engine.timestamps import format_ms
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


def raw_columns(catalog: Catalog) -> list[tuple[str, FieldType]]:
    """The raw table's columns: envelope, payload fields, then ``METADATA_COLUMNS``."""
    return [*catalog.offline_columns(), *METADATA_COLUMNS]


def raw_row(record: UserRecord, outcome: Event | Rejection) -> dict[str, Any]:
    """One row of the raw table, JSON-ready (timestamps in the envelope's ISO-8601 form), for
    a user record and what ``fastbreak.engine.admission.Admission`` made of it."""
    source = record.source
    metadata: dict[str, Any] = {
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
            **metadata,
            "rejection": None,
            "raw_payload": None,
        }
    return {
        **metadata,
        "rejection": outcome.reason.value,
        "raw_payload": record.payload.decode("utf-8", "backslashreplace"),
    }


def _schema_version(payload: bytes) -> int | None:
    """The version the producer wrote (the payload columns hold the upcast event)."""
    try:
        version = json.loads(payload).get("schema_version")
    except (ValueError, AttributeError, RecursionError):
        return None
    return version if type(version) is int else None
