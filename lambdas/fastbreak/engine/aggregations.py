"""Mergeable aggregation states.

A state is a small list whose first element is the newest event time (epoch ms) folded into it,
so every served value can carry its event time and age. ``add`` folds one event in place (the
hot path); ``merge`` combines two partial states into a new one (read time: tiles and per-shard
partials). Every merge is associative and commutative, sums are exact (``Sum``), and ties are
broken on the event id, so the result does not depend on the order in which shards, tiles or
batches are combined.

States are stored as JSON (``dump``/``load``); ``last`` and ``last_n`` keep values as given.

``fold_step`` is ``add`` as the processor's hot loop calls it: one closure per slot that finds
or creates the slot's state in a tile and folds one event in. The common aggregations inline
their ``add`` there (one Python call per event and slot instead of three); a test holds every
step to ``add``'s result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from fastbreak.definitions.model import Aggregation
from fastbreak.engine.hll import REGISTERS, HyperLogLog

State = list[Any]
# step(tile states by slot name, event payload, event time ms, event id)
Step = Callable[[dict[str, State], dict[str, Any], int, str], None]

# Sizing estimates for ``max_state_bytes``: a value as stored in a state (an id, a team, a
# number), and a state's own overhead (brackets, the event time, an event id).
VALUE_BYTES = 128
_STATE_BYTES = 64
_EVENT_ID_BYTES = 130  # at most 128 characters, quoted


class Aggregator(Protocol):
    def empty(self) -> State: ...

    def add(self, state: State, value: Any, time_ms: int, event_id: str) -> None: ...

    def merge(self, left: State, right: State) -> State: ...

    def result(self, state: State) -> Any: ...

    def dump(self, state: State) -> Any: ...

    def load(self, data: Any) -> State: ...

    def fold_step(self, name: str, field: str | None) -> Step: ...

    @property
    def max_state_bytes(self) -> int:
        """The largest JSON a state grows to (values of ``VALUE_BYTES``): sizes items."""
        ...


class _Folding:
    """The generic ``fold_step``: ``add`` the field's value (or the event time when the slot
    has no field); an event without the field leaves the slot alone."""

    def fold_step(self, name: str, field: str | None) -> Step:
        add: Callable[[State, Any, int, str], None] = self.add  # type: ignore[attr-defined]
        empty: Callable[[], State] = self.empty  # type: ignore[attr-defined]

        def step(states: dict[str, State], payload: dict[str, Any], time_ms: int,
                 event_id: str) -> None:
            value = time_ms if field is None else payload.get(field)
            if value is None:
                return
            state = states.get(name)
            if state is None:
                state = states[name] = empty()
            add(state, value, time_ms, event_id)

        return step


class _JsonState(_Folding):
    """States that are plain JSON lists already."""

    max_state_bytes = _STATE_BYTES + VALUE_BYTES  # overridden where a state holds more

    def dump(self, state: State) -> Any:
        return state

    def load(self, data: Any) -> State:
        return list(data)


class Count(_JsonState):
    def empty(self) -> State:
        return [0, 0]

    def add(self, state: State, value: Any, time_ms: int, event_id: str) -> None:
        state[1] += 1
        if time_ms > state[0]:
            state[0] = time_ms

    def merge(self, left: State, right: State) -> State:
        return [max(left[0], right[0]), left[1] + right[1]]

    def result(self, state: State) -> Any:
        return state[1]

    def fold_step(self, name: str, field: str | None) -> Step:
        if field is not None:  # counts events that carry the field
            return super().fold_step(name, field)

        def step(states: dict[str, State], payload: dict[str, Any], time_ms: int,
                 event_id: str) -> None:
            state = states.get(name)
            if state is None:
                states[name] = [time_ms if time_ms > 0 else 0, 1]
            else:
                state[1] += 1
                if time_ms > state[0]:
                    state[0] = time_ms

        return step


def exact(value: int | float) -> tuple[int, int]:
    """``(m, e)`` with ``value == m * 2**e`` exactly, ``e <= 0`` (every finite double is one)."""
    if type(value) is int:
        return value, 0
    numerator, denominator = value.as_integer_ratio()  # the denominator is a power of two
    return numerator, 1 - denominator.bit_length()


def add_exact(state: State, value: int | float, at: int = 1) -> None:
    """Add ``value`` exactly to the sum ``m * 2**e`` held in ``state[at]``, ``state[at + 1]``."""
    m, e = exact(value)
    held = state[at + 1]
    if e >= held:
        state[at] += m << (e - held)
    else:
        state[at] = (state[at] << (held - e)) + m
        state[at + 1] = e


def merge_exact(left: State, right: State, at: int = 1) -> tuple[int, int]:
    lm, le, rm, re = left[at], left[at + 1], right[at], right[at + 1]
    return (lm + (rm << (re - le)), le) if re >= le else ((lm << (le - re)) + rm, re)


def canonical_exact(m: int, e: int) -> tuple[int, int]:
    """The one ``(m, e)`` of a value: ``e == 0``, or ``e < 0`` and ``m`` odd."""
    if m == 0:
        return 0, 0
    shift = min((m & -m).bit_length() - 1, -e)
    return m >> shift, e + shift


def exact_to_float(m: int, e: int) -> float | None:
    """``m * 2**e`` correctly rounded (Python's int division is); None beyond the double
    range, which no JSON answer or Parquet column can carry."""
    try:
        return m / (1 << -e) if e < 0 else float(m)
    except OverflowError:
        return None


class Sum(_JsonState):
    """An exact sum: ``[time, m, e]`` holds ``m * 2**e``, the sum of the values with no rounding.

    Floating-point addition is not associative, so a rounded running sum would depend on how
    events were batched, on the order in which shards' partials or tiles are merged, and on the
    engine (Lambda, DuckDB, Spark). An exact sum is the same whatever the grouping; the served
    value is rounded once, at read time. ``floating``: the field is a double, served as a float
    (an int field's sum stays an int).
    """

    def __init__(self, floating: bool = False) -> None:
        self.floating = floating

    def empty(self) -> State:
        return [0, 0, 0]

    def add(self, state: State, value: Any, time_ms: int, event_id: str) -> None:
        add_exact(state, value)
        if time_ms > state[0]:
            state[0] = time_ms

    def merge(self, left: State, right: State) -> State:
        return [max(left[0], right[0]), *merge_exact(left, right)]

    def result(self, state: State) -> Any:
        if state[2] == 0 and not self.floating:
            return state[1]
        return exact_to_float(state[1], state[2])

    def dump(self, state: State) -> Any:
        return [state[0], *canonical_exact(state[1], state[2])]

    def load(self, data: Any) -> State:
        if len(data) == 2:  # written before sums were exact: [time, rounded sum]
            return [data[0], *exact(data[1])]
        return list(data)

    def fold_step(self, name: str, field: str | None) -> Step:
        if field is None:
            return super().fold_step(name, field)

        def step(states: dict[str, State], payload: dict[str, Any], time_ms: int,
                 event_id: str) -> None:
            value = payload.get(field)
            if value is None:
                return
            if type(value) is int:
                m, e = value, 0
            else:
                m, denominator = value.as_integer_ratio()
                e = 1 - denominator.bit_length()
            state = states.get(name)
            if state is None:
                states[name] = [time_ms if time_ms > 0 else 0, m, e]
                return
            held = state[2]
            if e >= held:
                state[1] += m << (e - held)
            else:
                state[1] = (state[1] << (held - e)) + m
                state[2] = e
            if time_ms > state[0]:
                state[0] = time_ms

        return step


class Mean(_JsonState):
    """``[time, m, e, n]``: the exact sum ``m * 2**e`` of ``n`` values (see ``Sum``); the
    mean is rounded once, at read time."""

    def empty(self) -> State:
        return [0, 0, 0, 0]

    def add(self, state: State, value: Any, time_ms: int, event_id: str) -> None:
        add_exact(state, value)
        state[3] += 1
        if time_ms > state[0]:
            state[0] = time_ms

    def merge(self, left: State, right: State) -> State:
        return [max(left[0], right[0]), *merge_exact(left, right), left[3] + right[3]]

    def result(self, state: State) -> Any:
        m, e, n = state[1], state[2], state[3]
        if not n:
            return None
        try:  # int division is correctly rounded: one rounding of the exact mean
            return m / (n << -e) if e < 0 else (m << e) / n
        except OverflowError:
            return None

    def dump(self, state: State) -> Any:
        return [state[0], *canonical_exact(state[1], state[2]), state[3]]

    def load(self, data: Any) -> State:
        if len(data) == 3:  # written before sums were exact: [time, rounded sum, n]
            return [data[0], *exact(data[1]), data[2]]
        return list(data)


class _Extreme(_JsonState):
    """The smallest (Min) or largest (Max) value seen; one class, two orderings."""

    pick: Any = staticmethod(min)

    def empty(self) -> State:
        return [0, None]

    def add(self, state: State, value: Any, time_ms: int, event_id: str) -> None:
        if state[1] is None or self.pick(value, state[1]) != state[1]:
            state[1] = value
        if time_ms > state[0]:
            state[0] = time_ms

    def merge(self, left: State, right: State) -> State:
        values = [v for v in (left[1], right[1]) if v is not None]
        return [max(left[0], right[0]), self.pick(values) if values else None]

    def result(self, state: State) -> Any:
        return state[1]


class Min(_Extreme):
    pick = staticmethod(min)


class Max(_Extreme):
    pick = staticmethod(max)


class Last(_JsonState):
    """The value of the newest event by (event time, event id): an older event never wins."""

    max_state_bytes = _STATE_BYTES + VALUE_BYTES + _EVENT_ID_BYTES

    def empty(self) -> State:
        return [0, None, ""]

    def add(self, state: State, value: Any, time_ms: int, event_id: str) -> None:
        if (time_ms, event_id) > (state[0], state[2]):
            state[0], state[1], state[2] = time_ms, value, event_id

    def merge(self, left: State, right: State) -> State:
        newest = left if (left[0], left[2]) >= (right[0], right[2]) else right
        return list(newest)

    def result(self, state: State) -> Any:
        return state[1] if state[2] else None


class LastN(_JsonState):
    """The values of the N newest events, newest first, as ``[time, event id, value]``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.max_state_bytes = _STATE_BYTES + size * (32 + _EVENT_ID_BYTES + VALUE_BYTES)

    def empty(self) -> State:
        return [0, []]

    def add(self, state: State, value: Any, time_ms: int, event_id: str) -> None:
        entries = state[1]
        entries.append([time_ms, event_id, value])
        entries.sort(key=_newest_first, reverse=True)
        del entries[self.size :]
        if time_ms > state[0]:
            state[0] = time_ms

    def merge(self, left: State, right: State) -> State:
        entries = sorted(left[1] + right[1], key=_newest_first, reverse=True)[: self.size]
        return [max(left[0], right[0]), [list(entry) for entry in entries]]

    def result(self, state: State) -> Any:
        return [entry[2] for entry in state[1]]

    def load(self, data: Any) -> State:
        return [data[0], [list(entry) for entry in data[1]]]


def _newest_first(entry: list[Any]) -> tuple[int, str]:
    return entry[0], entry[1]


class ApproxDistinct(_Folding):
    # dense: base64 of one byte per register (sparse states are smaller by construction)
    max_state_bytes = _STATE_BYTES + (REGISTERS + 2) // 3 * 4

    def empty(self) -> State:
        return [0, HyperLogLog()]

    def add(self, state: State, value: Any, time_ms: int, event_id: str) -> None:
        state[1].add(value)
        if time_ms > state[0]:
            state[0] = time_ms

    def merge(self, left: State, right: State) -> State:
        return [max(left[0], right[0]), left[1].merge(right[1])]

    def result(self, state: State) -> Any:
        return state[1].estimate()

    def dump(self, state: State) -> Any:
        return [state[0], state[1].dump()]

    def load(self, data: Any) -> State:
        return [data[0], HyperLogLog.load(data[1])]

    def fold_step(self, name: str, field: str | None) -> Step:
        if field is None:
            return super().fold_step(name, field)

        def step(states: dict[str, State], payload: dict[str, Any], time_ms: int,
                 event_id: str) -> None:
            value = payload.get(field)
            if value is None:
                return
            state = states.get(name)
            if state is None:
                sketch = HyperLogLog()
                sketch.add(value)
                states[name] = [time_ms if time_ms > 0 else 0, sketch]
            else:
                state[1].add(value)
                if time_ms > state[0]:
                    state[0] = time_ms

        return step


class TopK(_Folding):
    """Heavy hitters with Misra-Gries counters (Agarwal et al., "Mergeable summaries", 2012).

    At most ``capacity`` counters. While a state has seen no more distinct values than that,
    counts are exact (the usual case for a fan's teams or sports). Beyond it, each count is an
    underestimate by at most n / (capacity + 1), n the events folded in, and any value with
    more than that share is kept. Merge adds counters, then subtracts the (capacity + 1)-th
    largest count: the bound survives merging.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.capacity = max(8 * size, 32)
        self.max_state_bytes = _STATE_BYTES + self.capacity * (16 + VALUE_BYTES)

    def empty(self) -> State:
        return [0, {}]

    def add(self, state: State, value: Any, time_ms: int, event_id: str) -> None:
        counters: dict[Any, int] = state[1]
        if value in counters:
            counters[value] += 1
        elif len(counters) < self.capacity:
            counters[value] = 1
        else:
            state[1] = {v: c - 1 for v, c in counters.items() if c > 1}
        if time_ms > state[0]:
            state[0] = time_ms

    def merge(self, left: State, right: State) -> State:
        counters = dict(left[1])
        for value, count in right[1].items():
            counters[value] = counters.get(value, 0) + count
        if len(counters) > self.capacity:
            cut = sorted(counters.values(), reverse=True)[self.capacity]
            counters = {v: c - cut for v, c in counters.items() if c > cut}
        return [max(left[0], right[0]), counters]

    def result(self, state: State) -> Any:
        ranked = sorted(state[1].items(), key=lambda item: (-item[1], str(item[0])))
        return [[value, count] for value, count in ranked[: self.size]]

    def dump(self, state: State) -> Any:
        return [state[0], sorted(([v, c] for v, c in state[1].items()), key=lambda p: str(p[0]))]

    def load(self, data: Any) -> State:
        return [data[0], {value: count for value, count in data[1]}]


def is_json_state(aggregator: Aggregator) -> bool:
    """True when ``dump`` returns the state itself (no conversion before encoding)."""
    dump: object = type(aggregator).dump
    return dump is _JsonState.dump


def aggregator_for(aggregation: Aggregation, size: int = 0, floating: bool = False) -> Aggregator:
    """``floating``: the aggregated field is a double (a sum of it is served as a float)."""
    simple: dict[Aggregation, Aggregator] = {
        Aggregation.COUNT: Count(),
        Aggregation.SUM: Sum(floating),
        Aggregation.MEAN: Mean(),
        Aggregation.MIN: Min(),
        Aggregation.MAX: Max(),
        Aggregation.LAST: Last(),
        Aggregation.APPROX_DISTINCT: ApproxDistinct(),
    }
    if aggregation is Aggregation.LAST_N:
        return LastN(size)
    if aggregation is Aggregation.TOP_K:
        return TopK(size)
    return simple[aggregation]


def empty_result(aggregation: Aggregation) -> Any:
    """What a feature serves when no event fell in its window."""
    return aggregator_for(aggregation, 1).result(aggregator_for(aggregation, 1).empty())
