"""The outbox: how stage 1 hands partials to the audience stage exactly once.

A batch's partials (``fastbreak.engine.partials``) leave stage 1 as an *emission*: the records
for the partials stream and the identities of the events they hold. Before anything is emitted,
the emission is written to the online store table as an *outbox entry* (content chunks, then an
index item: the index is the commit point). From then on the emission, not the events, is what
must reach the audience stage: it is *completed* by remembering its identities in the shard's
dedup memory, putting its records to the partials stream, and deleting its index item. Each step
is idempotent (the memory is a set, the audience stage drops a partial whose identity it has
applied), so anyone may complete a pending emission, any number of times, at any point:

- the batch that wrote it, right away (the usual case);
- the next batch of the shard whose first record the emission covers: a batch that failed or
  crashed after writing its emission is re-delivered from a record it covered, whatever the new
  batch boundaries (``docs/exactly-once.md``);
- any batch of the shard once the emission is older than the longest a Lambda invocation lives
  (its writer is gone), and the redrive.

Events of a pending emission are therefore never folded into a second emission: the batch that
meets them completes the emission first, which puts them in the dedup memory.

Items (``fastbreak.engine.layout``): the index ``(_outbox#{shard}, {first seq, 129 digits})``
holds the covered range, the writing time, the chunk count and, under ParallelizationFactor > 1,
a 4-byte hash of every covered record's sequence number (what tells a concurrent batch's
emission from one that holds this batch's records; with ParallelizationFactor 1 a batch holds
every record of its shard in its range, and the index is one write unit, not one per 256
records, paid again by its delete); content chunks ``(_outbox#{shard}#{first seq}, n)`` hold the
zlib-compressed records and identities, at most ``CHUNK_BYTES`` each, and are left to their TTL
(TTL deletes cost no write units).
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastbreak.engine.hll import hash64
from fastbreak.engine.layout import outbox_chunk_key, outbox_key
from fastbreak.engine.online_store import (
    RETRYABLE_CODES,
    RetryPolicy,
    StoreUnavailable,
    error_code,
)
from fastbreak.engine.records import Position

# Below DynamoDB's 400 KB item limit with the key and TTL.
CHUNK_BYTES = 350 * 1024
# Lambda's longest timeout (900 s) and a margin: an emission older than this has no live writer.
WRITER_GONE_MS = 16 * 60 * 1000
# Pending emissions outlive the on-failure queue's 14 days, so the redrive still finds them.
TTL_SECONDS = 15 * 24 * 3600
_SOURCE = struct.Struct(">I")
_HASH = struct.Struct(">Q")


def source_hash(sequence_number: str) -> int:
    """The 4-byte hash of a record's sequence number the index keeps."""
    return hash64(sequence_number) >> 32


@dataclass
class Emission:
    """What one stage-1 batch owes the audience stage.

    ``identities``: dedup bucket start -> (identity hashes, the newest position among their
    events), exactly what the batch remembers in its shard's memory.
    """

    shard_id: str
    first: int  # sequence number of the batch's first record: the index key
    last: int  # of the last record it covers
    created_ms: int
    records: list[tuple[str, bytes]]  # (partition key, data) for the partials stream
    identities: dict[int, tuple[set[int], Position]] = field(default_factory=dict)
    # source_hash of every covered record; None: every record of the shard in the range
    sources: list[int] | None = None

    @property
    def id(self) -> str:
        """The emission's id in its partials: unique per shard (a second emission from the
        same first record covers records past this one's last)."""
        return f"{self.first}-{self.last}"

    def content(self) -> bytes:
        document = {
            "records": [[key, data.decode()] for key, data in self.records],
            "identities": [
                [bucket, str(newest[0]), newest[1],
                 base64.b64encode(b"".join(_HASH.pack(h) for h in sorted(hashes))).decode()]
                for bucket, (hashes, newest) in sorted(self.identities.items())
            ],
        }
        return zlib.compress(json.dumps(document, separators=(",", ":")).encode(), 6)


@dataclass(frozen=True)
class PendingEmission:
    """An outbox index item: an emission not known to be completed."""

    shard_id: str
    first: int
    last: int
    created_ms: int
    chunks: int
    sources: frozenset[int] | None  # None: every record of the shard in the range

    def holds(self, sequence_number: str) -> bool:
        """Whether the emission covers the record (its writer's batch held it)."""
        return (self.first <= int(sequence_number) <= self.last
                and (self.sources is None or source_hash(sequence_number) in self.sources))

    def writer_gone(self, now_ms: int) -> bool:
        return self.created_ms < now_ms - WRITER_GONE_MS


