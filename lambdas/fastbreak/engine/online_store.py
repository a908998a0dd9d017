"""DynamoDB I/O of the online store, for every runtime: the processor's consistent batch reads
and conditional writes, and the serving reads (BatchGetItem and Query in one parallel round) of
the feature API and the ``FeatureClient``. One decoding of stored items (``decode_item``).

The client is injected (a boto3 DynamoDB *client*, or anything with the same methods), so the
engine imports no AWS SDK and tests can wrap the client to inject throttling and crashes.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import Any

from fastbreak.engine.layout import ItemKey, group_sk, partials_prefix

# Worth another try after a pause; anything else fails the item (and its records) at once.
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "LimitExceededException",
    }
)
CONDITION_FAILED = "ConditionalCheckFailedException"
BATCH_GET_LIMIT = 100

_SET_STATE = "SET #state = :state, #hw = :hw, #v = :v, #t = :t, #updated = :updated"
_NAMES = {"#state": "state", "#hw": "hw", "#v": "v", "#t": "t", "#updated": "updated_at",
          "#expires": "expires_at"}
# DynamoDB refuses a name the expression does not use: ``tiles_out`` only where it is written.
_NAMES_OUT = {**_NAMES, "#out": "tiles_out"}
_SET_STATE_TTL = _SET_STATE + ", #expires = :expires"
# An item that no longer expires (its group gained lifetime state) must lose an old TTL.
_SET_STATE_NO_TTL = _SET_STATE + " REMOVE #expires"
# What the merge reads of an item: serving reads fetch nothing else.
_READ_PROJECTION = "#pk, #sk, #state, #expires"
_READ_NAMES = {"#pk": "pk", "#sk": "sk", "#state": "state", "#expires": "expires_at"}

GroupKey = tuple[str, str]  # (partition key, group name)


class StoreUnavailable(RuntimeError):
    """Reads still failed after every retry: the batch cannot be computed."""


def error_code(error: BaseException) -> str | None:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return code if isinstance(code, str) else None
    return None


# Not frozen: one of each per touched item, and frozen dataclasses set fields the slow way.
@dataclass(slots=True)
class StoredItem:
    pk: str
    sk: str
    state: str | bytes
    hw: str
    expires_at: int | None
    event_time_ms: int
    version: int = 0  # writes so far: orders the feature-log lines of an item
    # an audience entity item's record of the tiles kept in items of their own
    # (``fastbreak.engine.layout.encode_tiles_out``); "" on every other item
    tiles_out: str = ""


@dataclass(slots=True)
class ItemWrite:
    key: ItemKey
    state: str | bytes
    hw: str
    expected_hw: str | None  # None: the item must not exist yet
    expires_at: int | None
    event_time_ms: int
    version: int = 1  # the stored version + 1
    tiles_out: str | None = None  # None: not an entity item, the attribute is left alone


class WriteOutcome(Enum):
    WRITTEN = "written"
    CONFLICT = "conflict"  # another writer moved the item on: re-read and recompute
    FAILED = "failed"


@dataclass
class RetryPolicy:
    max_attempts: int = 8
    base_delay_s: float = 0.05
    max_delay_s: float = 2.0
    sleep: Callable[[float], None] = time.sleep
    # Seconds the invocation has left; retries stop with a margin so the batch can report.
    remaining_s: Callable[[], float] = field(default=lambda: float("inf"))
    margin_s: float = 5.0

    def pause(self, attempt: int) -> bool:
        """Back off before attempt ``attempt + 1``; False when it is time to give up."""
        if attempt + 1 >= self.max_attempts:
            return False
        # Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter").
        delay = random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2**attempt))
        if self.remaining_s() - delay < self.margin_s:
            return False
        self.sleep(delay)
        return True


@dataclass
class WriteStats:
    writes: int = 0
    retries: int = 0
    conflicts: int = 0
    failures: int = 0

    def add(self, other: WriteStats) -> None:
        self.writes += other.writes
        self.retries += other.retries
        self.conflicts += other.conflicts
        self.failures += other.failures


_POOL: ThreadPoolExecutor | None = None


def _pool(workers: int) -> ThreadPoolExecutor:
    # One pool per process, reused by warm invocations.
    global _POOL
    if _POOL is None or _POOL._max_workers < workers:
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="online-store")
    return _POOL


class OnlineStore:
    """The one access layer of the online store table: the processor's consistent reads and
    conditional writes, and the serving reads of the feature API and ``FeatureClient``.

    ``concurrency``: threads for the writes of a batch and for the calls of one serving read.
    """

    def __init__(
        self, client: Any, table_name: str, retry: RetryPolicy | None = None,
        concurrency: int = 16,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.retry = retry or RetryPolicy()
        self.concurrency = concurrency
        self._read_pool: ThreadPoolExecutor | None = None
        self._read_pool_lock = threading.Lock()

    # ---- the processor's reads ---------------------------------------------------------------
    def get_many(self, keys: Iterable[ItemKey]) -> dict[ItemKey, StoredItem]:
        """Strongly consistent reads of whole items; absent items are absent from the result.
        Any failure is a ``StoreUnavailable``: the batch cannot be computed without them."""
        unique = list(dict.fromkeys(keys))
        found: dict[ItemKey, StoredItem] = {}
        for start in range(0, len(unique), BATCH_GET_LIMIT):
            chunk = unique[start : start + BATCH_GET_LIMIT]
            request = {"Keys": [_key(pk, sk) for pk, sk in chunk], "ConsistentRead": True}
            try:
                items = self._batch_get(request)
            except StoreUnavailable:
                raise
            except Exception as error:
                raise StoreUnavailable(f"BatchGetItem failed: {error}") from error
            for stored in items:
                found[(stored.pk, stored.sk)] = stored
        return found

    # ---- serving reads -----------------------------------------------------------------------
    def read_groups(
        self, keys: Sequence[GroupKey], sharded_groups: Collection[str], now_s: int
    ) -> dict[GroupKey, list[StoredItem]]:
        """The stored items of each (partition key, group), in one parallel round of calls;
        absent groups map to [].

        A group keeps one item per entity whose key a reader can name (``sk`` = the group):
        those are fetched with BatchGetItem, up to 100 keys a call. ``sharded_groups`` (audience
        groups, ``GroupPlan.sharded``) keep an entity item and a tile item per tile that outgrew
        it, and may still hold tile partials per Kinesis shard of the layout before the audience
        stage (shard ids readers do not know): one Query per (entity, group) fetches them all.
        Reads are eventually consistent and fetch only what the merge reads; expired items are
        filtered out (DynamoDB deletes expired items lazily). Throttling is retried with
        ``retry``; then ``StoreUnavailable``.
        """
        unique = list(dict.fromkeys(keys))
        found: dict[GroupKey, list[StoredItem]] = {key: [] for key in unique}
        points = [key for key in unique if key[1] not in sharded_groups]
        calls: list[Callable[[], list[tuple[GroupKey, StoredItem]]]] = [
            partial(self._group_items, points[start : start + BATCH_GET_LIMIT])
            for start in range(0, len(points), BATCH_GET_LIMIT)
        ]
        calls.extend(
            partial(self._query_partials, key, now_s) for key in unique
            if key[1] in sharded_groups
        )
        if len(calls) == 1 or self.concurrency <= 1:
            results = [call() for call in calls]  # a thread hop would only add latency
        else:
            results = list(self._reads().map(lambda call: call(), calls))
        for pairs in results:
            for key, item in pairs:
                found[key].append(item)
        return found

    def _reads(self) -> ThreadPoolExecutor:
        # Created on first use and kept: warm Lambda invocations reuse the threads. Apart from
        # the writes' pool, so that a read never queues behind a batch's writes in a process
        # that hosts both (the local platform).
        with self._read_pool_lock:
            if self._read_pool is None:
                self._read_pool = ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix="online-store-read"
                )
            return self._read_pool

    def _group_items(self, keys: list[GroupKey]) -> list[tuple[GroupKey, StoredItem]]:
        """At most 100 group items, by their known keys."""
        key_of = {(pk, group_sk(group)): (pk, group) for pk, group in keys}
        items = self._batch_get({
            "Keys": [_key(pk, sk) for pk, sk in key_of],
            "ProjectionExpression": _READ_PROJECTION,
            "ExpressionAttributeNames": _READ_NAMES,
        })
        return [(key_of[(item.pk, item.sk)], item) for item in items]

    def _query_partials(self, key: GroupKey, now_s: int) -> list[tuple[GroupKey, StoredItem]]:
        pk, group = key
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :prefix)",
            "FilterExpression": "attribute_not_exists(#expires) OR #expires > :now",
            "ProjectionExpression": _READ_PROJECTION,
            "ExpressionAttributeNames": _READ_NAMES,
            "ExpressionAttributeValues": {
                ":pk": {"S": pk}, ":prefix": {"S": partials_prefix(group)},
                ":now": {"N": str(now_s)},
            },
        }
        items: list[tuple[GroupKey, StoredItem]] = []
        while True:
            response = self._call(self.client.query, request)
            items.extend((key, decode_item(item)) for item in response.get("Items", ()))
            last = response.get("LastEvaluatedKey")
            if not last:
                return items
            request["ExclusiveStartKey"] = last

    def _batch_get(self, table_request: dict[str, Any]) -> list[StoredItem]:
        """Every item of one BatchGetItem request, unprocessed keys asked again with backoff."""
        items: list[StoredItem] = []
        request = {self.table_name: table_request}
        attempt = 0
        while True:
            response = self._call(self.client.batch_get_item, {"RequestItems": request})
            items.extend(
                decode_item(item) for item in response.get("Responses", {}).get(self.table_name, ())
            )
            unprocessed = response.get("UnprocessedKeys") or {}
            if not unprocessed.get(self.table_name, {}).get("Keys"):
                return items
            if not self.retry.pause(attempt):
                raise StoreUnavailable("BatchGetItem kept returning UnprocessedKeys")
            attempt += 1
            request = unprocessed

    def _call(
        self, operation: Callable[..., dict[str, Any]], request: dict[str, Any]
    ) -> dict[str, Any]:
        """One read call; throttling retried, then ``StoreUnavailable``; other errors raised."""
        attempt = 0
        while True:
            try:
                return operation(**request)
            except Exception as error:
                if error_code(error) not in RETRYABLE_CODES:
                    raise
                if not self.retry.pause(attempt):
                    raise StoreUnavailable(f"{error}") from error
                attempt += 1

    # ---- writes ------------------------------------------------------------------------------
    def write_many(
        self, writes: Sequence[ItemWrite]
    ) -> tuple[dict[ItemKey, WriteOutcome], WriteStats]:
        """Each write applied once, or reported; independent items written concurrently."""
        workers = min(self.concurrency, len(writes))
        if workers <= 1:
            return self._write_chunk(writes)
        chunks = [writes[i::workers] for i in range(workers)]
        outcomes: dict[ItemKey, WriteOutcome] = {}
        stats = WriteStats()
        for chunk_outcomes, chunk_stats in _pool(workers).map(self._write_chunk, chunks):
            outcomes.update(chunk_outcomes)
            stats.add(chunk_stats)
        return outcomes, stats

    def _write_chunk(
        self, writes: Sequence[ItemWrite]
    ) -> tuple[dict[ItemKey, WriteOutcome], WriteStats]:
        stats = WriteStats()
        updated = {"N": str(time.time_ns() // 1_000_000)}  # one wall clock per chunk
        outcomes: dict[ItemKey, WriteOutcome] = {}
        update_item, request_for, written = (
            self.client.update_item, self._update_request, WriteOutcome.WRITTEN
        )
        for write in writes:
            request = request_for(write, updated)
            try:  # the first attempt inline: it is nearly always the only one
                update_item(**request)
            except Exception as error:
                outcomes[write.key] = self._settle(request, stats, error)
            else:
                outcomes[write.key] = written
        stats.writes += sum(outcome is written for outcome in outcomes.values())
        return outcomes, stats

    def _settle(
        self, request: dict[str, Any], stats: WriteStats, error: Exception
    ) -> WriteOutcome:
        """A write whose last attempt raised ``error``: retry it, or say how it ended."""
        attempt = 0
        while True:
            code = error_code(error)
            if code == CONDITION_FAILED:
                stats.conflicts += 1
                return WriteOutcome.CONFLICT
            if code not in RETRYABLE_CODES or not self.retry.pause(attempt):
                stats.failures += 1
                return WriteOutcome.FAILED
            stats.retries += 1
            attempt += 1
            try:
                self.client.update_item(**request)
            except Exception as again:
                error = again
            else:
                return WriteOutcome.WRITTEN

    def _update_request(self, write: ItemWrite, updated: dict[str, str]) -> dict[str, Any]:
        state = {"S": write.state} if type(write.state) is str else {"B": write.state}
        values: dict[str, Any] = {
            ":state": state, ":hw": {"S": write.hw}, ":v": {"N": str(write.version)},
            ":t": {"N": str(write.event_time_ms)}, ":updated": updated,
        }
        if write.expires_at is None:
            expression = _SET_STATE_NO_TTL
        else:
            values[":expires"] = {"N": str(write.expires_at)}
            expression = _SET_STATE_TTL
        names = _NAMES
        if write.tiles_out is not None:
            names = _NAMES_OUT
            if write.tiles_out:
                values[":out"] = {"S": write.tiles_out}
                head, _, removed = expression.partition(" REMOVE ")
                expression = head + ", #out = :out" + (f" REMOVE {removed}" if removed else "")
            else:
                expression += ", #out" if " REMOVE " in expression else " REMOVE #out"
        if write.expected_hw is None:
            condition = "attribute_not_exists(pk)"
        else:
            condition = "#hw = :expected"
            values[":expected"] = {"S": write.expected_hw}
        return {
            "TableName": self.table_name,
            "Key": {"pk": {"S": write.key[0]}, "sk": {"S": write.key[1]}},
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }


def decode_item(item: dict[str, Any]) -> StoredItem:
    """A DynamoDB item of the table -> ``StoredItem``: the one decoding, for whole items and for
    the serving reads' projections (attributes not fetched get their empty value)."""
    state_attr = item.get("state", {})
    state: str | bytes = state_attr["S"] if "S" in state_attr else state_attr.get("B", b"")
    expires = item.get("expires_at", {}).get("N")
    return StoredItem(
        pk=item["pk"]["S"],
        sk=item["sk"]["S"],
        state=state,
        hw=item.get("hw", {}).get("S", ""),
        expires_at=int(expires) if expires is not None else None,
        event_time_ms=int(item.get("t", {}).get("N", "0")),
        version=int(item.get("v", {}).get("N", "0")),
        tiles_out=item.get("tiles_out", {}).get("S", ""),
    )


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}
