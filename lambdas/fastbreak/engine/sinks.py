"""Where records that are not applied (quarantine) and the feature log are written.

The engine decides what to write and under which key; a sink only stores bytes. Keys are
derived from the batch's shard, first/last sequence numbers and content, so a retry that
writes the same lines writes the same object, and one that writes other lines keeps the first.
"""

from __future__ import annotations

import time
from hashlib import blake2b
from typing import Any, Protocol

from fastbreak.engine.records import SourceRecord
from fastbreak.engine.timestamps import format_ms


class ObjectSink(Protocol):
    def put(self, key: str, body: bytes) -> None: ...


class S3Sink:
    """An ``ObjectSink`` over a boto3 S3 client."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=body, ContentType="application/x-ndjson"
        )


class MemorySink:
    """Keeps objects in a dict: tests, benchmarks and the local platform's dry runs."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, body: bytes) -> None:
        self.objects[key] = body


def object_key(prefix: str, shard_id: str, sources: list[SourceRecord], body: bytes) -> str:
    """``{prefix}date={arrival date}/{shard}/{first seq}-{last seq}-{content hash}.jsonl``.

    The content hash keeps what an earlier attempt at the same batch stored: a re-delivery may
    write other lines (an item it finds applied is logged without its write time; an event its
    own earlier attempt remembered is not routed again), and must not replace them. The same
    lines make the same key, so a plain retry adds no copy.
    """
    if not sources:
        return f"{prefix}unattributed/{time.time_ns()}.jsonl"
    first, last = sources[0], sources[-1]
    day = format_ms(first.arrival_ms)[:10]
    digest = blake2b(body, digest_size=4).hexdigest()
    return (
        f"{prefix}date={day}/{shard_id}/{first.sequence_number}-{last.sequence_number}"
        f"-{digest}.jsonl"
    )
