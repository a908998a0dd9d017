"""The raw events transformation handler through its entry point, on an AWS-shaped Firehose
event kept as a fixture (a Kinesis source, one KPL sub-record, one truncated record)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from fastbreak.handlers import raw_events_transform
from localplatform.lambda_context import LambdaContext

EVENT = json.loads((Path(__file__).parent.parent / "fixtures" / "events" /
                    "firehose_kinesis_batch.json").read_text())


@pytest.fixture(autouse=True)
def cold_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "raw-events-transform")
    monkeypatch.setattr(raw_events_transform, "_transform", None)


def emf(output: str) -> dict[tuple[str, str], float]:
    """(metric, reason dimension or "") -> value, from the handler's EMF lines."""
    values: dict[tuple[str, str], float] = {}
    for line in output.splitlines():
        if line.startswith('{"_aws"'):
            blob = json.loads(line)
            for definition in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                value = blob[definition["Name"]]
                values[definition["Name"], blob.get("reason", "")] = (
                    value[0] if isinstance(value, list) else value)
    return values


def rows(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(base64.b64decode(entry["data"])) for entry in response["records"]]


def test_every_record_is_answered_ok_with_its_row_and_hour(
    capsys: pytest.CaptureFixture[str],
) -> None:
    response = raw_events_transform.handler(EVENT, LambdaContext())
    assert [entry["recordId"] for entry in response["records"]] == [
        record["recordId"] for record in EVENT["records"]]
    assert {entry["result"] for entry in response["records"]} == {"Ok"}
    view, click, truncated = rows(response)
    assert (view["event_id"], view["kinesis_sub_sequence"]) == ("view-1", 0)
    assert (click["event_id"], click["kinesis_sub_sequence"], click["position"]) == (
        "click-1", 1, 2)
    assert click["kinesis_sequence_number"] == (
        EVENT["records"][1]["kinesisRecordMetadata"]["sequenceNumber"])
    assert (truncated["rejection"], truncated["raw_payload"]) == (
        "bad_json", '{"event_type": "content_view", trunc')
    assert [entry["metadata"]["partitionKeys"] for entry in response["records"]] == [
        {"event_date": "2026-11-26", "event_hour": "18"}] * 3
    metrics = emf(capsys.readouterr().out)
    assert metrics["RawRecordsIn", ""] == 3 and metrics["RawRows", ""] == 2
    assert metrics["RawRowsRejected", ""] == 1 and metrics["RawRowsRejected", "bad_json"] == 1
    assert metrics["RawRecordsUnreadable", ""] == 0


def test_an_unreadable_record_fails_alone_and_is_logged(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    event = json.loads(json.dumps(EVENT))
    del event["records"][0]["kinesisRecordMetadata"]
    del event["records"][0]["approximateArrivalTimestamp"]
    response = raw_events_transform.handler(event, LambdaContext())
    assert [entry["result"] for entry in response["records"]] == [
        "ProcessingFailed", "Ok", "Ok"]
    assert emf(capsys.readouterr().out)["RawRecordsUnreadable", ""] == 1
    assert "records answered ProcessingFailed" in caplog.text
