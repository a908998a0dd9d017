"""Stage 1's emissions (``fastbreak.engine.outbox``): whatever stage 1 crashes on, whatever the
re-delivery's boundaries, and with concurrent batches of one shard, each audience event reaches
the audience items exactly once."""

from __future__ import annotations

from typing import Any

import pytest

from fastbreak.engine import RetryPolicy
from fastbreak.engine.layout import OUTBOX_PREFIX
from fastbreak.engine.outbox import WRITER_GONE_MS
from fastbreak.engine.processor import ProcessorSettings
from fastbreak.engine.timestamps import format_ms
from localplatform.kinesis_events import StreamRecord, json_bytes, lambda_record, stream_of
from localplatform.memory_dynamodb import client_error
from tests.fixtures.two_stages import TwoStages

T0 = 1_795_717_800_000
ARRIVAL_S = T0 / 1000 + 60


class Crash(BaseException):
    """The execution environment dies: nothing in the engine may catch it."""


class Clock:
    def __init__(self) -> None:
        self.now_ms = T0 + 120_000

    def __call__(self) -> int:
        return self.now_ms


def plays(count: int, start: int = 0, game: str = "g1") -> list[dict[str, Any]]:
    return [
        {"event_type": "video_play", "schema_version": 1, "event_id": f"p{n}",
         "event_time": format_ms(T0 + n * 1000), "user_id": f"u{n % 5}", "content_id": f"c{n % 3}",
         "game_id": game, "watch_seconds": 2.0}
        for n in range(start, start + count)
    ]


def records(stream: list[StreamRecord]) -> list[dict[str, Any]]:
    return [lambda_record(record) for record in stream]


def pipeline(clock: Clock | None = None, parallelization_factor: int = 1) -> TwoStages:
    return TwoStages(clock_ms=clock or Clock(),
                     settings=ProcessorSettings(parallelization_factor=parallelization_factor))


def game(stages: TwoStages, key: str = "g1") -> dict[str, Any]:
    return stages.values("game_live", key, T0 + 120_000)


def user_views(stages: TwoStages) -> int:
    return sum(
        stages.values("user_engagement", f"u{n}", T0 + 120_000)["watch_seconds_1h"] or 0
        for n in range(5)
    )


def pending(stages: TwoStages) -> list[tuple[str, str]]:
    return [key for key in stages.table.items
            if key[0].startswith(OUTBOX_PREFIX) and "#" not in key[0][len(OUTBOX_PREFIX):]]


def crash_on(stages: TwoStages, operation: str, times: int = 1) -> dict[str, int]:
    """Crash on the next ``times`` calls of ``operation`` (``PutRecords``, or a DynamoDB
    operation: ``PutItem`` is the outbox's write, ``DeleteItem`` its completion)."""
    left = {"crashes": times}

    def dynamodb_fault(name: str, request: dict[str, Any]) -> None:
        if name == operation and left["crashes"] > 0:
            left["crashes"] -= 1
            raise Crash

    def kinesis_fault(entries: list[dict[str, Any]]) -> set[int]:
        if operation == "PutRecords" and left["crashes"] > 0:
            left["crashes"] -= 1
            raise Crash
        return set()

    stages.table.fault = dynamodb_fault
    stages.kinesis.fault = kinesis_fault
    return left


@pytest.mark.parametrize("operation", ["PutRecords", "DeleteItem"])
def test_a_crash_after_the_emission_is_written_is_completed_by_the_retry(operation: str) -> None:
    stages = pipeline()
    stream = stream_of(plays(12), ARRIVAL_S)
    crash_on(stages, operation)
    with pytest.raises(Crash):
        stages.process(records(stream))
    assert len(pending(stages)) == 1
    # Lambda retries from the first record, here with a larger batch after a crash.
    more = stream_of(plays(4, start=12), ARRIVAL_S, start=12)
    result = stages.process(records(stream + more))
    assert result.failed_sequence_numbers == [] and result.emissions_completed == 1
    assert pending(stages) == []
    assert game(stages)["watch_seconds_5m"] == 32.0 and user_views(stages) == 32.0


@pytest.mark.parametrize("factor", [1, 2])
def test_the_outbox_index_hashes_its_records_only_where_batches_of_a_shard_interleave(
    factor: int,
) -> None:
    # With ParallelizationFactor 1 a batch holds every record of its shard in its range: the
    # range alone says which batch an emission is, and the index stays one write unit.
    stages = pipeline(parallelization_factor=factor)
    stream = stream_of(plays(12), ARRIVAL_S)
    crash_on(stages, "PutRecords")
    with pytest.raises(Crash):
        stages.process(records(stream))
    (key,) = pending(stages)
    index = stages.table.items[key]
    assert len(index["sources"]["B"]) == 12 * 4 if factor > 1 else "sources" not in index
    result = stages.process(records(stream))
    assert result.emissions_completed == 1 and pending(stages) == []
    assert game(stages)["watch_seconds_5m"] == 24.0 and user_views(stages) == 24.0


def test_a_crash_between_accepted_and_refused_partials_emits_each_once() -> None:
    stages = pipeline()
    stream = stream_of(plays(30, game="g1") + plays(30, start=30, game="g2"), ARRIVAL_S)
    calls = {"n": 0}

    def accept_some_then_die(entries: list[dict[str, Any]]) -> set[int]:
        calls["n"] += 1
        if calls["n"] == 1:
            return set(range(1, len(entries)))  # the first partial lands, the rest throttled
        raise Crash

    stages.kinesis.fault = accept_some_then_die
    with pytest.raises(Crash):
        stages.process(records(stream))
    stages.kinesis.fault = None
    result = stages.process(records(stream[:20]))  # a bisected half: the emission is whole
    assert result.emissions_completed == 1 and result.failed_sequence_numbers == []
    assert sum(r.duplicate_partials for r in stages.audience) == 1  # the one that landed twice
    assert stages.process(records(stream[20:])).partials_emitted == 0  # all remembered
    assert game(stages, "g1")["watch_seconds_5m"] == 60.0
    assert game(stages, "g2")["watch_seconds_5m"] == 60.0


