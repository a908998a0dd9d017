"""Online-store I/O of the read path: one Query per (entity, feature group), in parallel.

Every feature item of a group lives under the entity's partition key with a sort key that
starts with ``{group}#`` (``fastbreak.engine.layout``): tiles of each size and the lifetime
item, each one per Kinesis shard. Shard ids are not known to readers (they change with
resharding), so no item has a key a reader could name in a BatchGetItem: one Query per
(entity, group) fetches all of them at once. Items past their TTL are dropped by a filter
(DynamoDB deletes them lazily, hours to days later); that saves bandwidth and parsing, not
read units. Only the attributes the merge needs are fetched.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastbreak.engine.layout import group_prefix
from fastbreak.engine.online_store import (
    RETRYABLE_CODES,
    RetryPolicy,
    StoredItem,
    StoreUnavailable,
    error_code,
)

GroupKey = tuple[str, str]  # (partition key, group name)

_PROJECTION = "#sk, #state, #expires"
_NAMES = {"#pk": "pk", "#sk": "sk", "#state": "state", "#expires": "expires_at"}
_KEY_CONDITION = "#pk = :pk AND begins_with(#sk, :prefix)"
_NOT_EXPIRED = "attribute_not_exists(#expires) OR #expires > :now"


def serving_retry() -> RetryPolicy:
    """Backoff for reads that a caller is waiting on: a few short tries, not the processor's."""
    return RetryPolicy(max_attempts=4, base_delay_s=0.02, max_delay_s=0.2, margin_s=0.5)


class OnlineStoreReader:
    def __init__(
        self, client: Any, table_name: str, retry: RetryPolicy | None = None,
        concurrency: int = 16,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.retry = retry or serving_retry()
        self.concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def read(self, keys: Sequence[GroupKey], now_s: int) -> dict[GroupKey, list[StoredItem]]:
        """The unexpired items of each (partition key, group); absent groups map to []."""
        unique = list(dict.fromkeys(keys))
        if len(unique) <= 1 or self.concurrency <= 1:
            # One query: a thread hop would only add latency.
            return {key: self._query(key, now_s) for key in unique}
        results = self._executor().map(lambda key: self._query(key, now_s), unique)
        return dict(zip(unique, results, strict=True))

    def _executor(self) -> ThreadPoolExecutor:
        # Created on first use and kept: warm Lambda invocations reuse the threads.
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix="feature-read"
                )
            return self._pool

    def _query(self, key: GroupKey, now_s: int) -> list[StoredItem]:
        pk, group = key
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": _KEY_CONDITION,
            "FilterExpression": _NOT_EXPIRED,
            "ProjectionExpression": _PROJECTION,
            "ExpressionAttributeNames": _NAMES,
            "ExpressionAttributeValues": {
                ":pk": {"S": pk},
                ":prefix": {"S": group_prefix(group)},
                ":now": {"N": str(now_s)},
            },
        }
        items: list[StoredItem] = []
        while True:
            response = self._call(request)
            items.extend(_stored(pk, item) for item in response.get("Items", ()))
            last = response.get("LastEvaluatedKey")
            if not last:
                return items
            request["ExclusiveStartKey"] = last

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                response: dict[str, Any] = self.client.query(**request)
                return response
            except Exception as error:
                if error_code(error) not in RETRYABLE_CODES:
                    raise
                if not self.retry.pause(attempt):
                    raise StoreUnavailable(f"Query kept failing: {error}") from error
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
