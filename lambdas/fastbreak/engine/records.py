"""Kinesis records as the Lambda event source mapping delivers them, decoded to user records.

A Kinesis record may be a KPL aggregate holding many user records; each user record's
position in the shard is ``(sequence number, index inside the aggregate)``. Positions order the
shard and are what the online store remembers as applied (see ``docs/exactly-once.md``).
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Any

from fastbreak.engine.kpl import MAGIC as KPL_MAGIC
from fastbreak.engine.kpl import KplError, deaggregate
from fastbreak.engine.rejections import Reason, Rejection

MAX_SEQUENCE_DIGITS = 128

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
        and len(sequence_number) <= MAX_SEQUENCE_DIGITS
        and sequence_number.isdigit()
        and sequence_number.isascii()
    ):
        return Rejection(Reason.BAD_KINESIS_RECORD, "sequenceNumber is not a decimal string")
    if not isinstance(event_id, str) or ":" not in event_id or not isinstance(data, str):
        return Rejection(Reason.BAD_KINESIS_RECORD, "eventID or data is malformed")
    # The Lambda event is parsed JSON, so the arrival time is a float: one comparison decides
    # the common case, the general test (a number, not a bool) runs when it fails.
    if type(arrival) is not float and (not isinstance(arrival, _NUMBER) or type(arrival) is bool):
        return Rejection(Reason.BAD_KINESIS_RECORD, "approximateArrivalTimestamp is missing")
    # Positional arguments: keywords cost a third of the construction on this hot path.
    return SourceRecord(
        index, sequence_number, int(sequence_number), event_id.partition(":")[0],
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
    return [UserRecord(source, sub_index, payload) for sub_index, payload in enumerate(payloads)]
