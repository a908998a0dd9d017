"""The raw table's rows: the processor's own admission of each record, with its position."""

from __future__ import annotations

import json

from fastbreak.definitions import CATALOG
from fastbreak.engine.admission import Admission
from fastbreak.engine.records import SourceRecord, UserRecord
from fastbreak.engine.timestamps import format_ms
from fastbreak.offline.raw import METADATA_COLUMNS, raw_columns, raw_row

ADMISSION = Admission(CATALOG)
ARRIVAL_MS = 1_795_717_800_000
SEQUENCE = "4959033827149025660855969253836157109592157598913658889812"


def record(document: dict[str, object] | bytes, sub_index: int = 0) -> UserRecord:
    payload = document if isinstance(document, bytes) else json.dumps(document).encode()
    source = SourceRecord(0, SEQUENCE, int(SEQUENCE), "shardId-000000000003", "user-1",
                          ARRIVAL_MS, "")
    return UserRecord(source, sub_index, payload)


def view(**overrides: object) -> dict[str, object]:
    return {"event_type": "content_view", "schema_version": 1, "event_id": "e-1",
            "event_time": format_ms(ARRIVAL_MS - 1_000), "user_id": "user-1",
            "content_id": "article-1", "sport": "soccer", **overrides}


def test_a_valid_event_is_stored_upcast_with_its_kinesis_position_and_arrival() -> None:
    user_record = record(view(), sub_index=4)
    row = raw_row(user_record, ADMISSION.admit(user_record))
    assert row["rejection"] is None and row["raw_payload"] is None
    assert row["schema_version"] == 1, "the version the producer wrote"
    assert row["surface"] == "unknown", "upcast to v2 with its default, as the processor folds it"
    assert row["event_time"] == format_ms(ARRIVAL_MS - 1_000)
    assert (row["kinesis_shard_id"], row["kinesis_sequence_number"], row["kinesis_sub_sequence"]
            ) == ("shardId-000000000003", SEQUENCE, 4)
    assert row["kinesis_arrival_time"] == format_ms(ARRIVAL_MS)
    assert set(row) <= {name for name, _ in raw_columns(CATALOG)}


def test_a_refused_record_keeps_its_bytes_and_the_processors_reason() -> None:
    for payload, reason in (
        (b"{not json", "bad_json"),
        (json.dumps(view(position="x")).encode(), None),  # unknown fields are ignored
        (json.dumps(view(user_id=7)).encode(), "wrong_type"),
        (json.dumps(view(event_time=format_ms(ARRIVAL_MS + 301_000))).encode(),
         "event_time_in_future"),
    ):
        user_record = record(payload)
        row = raw_row(user_record, ADMISSION.admit(user_record))
        assert row["rejection"] == reason
        if reason is not None:
            assert row["raw_payload"] == payload.decode()
            assert "event_id" not in row


def test_the_metadata_columns_follow_the_catalogs_own() -> None:
    names = [name for name, _ in raw_columns(CATALOG)]
    assert names[: len(CATALOG.offline_columns())] == [n for n, _ in CATALOG.offline_columns()]
    assert names[-len(METADATA_COLUMNS):] == [name for name, _ in METADATA_COLUMNS]
    assert len(set(names)) == len(names)
