"""Kinesis records as the Lambda service hands them to a function, and as it reports them to
an on-failure destination. Field for field the shapes AWS documents.

The one home of these shapes: the event source mapping emulator builds its invocations with
them, and tests and benchmarks build theirs (``stream_of``) with the same code.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SHARD = "shardId-000000000000"
# Sequence numbers run to 128 decimal digits (56 today): records built for tests start here,
# never at small integers that a numeric column or a float would hold.
SEQUENCE_BASE = 49590338271490256608559692538361571095921575989136588898


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One record read from a shard (moto's sequence numbers are decimal strings too)."""

    sequence_number: str
    partition_key: str
    data: bytes
    arrival: float  # epoch seconds, Kinesis's ApproximateArrivalTimestamp
    shard_id: str = SHARD

    @property
    def sequence(self) -> int:
        # Compared as integers: they run to 128 digits on AWS.
        return int(self.sequence_number)


@dataclass(frozen=True)
class EventSource:
    """What every record of one mapping's events says about where it came from."""

    stream_arn: str
    function_arn: str
    invoke_identity_arn: str  # the function's execution role
    region: str


# A mapping of moto's default account, for events built outside a deployed platform.
EXAMPLE_SOURCE = EventSource(
    stream_arn="arn:aws:kinesis:us-east-1:123456789012:stream/fastbreak-events",
    function_arn="arn:aws:lambda:us-east-1:123456789012:function:fastbreak-stream-processor",
    invoke_identity_arn="arn:aws:iam::123456789012:role/fastbreak-processor",
    region="us-east-1",
)


def lambda_event(
    records: Sequence[StreamRecord], source: EventSource = EXAMPLE_SOURCE
) -> dict[str, Any]:
    return {"Records": [lambda_record(record, source) for record in records]}


def lambda_record(record: StreamRecord, source: EventSource = EXAMPLE_SOURCE) -> dict[str, Any]:
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record.partition_key,
            "sequenceNumber": record.sequence_number,
            "data": base64.b64encode(record.data).decode("ascii"),
            "approximateArrivalTimestamp": record.arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{record.shard_id}:{record.sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": source.invoke_identity_arn,
        "awsRegion": source.region,
        "eventSourceARN": source.stream_arn,
    }


def on_failure_record(
    records: Sequence[StreamRecord],
    source: EventSource,
    *,
    condition: str,
    invoke_count: int,
    function_error: str | None,
    now: float,
    request_id: str,
) -> dict[str, Any]:
    """Lambda's invocation record for discarded stream records: a pointer to the shard range,
    not the data, so that on-call can replay it while the stream still retains it."""
    response: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
    if function_error is not None:
        response["functionError"] = function_error
    return {
        "requestContext": {
            "requestId": request_id,
            "functionArn": source.function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": response,
        "version": "1.0",
        "timestamp": iso_millis(now),
        "KinesisBatchInfo": {
            "shardId": records[0].shard_id,
            "startSequenceNumber": records[0].sequence_number,
            "endSequenceNumber": records[-1].sequence_number,
            "approximateArrivalOfFirstRecord": iso_millis(records[0].arrival),
            "approximateArrivalOfLastRecord": iso_millis(records[-1].arrival),
            "batchSize": len(records),
            "streamArn": source.stream_arn,
        },
    }


def iso_millis(epoch_seconds: float) -> str:
    moment = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# ---- records built without a stream (tests, benchmarks) --------------------------------------
def json_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def stream_of(
    documents: Sequence[dict[str, Any]], arrival_s: float, *, start: int = 0,
    shard_id: str = SHARD, partition_key_field: str = "user_id",
) -> list[StreamRecord]:
    """One record per document, with consecutive 56-digit sequence numbers from
    ``SEQUENCE_BASE + start``."""
    return [
        StreamRecord(
            str(SEQUENCE_BASE + start + offset),
            str(document.get(partition_key_field, "pk")),
            json_bytes(document),
            arrival_s,
            shard_id,
        )
        for offset, document in enumerate(documents)
    ]

