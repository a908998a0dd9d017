"""The demo's last step: the offline half on its own offline store, kept on disk.

A training set of ``user_engagement`` for every fan seen, at three moments of the run, built from
the exported raw table with the training-set builder; and the online/offline consistency figure:
the share of the values the online store served during the run that the builder recomputes
exactly (``fastbreak.offline.consistency``), from the same raw table and the exported feature log.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fastbreak.definitions import CATALOG
from fastbreak.offline.builder import TrainingSetRequest, build_training_set
from fastbreak.offline.consistency import ConsistencyRequest, check_consistency
from fastbreak.offline.raw_files import open_raw
from localplatform.platform import LocalPlatform

TRAINING_SET_GROUP = "user_engagement"
TRAINING_SET_FILE = Path("training-sets") / "demo-user-engagement.parquet"
SPINE_FILE = Path("training-sets") / "demo-spine.parquet"


def training_set(offline: Path, started_ms: int, ended_ms: int) -> dict[str, Any]:
    """Every fan of the raw table at a third, two thirds and the end of the run: their
    ``user_engagement`` features as the feature API would have answered then."""
    raw = open_raw(str(offline / "raw"), CATALOG).to_table(
        columns=["user_id"], filter=pc.field("rejection").is_null())
    users = sorted(u for u in pc.unique(raw["user_id"]).to_pylist() if u is not None)
    moments = [started_ms + (ended_ms - started_ms) * k // 3 for k in (1, 2, 3)]
    spine = offline / SPINE_FILE
    spine.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "user_id": pa.array([u for u in users for _ in moments], pa.string()),
        "timestamp": pa.array([m for _ in users for m in moments], pa.int64()),
    }), spine)
    out = offline / TRAINING_SET_FILE
    started = time.perf_counter()
    table, summary = build_training_set(TrainingSetRequest(
        spine=str(spine), features=(TRAINING_SET_GROUP,), raw=str(offline / "raw"),
        out=str(out)))
    values = [name for name in table.column_names
              if name.startswith(f"{TRAINING_SET_GROUP}__") and not name.endswith("__event_time")]
    filled = sum(table[name].length() - table[name].null_count for name in values)
    return {"path": str(out), "rows": table.num_rows, "features": len(summary.features),
            "values_not_null": filled, "seconds": round(time.perf_counter() - started, 1)}


def consistency(platform: LocalPlatform, offline: Path, since_ms: int, until_ms: int
                ) -> dict[str, Any]:
    """The share of the values served during the run that the builder recomputes exactly."""
    report = check_consistency(ConsistencyRequest(
        raw=str(offline / "raw"), feature_log=str(offline / "features"),
        table=platform.table_name, since_ms=since_ms, until_ms=until_ms,
    ), platform.client("dynamodb"), CATALOG)
    return {"rate": report.rate, "lowest_rate": report.lowest_rate, "values": report.checked,
            "matched": report.matched, "entities": report.entities,
            "features": len([f for f in report.features if f.checked]),
            "skipped": report.skipped, "seconds": round(report.seconds, 1)}
