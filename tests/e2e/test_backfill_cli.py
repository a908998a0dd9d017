"""``fastbreak backfill`` as an operator runs it, against moto in server mode: a run, a re-run
that finds everything done, and bad input answered with one line and exit code 2."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from fastbreak.cli import USAGE_ERROR, main
from fastbreak.definitions import CATALOG
from fastbreak.engine import OnlineStore
from fastbreak.engine.cutover import CutOverRegistry, slot_keys, slot_text
from fastbreak.engine.layout import CUTOVER_REGISTRY_KEY
from fastbreak.engine.online_store import ItemWrite
from fastbreak.engine.plan import compile_plan
from fastbreak.offline.raw_files import S3Options, write_raw
from localplatform.embedded_aws import client, embedded_aws
from localplatform.stores import create_feature_stores
from tests.fixtures.offline import MINUTE, T0, Sent, document, stream_records
from tests.fixtures.raw_events import raw_rows

pytestmark = pytest.mark.e2e

TABLE, BUCKET = "fastbreak-online", "fastbreak-offline"
CUTOVER = T0 + 30 * MINUTE


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as env, embedded_aws() as url:
        for name, value in (("AWS_ACCESS_KEY_ID", "fastbreak-local"),
                            ("AWS_SECRET_ACCESS_KEY", "fastbreak-local"),
                            ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ENDPOINT_URL", url)):
            env.setenv(name, value)
        for name in ("FASTBREAK_ONLINE_TABLE", "FASTBREAK_OFFLINE_BUCKET", "FASTBREAK_RAW"):
            env.delenv(name, raising=False)
        dynamodb = client("dynamodb", url)
        create_feature_stores(dynamodb, client("s3", url), table=TABLE, bucket=BUCKET)
        # A registry as the stream processor leaves it after a release that added
        # user_affinity: its slots from CUTOVER, every other slot live since the start.
        store = OnlineStore(dynamodb, TABLE)
        slots = {slot_text(key): CUTOVER if key[0] == "user_affinity" else 0
                 for key in slot_keys(compile_plan(CATALOG))}
        store.write_many([ItemWrite(CUTOVER_REGISTRY_KEY, json.dumps(slots), "revision=1", None,
                                    None, 0, 1)])
        sent = []
        for n in range(40):
            body = document("game_follow", f"f{n}", T0 + n * MINUTE, user_id=f"u{n % 4}",
                            game_id="g1", team_id=f"t{n % 3}")
            sent.append(Sent(json.dumps(body).encode(), T0 + n * MINUTE + 2_000,
                             "shardId-000000000000"))
        write_raw(raw_rows(stream_records(sent), CATALOG), f"s3://{BUCKET}/raw", CATALOG,
                  S3Options(url))
        yield url


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["backfill", *args])
    return code, capsys.readouterr().err.strip()


def test_a_backfill_fills_the_group_and_a_second_run_finds_it_done(
    endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--groups", "user_affinity,user_engagement", "--table", TABLE, "--bucket", BUCKET]
    code, output = run([*args, "--dry-run"], capsys)
    assert code == 0, output
    assert "user_affinity: would backfill 4 slots, records before 2026-11-26T19:00:00.000Z, " \
           "4 entities" in output
    assert "user_engagement: live since the registry was created, nothing to backfill" in output
    code, output = run(args, capsys)
    assert code == 0, output
    assert "user_affinity: backfilled 4 slots with the records before " \
           "2026-11-26T19:00:00.000Z: 4 entities, 4 item writes, 0 items already done" in output
    item = client("dynamodb", endpoint).get_item(
        TableName=TABLE, Key={"pk": {"S": "user#u1"}, "sk": {"S": "user_affinity"}})["Item"]
    assert item["hw"]["S"] == f"backfill-{CUTOVER}=1.0"
    assert CutOverRegistry(OnlineStore(client("dynamodb", endpoint), TABLE)).read() is not None
    code, output = run(args, capsys)
    assert code == 0 and "4 entities, 0 item writes, 4 items already done" in output


@pytest.mark.parametrize(("args", "message"), [
    (["--groups", "nope", "--table", TABLE, "--bucket", BUCKET],
     "error: unknown feature group 'nope': the catalog has"),
    (["--groups", "user_affinity", "--bucket", BUCKET],
     "error: no online store table: pass --table or set FASTBREAK_ONLINE_TABLE"),
    (["--groups", "user_affinity", "--table", TABLE],
     "error: no offline store bucket: pass --bucket or set FASTBREAK_OFFLINE_BUCKET"),
    (["--groups", "user_affinity", "--table", "no-such-table", "--bucket", BUCKET],
     "error: cannot read table no-such-table: BatchGetItem failed"),
    (["--groups", "user_affinity", "--table", TABLE, "--bucket", BUCKET, "--raw",
      "/nonexistent/raw"], "error: cannot read raw table /nonexistent/raw: no such folder"),
    (["--groups", "user_affinity", "--table", TABLE, "--bucket", BUCKET, "--settle-minutes",
      "100000000"], "error: the raw table holds every record before the cut-over at "
                    "2026-11-26T19:00:00.000Z from"),
])
def test_bad_input_is_one_line_naming_the_fault_and_exit_2(
    endpoint: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str,
) -> None:
    code, output = run(args, capsys)
    assert code == USAGE_ERROR
    assert output.startswith(message), output
    assert "\n" not in output and "Traceback" not in output


def test_a_negative_settle_time_is_an_argument_error() -> None:
    with pytest.raises(SystemExit) as done:
        main(["backfill", "--groups", "user_affinity", "--settle-minutes", "-5"])
    assert done.value.code == 2
