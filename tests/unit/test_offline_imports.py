"""The Lambda asset stays light: handlers and the pure offline modules import no DuckDB, pyarrow
or rich (the training-set builder's engines load them when they run), and the builder runs as
served without numpy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("duckdb", "pyarrow", "rich")


@pytest.mark.parametrize("modules", [
    ("fastbreak.handlers.stream_processor", "fastbreak.handlers.feature_api"),
    ("fastbreak.offline.raw", "fastbreak.offline.replay", "fastbreak.offline.reference",
     "fastbreak.offline.selection", "fastbreak.offline.engines", "fastbreak.cli"),
])
def test_importing_loads_no_heavy_package(modules: tuple[str, ...]) -> None:
    code = (f"import sys; import {', '.join(modules)}; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
    assert found.stdout.strip() == "[]", found.stdout


def test_an_as_served_build_runs_without_numpy(tmp_path: Path) -> None:
    """The consistency check's Lambda builds as served, and its asset carries no numpy (only
    the event-time SQL path uses it)."""
    code = f"""
import sys
sys.modules["numpy"] = None  # importing it now fails, as in the Lambda asset
import json
import pyarrow as pa, pyarrow.parquet as pq
from fastbreak.offline.builder import TrainingSetRequest, build_training_set
from tests.fixtures.offline import OFFLINE_CATALOG, T0, Sent, document, stream_records
from tests.fixtures.offline import write_raw_table
folder = {str(tmp_path)!r}
sent = [Sent(json.dumps(document("view", f"e{{n}}", T0 + n, user_id="u1", item_id="i1",
                                 amount=1.0)).encode(), T0 + n + 500, "shardId-000000000000")
        for n in range(3)]
write_raw_table(stream_records(sent), folder + "/raw")
pq.write_table(pa.table({{"user_id": ["u1"], "timestamp": [T0 + 10_000]}}),
               folder + "/spine.parquet")
table, _ = build_training_set(TrainingSetRequest(
    folder + "/spine.parquet", ("user_stats.views_lifetime",), folder + "/raw",
    as_served=True), catalog=OFFLINE_CATALOG)
print(table["user_stats__views_lifetime"].to_pylist())
"""
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=False, cwd=Path(__file__).resolve().parents[2])
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[3]"
