"""Kinesis records as the Lambda event source mapping delivers them, decoded to user records.

A Kinesis record may be a KPL aggregate holding many user records; each user record's
position in the shard is ``(sequence number, index inside the aggregate)``. Positions order the
shard and are what the online store remembers as applied (see ``docs/exactly-once.md``).
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import Any

from fastbreak.engine.kpl import MAGIC as KPL_MAGIC
from fastbreak.engine.kpl import KplError, deaggregate
from fastbreak.engine.rejections import Reason, Rejection

# The Kinesis API's pattern for a sequence number: 0|([1-9]\d{0,128}), up to 129 digits.
MAX_SEQUENCE_DIGITS = 129
# A shard id as the Kinesis API allows it ([a-zA-Z0-9_.-]{1,128}). It becomes part of S3 keys,
# DynamoDB keys and the high-water mark text (where "=" and "," are separators): anything else
# in it is refused before it can reach them.
_SHARD_ID = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
_SHARD_IDS_SEEN: set[str] = set()  # ids that matched (bounded)
# approximateArrivalTimestamp in epoch seconds: before year 10,000, so that every date
# computation on it (quarantine keys, lateness) stays in range.
MAX_ARRIVAL_S = 253_402_300_800

Position = tuple[int, int]
_NUMBER = (int, float)


# Not frozen: a frozen dataclass pays object.__setattr__ per field, on every record.
@dataclass(slots=True)
class SourceRecord:
    """One record of the Lambda event; ``sequence_number`` is its batchItemFailures id."""

    index: int
    sequence_number: str
    sequence: int
    shard_id: str
    partition_key: str
    arrival_ms: int
    data: str


@dataclass(slots=True)
class UserRecord:
    source: SourceRecord
    sub_index: int
    payload: bytes

    @property
    def position(self) -> Position:
        return (self.source.sequence, self.sub_index)


def read_source(raw: Any, index: int) -> SourceRecord | Rejection:
    """The fields Fastbreak needs from one Lambda Kinesis record, or why it cannot have them."""
    try:
        kinesis = raw["kinesis"]
        sequence_number = kinesis["sequenceNumber"]
        event_id = raw["eventID"]
        data = kinesis["data"]
        arrival = kinesis.get("approximateArrivalTimestamp")
        partition_key = kinesis.get("partitionKey", "")
    except (KeyError, TypeError) as missing:
        return Rejection(Reason.BAD_KINESIS_RECORD, f"record lacks {missing}")
    if not (
        isinstance(sequence_number, str)
        and 0 < len(sequence_number) <= MAX_SEQUENCE_DIGITS
        and sequence_number.isdigit()
        and sequence_number.isascii()
        and (sequence_number[0] != "0" or sequence_number == "0")
    ):
        return Rejection(Reason.BAD_KINESIS_RECORD, "sequenceNumber is not a decimal string")
    if not isinstance(event_id, str) or not isinstance(data, str):
        return Rejection(Reason.BAD_KINESIS_RECORD, "eventID or data is malformed")
    shard_id, colon, _ = event_id.partition(":")
    if shard_id not in _SHARD_IDS_SEEN:  # a batch holds one shard: match it once
        if not colon or not _SHARD_ID.fullmatch(shard_id):
            return Rejection(Reason.BAD_KINESIS_RECORD, "eventID does not start with a shard id")
        if len(_SHARD_IDS_SEEN) < 4096:
            _SHARD_IDS_SEEN.add(shard_id)
    # The Lambda event is parsed JSON, so the arrival time is a float: one comparison decides
    # the common case, the general test (a number, not a bool) runs when it fails.
    if type(arrival) is not float and (not isinstance(arrival, _NUMBER) or type(arrival) is bool):
        return Rejection(Reason.BAD_KINESIS_RECORD, "approximateArrivalTimestamp is missing")
    if not 0 <= arrival < MAX_ARRIVAL_S:  # also false for NaN
        return Rejection(
            Reason.BAD_KINESIS_RECORD, "approximateArrivalTimestamp is not a time in epoch seconds"
        )
    # Positional arguments: keywords cost a third of the construction on this hot path.
    return SourceRecord(
        index, sequence_number, int(sequence_number), shard_id,
        partition_key if type(partition_key) is str else str(partition_key),
        int(arrival * 1000), data,
    )


def user_records(source: SourceRecord) -> list[UserRecord] | Rejection:
    try:
        blob = binascii.a2b_base64(source.data, strict_mode=True)
    except (binascii.Error, ValueError):
        return Rejection(Reason.BAD_BASE64, "data is not valid base64")
    if blob[:4] != KPL_MAGIC:  # the common case: one user record
        return [UserRecord(source, 0, blob)]
    try:
        payloads = deaggregate(blob)
    except KplError as error:
        return Rejection(Reason.KPL_CORRUPT, str(error))
    if not payloads:  # well-formed, but nothing in it: counted, not consumed silently
        return Rejection(Reason.KPL_EMPTY, "KPL aggregate holds no user record")
    return [UserRecord(source, sub_index, payload) for sub_index, payload in enumerate(payloads)]
