"""Property tests: whatever the records and write failures, the handler never raises, every
record ends processed, quarantined or reported as an item failure, and every batching of the
same records, through both stages, ends in the same state."""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastbreak.definitions import CATALOG
from fastbreak.engine import (
    AudienceMerger,
    ItemMerge,
    MemorySink,
    OnlineStore,
    PartialsSink,
    RetryPolicy,
    StreamProcessor,
    audience,
    dedup,
    item_size,
)
from fastbreak.engine.dedup import identity_hash, unpack
from fastbreak.engine.kpl import aggregate
from fastbreak.engine.layout import DEDUP_PREFIX, OUTBOX_PREFIX
from fastbreak.engine.plan import FUTURE_TOLERANCE_SECONDS, compile_plan
from fastbreak.engine.records import SourceRecord, read_source, user_records
from fastbreak.engine.rejections import Rejection
from fastbreak.engine.timestamps import format_ms
from fastbreak.engine.validation import Event
from fastbreak.handlers import stream_processor
from localplatform.kinesis_events import SEQUENCE_BASE, StreamRecord, json_bytes, lambda_record
from localplatform.lambda_context import LambdaContext
from localplatform.memory_dynamodb import MemoryDynamoDB, client_error, state_text
from localplatform.memory_kinesis import MemoryKinesis

ENV = {"ONLINE_TABLE_NAME": "online", "OFFLINE_BUCKET_NAME": "offline", "WRITE_CONCURRENCY": "1",
       "PARTIALS_STREAM_NAME": "partials"}
ARRIVAL_S = 1_795_717_900.0
PLAN = compile_plan(CATALOG)



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
    processor = stream_processor.configure(table, s3, ENV, kinesis=MemoryKinesis())
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
                assert identity_hash(event.event_id, event.time_ms) in applied, "applied"
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
        if pk.startswith(DEDUP_PREFIX) and "/" not in pk:
            data = item["state"]["B"]
            ids.update(int.from_bytes(data[i : i + 8], "big") for i in range(0, len(data), 8))
    return ids


# ---- batch boundaries ------------------------------------------------------------------------
# The same records, delivered in one batch or in random batches with the retries and bisections
# that failures cause, end in the same online state, the same dedup memory and the same
# quarantine. Poison is in the mix: lone surrogates, an empty KPL aggregate, an integer past 64
# bits, an event id reused with another event time, producer copies, events late for some or
# every group, events whose values take an item past the (lowered) item limit, and many events
# sharing one event time (a frozen clock) with a dedup item that holds three ids.
T0_MS = 1_795_717_800_000
SHARD = "shardId-000000000000"


class SimulatedCrash(BaseException):
    """The execution environment dies mid-batch: nothing in the handler may catch it."""


def _view(user: str, n: int, second: int, sport: str = "nba") -> dict[str, Any]:
    return {
        "event_type": "content_view", "schema_version": 2, "event_id": f"{user}-{n}",
        "event_time": format_ms(T0_MS + second * 1000), "user_id": user,
        "content_id": f"c{n % 3}", "sport": sport, "surface": "home",
    }


# Event times over two and a half hours before the arrivals: late for some groups, and far
# enough apart that older tiles expire as newer events come in.
event_seconds = st.integers(-150 * 60, 59)


@st.composite
def user_records_in_order(draw: st.DrawFn) -> list[tuple[bytes, int]]:
    """(payload, arrival delay in s after T0) per user record, in stream order."""
    produced: list[tuple[bytes, int]] = []
    sent: list[dict[str, Any]] = []
    for step in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from([
            "view", "view", "view", "frozen", "copy", "reused-id", "late", "very-late",
            "long-value", "surrogate", "big-int",
        ]))
        user = draw(st.sampled_from(["u1", "u2"]))
        if kind == "copy" and sent:
            produced.append((json_bytes(draw(st.sampled_from(sent))), 70))
            continue
        if kind == "reused-id" and sent:
            document = dict(draw(st.sampled_from(sent)))
            document["event_time"] = format_ms(T0_MS + draw(event_seconds) * 1000)
        elif kind == "surrogate":
            document = _view(user, step, 5, sport="nba\ud800")
        elif kind == "big-int":
            document = {"event_type": "content_click", "schema_version": 1,
                        "event_id": f"k{step}", "event_time": format_ms(T0_MS),
                        "user_id": user, "content_id": "c1", "position": 2**64}
        elif kind == "long-value":
            document = _view(user, step, draw(event_seconds), sport="s" * 300 + str(step))
        else:
            document = _view(user, step, 7 if kind == "frozen" else draw(event_seconds))
        delay = {"late": 45 * 60, "very-late": 3 * 3600}.get(kind, 60)
        produced.append((json.dumps(document).encode(), delay))
        sent.append(document)
    return produced


