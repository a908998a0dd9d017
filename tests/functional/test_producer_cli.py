"""``python -m fastbreak_producer`` as a new user meets it: settings from the environment, one-line
errors with exit code 2, and failed records reported with their error codes."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from fastbreak_producer import Producer, cli

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "events.jsonl"
STREAM = "fastbreak-events"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """A Kinesis stream in moto, and an environment with region and credentials only (what
    ``source .fastbreak/local.env`` sets, the endpoint aside)."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        kinesis = boto3.client("kinesis")
        kinesis.create_stream(StreamName=STREAM, ShardCount=1)
        yield kinesis


def errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_replay_takes_region_and_endpoint_from_the_sdk_settings(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["replay", str(EXAMPLES), "--stream-name", STREAM])

    assert code == 0
    assert errors(capsys)[-1] == (
        "accepted 5 events in 5 records, 1 PutRecords calls, 0 records retried, 0 failed"
    )


def test_no_region_is_a_one_line_error_naming_the_fix(
    aws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")

    code = cli.main(["replay", str(EXAMPLES), "--stream-name", STREAM])

    assert code == 2
    (line,) = errors(capsys)
    assert line.startswith("error: no AWS region: pass --region or set AWS_REGION")
    assert "source .fastbreak/local.env" in line


def test_a_missing_file_is_a_one_line_error(
    aws: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["replay", str(tmp_path / "events.jsonl"), "--stream-name", STREAM])

    assert code == 2
    assert errors(capsys) == [f"error: {tmp_path / 'events.jsonl'}: no such file"]


def test_a_stream_that_does_not_exist_is_a_one_line_error(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["replay", str(EXAMPLES), "--stream-name", "fastbreak-evnets"])

    assert code == 2
    (line,) = errors(capsys)
    assert line.startswith("error: stream 'fastbreak-evnets' does not exist at https://")


@pytest.mark.parametrize("arguments", [["--duration", "-5"], ["--games", "0"], ["--rate", "0"]])
def test_simulate_refuses_values_not_above_zero(
    aws: Any, arguments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["simulate", "--stream-name", STREAM, *arguments])

    assert exit_.value.code == 2
    assert "must be greater than 0" in errors(capsys)[-1]


class RefusingKinesis:
    """PutRecords that refuses every record, alternating two error codes."""

    meta = type("Meta", (), {"endpoint_url": "http://kinesis.test"})()

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        codes = ["ProvisionedThroughputExceededException", "InternalFailure"]
        return {"FailedRecordCount": len(Records), "Records": [
            {"ErrorCode": codes[index % 2], "ErrorMessage": "no"}
            for index, _ in enumerate(Records)
        ]}


def test_records_kinesis_keeps_refusing_are_reported_with_their_error_codes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_kinesis", lambda args: RefusingKinesis())
    monkeypatch.setattr(cli, "Producer", functools.partial(Producer, sleep=lambda seconds: None))
    events = [json.loads(line) for line in EXAMPLES.read_text().splitlines()][:3]
    replay = tmp_path / "three.jsonl"
    replay.write_text("".join(json.dumps(event) + "\n" for event in events))

    code = cli.main(["replay", str(replay), "--stream-name", STREAM])

    assert code == 1
    assert errors(capsys)[-1] == (
        "accepted 0 events in 0 records, 8 PutRecords calls, 21 records retried, 3 failed "
        "(ProvisionedThroughputExceededException: 2, InternalFailure: 1; "
        "first: 3f6c2a1e-0001, 3f6c2a1e-0002, 3f6c2a1e-0003)"
    )
