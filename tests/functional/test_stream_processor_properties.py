"""Property tests: whatever the records and write failures, the handler never raises, and
every record ends processed, quarantined or reported as an item failure."""

from __future__ import annotations

import base64
import contextlib
import io
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastbreak.engine.hll import hash64
from fastbreak.engine.kpl import aggregate
from fastbreak.engine.layout import DEDUP_PREFIX
from fastbreak.engine.records import SourceRecord, read_source, user_records
from fastbreak.engine.rejections import Rejection
from fastbreak.engine.validation import Event
from fastbreak.handlers import stream_processor
from localplatform.kinesis_events import SEQUENCE_BASE, StreamRecord, lambda_record
from localplatform.lambda_context import LambdaContext
from localplatform.memory_dynamodb import MemoryDynamoDB, client_error

ENV = {"ONLINE_TABLE_NAME": "online", "OFFLINE_BUCKET_NAME": "offline", "WRITE_CONCURRENCY": "1"}
ARRIVAL_S = 1_795_717_900.0


class RecordingS3:
    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}

    def put_object(self, **request: Any) -> dict[str, Any]:
        self.bodies[request["Key"]] = request["Body"]
        return {}

    def lines(self, prefix: str) -> list[dict[str, Any]]:
        return [json.loads(line) for key, body in self.bodies.items() if key.startswith(prefix)
                for line in body.splitlines()]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                               max_size=3),
    max_leaves=6,
)
valid_documents = st.builds(
    lambda n, user, second, kind: {
        "event_id": f"e{n}", "event_time": f"2026-11-26T18:30:{second:02d}Z", "user_id": user,
        **kind,
    },
    st.integers(0, 30),  # small range: duplicates happen
    st.sampled_from(["u1", "u2", "u3"]),
    st.integers(0, 59),
    st.sampled_from([
        {"event_type": "content_view", "schema_version": 1, "content_id": "c1", "sport": "nba"},
        {"event_type": "push_open", "schema_version": 1, "campaign_id": "k"},
        {"event_type": "content_click", "schema_version": 1, "content_id": "c2", "position": 1},
    ]),
)
documents = st.one_of(
    valid_documents,
    valid_documents.flatmap(  # one field dropped or replaced by any JSON value
        lambda doc: st.tuples(st.sampled_from(sorted(doc)), st.none() | json_values).map(
            lambda change: {k: v for k, v in {**doc, change[0]: change[1]}.items()
                            if v is not None}
        )
    ),
    st.dictionaries(st.text(max_size=12), json_values, max_size=6),
    json_values,
)
payloads = st.one_of(
    documents.map(lambda doc: json.dumps(doc).encode()),
    st.binary(max_size=40),
    st.lists(documents, min_size=1, max_size=3).map(
        lambda docs: aggregate("pk", [json.dumps(d).encode() for d in docs])
    ),
)
mangled_envelopes = st.sampled_from(["drop-kinesis", "bad-sequence", "bad-data", "no-arrival"])


def build_records(draw_payloads: list[bytes], mangles: list[str | None]) -> list[dict[str, Any]]:
    records = []
    for index, (payload, mangle) in enumerate(zip(draw_payloads, mangles, strict=True)):
        raw = lambda_record(StreamRecord(str(SEQUENCE_BASE + index * 7), "pk", payload, ARRIVAL_S))
        if mangle == "drop-kinesis":
            del raw["kinesis"]
        elif mangle == "bad-sequence":
            raw["kinesis"]["sequenceNumber"] = "12e4"
        elif mangle == "bad-data":
            raw["kinesis"]["data"] = "%%" + base64.b64encode(payload).decode()
        elif mangle == "no-arrival":
            del raw["kinesis"]["approximateArrivalTimestamp"]
        records.append(raw)
    return records


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(st.tuples(payloads, st.none() | mangled_envelopes), min_size=1, max_size=25),
    failing_writes=st.sets(st.integers(0, 40), max_size=3),
)
def test_every_record_ends_processed_quarantined_or_reported(
    batch: list[tuple[bytes, str | None]], failing_writes: set[int]
) -> None:
    table, s3 = MemoryDynamoDB(), RecordingS3()
    writes = {"n": 0}

    def fail_some(operation: str, request: dict[str, Any]) -> None:
        if operation == "UpdateItem":
            writes["n"] += 1
            if writes["n"] in failing_writes:
                raise client_error("ValidationException", operation)

    table.fault = fail_some
    processor = stream_processor.configure(table, s3, ENV)
    records = build_records([p for p, _ in batch], [m for _, m in batch])
    with contextlib.redirect_stdout(io.StringIO()):
        response = stream_processor.handler({"Records": records}, LambdaContext())

    identifiers = [item["itemIdentifier"] for item in response["batchItemFailures"]]
    reportable = [r["kinesis"]["sequenceNumber"] for r in records
                  if "kinesis" in r and r["kinesis"]["sequenceNumber"].isdigit()
                  and "approximateArrivalTimestamp" in r["kinesis"]]
    assert all(isinstance(i, str) and i for i in identifiers)
    if identifiers:  # the lowest failure and everything after it, nothing else
        assert identifiers == reportable[reportable.index(identifiers[0]):]
    quarantined = s3.lines("quarantine/")
    applied = _remembered_ids(table)
    for raw in records:
        sequence = raw.get("kinesis", {}).get("sequenceNumber")
        if sequence in identifiers:
            continue  # reported: Lambda re-delivers it
        if any(line.get("record") == raw for line in quarantined):
            continue  # a malformed Lambda record, kept under quarantine/unattributed/
        lines = [line for line in quarantined if line.get("sequence_number") == sequence]
        if any("sub_index" not in line for line in lines):
            continue  # the whole record was refused (bad base64, corrupt KPL)
        for sub_index, event in enumerate(_user_records(processor, raw)):
            if isinstance(event, Event):
                assert hash64(event.event_id) in applied, "valid, not reported: applied"
            else:
                assert any(line["sub_index"] == sub_index for line in lines), "quarantined"


def _user_records(processor: Any, raw: dict[str, Any]) -> list[Event | Rejection]:
    source = read_source(raw, 0)
    assert isinstance(source, SourceRecord)
    decoded = user_records(source)
    assert isinstance(decoded, list)
    return [processor.admission.validator.validate(record) for record in decoded]


def _remembered_ids(table: MemoryDynamoDB) -> set[int]:
    ids: set[int] = set()
    for (pk, _), item in table.items.items():
        if pk.startswith(DEDUP_PREFIX):
            data = item["state"]["B"]
            ids.update(int.from_bytes(data[i : i + 8], "big") for i in range(0, len(data), 8))
    return ids