def _stream(user_records: list[tuple[bytes, int]], draw_kpl: list[bool]) -> list[StreamRecord]:
    """One Kinesis record per user record, or a KPL aggregate of it and the next ones of the
    same arrival; an empty aggregate in the middle."""
    stream: list[StreamRecord] = []
    index = 0
    while index < len(user_records):
        payload, delay = user_records[index]
        run = [payload]
        if draw_kpl[index % len(draw_kpl)]:
            while (index + len(run) < len(user_records) and len(run) < 3
                   and user_records[index + len(run)][1] == delay):
                run.append(user_records[index + len(run)][0])
        index += len(run)
        data = aggregate("pk", run) if len(run) > 1 else payload
        arrival = T0_MS / 1000 + delay
        stream.append(StreamRecord(str(SEQUENCE_BASE + len(stream) * 10), "pk", data, arrival))
        if len(stream) == 2:
            stream.append(StreamRecord(str(SEQUENCE_BASE + 15), "pk", aggregate("pk", []),
                                       arrival))
    return stream


class _Faults:
    """Counts the writes of both stages (DynamoDB writes, the outbox's puts and deletes, the
    partials stream's PutRecords) and fails or crashes the chosen ones."""

    def __init__(self, failing: set[int], crashing: set[int]) -> None:
        self.failing, self.crashing, self.writes = failing, crashing, 0

    def dynamodb(self, operation: str, request: dict[str, Any]) -> None:
        if operation in ("UpdateItem", "PutItem", "DeleteItem"):
            self._next(operation)

    def kinesis(self, entries: list[dict[str, Any]]) -> set[int]:
        self._next("PutRecords", throttle=True)
        return set()

    def _next(self, operation: str, throttle: bool = False) -> None:
        self.writes += 1
        if self.writes in self.crashing:
            raise SimulatedCrash
        if self.writes in self.failing:
            raise client_error(
                "ProvisionedThroughputExceededException" if throttle else "ValidationException",
                operation)


class _FaultySink(MemorySink):
    def __init__(self, failing: set[int]) -> None:
        super().__init__()
        self.failing, self.puts = failing, 0

    def put(self, key: str, body: bytes) -> None:
        self.puts += 1
        if self.puts in self.failing:
            raise OSError("S3 refused the object")
        super().put(key, body)


Process = Callable[[list[dict[str, Any]]], list[str]]


def _deliver_all(stream: list[StreamRecord], sizes: list[int], process: Process) -> None:
    """Lambda's poller for one shard: new boundaries on every call, resume at the lowest
    reported failure, bisect a batch whose invocation died."""
    calls = itertools.count()

    def deliver(batch: list[StreamRecord]) -> int:
        assert next(calls) < 500, "no progress"
        try:
            failed = process([lambda_record(record) for record in batch])
        except SimulatedCrash:
            if len(batch) == 1:
                return 0
            half = len(batch) // 2
            done = deliver(batch[:half])
            return done if done < half else half + deliver(batch[half:])
        if not failed:
            return len(batch)
        numbers = [record.sequence_number for record in batch]
        assert failed == numbers[numbers.index(failed[0]):]
        return numbers.index(failed[0])

    position = 0
    for size in itertools.cycle(sizes):
        if position >= len(stream):
            return
        position += deliver(stream[position : position + size])


