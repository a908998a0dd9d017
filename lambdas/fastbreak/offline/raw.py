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

from fastbreak.definitions.model import Catalog, FieldType

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
