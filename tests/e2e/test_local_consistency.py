"""The consistency check on the embedded local platform, as its schedule runs it: the real
handler reads the offline store (raw table and feature log, through pyarrow's S3 filesystem)
and the online store, and publishes its figure; every value matches until an item is corrupted,
then the figure falls and the template's alarm pages with its runbook."""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from fastbreak.engine.layout import compact_state
from fastbreak_producer import Producer
from localplatform.metrics import MetricKey
from localplatform.platform import LocalPlatform, PlatformOptions
from tests.e2e.test_local_failures import wait_for

pytestmark = pytest.mark.e2e

ALARM = "Fastbreak-dev-ConsistencyBelowTarget"
RATE = MetricKey.of("Fastbreak", "ConsistencyRate",
                    {"service": "consistency-check", "environment": "dev"})
# The alarm's hour lasts 3 s here; the check judges writes as soon as they are made.
TIME_SCALE = 1200.0


@pytest.fixture(scope="module")
def platform() -> Iterator[LocalPlatform]:
    options = PlatformOptions(alarm_time_scale=TIME_SCALE, consistency_settle_minutes=0,
                              firehose_buffer_seconds=1)
    with LocalPlatform(options) as running:
        yield running


def views(count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [{"event_type": "content_view", "schema_version": 2, "event_id": f"v{n}",
             "event_time": now.isoformat(), "user_id": f"user-{n % 5}",
             "content_id": f"c{n % 3}", "sport": "nba", "surface": "home"}
            for n in range(count)]


def corrupt(platform: LocalPlatform, key: dict[str, Any]) -> None:
    """One more view in every tile of a user item, written behind the stages' back (its
    version unchanged): what a double-applied event leaves."""
    dynamodb = platform.client("dynamodb")
    item = dynamodb.get_item(TableName=platform.table_name, Key=key)["Item"]
    raw = item["state"]
    tiles = json.loads(raw["S"] if "S" in raw else zlib.decompress(raw["B"]).decode())
    for section in tiles.values():
        for slots in section.values():
            if "views" in slots:
                slots["views"][1] += 1
    state = compact_state(json.dumps(tiles, separators=(",", ":")))
    item["state"] = {"S": state} if isinstance(state, str) else {"B": state}
    dynamodb.put_item(TableName=platform.table_name, Item=item)


def test_the_scheduled_check_matches_every_value_then_pages_on_a_corrupted_item(
    platform: LocalPlatform,
) -> None:
    producer = Producer(platform.client("kinesis"), platform.stream_name)
    for event in views(40):
        producer.send(event)
    producer.flush()
    assert platform.wait_until_processed(timeout=60)
    time.sleep(1)  # the check takes writes visible up to now: let the clock move past them

    healthy = platform.run_consistency_check()
    assert healthy["values"] > 20 and healthy["rate"] == 1.0, healthy
    assert platform.metrics.values(RATE, 0, time.time() + 1) == [100.0]
    assert platform.alarms is not None
    wait_for(lambda: platform.alarms and platform.alarms.states()[ALARM] == "OK", 30,
             "the alarm to see the healthy figure")
    platform.drain_pages()

    corrupt(platform, {"pk": {"S": "user#user-1"}, "sk": {"S": "user_engagement"}})
    diverged = platform.run_consistency_check()
    assert diverged["lowest_rate"] < 0.99, diverged
    page = wait_for(lambda: next((p for p in platform.drain_pages()
                                  if p["AlarmName"] == ALARM
                                  and p["NewStateValue"] == "ALARM"), None),
                    60, "the consistency alarm's page")
    assert page["Trigger"]["MetricName"] == "ConsistencyRate"
    assert "Runbook: docs/runbooks.md#consistency-below-target" in page["AlarmDescription"]
    log = platform.consistency_check.current.log_path.read_text()
    assert "a served value differs from its recomputation" in log and "user-1" in log
