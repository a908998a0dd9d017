"""Canary deployments with automatic rollback, on the embedded local platform: a new version
of each Lambda goes out through the template's CodeDeploy deployment group while traffic
flows; a bad one trips the template's rollback alarm and the alias goes back to the previous
version, and no event is lost or applied twice on the way."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from fastbreak_producer import Producer
from localplatform.codedeploy import Outcome, traffic_steps
from localplatform.lambda_runtime import LocalFunction
from localplatform.platform import LocalPlatform, PlatformOptions

pytestmark = pytest.mark.e2e

# A 5-minute canary lasts 20 s here, and a 60 s alarm period 4 s (room for a loaded machine to
# evaluate the alarm within the canary); retries back off from 10 ms.
TIME_SCALE = 15.0
USERS = [f"canary-user-{index}" for index in range(8)]


@pytest.fixture(scope="module")
def platform() -> Iterator[LocalPlatform]:
    options = PlatformOptions(alarm_time_scale=TIME_SCALE, retry_backoff_s=0.01,
                              retry_backoff_cap_s=0.05)
    with LocalPlatform(options) as running:
        yield running


class Traffic:
    """Content views for ``USERS`` at a steady pace until stopped; counts what it sent."""

    def __init__(self, platform: LocalPlatform, prefix: str, per_second: float = 40.0) -> None:
        self.producer = Producer(platform.client("kinesis"), platform.stream_name)
        self.prefix = prefix
        self.interval = 1 / per_second
        self.sent: dict[str, int] = dict.fromkeys(USERS, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.producer.flush()

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            user = USERS[index % len(USERS)]
            self.producer.send({
                "event_type": "content_view", "schema_version": 2,
                "event_id": f"{self.prefix}-{index}",
                "event_time": datetime.now(UTC).isoformat(), "user_id": user,
                "content_id": f"content-{index % 5}", "sport": "soccer", "surface": "home",
            })
            self.sent[user] += 1
            index += 1
            if index % 20 == 0:
                self.producer.flush()
            time.sleep(self.interval)


ALARM = "Fastbreak-dev-ProcessorDeployErrors"


def views_last_hour(platform: LocalPlatform, user: str) -> int:
    assert platform.api is not None
    with urllib.request.urlopen(f"{platform.api.url}/v1/features/user/{user}", timeout=10) as r:
        body = json.loads(r.read())
    # A user the platform has not seen yet (this test may run first) has no features.
    features = body.get("features") or {}
    value = (features.get("user_engagement.views_1h") or {}).get("value")
    return int(value or 0)


def crash(event: Mapping[str, Any]) -> None:
    raise RuntimeError("this release cannot decode the events")


def test_the_template_configures_a_five_minute_canary_for_the_processor(
    platform: LocalPlatform,
) -> None:
    spec = platform.processor_deployment.spec
    assert [(step.weight, step.minutes) for step in traffic_steps(spec.config_name)] == [
        (0.1, 5)]
    assert spec.alarm_names == ("Fastbreak-dev-ProcessorDeployErrors",)


def test_a_bad_processor_version_is_rolled_back_by_its_alarm_and_no_event_is_lost(
    platform: LocalPlatform,
) -> None:
    before = dict.fromkeys(USERS, 0)

    def bad_release(version: LocalFunction) -> None:
        version.fault = crash

    with Traffic(platform, "rollback") as traffic:
        time.sleep(1)
        report = platform.processor_deployment.deploy(prepare=bad_release)
        time.sleep(1)
    assert report.outcome is Outcome.ROLLED_BACK
    assert report.alarms_in_alarm == ("Fastbreak-dev-ProcessorDeployErrors",)
    assert platform.processor.spec.version == "1"
    assert platform.metrics.total("AWS/Lambda", "Errors", {
        "FunctionName": platform.processor.spec.name,
        "Resource": f"{platform.processor.spec.name}:live", "ExecutedVersion": report.version,
    }) > 0
    # The batches the bad version failed were retried by the previous one: every event is
    # counted once, none lost, none twice.
    assert platform.wait_until_processed(timeout=60)
    assert {user: views_last_hour(platform, user) - before[user] for user in USERS} == (
        traffic.sent)


def test_a_good_processor_version_is_promoted_after_its_canary(
    platform: LocalPlatform,
) -> None:
    # CodeDeploy stops a deployment whose alarm is in ALARM when it starts: after the rollback
    # drill (whatever the test order), the alarm must have seen healthy periods again.
    assert platform.alarms is not None
    deadline = time.monotonic() + 120
    while platform.alarms.states().get(ALARM) == "ALARM" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert platform.alarms.states().get(ALARM) != "ALARM"
    before = {user: views_last_hour(platform, user) for user in USERS}
    with Traffic(platform, "promote") as traffic:
        report = platform.processor_deployment.deploy()
    assert report.outcome is Outcome.SUCCEEDED, report.timeline
    assert platform.processor.spec.version == report.version
    assert platform.wait_until_processed(timeout=60)
    assert {user: views_last_hour(platform, user) - before[user] for user in USERS} == (
        traffic.sent)


def test_a_bad_reader_version_is_rolled_back_by_the_api_5xx_rate(
    platform: LocalPlatform,
) -> None:
    assert platform.api is not None
    url = f"{platform.api.url}/v1/features/user/{USERS[0]}"
    statuses: list[int] = []
    stop = threading.Event()

    def read_continuously() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)
            time.sleep(0.02)

    reader = threading.Thread(target=read_continuously, daemon=True)
    reader.start()
    try:
        report = platform.reader_deployment.deploy(
            prepare=lambda version: setattr(version, "fault", crash))
    finally:
        stop.set()
        reader.join(timeout=30)
    assert report.outcome is Outcome.ROLLED_BACK
    assert set(report.alarms_in_alarm) <= {"Fastbreak-dev-FeatureApiDeployErrors",
                                           "Fastbreak-dev-FeatureApiDeployServerErrors"}
    assert report.alarms_in_alarm
    assert 502 in statuses  # what callers saw from the canary
    assert statuses.count(200) > statuses.count(502)  # 10 % of the reads, until the rollback
    # The previous version serves every read again.
    after = []
    for _ in range(20):
        with urllib.request.urlopen(url, timeout=10) as response:
            after.append(response.status)
    assert after == [200] * 20
