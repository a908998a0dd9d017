"""Where records that are not applied (quarantine) and the feature log are written.

The engine decides what to write and under which key; a sink only stores bytes. Keys are
derived from the batch's shard, first/last sequence numbers and content, so a retry that
writes the same lines writes the same object, and one that writes other lines keeps the first.
"""

from __future__ import annotations

from typing import Any, Protocol


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
