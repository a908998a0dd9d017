"""Property tests of the training-set builder on random histories: late, duplicate, refused and
future-dated records, event ids reused, several shards, doubles of any magnitude, spine times on
and around tile edges.

- The SQL path equals the reference path (the engine's fold and merge per entity), exactly.
- Both equal the real stream processor, read as the feature API reads, whatever the batching:
  in as-served mode at any time (the processor fed what had arrived by then), and in event-time
  mode once everything has arrived.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastbreak.engine.timestamps import format_ms
from fastbreak.offline.builder import TrainingSetRequest, build_training_set
from localplatform.kinesis_events import StreamRecord
from tests.fixtures.offline import (
    MINUTE,
    OFFLINE_CATALOG,
    T0,
    Online,
    Sent,
    document,
    refused_payloads,
    stream_records,
    write_raw_table,
)

USERS = ("u0", "u1", "u2")
ITEMS = ("i0", "i1", "i2", "i3")
SHARDS = ("shardId-000000000000", "shardId-000000000001")
GROUPS = ("user_stats", "item_stats")
HOUR = 60 * MINUTE

offsets = st.one_of(
    st.integers(0, 2 * HOUR),
    st.integers(0, 120).map(lambda minutes: minutes * MINUTE),  # on a tile edge
    st.integers(1, 120).map(lambda minutes: minutes * MINUTE - 1),  # just before one
)
amounts = st.one_of(
    st.integers(-40, 40).map(lambda quarters: quarters / 4),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 5e-324, 0.1, 1e-300, 2.0**70]),
)
quantities = st.none() | st.integers(-1000, 1000) | st.integers(-(2**62), 2**62)
delays = st.one_of(
    st.integers(0, 3_000),
    st.integers(200_000, 1_000_000),  # late: within some groups' lateness, beyond others'
    st.integers(-400_000, -1),  # dated ahead of its arrival; beyond 5 minutes it is refused
)


@st.composite
def histories(draw: st.DrawFn, reuse_ids: bool = True) -> tuple[list[Sent], list[dict[str, Any]]]:
    count = draw(st.integers(1, 30))
    sent: list[Sent] = []
    for n in range(count):
        user, item = draw(st.sampled_from(USERS)), draw(st.sampled_from(ITEMS))
        time_ms = T0 + draw(offsets)
        # an id reused by another event: another time, entity or payload is another event
        # unless the shard and the event time are the same
        event_id = f"e{draw(st.integers(0, count))}" if reuse_ids else f"e{n}"
        kind = draw(st.sampled_from(["view", "view2", "buy"]))
        payload: dict[str, Any] = {"user_id": user, "item_id": item, "amount": draw(amounts)}
        if kind != "buy":
            quantity = draw(quantities)
            if quantity is not None:
                payload["qty"] = quantity
            if kind == "view2":
                payload["channel"] = "app"
        body = json.dumps(document("buy" if kind == "buy" else "view", event_id, time_ms,
                                   **payload)).encode()
        shard = SHARDS[USERS.index(user) % 2]
        if reuse_ids and draw(st.integers(0, 9)) == 0:
            shard = SHARDS[(USERS.index(user) + 1) % 2]  # resharding: a user in two shards
        arrival = time_ms + draw(delays)
        sent.append(Sent(body, arrival, shard))
        if draw(st.integers(0, 5)) == 0:  # a producer retry: the same event, later
            sent.append(Sent(body, arrival + draw(st.integers(0, 900_000)), shard))
    for payload_bytes in draw(st.lists(st.sampled_from(refused_payloads()), max_size=2)):
        sent.append(Sent(payload_bytes, T0 + draw(offsets), SHARDS[0]))
    last = max(s.arrival_ms for s in sent)
    times = st.one_of(offsets.map(lambda offset: T0 + offset),
                      st.sampled_from(sorted({s.arrival_ms for s in sent})),
                      st.integers(T0 - 10 * MINUTE, last + HOUR))
    spine = draw(st.lists(st.builds(
        lambda user, item, at: {"user_id": user, "item_id": item, "timestamp": at},
        st.sampled_from(USERS), st.sampled_from(ITEMS), times), min_size=1, max_size=25))
    return sent, spine


def build(folder: Path, records: Sequence[StreamRecord], spine: list[dict[str, Any]],
          **options: Any) -> pa.Table:
    if not (folder / "raw").exists():
        write_raw_table(records, folder / "raw")
        pq.write_table(pa.Table.from_pylist(spine, pa.schema([
            ("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", pa.int64()),
        ])), folder / "spine.parquet")
    table, _ = build_training_set(
        TrainingSetRequest(str(folder / "spine.parquet"), GROUPS, str(folder / "raw"),
                           **options), catalog=OFFLINE_CATALOG)
    return table


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories())
def test_the_sql_path_equals_the_reference_path(
    history: tuple[list[Sent], list[dict[str, Any]]]
) -> None:
    sent, spine = history
    records = stream_records(sent)
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        fast = build(folder, records, spine)
        reference = build(folder, records, spine, fast_path=False)
    assert fast.column_names == reference.column_names
    for name in fast.column_names:
        assert _same(fast[name].to_pylist(), reference[name].to_pylist()), name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories(), batches=st.lists(st.integers(1, 12), max_size=20))
def test_as_served_values_are_what_the_processor_served_at_each_time(
    history: tuple[list[Sent], list[dict[str, Any]]], batches: list[int]
) -> None:
    sent, spine = history
    records = stream_records(sent)
    with tempfile.TemporaryDirectory() as directory:
        table = build(Path(directory), records, spine, as_served=True)
    online = Online()
    delivered = 0
    for row in sorted(range(len(spine)), key=lambda i: spine[i]["timestamp"]):
        at = spine[row]["timestamp"]
        arrived = [r for r in records if r.arrival * 1000 <= at]
        online.process(arrived[delivered:], batches)
        delivered = len(arrived)
        _assert_row_equals_online(table, row, spine[row], online, at)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories(), batches=st.lists(st.integers(1, 12), max_size=20),
       after=st.lists(st.integers(0, 2 * HOUR), min_size=1, max_size=4))
def test_event_time_values_equal_the_processors_once_everything_arrived(
    history: tuple[list[Sent], list[dict[str, Any]]], batches: list[int], after: list[int]
) -> None:
    sent, _ = history
    records = stream_records(sent)
    end = max(max(s.arrival_ms for s in sent), T0 + 2 * HOUR + 1)
    spine = [{"user_id": user, "item_id": item, "timestamp": end + offset}
             for offset in after for user in USERS for item in ITEMS[:2]]
    with tempfile.TemporaryDirectory() as directory:
        table = build(Path(directory), records, spine)
    online = Online()
    online.process(records, batches)
    for row, spine_row in enumerate(spine):
        _assert_row_equals_online(table, row, spine_row, online, spine_row["timestamp"])


def _assert_row_equals_online(table: pa.Table, row: int, spine_row: dict[str, Any],
                              online: Online, at: int) -> None:
    for group, key in (("user_stats", spine_row["user_id"]), ("item_stats", spine_row["item_id"])):
        served = online.read(group, key, at)
        for name, value in served.items():
            column = f"{group}__{name}"
            expected = None if value is None else _plain(value.value)
            assert _same([table[column][row].as_py()], [expected]), (column, format_ms(at))
            expected_time = None if value is None else value.event_time_ms
            found = table[column + "__event_time"][row].as_py()
            assert (None if found is None else int(found.timestamp() * 1000)) == expected_time


def _plain(value: Any) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], list):
        return [{"value": v, "count": c} for v, c in value]  # top_k
    if isinstance(value, int) and not -(1 << 63) <= value < 1 << 63:
        return None
    return value


def _same(left: list[Any], right: list[Any]) -> bool:
    """Equal, and equal floats bit for bit (0.0 and -0.0 aside, which compare equal)."""
    if left != right:
        return False
    return all(
        not (isinstance(a, float) and isinstance(b, float)) or math.copysign(1, a) == math.copysign(
            1, b) or a == 0
        for a, b in zip(left, right, strict=True)
    )
