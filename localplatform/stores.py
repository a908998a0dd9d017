"""Bare feature stores in the embedded AWS, for tests and benchmarks that exercise the handlers
without deploying the templates: an online store table with the key schema of
``constructs_lib.online_store``, an offline store bucket and a partials stream.
"""

from __future__ import annotations

from typing import Any

from localplatform.kinesis_events import EventSource, StreamRecord, lambda_event


def create_feature_stores(dynamodb: Any, s3: Any, *, table: str, bucket: str) -> None:
    dynamodb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
    )
    s3.create_bucket(Bucket=bucket)


def create_partials_stream(kinesis: Any, name: str, shards: int = 1) -> None:
    """The partials stream stage 1 emits to (``constructs_lib`` builds it on AWS)."""
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(StreamName=name)


class StreamTail:
    """Reads each shard of a stream from where the last call stopped: what a test or benchmark
    that runs the audience stage by hand hands it (the local platform's event source mappings
    do this continuously)."""

    def __init__(self, kinesis: Any, stream_name: str) -> None:
        self.kinesis = kinesis
        self.stream_name = stream_name
        self._iterators: dict[str, str] = {}

    def take(self) -> dict[str, list[StreamRecord]]:
        """The records put since the last call, by shard (shards with none left out)."""
        found: dict[str, list[StreamRecord]] = {}
        for shard in self.kinesis.list_shards(StreamName=self.stream_name)["Shards"]:
            shard_id = shard["ShardId"]
            iterator = self._iterators.get(shard_id) or self.kinesis.get_shard_iterator(
                StreamName=self.stream_name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON",
            )["ShardIterator"]
            while True:
                response = self.kinesis.get_records(ShardIterator=iterator)
                iterator = response["NextShardIterator"]
                records = response["Records"]
                if not records:
                    break
                found.setdefault(shard_id, []).extend(
                    StreamRecord(raw["SequenceNumber"], raw["PartitionKey"], raw["Data"],
                                 raw["ApproximateArrivalTimestamp"].timestamp(), shard_id)
                    for raw in records
                )
            self._iterators[shard_id] = iterator
        return found

    def events(self, function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:"
               "fastbreak-audience") -> list[dict[str, Any]]:
        """The new records as Lambda events, one per shard."""
        arn = f"arn:aws:kinesis:us-east-1:123456789012:stream/{self.stream_name}"
        source = EventSource(arn, function_arn, "arn:aws:iam::123456789012:role/fastbreak",
                             "us-east-1")
        return [lambda_event(records, source) for records in self.take().values()]
