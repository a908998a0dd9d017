"""The consistency check on the in-process stages: every value the online store served matches
the builder's as-served recomputation; a corrupted item, or an event the log shows applied
twice, makes the share of its features fall."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from fastbreak.engine import MemorySink
from fastbreak.engine.layout import compact_state
from fastbreak.offline.consistency import (
    ConsistencyError,
    ConsistencyRequest,
    check_consistency,
)
from localplatform.kinesis_events import StreamRecord, lambda_record
from localplatform.memory_dynamodb import MemoryDynamoDB, state_text
from tests.fixtures.offline import (
    MINUTE,
    OFFLINE_CATALOG,
    T0,
    Sent,
    document,
    stream_records,
    write_raw_table,
)
from tests.fixtures.two_stages import TwoStages

SHARDS = ("shardId-000000000000", "shardId-000000000001")


class Clock:
    """The stages' clock: when a batch's writes become visible."""

    def __init__(self) -> None:
        self.now_ms = T0

    def __call__(self) -> int:
        return self.now_ms


def workload() -> list[StreamRecord]:
    rng = random.Random(5)
    sent = []
    for n in range(600):
        time_ms = T0 + rng.randrange(40 * MINUTE)
        user, item = f"u{rng.randrange(12)}", f"i{rng.randrange(8)}"
        body = document(rng.choice(["view", "buy"]), f"e{n}", time_ms, user_id=user,
                        item_id=item, amount=rng.randint(1, 20) / 2)
        delay = rng.choice([rng.randint(100, 20_000)] * 9 + [rng.randint(2, 9) * MINUTE])
        shard = SHARDS[zlib.crc32(user.encode()) % 2]
        sent.append(Sent(json.dumps(body).encode(), time_ms + delay, shard))
    return stream_records(sent)


def run(folder: Path) -> tuple[MemoryDynamoDB, list[StreamRecord]]:
    """Both stages over the stream, batches in arrival order, each visible 300 ms after its
    last record arrived; the feature log kept under ``folder/features``."""
    records = workload()
    write_raw_table(records, folder / "raw")
    clock, sink = Clock(), MemorySink()
    stages = TwoStages(sink=sink, catalog=OFFLINE_CATALOG, clock_ms=clock)
    batches = []
    for shard in SHARDS:
        ordered = [r for r in records if r.shard_id == shard]
        batches += [ordered[i:i + 15] for i in range(0, len(ordered), 15)]
    for batch in sorted(batches, key=lambda b: b[-1].arrival):
        clock.now_ms = round(batch[-1].arrival * 1000) + 300
        result = stages.process([lambda_record(record) for record in batch])
        assert result.failed_sequence_numbers == []
    for key, body in sink.objects.items():
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    return stages.table, records


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MemoryDynamoDB]:
    folder = tmp_path_factory.mktemp("consistency")
    table, _ = run(folder)
    return folder, table


def request(folder: Path, **overrides: Any) -> ConsistencyRequest:
    settings: dict[str, Any] = {
        "raw": str(folder / "raw"), "feature_log": str(folder / "features"), "table": "online",
        "since_ms": T0, "until_ms": T0 + 60 * MINUTE, "sample": 50,
    }
    settings.update(overrides)
    return ConsistencyRequest(**settings)


def test_every_value_the_store_served_matches_the_builder_as_served(
    platform: tuple[Path, MemoryDynamoDB],
) -> None:
    folder, table = platform
    report = check_consistency(request(folder), table, OFFLINE_CATALOG)
    assert report.entities == 12 + 8 and report.skipped == {}
    assert report.checked > 100 and report.rate == 1.0 and report.mismatches == []
    names = {f.feature for f in report.features}
    assert "user_stats.views_10m" in names and "item_stats.volume_tumbling_5m" in names
    assert not any(name.endswith("_lifetime") for name in names)  # unbounded: left out


def test_lifetime_features_are_checked_when_asked(platform: tuple[Path, MemoryDynamoDB]) -> None:
    folder, table = platform
    report = check_consistency(request(folder, all_windows=True, groups=("user_stats",)),
                               table, OFFLINE_CATALOG)
    assert "user_stats.top_items_lifetime" in {f.feature for f in report.features}
    assert report.rate == 1.0


def test_a_corrupted_item_makes_its_features_diverge(tmp_path: Path) -> None:
    table, _ = run(tmp_path)
    key = ("user#u3", "user_stats")
    item = table.items[key]
    tiles = json.loads(state_text(item))
    for section in tiles.values():  # one more view in every tile: an event counted twice
        for slots in section.values():
            if "views" in slots:
                slots["views"][1] += 1
    state = compact_state(json.dumps(tiles, separators=(",", ":")))
    item["state"] = {"S": state} if isinstance(state, str) else {"B": state}  # same version
    report = check_consistency(request(tmp_path), table, OFFLINE_CATALOG)
    rates = {f.feature: f.rate for f in report.features}
    assert rates["user_stats.views_10m"] < 1.0 and rates["user_stats.spend_30m"] == 1.0
    assert report.lowest_rate < 1.0
    assert {m.entity_key for m in report.mismatches} == {"u3"}
    assert report.mismatches[0].feature.startswith("user_stats.views_")


def test_an_item_written_after_the_log_was_read_is_not_judged(tmp_path: Path) -> None:
    table, _ = run(tmp_path)
    table.items[("user#u3", "user_stats")]["v"] = {"N": "999"}
    report = check_consistency(request(tmp_path, groups=("user_stats",)), table,
                               OFFLINE_CATALOG)
    assert report.skipped == {"written since the log was read": 1}
    assert report.rate == 1.0 and report.entities == 11


@pytest.mark.parametrize(("overrides", "message"), [
    ({"groups": ("nope",)}, "unknown feature group 'nope'"),
    ({"feature_log": "/nonexistent/features"}, "cannot read feature log /nonexistent/features"),
    ({"raw": "/nonexistent/raw"}, "cannot read raw table /nonexistent/raw"),
])
def test_bad_input_names_the_fault(platform: tuple[Path, MemoryDynamoDB],
                                   overrides: dict[str, Any], message: str) -> None:
    folder, table = platform
    with pytest.raises(ConsistencyError, match=message):
        check_consistency(request(folder, **overrides), table, OFFLINE_CATALOG)


def test_the_check_runs_without_numpy_or_pandas_as_its_lambda_asset_ships_it(
    platform: tuple[Path, MemoryDynamoDB],
) -> None:
    folder, _ = platform
    # The consistency check's asset carries pyarrow and DuckDB, not numpy or pandas.
    code = f"""
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("numpy", "pandas"):
            raise ImportError(name + " is not in the Lambda asset")
sys.meta_path.insert(0, Absent())
from pathlib import Path
from tests.functional.test_consistency import request, run
from fastbreak.offline.consistency import check_consistency
from tests.fixtures.offline import OFFLINE_CATALOG
table, _ = run(Path({str(folder / "again")!r}))
report = check_consistency(request(Path({str(folder / "again")!r})), table, OFFLINE_CATALOG)
print(report.checked, report.rate, "numpy" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    checked, rate, numpy = done.stdout.split()
    assert int(checked) > 100 and rate == "1.0" and numpy == "False"
