"""The emulated Firehose's reading of the template: partition query and object prefixes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from localplatform.firehose import (
    UnsupportedDeliveryError,
    compile_partition_query,
    render_prefix,
)

QUERY = "{event_date: .event_time[0:10], event_hour: .event_time[11:13]}"
PREFIX = ("raw/event_date=!{partitionKeyFromQuery:event_date}/"
          "event_hour=!{partitionKeyFromQuery:event_hour}/")


def test_the_partition_query_slices_the_event_time() -> None:
    extract = compile_partition_query(QUERY)
    assert extract({"event_time": "2026-11-26T18:30:00.123Z"}) == {
        "event_date": "2026-11-26", "event_hour": "18"}


@pytest.mark.parametrize("document", [{}, {"event_time": 17}, {"event_time": "2026-11"}])
def test_a_record_without_the_partition_fields_has_no_partition(
    document: dict[str, object],
) -> None:
    assert compile_partition_query(QUERY)(document) is None


def test_a_query_the_emulator_cannot_evaluate_is_refused() -> None:
    with pytest.raises(UnsupportedDeliveryError):
        compile_partition_query("{day: .event_time | split(\"T\")[0]}")


def test_prefixes_render_partition_keys_error_types_and_timestamps() -> None:
    now = datetime(2026, 11, 26, 18, 5, tzinfo=UTC)
    keys = {"event_date": "2026-11-26", "event_hour": "17"}
    assert render_prefix(PREFIX, keys, now) == "raw/event_date=2026-11-26/event_hour=17/"
    error_prefix = "raw-errors/!{firehose:error-output-type}/!{timestamp:yyyy-MM-dd}/"
    assert render_prefix(error_prefix, {}, now, "processing-failed") == (
        "raw-errors/processing-failed/2026-11-26/")
