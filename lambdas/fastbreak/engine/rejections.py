"""Why a record was not applied: stable machine-readable codes plus a human message.

The code is the ``reason`` dimension of the ``RecordsInvalid`` metric and the ``reason`` field
of quarantined objects, so alarms, dashboards and replay tooling can key on it. Never rename a
code; add new ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    BAD_KINESIS_RECORD = "bad_kinesis_record"  # the Lambda event itself is malformed
    BAD_BASE64 = "bad_base64"
    KPL_CORRUPT = "kpl_corrupt"  # KPL magic present, but checksum or protobuf is broken
    KPL_EMPTY = "kpl_empty"  # a well-formed KPL aggregate that holds no user record
    BAD_JSON = "bad_json"
    # a string holds a lone UTF-16 surrogate ("\\ud800", or the bytes ED A0 80): no UTF-8 store
    # (DynamoDB, S3, Parquet) can keep it
    UNENCODABLE_STRING = "unencodable_string"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_ENVELOPE_FIELD = "missing_envelope_field"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    BAD_EVENT_ID = "bad_event_id"
    BAD_EVENT_TIME = "bad_event_time"
    EVENT_TIME_IN_FUTURE = "event_time_in_future"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    BAD_ENTITY_KEY = "bad_entity_key"
    TOO_LATE = "too_late"  # valid, but later than a group's allowed lateness: routed, not applied
    # valid, but its group item would pass DynamoDB's 400 KB: routed, not applied, to that group
    ITEM_TOO_LARGE = "item_too_large"
    UNPROCESSABLE = "unprocessable"  # a bug met this record; kept so the shard moves on
    # ParallelizationFactor > 1: an event whose partition key is not the key of the user group it
    # feeds could race another batch on that group's item; routed, not applied, to those groups
    PARTITION_KEY_MISMATCH = "partition_key_mismatch"
    # a partials stream record the audience stage cannot read (written by another version)
    BAD_PARTIAL = "bad_partial"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    message: str
