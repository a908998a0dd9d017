"""Online-store I/O of the read path: one parallel round of BatchGetItem and Query calls.

A feature group keeps one item per entity whose key readers can name (``pk``, ``sk`` = the
group, ``fastbreak.engine.layout``): those are fetched with BatchGetItem, up to 100 keys per
call, unprocessed keys retried with backoff. Groups keyed by another entity than the stream's
partition key (game, content) keep one partial item per Kinesis shard instead; shard ids are not
known to readers (they change with resharding), so one Query per (entity, group) fetches the
partials. Every call of a request runs at once on a thread pool. Only the attributes the merge
needs are fetched; items and tiles past their TTL are skipped by the merge (DynamoDB deletes
expired items lazily, hours to days later).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from fastbreak.engine.layout import group_sk, partials_prefix
from fastbreak.engine.online_store import (
    BATCH_GET_LIMIT,
    RETRYABLE_CODES,
    RetryPolicy,
    StoredItem,
    StoreUnavailable,
    error_code,
)

GroupKey = tuple[str, str]  # (partition key, group name)

_PROJECTION = "#sk, #state, #expires"
_POINT_PROJECTION = "#pk, #sk, #state, #expires"
_NAMES = {"#pk": "pk", "#sk": "sk", "#state": "state", "#expires": "expires_at"}
_KEY_CONDITION = "#pk = :pk AND begins_with(#sk, :prefix)"
_NOT_EXPIRED = "attribute_not_exists(#expires) OR #expires > :now"


def serving_retry() -> RetryPolicy:
    """Backoff for reads that a caller is waiting on: a few short tries, not the processor's."""
    return RetryPolicy(max_attempts=4, base_delay_s=0.02, max_delay_s=0.2, margin_s=0.5)


class OnlineStoreReader:
    """``sharded_groups``: the groups stored as tile partials (``GroupPlan.sharded``)."""

    def __init__(
        self, client: Any, table_name: str, sharded_groups: Collection[str],
        retry: RetryPolicy | None = None, concurrency: int = 16,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.sharded_groups = frozenset(sharded_groups)
        self.retry = retry or serving_retry()
        self.concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def read(self, keys: Sequence[GroupKey], now_s: int) -> dict[GroupKey, list[StoredItem]]:
        """The items of each (partition key, group); absent groups map to []."""
        unique = list(dict.fromkeys(keys))
        found: dict[GroupKey, list[StoredItem]] = {key: [] for key in unique}
        points = [key for key in unique if key[1] not in self.sharded_groups]
        calls: list[Callable[[], list[tuple[GroupKey, StoredItem]]]] = [
            partial(self._batch_get, points[start : start + BATCH_GET_LIMIT])
            for start in range(0, len(points), BATCH_GET_LIMIT)
        ]
        calls.extend(
            partial(self._query, key, now_s) for key in unique if key[1] in self.sharded_groups
        )
        if len(calls) == 1 or self.concurrency <= 1:
            results = [call() for call in calls]  # a thread hop would only add latency
        else:
            results = list(self._executor().map(lambda call: call(), calls))
        for pairs in results:
            for key, item in pairs:
                found[key].append(item)
        return found

    def _executor(self) -> ThreadPoolExecutor:
        # Created on first use and kept: warm Lambda invocations reuse the threads.
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix="feature-read"
                )
            return self._pool

    def _batch_get(self, keys: list[GroupKey]) -> list[tuple[GroupKey, StoredItem]]:
        """At most 100 group items; eventually consistent, like any read of a replica."""
        request: dict[str, Any] = {
            self.table_name: {
                "Keys": [
                    {"pk": {"S": pk}, "sk": {"S": group_sk(group)}} for pk, group in keys
                ],
                "ProjectionExpression": _POINT_PROJECTION,
                "ExpressionAttributeNames": _NAMES,
            }
        }
        found: list[tuple[GroupKey, StoredItem]] = []
        attempt = 0
        while True:
            response = self._call(self.client.batch_get_item, {"RequestItems": request})
            for item in response.get("Responses", {}).get(self.table_name, ()):
                pk = item["pk"]["S"]
                found.append(((pk, item["sk"]["S"]), _stored(pk, item)))
            unprocessed = response.get("UnprocessedKeys") or {}
            if not unprocessed.get(self.table_name, {}).get("Keys"):
                return found
            if not self.retry.pause(attempt):
                raise StoreUnavailable("BatchGetItem kept returning UnprocessedKeys")
            attempt += 1
            request = unprocessed

    def _query(self, key: GroupKey, now_s: int) -> list[tuple[GroupKey, StoredItem]]:
        pk, group = key
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": _KEY_CONDITION,
            "FilterExpression": _NOT_EXPIRED,
            "ProjectionExpression": _PROJECTION,
            "ExpressionAttributeNames": _NAMES,
            "ExpressionAttributeValues": {
                ":pk": {"S": pk},
                ":prefix": {"S": partials_prefix(group)},
                ":now": {"N": str(now_s)},
            },
        }
        items: list[tuple[GroupKey, StoredItem]] = []
        while True:
            response = self._call(self.client.query, request)
            items.extend((key, _stored(pk, item)) for item in response.get("Items", ()))
            last = response.get("LastEvaluatedKey")
            if not last:
                return items
            request["ExclusiveStartKey"] = last

    def _call(
        self, operation: Callable[..., dict[str, Any]], request: dict[str, Any]
    ) -> dict[str, Any]:
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


def _stored(pk: str, item: dict[str, Any]) -> StoredItem:
    state = item["state"]
    expires = item.get("expires_at")
    return StoredItem(
        pk=pk,
        sk=item["sk"]["S"],
        state=state["S"] if "S" in state else state["B"],
        hw="",  # the write path's high-water mark: not fetched, readers never need it
        expires_at=int(expires["N"]) if expires is not None else None,
        event_time_ms=0,  # likewise: event times come from the merged states
    )
