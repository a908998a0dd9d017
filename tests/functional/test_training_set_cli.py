"""``python -m fastbreak training-set`` as a user runs it: the file it writes, and bad input
answered with one line naming the fault, exit code 2 and no file."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from fastbreak.cli import main
from fastbreak.definitions import CATALOG
from tests.fixtures.offline import MINUTE, T0, Sent, document, stream_records, write_raw_table

USERS = ("u1", "u2", "u3")


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("offline") / "raw"
    sent = []
    for n in range(60):
        user = USERS[n % 3]
        body = document("content_view", f"e{n}", T0 + n * MINUTE, user_id=user,
                        content_id=f"c{n % 7}", sport="nba")
        sent.append(Sent(json.dumps(body).encode(), T0 + n * MINUTE + 800, "shardId-000000000000"))
    write_raw_table(stream_records(sent), root, CATALOG)
    return root


def spine_table(times: list[Any] | None = None, **columns: Any) -> pa.Table:
    base = datetime.fromtimestamp(T0 / 1000, UTC)
    data: dict[str, Any] = {
        "user_id": ["u1", "u2", "u1", "u3"],
        "timestamp": times or [base + timedelta(minutes=m) for m in (30, 59, 0, 90)],
        "label": [1, 0, 0, 1],
    }
    data.update(columns)
    return pa.table({name: value for name, value in data.items() if value is not None})


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["training-set", *args])
    return code, capsys.readouterr().err


def test_every_spine_row_is_kept_in_order_with_a_value_and_event_time_per_feature(
    raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pq.write_table(spine_table(), tmp_path / "labels.parquet")
    out = tmp_path / "sets" / "train.parquet"
    code, err = run(["--spine", str(tmp_path / "labels.parquet"), "--raw", str(raw),
                     "--features", "user_engagement.views_1h,user_engagement.views_24h",
                     "--out", str(out)], capsys)
    assert code == 0, err
    assert err.count("\n") == 1 and err.startswith(f"wrote {out}: 4 rows, 2 features")
    table = pq.read_table(out)
    assert table.column_names == [
        "user_id", "timestamp", "label", "user_engagement__views_1h",
        "user_engagement__views_1h__event_time", "user_engagement__views_24h",
        "user_engagement__views_24h__event_time",
    ]
    assert table["label"].to_pylist() == [1, 0, 0, 1]
    # u1 views at minutes 0, 3, 6, ... (n % 3 == 0): by minute 30, the 1h window has 11
    assert table["user_engagement__views_24h"].to_pylist() == [11, 20, 1, 20]
    latest = table["user_engagement__views_24h__event_time"].to_pylist()[0]
    assert latest == datetime.fromtimestamp((T0 + 30 * MINUTE) / 1000, UTC)


def test_naive_times_are_read_in_the_zone_named(
    raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    aware = spine_table()
    paris = [t.astimezone(_zone("Europe/Paris")).replace(tzinfo=None)
             for t in aware["timestamp"].to_pylist()]
    pq.write_table(aware, tmp_path / "aware.parquet")
    pq.write_table(spine_table(times=paris), tmp_path / "naive.parquet")
    outputs = []
    for name, extra in (("aware", []), ("naive", ["--timezone", "Europe/Paris"])):
        out = tmp_path / f"{name}.out.parquet"
        code, err = run(["--spine", str(tmp_path / f"{name}.parquet"), "--raw", str(raw),
                         "--features", "user_engagement", "--out", str(out), *extra], capsys)
        assert code == 0, err
        outputs.append(pq.read_table(out).drop_columns(["timestamp"]))
    assert outputs[0].equals(outputs[1])


def test_a_csv_spine_takes_iso_times_and_keeps_keys_as_text(
    raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "labels.csv").write_text(
        "user_id,ts,label\nu1,2026-11-26T20:00:00+01:00,1\nu2,2026-11-26T19:29:00Z,0\n")
    out = tmp_path / "train.parquet"
    code, err = run(["--spine", str(tmp_path / "labels.csv"), "--raw", str(raw),
                     "--timestamp-column", "ts", "--features", "user_engagement.views_24h",
                     "--out", str(out)], capsys)
    assert code == 0, err
    assert pq.read_table(out)["user_engagement__views_24h"].to_pylist() == [11, 20]


def test_an_entity_key_can_come_from_another_column(
    raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = spine_table(user_id=None, fan=["u1", "u2", "u1", "u3"])
    pq.write_table(table, tmp_path / "labels.parquet")
    code, err = run(["--spine", str(tmp_path / "labels.parquet"), "--raw", str(raw),
                     "--key-column", "user_id=fan", "--features", "user_engagement.views_24h",
                     "--out", str(tmp_path / "out.parquet")], capsys)
    assert code == 0, err
    assert pq.read_table(tmp_path / "out.parquet")["fan"].to_pylist() == ["u1", "u2", "u1", "u3"]


def _zone(name: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def _write(table: pa.Table) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        pq.write_table(table, folder / "labels.parquet")
        return folder / "labels.parquet"
    return write


def _text(name: str, text: bytes) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        (folder / name).write_bytes(text)
        return folder / name
    return write


BAD_SPINES = {
    "no key column": (_write(spine_table(user_id=None)), "user_id"),
    "no time column": (_write(spine_table(timestamp=None)), "'timestamp'"),
    "naive times": (_write(spine_table(times=[datetime(2026, 11, 26, 19)] * 4)), "time zone"),
    "times of the wrong type": (_write(spine_table(times=[1.5, 2.5, 3.5, 4.5])), "'timestamp'"),
    "seconds, not milliseconds": (
        _write(spine_table(times=[T0 // 1000] * 4)), "epoch milliseconds"),
    "empty keys": (_write(spine_table(user_id=["u1", None, "u2", None])), "'user_id' has 2 empty"),
    "keys that are numbers": (_write(spine_table(user_id=[1, 2, 3, 4])),
                              "'user_id' must hold text"),
    "no rows": (_write(spine_table().slice(0, 0)), "has no rows"),
    "not Parquet": (_text("labels.parquet", b"PAR1 but not really"), "cannot read spine"),
    "missing": (lambda folder: folder / "absent.parquet", "no such file"),
    "csv time without zone": (_text("labels.csv", b"user_id,timestamp\nu1,2026-11-26T19:00:00\n"),
                              "without a time zone"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPINES))
def test_a_bad_spine_is_one_line_naming_the_fault_exit_2_and_no_file(
    case: str, raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, fragment = BAD_SPINES[case]
    spine = make(tmp_path)
    out = tmp_path / "train.parquet"
    code, err = run(["--spine", str(spine), "--raw", str(raw), "--features", "user_engagement",
                     "--out", str(out)], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err, err
    assert list(tmp_path.glob("*train*")) == []


@pytest.mark.parametrize(("features", "fragment"), [
    ("user_engagement.views_2h", "unknown feature 'user_engagement.views_2h'"),
    ("fan_engagement", "unknown feature 'fan_engagement'"),
])
def test_an_unknown_feature_is_named_and_an_existing_output_is_left_as_it_was(
    features: str, fragment: str, raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pq.write_table(spine_table(), tmp_path / "labels.parquet")
    out = tmp_path / "train.parquet"
    out.write_bytes(b"yesterday's set")
    code, err = run(["--spine", str(tmp_path / "labels.parquet"), "--raw", str(raw),
                     "--features", features, "--out", str(out)], capsys)
    assert code == 2 and fragment in err and err.count("\n") == 1
    assert out.read_bytes() == b"yesterday's set"


def test_a_missing_raw_table_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pq.write_table(spine_table(), tmp_path / "labels.parquet")
    code, err = run(["--spine", str(tmp_path / "labels.parquet"), "--raw", str(tmp_path / "no"),
                     "--features", "user_engagement", "--out", str(tmp_path / "o.parquet")],
                    capsys)
    assert code == 2 and "cannot read raw table" in err and not (tmp_path / "o.parquet").exists()


def test_argument_errors_exit_2_and_help_documents_the_command() -> None:
    command = [sys.executable, "-m", "fastbreak", "training-set", "--spine", "x.parquet"]
    missing = subprocess.run(command, capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "--features" in missing.stderr
    assert "Traceback" not in missing.stderr
    helped = subprocess.run([sys.executable, "-m", "fastbreak", "training-set", "--help"],
                            capture_output=True, text=True, check=False)
    assert helped.returncode == 0 and "--as-served" in helped.stdout
    assert "--timezone" in helped.stdout
    listed = subprocess.run([sys.executable, "-m", "fastbreak", "--help"],
                            capture_output=True, text=True, check=False)
    assert "training-set" in listed.stdout


def test_a_csv_without_the_time_column_is_named(
    raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pacsv.write_csv(pa.table({"user_id": ["u1"], "when": ["2026-11-26T19:00:00Z"]}),
                    tmp_path / "labels.csv")
    code, err = run(["--spine", str(tmp_path / "labels.csv"), "--raw", str(raw),
                     "--features", "user_engagement", "--out", str(tmp_path / "o.parquet")],
                    capsys)
    assert code == 2 and "no column 'timestamp'" in err and "--timestamp-column" in err
