"""The SQL path on the cases a small random history rarely reaches, against the reference path:
a sketch past linear counting, sums wider than 64 bits, event times at the epoch, entities and
times too wide to pack into one search key."""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastbreak.engine.hll import REGISTERS
from fastbreak.offline import fast_path
from fastbreak.offline.builder import TrainingSetRequest, TrainingSetSummary, build_training_set
from tests.fixtures.offline import MINUTE, OFFLINE_CATALOG, T0, Sent, document, stream_records
from tests.fixtures.offline import write_raw_table as write_raw


def both_paths(folder: Path, sent: list[Sent], spine: list[dict[str, Any]],
               features: tuple[str, ...]) -> tuple[pa.Table, pa.Table, TrainingSetSummary]:
    write_raw(stream_records(sent), folder / "raw")
    pq.write_table(pa.Table.from_pylist(spine), folder / "spine.parquet")
    request = TrainingSetRequest(str(folder / "spine.parquet"), features, str(folder / "raw"))
    fast, summary = build_training_set(request, catalog=OFFLINE_CATALOG)
    slow, _ = build_training_set(
        TrainingSetRequest(str(folder / "spine.parquet"), features, str(folder / "raw"),
                           fast_path=False), catalog=OFFLINE_CATALOG)
    return fast, slow, summary


def sent_view(n: int, user: str, item: str, time_ms: int, amount: float = 1.0) -> Sent:
    body = document("view", f"e{n}", time_ms, user_id=user, item_id=item, amount=amount)
    return Sent(json.dumps(body).encode(), time_ms + 500, "shardId-000000000000")


def test_a_sketch_past_linear_counting_is_estimated_as_the_engine_estimates_it(
    tmp_path: Path
) -> None:
    # 14,000 distinct items over 20 minutes: the windows' sketches leave fewer empty registers
    # than linear counting takes, so the estimate needs the sum over every register's rank
    sent = [sent_view(n, "u1", f"item-{n}", T0 + n * 85) for n in range(14_000)]
    sent += [sent_view(14_000 + n, "u2", f"item-{n % 5}", T0 + n * 60_000) for n in range(20)]
    spine = [{"user_id": user, "item_id": "item-1", "timestamp": T0 + minutes * MINUTE + 17}
             for minutes in (0, 5, 9, 12, 19, 20, 25, 31, 45) for user in ("u1", "u2")]
    fast, slow, summary = both_paths(tmp_path, sent, spine, ("user_stats.items_10m",
                                                             "user_stats.items_30m",
                                                             "user_stats.items_lifetime"))
    assert "user_stats.items_30m" in summary.fast_features
    for column in fast.column_names:
        assert fast[column].to_pylist() == slow[column].to_pylist(), column
    heaviest = max(fast["user_stats__items_30m"].to_pylist(), key=lambda v: v or 0)
    assert heaviest > REGISTERS * 2.5  # past linear counting indeed


def test_sums_wider_than_64_bits_are_exact_and_rounded_once(tmp_path: Path) -> None:
    rng = random.Random(4)
    amounts = [rng.choice([0.1, 1e-20, 3.0e18, -7.25, 2.0**-60]) * rng.randint(1, 9)
               for _ in range(200)]
    sent = [sent_view(n, "u1", "i1", T0 + n * 7_000, amount) for n, amount in enumerate(amounts)]
    spine = [{"user_id": "u1", "item_id": "i1", "timestamp": T0 + m * MINUTE}
             for m in range(0, 30, 3)]
    fast, slow, summary = both_paths(tmp_path, sent, spine, ("user_stats.spend_30m",
                                                             "user_stats.avg_amount_30m"))
    assert set(summary.fast_features) == {"user_stats.spend_30m", "user_stats.avg_amount_30m"}
    assert fast.equals(slow)
    for row, at in enumerate(r["timestamp"] for r in spine):
        low = at - at % (5 * MINUTE) - 25 * MINUTE  # 30 minutes over 5-minute tiles
        window = [Fraction(a) for n, a in enumerate(amounts) if low <= T0 + n * 7_000 <= at]
        assert fast["user_stats__spend_30m"][row].as_py() == float(sum(window))


def test_events_at_the_epoch_go_through_the_reference_path(tmp_path: Path) -> None:
    sent = [sent_view(0, "u1", "i1", 0), sent_view(1, "u1", "i1", T0)]
    spine = [{"user_id": "u1", "item_id": "i1", "timestamp": T0 + 1}]
    fast, slow, summary = both_paths(tmp_path, sent, spine, ("user_stats.views_lifetime",))
    assert summary.fast_features == [] and fast.equals(slow)
    assert fast["user_stats__views_lifetime"].to_pylist() == [2]


def test_entities_and_times_too_wide_for_one_key_are_searched_by_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lowered so that (entity, time offset) never fits: every search goes through the ranks
    # of the event times, including spine times equal to, between, before and after them.
    monkeypatch.setattr(fast_path, "PACKED_BITS", 8)
    rng = random.Random(9)
    times = [T0 + rng.randrange(0, 60 * MINUTE, 250) for _ in range(400)]
    sent = [sent_view(n, f"u{n % 7}", f"item-{rng.randrange(30)}", at, rng.choice([1.0, 2.5]))
            for n, at in enumerate(times)]
    spine = [{"user_id": f"u{rng.randrange(8)}", "item_id": "item-1",
              "timestamp": rng.choice([rng.choice(times), T0 - MINUTE, T0 + 70 * MINUTE,
                                       T0 + rng.randrange(0, 60 * MINUTE)])}
             for _ in range(120)]
    fast, slow, summary = both_paths(tmp_path, sent, spine, ("user_stats",))
    assert "user_stats.views_10m" in summary.fast_features
    assert "user_stats.items_30m" in summary.fast_features
    for column in fast.column_names:
        assert fast[column].to_pylist() == slow[column].to_pylist(), column
