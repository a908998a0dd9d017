"""Records as a Kinesis-sourced Firehose delivery hands them to its transformation Lambda, and
how it reads the answer. Field for field the shapes AWS documents; the local platform's
Firehose and the tests both build their events here.

Firehose de-aggregates KPL records of a Kinesis source before invoking the Lambda: each user
record arrives on its own, with its parent's sequence number and its index in the aggregate as
``subsequenceNumber``. Arrival times are epoch milliseconds.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastbreak.engine.kpl import KplError, deaggregate, is_aggregated
from localplatform.kinesis_events import StreamRecord

RESULTS = ("Ok", "Dropped", "ProcessingFailed")


@dataclass(frozen=True, slots=True)
class FirehoseRecord:
    """One user record of the stream, as the transformation Lambda receives it."""

    record_id: str
    data: bytes
    shard_id: str
    partition_key: str
    sequence_number: str
    sub_sequence: int
    arrival_ms: int


def user_records(record: StreamRecord) -> list[FirehoseRecord]:
    """A stream record's user records. An aggregate that does not parse passes on whole, as
    the KPL's own de-aggregation (and the KCL's) treats it."""
    payloads = [record.data]
    if is_aggregated(record.data):
        with contextlib.suppress(KplError):
            payloads = deaggregate(record.data)
    arrival_ms = int(record.arrival * 1000)
    return [
        FirehoseRecord(
            # Opaque to the function; unique per user record, as Firehose's ids are.
            record_id=f"{record.sequence_number}{sub:06d}{record.shard_id[-4:]}",
            data=payload, shard_id=record.shard_id, partition_key=record.partition_key,
            sequence_number=record.sequence_number, sub_sequence=sub, arrival_ms=arrival_ms,
        )
        for sub, payload in enumerate(payloads)
    ]


def transformation_event(
    records: Sequence[FirehoseRecord], *, invocation_id: str, delivery_stream_arn: str,
    source_stream_arn: str, region: str,
) -> dict[str, Any]:
    return {
        "invocationId": invocation_id,
        "deliveryStreamArn": delivery_stream_arn,
        "sourceKinesisStreamArn": source_stream_arn,
        "region": region,
        "records": [transformation_record(record) for record in records],
    }


def transformation_record(record: FirehoseRecord) -> dict[str, Any]:
    return {
        "recordId": record.record_id,
        "approximateArrivalTimestamp": record.arrival_ms,
        "data": base64.b64encode(record.data).decode("ascii"),
        "kinesisRecordMetadata": {
            "shardId": record.shard_id,
            "partitionKey": record.partition_key,
            "approximateArrivalTimestamp": record.arrival_ms,
            "sequenceNumber": record.sequence_number,
            "subsequenceNumber": record.sub_sequence,
        },
    }


class MalformedResponseError(ValueError):
    """The Lambda's answer for a record breaks the contract: Firehose counts the record as
    failed (``ProcessingFailed``, under the error prefix)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What the function said about one record."""

    result: str
    data: bytes | None
    partition_keys: Mapping[str, str]


def read_answers(response: Any, records: Sequence[FirehoseRecord]) -> list[Answer | str]:
    """Each record's answer, in the records' order, or why Firehose would not accept it."""
    by_id: dict[str, Any] = {}
    entries = response.get("records") if isinstance(response, Mapping) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, Mapping) and isinstance(entry.get("recordId"), str):
            by_id[entry["recordId"]] = entry
    return [_answer(by_id.get(record.record_id)) for record in records]


def _answer(entry: Any) -> Answer | str:
    if entry is None:
        return "the response has no entry with this recordId"
    result = entry.get("result")
    if result not in RESULTS:
        return f"result {result!r} is not one of {', '.join(RESULTS)}"
    if result != "Ok":
        return Answer(result, None, {})
    try:
        data = base64.b64decode(entry["data"], validate=True)
    except (KeyError, TypeError, ValueError):
        return "an Ok record without base64 data"
    keys = (entry.get("metadata") or {}).get("partitionKeys") or {}
    if not isinstance(keys, Mapping) or not all(isinstance(v, str) for v in keys.values()):
        return "metadata.partitionKeys is not a map of strings"
    return Answer(result, data, dict(keys))


def row_of(answer: Answer) -> dict[str, Any]:
    """The JSON document of an ``Ok`` answer."""
    assert answer.data is not None
    document: dict[str, Any] = json.loads(answer.data)
    return document
