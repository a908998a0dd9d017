"""A running Kinesis event source mapping: shard readers, per-partition-key lanes, batching.

One reader thread per shard polls GetRecords (moto has no SubscribeToShard) and hands records
to ``ParallelizationFactor`` lanes by partition key hash, so order holds per partition key as
on AWS. Each lane gathers a batch (``BatchSize``, ``MaximumBatchingWindowInSeconds``, the 6 MB
invocation payload) and hands it to ``BatchDelivery``, which owns what happens next; the lane
takes its next batch only when that one is resolved, as a shard's checkpoint does.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from localplatform.kinesis_events import EventSource, StreamRecord
from localplatform.mapping_emulator import (
    BatchDelivery,
    Condition,
    Invoke,
    MappingHooks,
    MappingSettings,
)
from localplatform.metrics import MetricStore
from localplatform.shard_reader import IDLE_POLL_S, read_shard

MAX_INVOKE_PAYLOAD = 6 * 1024 * 1024
# A lane stops its reader past this many waiting records, as a Lambda poller does not read
# further ahead than it can deliver.
LANE_BACKLOG_BATCHES = 4


@dataclass
class MappingStats:
    records_read: int = 0
    records_succeeded: int = 0
    records_discarded: dict[str, int] = field(default_factory=dict)
    invocations: int = 0
    function_errors: int = 0


def destination_sender(arn: str | None, sqs: Any, sns: Any) -> Callable[[dict[str, Any]], None]:
    """Send on-failure records to the SQS queue or SNS topic of ``arn``."""
    if arn is None:
        return lambda record: None
    if arn.startswith("arn:aws:sqs:"):
        queue_url = sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"]
        return lambda record: sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(record))
    if arn.startswith("arn:aws:sns:"):
        return lambda record: sns.publish(TopicArn=arn, Message=json.dumps(record))
    raise ValueError(f"on-failure destination {arn} is neither a queue nor a topic")


class _Lane:
    def __init__(self) -> None:
        self.records: list[StreamRecord] = []
        self.first_waiting_since = 0.0
        self.busy = False
        self.changed = threading.Condition()


class KinesisEventSourceMapping:
    def __init__(
        self,
        settings: MappingSettings,
        source: EventSource,
        kinesis: Any,
        invoke: Invoke,
        destination: Callable[[dict[str, Any]], None],
        metrics: MetricStore,
        function_name: str,
        hooks: MappingHooks | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.stream_name = source.stream_arn.rsplit("/", 1)[-1]
        self.kinesis = kinesis
        self.metrics = metrics
        self.function_name = function_name
        self.stats = MappingStats()
        self._stats_lock = threading.Lock()
        outer = hooks or MappingHooks()
        self._outer_hooks = outer
        self.delivery = BatchDelivery(
            settings, source, invoke, destination,
            hooks=MappingHooks(self._on_invoke, self._on_success, self._on_discard),
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lanes: dict[str, list[_Lane]] = {}
        # When each reader last started a GetRecords that came back empty: the shard was
        # read to its end at that moment.
        self._read_to_end_at: dict[str, float] = {}

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        shards = self.kinesis.list_shards(StreamName=self.stream_name)["Shards"]
        for shard in shards:
            shard_id = shard["ShardId"]
            lanes = [_Lane() for _ in range(self.settings.parallelization_factor)]
            self._lanes[shard_id] = lanes
            self._read_to_end_at[shard_id] = -1.0
            self._spawn(f"read-{shard_id}", self._read, shard_id)
            for index, lane in enumerate(lanes):
                self._spawn(f"lane-{shard_id}-{index}", self._run_lane, lane)

    def stop(self) -> None:
        self._stop.set()
        for lanes in self._lanes.values():
            for lane in lanes:
                with lane.changed:
                    lane.changed.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)

    def caught_up(self, since: float) -> bool:
        """Every shard read to its end after ``since`` (``time.monotonic()``) and every record
        read resolved: what was put before ``since`` is processed or discarded."""
        if any(at < since for at in self._read_to_end_at.values()):
            return False
        return all(
            not lane.records and not lane.busy
            for lanes in self._lanes.values() for lane in lanes
        )

    def wait_until_caught_up(self, timeout: float) -> bool:
        since = time.monotonic()
        deadline = since + timeout
        while time.monotonic() < deadline:
            if self.caught_up(since):
                return True
            time.sleep(IDLE_POLL_S)
        return False

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    # ---- reading -------------------------------------------------------------------------
    def _read(self, shard_id: str) -> None:
        lanes = self._lanes[shard_id]
        limit = LANE_BACKLOG_BATCHES * self.settings.batch_size

        def distribute(records: list[StreamRecord]) -> None:
            with self._stats_lock:
                self.stats.records_read += len(records)
            for record in records:
                lane = lanes[lane_index(record.partition_key, len(lanes))]
                with lane.changed:
                    if not lane.records:
                        lane.first_waiting_since = time.monotonic()
                    lane.records.append(record)
                    lane.changed.notify()

        def read_to_end(polled_at: float) -> None:
            self._read_to_end_at[shard_id] = polled_at

        read_shard(
            self.kinesis, self.stream_name, shard_id, self.settings.starting_position,
            self._stop, distribute, self.metrics,
            ready=lambda: all(len(lane.records) < limit for lane in lanes),
            read_to_end=read_to_end,
        )

    # ---- delivering ----------------------------------------------------------------------
    def _run_lane(self, lane: _Lane) -> None:
        window = self.settings.batching_window_s
        while not self._stop.is_set():
            with lane.changed:
                while not self._stop.is_set() and not self._batch_ready(lane, window):
                    lane.changed.wait(timeout=IDLE_POLL_S)
                if self._stop.is_set():
                    return
                batch = self._take_batch(lane)
                lane.busy = True
            try:
                report = self.delivery.deliver(batch)
                with self._stats_lock:
                    self.stats.function_errors += report.function_errors
            finally:
                with lane.changed:
                    lane.busy = False

    def _batch_ready(self, lane: _Lane, window: float) -> bool:
        if not lane.records:
            return False
        if len(lane.records) >= self.settings.batch_size:
            return True
        return time.monotonic() - lane.first_waiting_since >= window

    def _take_batch(self, lane: _Lane) -> list[StreamRecord]:
        size, count = 0, 0
        for record in lane.records[: self.settings.batch_size]:
            # base64 plus the record's envelope, as the invocation payload counts it
            size += len(record.data) * 4 // 3 + 400
            if count and size > MAX_INVOKE_PAYLOAD:
                break
            count += 1
        batch, lane.records = lane.records[:count], lane.records[count:]
        lane.first_waiting_since = time.monotonic()
        return batch

    # ---- what the service reports --------------------------------------------------------
    def _on_invoke(self, records: Sequence[StreamRecord]) -> None:
        # Lambda's IteratorAge: how old the batch's last record was when it was delivered.
        age_ms = (time.time() - records[-1].arrival) * 1000
        self.metrics.put("AWS/Lambda", "IteratorAge", age_ms, {"FunctionName": self.function_name})
        with self._stats_lock:
            self.stats.invocations += 1
        if self._outer_hooks.on_invoke is not None:
            self._outer_hooks.on_invoke(records)

    def _on_success(self, records: Sequence[StreamRecord]) -> None:
        with self._stats_lock:
            self.stats.records_succeeded += len(records)
        if self._outer_hooks.on_success is not None:
            self._outer_hooks.on_success(records)

    def _on_discard(self, records: Sequence[StreamRecord], condition: Condition) -> None:
        with self._stats_lock:
            discarded = self.stats.records_discarded
            discarded[condition.value] = discarded.get(condition.value, 0) + len(records)
        if self._outer_hooks.on_discard is not None:
            self._outer_hooks.on_discard(records, condition)


def lane_index(partition_key: str, lanes: int) -> int:
    """Which of ``lanes`` concurrent batches of a shard carries a partition key's records."""
    if lanes == 1:
        return 0
    return int.from_bytes(hashlib.md5(partition_key.encode(), usedforsecurity=False).digest()[:8],
                          "big") % lanes
