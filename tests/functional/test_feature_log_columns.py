"""The feature log's Glue table (stacks/storage_stack.py) matches what the processor writes."""

from __future__ import annotations

from typing import Any

from fastbreak.handlers import stream_processor
from localplatform.lambda_context import LambdaContext
from stacks.storage_stack import FEATURE_LOG_COLUMNS
from tests.functional.test_stream_processor import aws, fixture, objects

__all__ = ["aws"]  # the fixture, imported for pytest


def test_feature_log_lines_have_exactly_the_glue_columns(aws: tuple[Any, Any]) -> None:
    _, s3 = aws
    stream_processor.handler(fixture("kinesis_valid_batch.json"), LambdaContext())
    lines = objects(s3, "features/")
    assert lines
    for line in lines:
        assert list(line) == [name for name, _ in FEATURE_LOG_COLUMNS]
        # The line format is pinned: consumers read these keys, in this order.
        assert list(line) == [
            "pk", "sk", "group", "entity", "entity_key", "shard_id", "hw", "version",
            "event_time_ms", "tiles", "visible_ms",
        ]
        # a first write: the processor's clock once it succeeded, after the newest event
        assert isinstance(line["visible_ms"], int) and line["visible_ms"] > line["event_time_ms"]
        assert isinstance(line["hw"], str) and isinstance(line["event_time_ms"], int)
        assert isinstance(line["version"], int) and line["version"] >= 1
        # {tile seconds: {tile start: {slot: state}}}: the item's own format
        assert line["tiles"] and all(
            section.isdigit() and all(start.isdigit() for start in tiles)
            for section, tiles in line["tiles"].items()
        )
