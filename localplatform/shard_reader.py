"""Poll one Kinesis shard with GetRecords, as every consumer of the events stream does locally
(moto implements no SubscribeToShard). Publishes the stream's iterator age metric."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from localplatform.kinesis_events import StreamRecord
from localplatform.metrics import MetricStore

IDLE_POLL_S = 0.05
# GetRecords' own cap on AWS; moto has none when Limit is omitted.
GET_RECORDS_LIMIT = 10_000


def read_shard(
    kinesis: Any,
    stream_name: str,
    shard_id: str,
    starting_position: str,
    stop: threading.Event,
    deliver: Callable[[list[StreamRecord]], None],
    metrics: MetricStore,
    *,
    ready: Callable[[], bool] = lambda: True,
    read_to_end: Callable[[float], None] = lambda polled_at: None,
) -> None:
    """Read until ``stop``; ``ready`` false pauses reading (back-pressure), ``read_to_end`` is
    told when a poll (started at the given ``time.monotonic()``) found the shard's end."""
    iterator = kinesis.get_shard_iterator(
        StreamName=stream_name, ShardId=shard_id, ShardIteratorType=starting_position
    )["ShardIterator"]
    while not stop.is_set() and iterator:
        if not ready():
            time.sleep(IDLE_POLL_S)
            continue
        polled_at = time.monotonic()
        try:
            response = kinesis.get_records(ShardIterator=iterator, Limit=GET_RECORDS_LIMIT)
        except (ClientError, BotoCoreError):
            # moto answers 500 when a PutRecords changes the shard during its read; the same
            # iterator reads the same position again, as a consumer on AWS retries.
            time.sleep(IDLE_POLL_S)
            continue
        iterator = response.get("NextShardIterator")
        raw_records = response["Records"]
        now = time.time()
        oldest_ms = (
            (now - raw_records[0]["ApproximateArrivalTimestamp"].timestamp()) * 1000
            if raw_records else 0.0
        )
        metrics.put("AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", oldest_ms,
                    {"StreamName": stream_name})
        if not raw_records:
            read_to_end(polled_at)
            time.sleep(IDLE_POLL_S)
            continue
        deliver([
            StreamRecord(raw["SequenceNumber"], raw["PartitionKey"], raw["Data"],
                         raw["ApproximateArrivalTimestamp"].timestamp(), shard_id)
            for raw in raw_records
        ])
