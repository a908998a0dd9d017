"""Partials: what stage 1 sends the audience stage, one Kinesis record per entity and emission.

Stage 1 folds each batch's events of an audience group per entity (``fold.fold_partial``) and
emits, for every entity the batch touched, one record to the partials stream with that entity's
tiles of every audience group, partitioned by the entity (``game#g1``): all of a game's partials
reach one shard of the partials stream, and one writer. The record names where it came from:

- ``source_shard`` and ``emission``: the stage-1 shard and the emission's id (the first record
  of the batch and a hash of what it emits, ``fastbreak.engine.outbox``); a re-emission of the
  same emission carries the same ids and the same content;
- ``created_ms``: when stage 1 wrote the emission, the time the audience stage remembers its
  identity by (``identity``).

An entity's tiles that would not fit one Kinesis record (1 MiB) are cut into ``part`` 0, 1, ...
by tile, deterministically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastbreak.engine.dedup import identity_hash
from fastbreak.engine.fold import Tiles
from fastbreak.engine.layout import entity_pk
from fastbreak.engine.online_store import RETRYABLE_CODES, RetryPolicy, error_code
from fastbreak.engine.rejections import Reason, Rejection

FORMAT = 1
# A Kinesis record holds 1 MiB of partition key and data; a part stays below with room for the
# envelope.
MAX_PART_BYTES = 900 * 1024
PUT_RECORDS_LIMIT = 500
PUT_RECORDS_BYTES = 5 * 1024 * 1024
# Per-entry errors of PutRecords worth another try (throttling on a hot shard, a Kinesis blip).
_RETRYABLE_ENTRY_CODES = frozenset({"ProvisionedThroughputExceededException", "InternalFailure"})
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class Partial:
    """One entity's tiles (of each audience group, in JSON form) from one stage-1 emission."""

    source_shard: str
    emission: str
    created_ms: int
    entity: str
    key: str
    groups: dict[str, Tiles]
    part: int = 0

    @property
    def partition_key(self) -> str:
        return entity_pk(self.entity, self.key)

    @property
    def identity(self) -> int:
        """What the audience stage remembers once the partial is applied: a re-emission of it
        has the same identity (``fastbreak.engine.dedup``)."""
        return identity_hash(
            f"{self.source_shard}/{self.emission}/{self.partition_key}/{self.part}",
            self.created_ms,
        )

    def encode(self) -> bytes:
        return _ENCODE({
            "partial": FORMAT, "source_shard": self.source_shard, "emission": self.emission,
            "created_ms": self.created_ms, "entity": self.entity, "key": self.key,
            "part": self.part, "groups": self.groups,
        }).encode()


def encoded_parts(partial: Partial) -> list[tuple[Partial, bytes]]:
    """``partial`` as parts that each fit a Kinesis record (usually itself alone), each with its
    encoding (a partial that fits is encoded once): tiles go to parts in (group, section, tile)
    order, a new part when the current one is full."""
    whole = partial.encode()
    if len(whole) <= MAX_PART_BYTES:
        return [(partial, whole)]
    parts: list[Partial] = []
    groups: dict[str, Tiles] = {}
    size = 0
    for group, tiles in sorted(partial.groups.items()):
        for section, section_tiles in sorted(tiles.items()):
            for start, data in sorted(section_tiles.items()):
                tile_size = len(_ENCODE(data)) + len(start) + len(section) + len(group) + 16
                if groups and size + tile_size > MAX_PART_BYTES:
                    parts.append(_part(partial, groups, len(parts)))
                    groups, size = {}, 0
                groups.setdefault(group, {}).setdefault(section, {})[start] = data
                size += tile_size
    parts.append(_part(partial, groups, len(parts)))
    return [(part, part.encode()) for part in parts]


def _part(partial: Partial, groups: dict[str, Tiles], index: int) -> Partial:
    return Partial(partial.source_shard, partial.emission, partial.created_ms, partial.entity,
                   partial.key, groups, index)


def decode(payload: bytes) -> Partial | Rejection:
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        return Rejection(Reason.BAD_PARTIAL, "a partials record is not JSON")
    try:
        if document["partial"] != FORMAT:
            return Rejection(Reason.BAD_PARTIAL,
                             f"partial format {document['partial']!r:.20} is not {FORMAT}")
        partial = Partial(
            document["source_shard"], document["emission"], document["created_ms"],
            document["entity"], document["key"], document["groups"], document["part"],
        )
    except (KeyError, TypeError) as missing:
        return Rejection(Reason.BAD_PARTIAL, f"a partials record lacks {missing}")
    if not (
        all(type(value) is str for value in (partial.source_shard, partial.emission,
                                             partial.entity, partial.key))
        and type(partial.created_ms) is int and type(partial.part) is int
        and type(partial.groups) is dict
        and all(type(tiles) is dict for tiles in partial.groups.values())
    ):
        return Rejection(Reason.BAD_PARTIAL, "a partials record has a field of the wrong type")
    return partial


class PartialsSink:
    """Stage 1's writer of partials records: PutRecords over an injected Kinesis client
    (boto3's, or a fake), up to 500 records and 5 MiB a call, failed entries retried with
    backoff until the invocation's time says stop."""

    def __init__(self, client: Any, stream_name: str, retry: RetryPolicy | None = None) -> None:
        self.client = client
        self.stream_name = stream_name
        self.retry = retry or RetryPolicy()
        self.records_put = 0
        self.retries = 0
        self.refusals = 0

    def put(self, records: Sequence[tuple[str, bytes]]) -> bool:
        """Every record accepted by the stream (True), or not all of them after the retries,
        or an error a retry would not change (False; some may have been accepted)."""
        pending = list(records)
        attempt = 0
        while pending:
            try:
                failed = self._put_chunks(pending)
            except Exception:  # refused for good (access, a deleted stream, a KMS key)
                self.refusals += 1
                return False
            if not failed:
                return True
            self.retries += len(failed)
            if not self.retry.pause(attempt):
                return False
            attempt += 1
            pending = failed
        return True

    def _put_chunks(self, records: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        failed: list[tuple[str, bytes]] = []
        for chunk in _chunks(records):
            try:
                response = self.client.put_records(
                    StreamName=self.stream_name,
                    Records=[{"PartitionKey": key, "Data": data} for key, data in chunk],
                )
            except Exception as error:
                if error_code(error) not in RETRYABLE_CODES | _RETRYABLE_ENTRY_CODES:
                    raise
                failed.extend(chunk)
                continue
            for record, entry in zip(chunk, response["Records"], strict=True):
                if "ErrorCode" in entry:
                    if entry["ErrorCode"] not in _RETRYABLE_ENTRY_CODES:
                        raise PartialsRefused(f"{entry['ErrorCode']}: {entry.get('ErrorMessage')}")
                    failed.append(record)
                else:
                    self.records_put += 1
        return failed


class PartialsRefused(RuntimeError):
    """The partials stream refused a record for a reason a retry does not change."""


def _chunks(records: list[tuple[str, bytes]]) -> list[list[tuple[str, bytes]]]:
    chunks: list[list[tuple[str, bytes]]] = []
    chunk: list[tuple[str, bytes]] = []
    size = 0
    for key, data in records:
        record_size = len(key.encode()) + len(data)
        if chunk and (len(chunk) == PUT_RECORDS_LIMIT or size + record_size > PUT_RECORDS_BYTES):
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append((key, data))
        size += record_size
    if chunk:
        chunks.append(chunk)
    return chunks