class Outbox:
    """Outbox I/O over an injected DynamoDB client (boto3's, or a fake). Reads are strongly
    consistent; throttling is retried with ``retry``, then ``StoreUnavailable``."""

    def __init__(self, client: Any, table_name: str, retry: RetryPolicy | None = None) -> None:
        self.client = client
        self.table_name = table_name
        self.retry = retry or RetryPolicy()
        self.writes = 0

    def pending(self, shard_id: str) -> list[PendingEmission]:
        pk = outbox_key(shard_id, 0)[0]
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
            "ConsistentRead": True,
        }
        found: list[PendingEmission] = []
        while True:
            response = self._call(self.client.query, request)
            for item in response.get("Items", []):
                raw = item["sources"]["B"] if "sources" in item else None
                found.append(PendingEmission(
                    shard_id, int(item["sk"]["S"]), int(item["last"]["S"]),
                    int(item["created_ms"]["N"]), int(item["chunks"]["N"]),
                    None if raw is None else
                    frozenset(value for (value,) in _SOURCE.iter_unpack(raw)),
                ))
            last = response.get("LastEvaluatedKey")
            if not last:
                return found
            request["ExclusiveStartKey"] = last

    def write(self, emission: Emission) -> None:
        """Chunks first, then the index: an index item always has its content."""
        content = emission.content()
        chunks = [content[start : start + CHUNK_BYTES]
                  for start in range(0, len(content), CHUNK_BYTES)] or [b""]
        expires = {"N": str(emission.created_ms // 1000 + TTL_SECONDS)}
        for index, chunk in enumerate(chunks):
            pk, sk = outbox_chunk_key(emission.shard_id, emission.first, index)
            self._call(self.client.put_item, {
                "TableName": self.table_name,
                "Item": {"pk": {"S": pk}, "sk": {"S": sk}, "body": {"B": chunk},
                         "expires_at": expires},
            })
            self.writes += 1
        pk, sk = outbox_key(emission.shard_id, emission.first)
        entry: dict[str, Any] = {
            "pk": {"S": pk}, "sk": {"S": sk}, "last": {"S": str(emission.last)},
            "created_ms": {"N": str(emission.created_ms)}, "chunks": {"N": str(len(chunks))},
            "expires_at": expires,
        }
        if emission.sources is not None:
            entry["sources"] = {
                "B": b"".join(_SOURCE.pack(value) for value in sorted(set(emission.sources)))}
        self._call(self.client.put_item, {
            "TableName": self.table_name,
            "Item": entry,
            # A pending emission of the same first record is completed and deleted before a
            # batch writes its own: one still there is a writer this batch does not know of.
            "ConditionExpression": "attribute_not_exists(pk)",
        })
        self.writes += 1

    def read(self, pending: PendingEmission) -> Emission:
        keys = [outbox_chunk_key(pending.shard_id, pending.first, index)
                for index in range(pending.chunks)]
        bodies: dict[str, bytes] = {}
        request: dict[str, Any] = {self.table_name: {
            "Keys": [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in keys],
            "ConsistentRead": True,
        }}
        attempt = 0
        while request:
            response = self._call(self.client.batch_get_item, {"RequestItems": request})
            for item in response.get("Responses", {}).get(self.table_name, []):
                bodies[item["sk"]["S"]] = item["body"]["B"]
            request = response.get("UnprocessedKeys") or {}
            if request:
                if not self.retry.pause(attempt):
                    raise StoreUnavailable("BatchGetItem kept returning UnprocessedKeys")
                attempt += 1
        if len(bodies) != pending.chunks:
            raise StoreUnavailable(
                f"outbox entry {pending.shard_id}/{pending.first} lacks content chunks")
        content = zlib.decompress(b"".join(bodies[sk] for _, sk in keys))
        document = json.loads(content)
        identities = {
            int(bucket): (
                {value for (value,) in _HASH.iter_unpack(base64.b64decode(packed))},
                (int(sequence), int(sub)),
            )
            for bucket, sequence, sub, packed in document["identities"]
        }
        return Emission(
            pending.shard_id, pending.first, pending.last, pending.created_ms,
            [(key, data.encode()) for key, data in document["records"]], identities,
            None if pending.sources is None else sorted(pending.sources),
        )

    def delete(self, pending: PendingEmission | Emission) -> None:
        pk, sk = outbox_key(pending.shard_id, pending.first)
        self._call(self.client.delete_item, {
            "TableName": self.table_name, "Key": {"pk": {"S": pk}, "sk": {"S": sk}},
        })
        self.writes += 1

    def _call(self, operation: Callable[..., Any], request: dict[str, Any]) -> Any:
        attempt = 0
        while True:
            try:
                return operation(**request)
            except Exception as error:
                if error_code(error) not in RETRYABLE_CODES or not self.retry.pause(attempt):
                    raise StoreUnavailable(f"outbox: {error}") from error
                attempt += 1


def sources_of(sequence_numbers: Iterable[str]) -> list[int]:
    return [source_hash(sequence) for sequence in sequence_numbers]
