"""training_set: 10M raw events x 1M spine rows, every ``user_engagement`` feature.

The builder runs as a user runs it (``python -m fastbreak training-set ... --out``), in a child
process whose wall time and peak RSS are measured (``os.wait4``), against the bare tile-first
SQL of ``bench.tile_first_baseline`` on the same files, interleaved, ``REPEATS`` times each.
The data (``bench.raw_workload``: the benchmark workload over 8 days, with late, duplicate,
future-dated and refused records; a spine whose users are drawn as the events' are) is
generated before any timing and kept in ``.bench-cache/`` for the next run.

Sizes can be lowered for a quick look: ``TRAINING_SET_EVENTS``, ``TRAINING_SET_SPINE_ROWS``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from bench.raw_workload import Workload
from bench.results_format import BenchResult

EVENTS = int(os.environ.get("TRAINING_SET_EVENTS", "10000000"))
SPINE_ROWS = int(os.environ.get("TRAINING_SET_SPINE_ROWS", "1000000"))
REPEATS = 3
TARGET_S = 12.0
TARGET_RATIO = 2.0
TARGET_PEAK_GB = 8.0
CACHE = Path(os.environ.get("FASTBREAK_BENCH_CACHE",
                            Path(__file__).resolve().parent.parent / ".bench-cache"))
# bump when bench.raw_workload changes what it writes
DATA_VERSION = 1


def run() -> list[BenchResult]:
    workload = Workload(EVENTS, SPINE_ROWS)
    raw, spine = data(workload)
    builder: list[tuple[float, int]] = []
    baseline: list[tuple[float, int]] = []
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "training-set.parquet"
        for _ in range(REPEATS):
            builder.append(child(["-m", "fastbreak", "training-set", "--spine", str(spine),
                                  "--raw", str(raw), "--features", "user_engagement",
                                  "--out", str(out)]))
            kept = _rows_kept(spine, out)
            baseline.append(child(["-m", "bench.tile_first_baseline", str(raw), str(spine),
                                   str(Path(scratch) / "baseline.parquet")]))
    seconds = statistics.median(s for s, _ in builder)
    bare = statistics.median(s for s, _ in baseline)
    peak = max(m for _, m in builder) / 1e9
    bare_peak = max(m for _, m in baseline) / 1e9
    ratio = seconds / bare
    size = f"{EVENTS:,} raw events x {SPINE_ROWS:,} spine rows"
    return [
        BenchResult(
            "training_set", round(seconds, 2),
            f"s, median of {REPEATS} ({_spread(builder)}); {size}; every spine row kept: {kept}",
            f"bare tile-first DuckDB SQL of the same counts and sums ({_spread(baseline)})",
            round(bare, 2), round(ratio, 2),
            f"<= {TARGET_S:.0f} s and <= {TARGET_RATIO:.0f}x the bare SQL",
            seconds <= TARGET_S and ratio <= TARGET_RATIO and kept,
        ),
        BenchResult(
            "training_set_peak_memory", round(peak, 2),
            f"GB peak RSS, max of {REPEATS} ({', '.join(f'{m / 1e9:.2f}' for _, m in builder)})",
            "bare tile-first DuckDB SQL", round(bare_peak, 2), round(peak / bare_peak, 2),
            f"<= {TARGET_PEAK_GB:.0f} GB", peak <= TARGET_PEAK_GB,
        ),
    ]


def data(workload: Workload) -> tuple[Path, Path]:
    """The raw table and spine of ``workload``, generated once per version and size."""
    folder = CACHE / f"training-set-v{DATA_VERSION}-{workload.events}-{workload.spine_rows}"
    done = folder / ".complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        print(f"generating {workload.events:,} raw events and {workload.spine_rows:,} spine "
              f"rows in {folder} (once)", file=sys.stderr)
        # In a child: a child's peak RSS as wait4 reports it starts from its parent's RSS at
        # the fork, and generating takes gigabytes.
        subprocess.run([sys.executable, "-m", "bench.raw_workload", "--events",
                        str(workload.events), "--spine-rows", str(workload.spine_rows),
                        "--days", str(workload.days), "--out", str(folder)],
                       check=True, stdout=subprocess.DEVNULL)
        done.touch()
    return folder / "raw", folder / "spine.parquet"


def child(args: list[str]) -> tuple[float, int]:
    """Run ``python ARGS``; its wall time (s) and peak resident memory (bytes)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    errors = process.stderr.read().decode() if process.stderr else ""
    if process.returncode != 0:
        raise RuntimeError(f"python {' '.join(args)} failed: {errors}")
    return elapsed, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def _rows_kept(spine: Path, out: Path) -> bool:
    spine_table = pq.read_table(spine)
    built = pq.read_table(out, columns=spine_table.column_names)
    return bool(built.equals(spine_table))


def _spread(runs: list[tuple[float, int]]) -> str:
    times = [s for s, _ in runs]
    return f"{min(times):.2f}-{max(times):.2f} s"