def test_a_discarded_first_half_leaves_its_emission_to_the_second_half_and_the_redrive() -> None:
    stages = pipeline()
    stream = stream_of(plays(10), ARRIVAL_S)
    crash_on(stages, "PutRecords", times=3)
    for batch in (stream, stream[:5], stream[:5]):  # the batch, then its first half, crash
        with pytest.raises(Crash):
            stages.process(records(batch))
    # Retries exhausted: the first half goes to the on-failure queue; the mapping moves on.
    second = stages.process(records(stream[5:]))
    assert second.emissions_completed == 1 and second.duplicate_events == 5
    redrive = stages.process(records(stream[:5]))  # on-call replays the first half later
    assert redrive.partials_emitted == 0 and redrive.duplicate_events == 5
    assert game(stages)["watch_seconds_5m"] == 20.0 and user_views(stages) == 20.0


def test_an_emission_that_cannot_be_written_is_folded_again_on_the_retry() -> None:
    stages = pipeline()
    stream = stream_of(plays(6), ARRIVAL_S)

    def refuse_outbox(operation: str, request: dict[str, Any]) -> None:
        if operation == "PutItem":
            raise client_error("ValidationException", operation)

    stages.table.fault = refuse_outbox
    failed = stages.process(records(stream))
    assert failed.failed_sequence_numbers == [r.sequence_number for r in stream]
    assert failed.partials_emitted == 0 and pending(stages) == []
    stages.table.fault = None
    assert stages.process(records(stream)).failed_sequence_numbers == []
    assert game(stages)["watch_seconds_5m"] == 12.0 and user_views(stages) == 12.0


def test_partials_the_stream_throttles_are_put_again_in_the_invocation() -> None:
    stages = pipeline()
    throttled = {"times": 3}

    def throttle(entries: list[dict[str, Any]]) -> set[int]:
        if throttled["times"]:
            throttled["times"] -= 1
            return {0}
        return set()

    stages.kinesis.fault = throttle
    result = stages.process(records(stream_of(plays(9), ARRIVAL_S)))
    assert result.failed_sequence_numbers == [] and result.partials_emitted == 4
    assert stages.stage1.partials is not None and stages.stage1.partials.retries == 3
    assert game(stages)["watch_seconds_5m"] == 18.0


def test_a_stream_that_keeps_refusing_leaves_the_emission_pending_for_the_retry() -> None:
    stages = pipeline()
    assert stages.stage1.partials is not None
    stages.stage1.partials.retry = RetryPolicy(max_attempts=2, sleep=lambda _: None)
    stages.kinesis.fault = lambda entries: set(range(len(entries)))
    stream = stream_of(plays(6), ARRIVAL_S)
    failed = stages.process(records(stream))
    assert failed.failed_sequence_numbers == [r.sequence_number for r in stream]
    assert len(pending(stages)) == 1
    stages.kinesis.fault = None
    retry = stages.process(records(stream))
    assert retry.emissions_completed == 1 and retry.failed_sequence_numbers == []
    assert game(stages)["watch_seconds_5m"] == 12.0 and user_views(stages) == 12.0


def test_a_concurrent_batchs_pending_emission_is_left_to_it_until_its_writer_is_gone() -> None:
    # ParallelizationFactor > 1: two batches of one shard, interleaved positions.
    clock = Clock()
    stages = pipeline(clock, parallelization_factor=2)
    stream = stream_of(plays(10), ARRIVAL_S)  # partitioned by user: a user's records in one lane
    lane_a = [record for record in stream if record.partition_key in {"u0", "u2", "u4"}]
    lane_b = [record for record in stream if record.partition_key in {"u1", "u3"}]
    crash_on(stages, "PutRecords")
    with pytest.raises(Crash):
        stages.process(records(lane_a))  # in flight, as far as lane b can tell
    other = stages.process(records(lane_b))
    assert other.emissions_completed == 0 and len(pending(stages)) == 1
    clock.now_ms += WRITER_GONE_MS + 1000
    later = stages.process(records(stream_of(plays(1, start=10), ARRIVAL_S, start=10)))
    assert later.emissions_completed == 1 and pending(stages) == []
    retry = stages.process(records(lane_a))  # lane a's retry finds its events applied
    assert retry.duplicate_events == 6 and retry.partials_emitted == 0
    assert game(stages)["watch_seconds_5m"] == 22.0 and user_views(stages) == 22.0


def test_with_parallelization_an_event_keyed_by_another_user_is_not_applied_to_user_groups(
) -> None:
    stages = pipeline(parallelization_factor=2)
    play = plays(1)[0]
    mismatched = StreamRecord("49590338271490256608559692538361571095921575989136588900",
                              "someone-else", json_bytes(play), ARRIVAL_S)
    result = stages.process(records([mismatched]))
    assert result.mismatched_events == 1 and result.failed_sequence_numbers == []
    assert game(stages)["watch_seconds_5m"] == 2.0  # the audience stage re-keys it anyway
    assert user_views(stages) == 0
    lines = [line for key, body in stages.sink.objects.items() if key.startswith("quarantine/")
             for line in body.decode().splitlines()]
    assert len(lines) == 1 and "partition_key_mismatch" in lines[0]
    assert '"groups": ["user_engagement"]' in lines[0]