def _run(stream: list[StreamRecord], sizes: list[int], faults: _Faults | None,
         sink: MemorySink) -> MemoryDynamoDB:
    """Both stages: stage 1 over the stream, then after each of its deliveries the audience
    stage over what the partials stream holds, each with its own batch boundaries."""
    table, kinesis = MemoryDynamoDB(), MemoryKinesis(2)
    if faults is not None:
        table.fault, kinesis.fault = faults.dynamodb, faults.kinesis
    store = OnlineStore(table, "online", RetryPolicy(max_attempts=2, sleep=lambda _: None),
                        concurrency=1)
    clock = lambda: T0_MS + 7200_000  # noqa: E731
    stage1 = StreamProcessor(store, sink, CATALOG, clock_ms=clock,
                             partials=PartialsSink(kinesis, "partials", store.retry))
    stage2 = AudienceMerger(store, sink, CATALOG, clock_ms=clock)
    pending: dict[str, list[StreamRecord]] = {shard: [] for shard in kinesis.shard_ids}

    def stage1_then_audience(records: list[dict[str, Any]]) -> list[str]:
        try:
            return stage1.process(records).failed_sequence_numbers
        finally:  # the audience stage's mapping runs on whatever got emitted
            for shard in kinesis.shard_ids:
                pending[shard] += kinesis.take(shard)
                partials, pending[shard] = pending[shard], []
                _deliver_all(partials, list(reversed(sizes)),
                             lambda batch: stage2.process(batch).failed_sequence_numbers)

    _deliver_all(stream, sizes, stage1_then_audience)
    return table


def _outcome(table: MemoryDynamoDB, sink: MemorySink) -> tuple[Any, ...]:
    """What every batching must end with: the state of each user group item, and for each
    audience group of an entity, its tiles merged over the entity's items (which of them holds
    a tile depends on when it outgrew the entity item: on the batching), each tile in one."""
    state: dict[tuple[str, str], Any] = {}
    audience: dict[tuple[str, str], list[Any]] = {}
    for key, item in table.items.items():
        if key[0].startswith((DEDUP_PREFIX, OUTBOX_PREFIX)):
            continue
        group = key[1].split("#", 1)[0]
        if group in PLAN.groups and PLAN.groups[group].sharded:
            audience.setdefault((key[0], group), []).append(item)
        else:
            state[key] = (json.loads(state_text(item)), item["t"]["N"])
    for (pk, group), items in audience.items():
        merge = ItemMerge(PLAN.groups[group], {})
        held: list[tuple[str, str]] = []
        for item in items:
            tiles = json.loads(state_text(item))
            held += [(section, start) for section, found in tiles.items() for start in found]
            merge.merge(tiles)
        assert len(held) == len(set(held)), f"a tile of {pk} {group} is in two items"
        merge.finish(FUTURE_TOLERANCE_SECONDS)
        state[(pk, group)] = (merge.tiles, max(int(item["t"]["N"]) for item in items))
    remembered: set[int] = set()
    for key, item in table.items.items():
        if key[0].startswith(DEDUP_PREFIX):
            held = unpack(item["state"]["B"])
            assert len(held) <= dedup.LEAF_CAPACITY
            if "/" not in key[0]:  # stage 1's: the audience stage's depends on the batching
                remembered |= held
    pending = [key for key in table.items if key[0].startswith(OUTBOX_PREFIX)
               and "#" not in key[0][len(OUTBOX_PREFIX):]]
    assert pending == []
    quarantined = {
        (line.get("sequence_number"), line.get("sub_index"), line["reason"],
         tuple(line.get("groups", ())))
        for key, body in sink.objects.items() if key.startswith("quarantine/")
        for line in map(json.loads, body.decode().splitlines())
    }
    return state, remembered, quarantined


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    user_records=user_records_in_order(),
    kpl=st.lists(st.booleans(), min_size=1, max_size=5),
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    failing=st.sets(st.integers(1, 60), max_size=4),
    crashing=st.sets(st.integers(1, 60), max_size=3),
    failing_puts=st.sets(st.integers(1, 20), max_size=3),
)
def test_every_batching_gives_the_same_state_memory_and_quarantine(
    user_records: list[tuple[bytes, int]], kpl: list[bool], sizes: list[int],
    failing: set[int], crashing: set[int], failing_puts: set[int],
) -> None:
    stream = _stream(user_records, kpl)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(item_size, "MAX_ITEM_BYTES", 2000)
        patch.setattr(dedup, "LEAF_CAPACITY", 3)
        # tiles outgrow an entity item after a few events: where each lives varies by batching
        patch.setattr(audience, "ENTITY_ITEM_BYTES", 400)
        whole_sink = MemorySink()
        whole_table = _run(stream, [len(stream)], None, whole_sink)
        sink = _FaultySink(failing_puts)
        table = _run(stream, sizes, _Faults(failing, crashing - failing), sink)
        assert _outcome(table, sink) == _outcome(whole_table, whole_sink)
