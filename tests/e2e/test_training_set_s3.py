"""End to end on moto in server mode: the raw table, the spine and the training set all in S3,
read and written through pyarrow's S3 filesystem, as the builder runs against AWS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastbreak.cli import main
from fastbreak.definitions import CATALOG
from fastbreak.offline.builder import TrainingSetRequest, build_training_set
from fastbreak.offline.raw_files import S3Options, resolve, write_raw
from localplatform.embedded_aws import client
from tests.fixtures.offline import MINUTE, T0, Sent, document, s3_on_moto, stream_records
from tests.fixtures.raw_events import raw_rows

pytestmark = pytest.mark.e2e

BUCKET = "fastbreak-offline"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3_on_moto(BUCKET) as url:
        yield url


@pytest.fixture(scope="module")
def rows() -> list[dict[str, object]]:
    sent = []
    for n in range(120):
        user = f"u{n % 4}"
        kind = n % 3
        if kind == 0:
            body = document("content_view", f"e{n}", T0 + n * 30_000, user_id=user,
                            content_id=f"c{n % 9}", sport="nba")
        elif kind == 1:
            body = document("video_play", f"e{n}", T0 + n * 30_000, user_id=user,
                            content_id=f"c{n % 5}", game_id="g1", watch_seconds=n / 8)
        else:
            body = document("content_click", f"e{n}", T0 + n * 30_000, user_id=user,
                            content_id=f"c{n % 9}", position=n % 11)
        arrival = T0 + n * 30_000 + (2_000 if n % 10 else 3 * 3_600_000)  # some too late
        sent.append(Sent(json.dumps(body).encode(), arrival, f"shardId-00000000000{n % 2}"))
        if n % 17 == 0:
            sent.append(Sent(json.dumps(body).encode(), arrival + 4_000,
                             f"shardId-00000000000{n % 2}"))
    return raw_rows(stream_records(sent), CATALOG)


def spine() -> pa.Table:
    times = [T0 + minutes * MINUTE for minutes in (5, 20, 41, 59, 75)]
    return pa.table({
        "user_id": [f"u{n % 4}" for n in range(len(times) * 4)],
        "content_id": [f"c{n % 9}" for n in range(len(times) * 4)],
        "timestamp": pa.array([t for t in times for _ in range(4)], pa.int64()),
        "clicked": [n % 2 == 0 for n in range(len(times) * 4)],
    })


def test_a_training_set_from_s3_to_s3_equals_the_one_built_from_local_files(
    endpoint: str, rows: list[dict[str, object]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3 = S3Options(endpoint)
    write_raw(rows, f"s3://{BUCKET}/raw", CATALOG, s3)
    filesystem, path = resolve(f"s3://{BUCKET}/spines/labels.parquet", s3)
    with filesystem.open_output_stream(path) as sink:
        pq.write_table(spine(), sink)
    out = f"s3://{BUCKET}/training-sets/engagement.parquet"
    code = main(["training-set", "--spine", f"s3://{BUCKET}/spines/labels.parquet",
                 "--raw", f"s3://{BUCKET}/raw", "--features", "user_engagement",
                 "content_trending", "--out", out, "--endpoint-url", endpoint])
    err = capsys.readouterr().err
    assert code == 0, err
    filesystem, path = resolve(out, s3)
    with filesystem.open_input_file(path) as source:
        from_s3 = pq.read_table(source)

    write_raw(rows, str(tmp_path / "raw"), CATALOG)
    pq.write_table(spine(), tmp_path / "labels.parquet")
    local, summary = build_training_set(TrainingSetRequest(
        str(tmp_path / "labels.parquet"), ("user_engagement", "content_trending"),
        str(tmp_path / "raw")))
    assert from_s3.equals(local)
    assert summary.duplicates_dropped > 0
    assert from_s3["user_engagement__views_1h"].null_count < from_s3.num_rows


def test_an_unreadable_s3_raw_table_is_one_line_and_writes_nothing(
    endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pq.write_table(spine(), tmp_path / "labels.parquet")
    out = f"s3://{BUCKET}/training-sets/never.parquet"
    code = main(["training-set", "--spine", str(tmp_path / "labels.parquet"),
                 "--raw", "s3://no-such-bucket/raw", "--features", "user_engagement",
                 "--out", out, "--endpoint-url", endpoint])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot read raw table s3://no-such-bucket/raw")
    assert err.count("\n") == 1
    listed = client("s3", endpoint).list_objects_v2(Bucket=BUCKET, Prefix="training-sets/never")
    assert listed.get("KeyCount", 0) == 0
