"""The DuckDB path of the training-set builder: window aggregations in SQL, Arrow and numpy that
equal the engine's fold and merge exactly, in event-time mode.

A served feature's value at T merges the tiles of its window (``fold.window_tiles``): for a
sliding window of size W over tiles of t, the events with an event time in ``[L, T]``, L the
start of the tile ``W - t`` before the one holding T (the whole history for a lifetime
window, T's tile for a tumbling one). In event-time mode every event counted at T has its
event time at most T, so a window is an interval of event time, which SQL can compute for a
million spine rows at once, with no per-entity Python:

- **count, sum, mean**: prefix sums. The relevant events are sorted once by (entity, time),
  packed into one 64-bit key, with running totals over them; each spine row finds its place
  among them, and its window's lower edge's, by binary search, and the value is the running
  total at the one less the one at the other. The spine rows are searched in (entity, time)
  order, in which the lower edges are sorted too, so the searches walk memory in order.
  Sums are exact, as the engine's
  (``aggregations.Sum``): each value is an integer multiple of 2**Emin (Emin the smallest
  exponent the values need), summed as 64-bit integers when the total provably fits and as
  31-bit limbs otherwise; the total is rounded once, as ``Sum.result`` rounds it.
- **the value's event time**: with k relevant events up to a spine row's place, the newest
  in its window (where the window counts one) is the k-th.
- **approx_distinct**: the engine's HyperLogLog of the window is a function of which
  (register, rank) pairs its values reach (``hll.register_of``, computed once per distinct
  value). A register at rank >= k is present at T exactly when T falls in one of the intervals
  ``[first time in tile s, end of s + W)`` over the tiles s where it is seen; merged into runs,
  each run is a +1 and a -1 edge, and running totals over the edges sorted by (entity, time),
  read at each spine row's place, give the count of registers at each rank level, from which
  the empty registers and the exact sum of ``2**-rank`` follow; the engine's estimate follows
  from them as ``hll.estimate_from`` computes it (``_estimates``). Only an entity that reaches
  more registers than linear counting covers needs the levels above 1; for the others the
  count of set registers decides the estimate alone.
- **min, max**: the window's full tiles (a RANGE window over tile aggregates) and the head
  tile up to T (a running min/max inside the tile, joined ASOF).
- **last**: the newest relevant event by (event time, event id), joined ASOF, if it lies in
  the window; an exact tie goes to the first in fold order, as the fold decides it.

Sketches, last, min and max run on a second DuckDB cursor in a thread of their own, beside
the prefix sums: much of either side runs in single-threaded Arrow and numpy kernels, which
leave the GIL.

``covered`` says which features this path computes; the builder sends the others (and every
feature in as-served mode, where a window is no longer an interval of one column) through
the reference path (``fastbreak.offline.reference``). A property test holds the two equal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fastbreak.definitions.model import Aggregation, WindowKind
from fastbreak.engine.aggregations import Mean, Sum, exact
from fastbreak.engine.hll import MAX_RANK, RAW_NUMERATOR, REGISTERS, estimate_from, register_of
from fastbreak.engine.plan import LIFETIME, GroupPlan, ServedFeature

COVERED_AGGREGATIONS = frozenset({
    Aggregation.COUNT, Aggregation.SUM, Aggregation.MEAN, Aggregation.MIN, Aggregation.MAX,
    Aggregation.LAST, Aggregation.APPROX_DISTINCT,
})
COVERED_WINDOWS = frozenset({WindowKind.SLIDING, WindowKind.TUMBLING, WindowKind.LIFETIME})
# Limbs of a sum beyond 64 bits: each 31 bits, so a running total of 2**32 rows stays in int64.
LIMB_BITS = 31
MAX_LIMBS = 8
_LIMB_MASK = (1 << LIMB_BITS) - 1
# The rank weights of the set registers, sum of (2**53 - 2**(53 - rank)), as A * 2**27 + B
# (levels 1..26 in A, 27..53 in B: each stays far inside int64); the harmonic sum over all
# registers is m - A * 2**-26 - B * 2**-53 (``_estimates``).
_SPLIT_RANK = 26
# The bits an (entity, time offset) pair may take in one int64 search key; past them, times
# are packed as their rank (``_TimelineKeys``)
PACKED_BITS = 62
# computed apart from the prefix sums (``GroupQuery._apart_values``)
_APART = frozenset({Aggregation.APPROX_DISTINCT, Aggregation.LAST, Aggregation.MIN,
                    Aggregation.MAX})


def covered(served: ServedFeature) -> bool:
    return (served.feature.aggregation in COVERED_AGGREGATIONS
            and served.window.kind in COVERED_WINDOWS)


@dataclass(frozen=True)
class Relevance:
    """Which events a feature's slot folds: its event types, carrying its field."""

    events: tuple[str, ...]
    field: str | None


@dataclass(frozen=True)
class Span:
    """A window's shape: what its lower edge is at a spine time."""

    kind: WindowKind
    tile_seconds: int
    size_seconds: int

    def lower_ms_sql(self, time_ms: str) -> str:
        """The first event time (ms) the window holds at ``time_ms`` (>= 0); -1 for a lifetime
        window (every event time the fast path takes is positive)."""
        if self.kind is WindowKind.LIFETIME:
            return "-1"
        tile_ms = self.tile_seconds * 1000
        below = 0 if self.kind is WindowKind.TUMBLING else (self.size_seconds - self.tile_seconds)
        return f"(({time_ms}) // {tile_ms} * {tile_ms} - {below * 1000})"

    @property
    def end_after_ms(self) -> int | None:
        """How long after its tile starts an event leaves the window; None: never."""
        if self.kind is WindowKind.LIFETIME:
            return None
        size = self.tile_seconds if self.kind is WindowKind.TUMBLING else self.size_seconds
        return size * 1000

    def tile_sql(self, time_ms: str) -> str:
        """The start (epoch s) of the tile holding ``time_ms``."""
        if self.kind is WindowKind.LIFETIME:
            return "0"
        return f"(({time_ms}) // {self.tile_seconds * 1000} * {self.tile_seconds})"


def relevance_of(group: GroupPlan, served: ServedFeature) -> Relevance:
    events = served.feature.events or group.group.sources
    return Relevance(tuple(sorted(events)), served.feature.field)


def span_of(served: ServedFeature) -> Span:
    tile = served.tile_seconds if served.tile_seconds != LIFETIME else 0
    return Span(served.window.kind, tile, served.window.size_seconds)


@dataclass
class FeatureColumns:
    """One feature over the spine, in spine row order: values and event times (epoch ms),
    both null where the window holds no event."""

    values: pa.Array
    event_time_ms: pa.Array


class GroupQuery:
    """The covered features of one group. ``events_sql`` selects the group's applied events
    for the spine's entities (``key_id``, ``t_ms``, ``event_type``, the payload fields,
    ``event_id``, ``shard``, ``seq``, ``sub``); ``values_sql(field)`` a superset of a field's
    values (a cheap scan, to map each value to its HyperLogLog register once); the table
    ``{prefix}_probe`` holds one row per spine row: ``row``, ``key_id``, ``t`` (ms, >= 0).
    """

    def __init__(
        self, con: duckdb.DuckDBPyConnection, group: GroupPlan, prefix: str,
        events_sql: str, values_sql: Callable[[str], str],
    ) -> None:
        self.con = con
        self.group = group
        self.ev = f"{prefix}_ev"
        self.probe = f"{prefix}_probe"
        self.prefix = prefix
        self.events_sql = events_sql
        self.values_sql = values_sql
        self.codes = {name: code for code, name in enumerate(sorted(group.group.sources))}
        self._register_tables: dict[Relevance, pa.Table] = {}

    def _where(self, rel: Relevance) -> str:
        """The SQL condition for ``rel``'s events in ``{prefix}_ev``."""
        codes = ", ".join(str(self.codes[name]) for name in rel.events)
        condition = f"code IN ({codes})"
        if rel.field is None:
            return condition
        return f"{condition} AND {self._present[rel.field]} IS NOT NULL"

    def _prepare(self, features: Sequence[ServedFeature]) -> None:
        """Materialize the few columns the features read: event types as small codes, and a
        field that feeds an approx_distinct as its register and rank, not its text."""
        plain: set[str] = set()
        sketched: set[str] = set()
        tie_break = False
        for served in features:
            field = served.feature.field
            if field is None:
                continue
            if served.feature.aggregation is Aggregation.APPROX_DISTINCT:
                sketched.add(field)
            else:
                plain.add(field)
            tie_break |= served.feature.aggregation is Aggregation.LAST
        self._present = {name: f"a.{_ident(name)}" for name in plain}
        columns = ["a.key_id", "a.t_ms", "(CASE a.event_type " + " ".join(
            f"WHEN {_literal(name)} THEN {code}" for name, code in self.codes.items()
        ) + " END)::TINYINT AS code"]
        columns += [f"a.{_ident(name)}" for name in sorted(plain)]
        if tie_break:
            columns += ["a.event_id", "a.shard", "a.seq", "a.sub"]
        joins = []
        for index, name in enumerate(sorted(sketched)):
            values = [v for (v,) in self.con.sql(self.values_sql(name)).fetchall()]
            pairs = [register_of(value) for value in values]
            table = f"{self.prefix}_registers_{index}"
            self.con.register(table, pa.table({
                "v": values, "reg": pa.array([p[0] for p in pairs], pa.int16()),
                "rank": pa.array([p[1] for p in pairs], pa.int8()),
            }))
            alias = f"r{index}"
            joins.append(f"LEFT JOIN {table} {alias} ON {alias}.v = a.{_ident(name)}")
            columns += [f"{alias}.reg AS {_ident('reg_' + name)}",
                        f"{alias}.rank AS {_ident('rank_' + name)}"]
            self._present.setdefault(name, _ident("reg_" + name))
        self.con.execute(f"""
            CREATE OR REPLACE TABLE {self.ev} AS
            SELECT {', '.join(columns)} FROM ({self.events_sql}) a {' '.join(joins)}
        """)
        # the conditions read the table's own columns from now on
        self._present = {name: column.removeprefix("a.") for name, column in self._present.items()}

    def low_time_ms(self) -> int | None:
        (low,), = self.con.sql(f"SELECT min(t_ms) FROM {self.ev}").fetchall()
        return None if low is None else int(low)

    # ---- entry -------------------------------------------------------------------------------
    def compute(self, features: Sequence[ServedFeature]) -> dict[str, FeatureColumns]:
        """The features this path computed: none when an event time is 0 or less (the fold
        takes such a time as none at all), and not a sum too wide for ``MAX_LIMBS``."""
        self._prepare(features)
        low = self.low_time_ms()
        if low is not None and low <= 0:
            return {}
        sums = {s.feature.field for s in features
                if s.feature.aggregation in (Aggregation.SUM, Aggregation.MEAN)}
        scales = {name: self._scale(name) for name in sorted(f for f in sums if f is not None)}
        features = [s for s in features if s.feature.aggregation not in (
            Aggregation.SUM, Aggregation.MEAN) or scales[s.feature.field or ""] is not None]
        if not features:
            return {}
        # Sketches, last, min and max read the events table on their own, and mostly in
        # Arrow's single-threaded kernels: they run beside the prefix sums, on a cursor of
        # their own (DuckDB runs queries of two cursors at once).
        apart = [s for s in features if s.feature.aggregation in _APART]
        probes = _Probes.of(self.con.sql(
            f"SELECT row, key_id, t FROM {self.probe} ORDER BY key_id, t").to_arrow_table())
        # the pool is left first: the cursor closes once its thread is done, even on an error
        with self.con.cursor() as cursor, ThreadPoolExecutor(max_workers=1) as pool:
            pending = (pool.submit(self._apart_values, apart, probes, cursor) if apart
                       else None)
            additive = self._additive(
                features, {k: v for k, v in scales.items() if v is not None}, probes)
            out: dict[str, FeatureColumns] = {}
            for served in features:
                aggregation = served.feature.aggregation
                rel, span = relevance_of(self.group, served), span_of(served)
                count, times = additive.count(rel, span), additive.event_times(rel)
                present = pc.greater(count, 0)
                event_time = pc.if_else(present, times, pa.scalar(None, pa.int64()))
                if aggregation is Aggregation.COUNT:
                    values: pa.Array = pc.if_else(present, count, pa.scalar(None, pa.int64()))
                elif aggregation in (Aggregation.SUM, Aggregation.MEAN):
                    scale = scales[served.feature.field or ""]
                    assert scale is not None
                    total = additive.total(served.feature.field or "", rel, span)
                    values = _sums(served, scale, total, count, present)
                else:
                    continue
                out[served.name] = FeatureColumns(values, event_time)
            apart_values = pending.result() if pending is not None else {}
            for served in apart:
                rel, span = relevance_of(self.group, served), span_of(served)
                present = pc.greater(additive.count(rel, span), 0)
                values = apart_values[served.name]
                out[served.name] = FeatureColumns(
                    pc.if_else(present, values, pa.scalar(None, values.type)),
                    pc.if_else(present, additive.event_times(rel), pa.scalar(None, pa.int64())))
        return {served.name: out[served.name] for served in features}

    def _apart_values(self, features: Sequence[ServedFeature], probes: _Probes,
                      con: duckdb.DuckDBPyConnection) -> dict[str, pa.Array]:
        """The values of sketches, last, min and max, in spine row order (where the window
        holds no event, what they hold is left to the caller to null)."""
        values: dict[str, pa.Array] = {}
        sketches: dict[Relevance, dict[Span, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        for served in features:
            aggregation = served.feature.aggregation
            rel, span = relevance_of(self.group, served), span_of(served)
            if aggregation is Aggregation.APPROX_DISTINCT:
                counts = sketches.get(rel)
                if counts is None:
                    counts = sketches[rel] = self._register_counts(con, rel, probes, [
                        span_of(s) for s in features if relevance_of(self.group, s) == rel
                        and s.feature.aggregation is Aggregation.APPROX_DISTINCT])
                # null where no register is set, which is where the window holds no event
                values[served.name] = _estimates(*counts[span])
            elif aggregation is Aggregation.LAST:
                values[served.name] = self._last(con, rel, span)
            else:
                values[served.name] = self._extreme(con, served, rel, span)
        return values

    # ---- exact sums ----------------------------------------------------------------------
    def _scale(self, field: str) -> _Scale | None:
        """How ``field``'s values become integers: ``value * 2**-emin``, in ``limbs`` columns."""
        column = _ident(field)
        rows = self.con.sql(
            f"SELECT {column} AS v, count(*) AS n FROM {self.ev} WHERE {column} IS NOT NULL "
            "GROUP BY ALL"
        ).fetchall()
        if not rows:
            return _Scale(0, 1, None)
        values = [value for value, _ in rows]
        exacts = [exact(value) for value in values]
        emin = min(e for _, e in exacts)
        scaled = [m << (e - emin) for m, e in exacts]
        # every running total of the timeline is bounded by the sum of all magnitudes
        bound = sum(abs(v) * n for v, (_, n) in zip(scaled, rows, strict=True))
        if bound < 1 << 62:
            limbs = 1
        else:
            widest = max(abs(v) for v in scaled).bit_length() + 1
            limbs = -(-widest // LIMB_BITS) + 1
            if limbs > MAX_LIMBS:
                return None
        table = None
        if limbs > 1 or any(type(value) is not int for value in values):
            columns: dict[str, list[Any]] = {"v": values}
            for limb in range(limbs):
                columns[f"l{limb}"] = [_limb(v, limb, limbs) for v in scaled]
            table = f"{self.prefix}_scale_{field}"
            self.con.register(table, pa.table(columns))
        return _Scale(emin, limbs, table)

    # ---- the prefix-sum timeline ---------------------------------------------------------------
    def _additive(self, features: Sequence[ServedFeature], scales: dict[str, _Scale],
                  probes: _Probes) -> _Additive:
        relevances = sorted({relevance_of(self.group, s) for s in features},
                            key=lambda r: (r.events, r.field or ""))
        summed = sorted({(s.feature.field, relevance_of(self.group, s)) for s in features
                         if s.feature.aggregation in (Aggregation.SUM, Aggregation.MEAN)},
                        key=lambda p: (p[0] or "", p[1].events))
        columns = [f"coalesce(({self._where(rel)})::TINYINT, 0) AS f{bit}"
                   for bit, rel in enumerate(relevances)]
        joins = []
        for index, (field, rel) in enumerate(summed):
            assert field is not None
            scale = scales[field]
            alias = f"s{index}"
            for limb in range(scale.limbs):
                expr = _ident(field) if scale.table is None else f"{alias}.l{limb}"
                columns.append(f"coalesce(CASE WHEN {self._where(rel)} THEN {expr} END, 0)"
                               f"::BIGINT AS x{index}_{limb}")
            if scale.table is not None:
                joins.append(f"LEFT JOIN {scale.table} {alias} ON {alias}.v = e.{_ident(field)}")
        (lowest, highest, widest_key), = self.con.sql(
            f"SELECT min(t_ms), max(t_ms), max(key_id) FROM {self.ev}").fetchall()
        keys = _TimelineKeys(lowest or 0, highest or 0, widest_key or 0, probes)
        events = self.con.sql(f"""
            SELECT {keys.select_sql('key_id', 't_ms')}, t_ms, {', '.join(columns)}
            FROM {self.ev} e {' '.join(joins)}
            WHERE {' OR '.join(f'({self._where(rel)})' for rel in relevances)}
            ORDER BY {keys.order_sql('key_id', 't_ms')}
        """).to_arrow_table()
        keys.attach(events)
        return _Additive(events, keys, probes, relevances, summed, scales)

    # ---- approx_distinct -----------------------------------------------------------------------
    def _register_counts(self, con: duckdb.DuckDBPyConnection, rel: Relevance,
                         probes: _Probes, spans: list[Span]
                         ) -> dict[Span, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per window shape, the count of set registers and the two parts of the rank weights
        at each spine row (see the module's docstring): running totals over the run edges
        sorted by (entity, time), read at each probe's place among them.

        An edge carries only its signed level; the weights it adds are looked up after the
        sort, which keeps the sort narrow."""
        events = self._register_events(con, rel)
        levels = _levels(events)
        # only an entity past linear counting has its estimate read from the rank weights
        heavy = bool(pc.any(events["heavy"]).as_py())
        after_all = int(probes.times.max(initial=0)) + 1
        counts: dict[Span, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        table = f"{self.prefix}_runs"
        for span in spans:
            runs = _register_runs(levels, span, after_all)
            times, entities = pc.min_max(runs["pos"]), pc.min_max(runs["key_id"])
            keys = _TimelineKeys(times["min"].as_py() or 0, times["max"].as_py() or 0,
                                 entities["max"].as_py() or 0, probes)
            con.register(table, runs)
            try:
                edges = con.sql(
                    f"SELECT {keys.select_sql('key_id', 'pos')}, code FROM {table} "
                    f"ORDER BY {keys.order_sql('key_id', 'pos')}"
                ).to_arrow_table()
            finally:
                con.unregister(table)
            keys.attach(edges)
            place = keys.place(probes.times, inclusive=True)
            code = pc.add(pc.cast(_array(edges["code"]), pa.int16()),
                          pa.scalar(MAX_RANK, pa.int16()))
            ones, high, low = (
                probes.rows_of(_read(_running(pc.take(weights, code)), place)) if needed
                else np.zeros(len(place), np.int64)
                for weights, needed in zip(_CODE_WEIGHTS, (
                    True, heavy, heavy and len(levels) > _SPLIT_RANK), strict=True))
            counts[span] = (ones, high, low)
        return counts

    def _register_events(self, con: duckdb.DuckDBPyConnection, rel: Relevance) -> pa.Table:
        """The relevant events as (key_id, register, rank, t_ms, heavy), sorted by key,
        register and time; ``heavy``: the entity reaches more registers than linear counting
        covers, so its windows may need every rank level."""
        found = self._register_tables.get(rel)
        if found is not None:
            return found
        name = rel.field or ""
        events = con.sql(f"""
            SELECT key_id, {_ident('reg_' + name)} AS reg, {_ident('rank_' + name)} AS rank, t_ms
            FROM {self.ev} WHERE {self._where(rel)}
            ORDER BY key_id, reg, t_ms
        """).to_arrow_table().combine_chunks()
        key, reg = _array(events["key_id"]), _array(events["reg"])
        new_register = _changed(key, reg)
        keys_seen = pc.value_counts(pc.filter(key, new_register))
        heavy_keys = pc.filter(keys_seen.field("values"),
                               pc.greater(keys_seen.field("counts"), MAX_LINEAR_REGISTERS))
        events = events.append_column("heavy", pc.is_in(key, heavy_keys))
        self._register_tables[rel] = events
        return events

    # ---- last ------------------------------------------------------------------------------
    def _last(self, con: duckdb.DuckDBPyConnection, rel: Relevance, span: Span) -> pa.Array:
        field = rel.field
        assert field is not None
        query = f"""
            WITH winners AS (
                SELECT key_id, t_ms, {_ident(field)} AS x FROM {self.ev} WHERE {self._where(rel)}
                QUALIFY row_number() OVER (
                    PARTITION BY key_id, t_ms
                    ORDER BY event_id DESC, shard, length(seq), seq, sub) = 1
            )
            SELECT p.row, CASE WHEN w.t_ms >= {span.lower_ms_sql('p.t')} THEN w.x END AS x
            FROM {self.probe} p ASOF LEFT JOIN winners w ON p.key_id = w.key_id AND p.t >= w.t_ms
            ORDER BY p.row
        """
        return _array(con.sql(query).to_arrow_table()["x"])

    # ---- min, max ----------------------------------------------------------------------------
    def _extreme(self, con: duckdb.DuckDBPyConnection, served: ServedFeature, rel: Relevance,
                 span: Span) -> pa.Array:
        pick = "min" if served.feature.aggregation is Aggregation.MIN else "max"
        combine = "least" if pick == "min" else "greatest"
        field = _ident(rel.field or "")
        tile = span.tile_sql("t_ms")
        if span.kind is WindowKind.LIFETIME:
            head_window = "PARTITION BY key_id ORDER BY t_ms"
        else:
            head_window = "PARTITION BY key_id, s ORDER BY t_ms"
        base = "NULL"
        base_cte = ""
        if span.kind is WindowKind.SLIDING and span.size_seconds > span.tile_seconds:
            before = span.size_seconds - span.tile_seconds
            base_cte = f""",
            tiles AS (SELECT key_id, s, {pick}(x) AS x FROM rel GROUP BY ALL),
            frame AS (
                SELECT key_id, s, x, NULL::BIGINT AS row FROM tiles
                UNION ALL SELECT key_id, {span.tile_sql('t')}, NULL, row FROM {self.probe}
            ),
            base AS (
                SELECT row, {pick}(x) OVER (
                    PARTITION BY key_id ORDER BY s
                    RANGE BETWEEN {before} PRECEDING AND {span.tile_seconds} PRECEDING) AS x
                FROM frame QUALIFY row IS NOT NULL
            )"""
            base = "b.x"
        query = f"""
            WITH rel AS (
                SELECT key_id, t_ms, {tile} AS s, {field} AS x FROM {self.ev}
                WHERE {self._where(rel)}
            ), head AS (
                SELECT key_id, t_ms, s, {pick}(x) OVER ({head_window}) AS x FROM rel
            ){base_cte}
            SELECT p.row, {combine}(
                {base}, CASE WHEN h.s = {span.tile_sql('p.t')} THEN h.x END) AS x
            FROM {self.probe} p
            ASOF LEFT JOIN head h ON p.key_id = h.key_id AND p.t >= h.t_ms
            {'LEFT JOIN base b ON b.row = p.row' if base_cte else ''}
            ORDER BY p.row
        """
        return _array(con.sql(query).to_arrow_table()["x"])


@dataclass(frozen=True)
class _Scale:
    emin: int
    limbs: int
    table: str | None  # value -> limbs, when the values are not their own integers


def _limb(value: int, limb: int, limbs: int) -> int:
    if limbs == 1:
        return value
    if limb == limbs - 1:
        return value >> (LIMB_BITS * limb)  # the signed top limb
    return (value >> (LIMB_BITS * limb)) & _LIMB_MASK


class _Additive:
    """Window totals by prefix sums: the relevant events sorted by (entity, time) with their
    running totals, and each probe's and window edge's place among them found by binary
    search on one 64-bit (entity, time) key.

    The probes are taken in (entity, time) order, in which their window edges are sorted too,
    so the searches and the reads of the running totals walk memory in order; the results
    go back to spine row order once, at the end."""

    def __init__(self, events: pa.Table, keys: _TimelineKeys, probes: _Probes,
                 relevances: list[Relevance], summed: list[tuple[str | None, Relevance]],
                 scales: dict[str, _Scale]) -> None:
        self.events = events
        self.bits = {rel: bit for bit, rel in enumerate(relevances)}
        self.summed = {pair: index for index, pair in enumerate(summed)}
        self.scales = scales
        self.probes = probes
        self.rows = len(probes.order)
        self.times = _numpy(events["t_ms"])
        self.keys = keys
        self.after = self.keys.place(probes.times, inclusive=True)
        self._lower: dict[Span, np.ndarray] = {}
        self._running: dict[tuple[Any, ...], np.ndarray] = {}
        self._counts: dict[tuple[Relevance, Span], pa.Array] = {}
        self._times: dict[Relevance, pa.Array] = {}

    def _before(self, span: Span) -> np.ndarray:
        """Per probe (in probe order), the events before its window: a lower edge's place."""
        found = self._lower.get(span)
        if found is None:
            found = self._lower[span] = self.keys.place(
                _lower_edges_ms(span, self.probes.times), inclusive=False)
        return found

    def _totals(self, column: tuple[Any, ...]) -> np.ndarray:
        """Running totals of an events column (``_running``): ``("count", rel)`` counts
        ``rel``'s events, ``("sum", index, limb)`` adds a limb of a scaled sum. Over every
        entity: a window's total is a difference of two of these within one entity."""
        found = self._running.get(column)
        if found is None:
            name = (f"f{self.bits[column[1]]}" if column[0] == "count"
                    else f"x{column[1]}_{column[2]}")
            found = self._running[column] = _running(self.events[name])
        return found

    def _window(self, column: tuple[Any, ...], span: Span) -> np.ndarray:
        """The total of each probe's window, in probe order."""
        running = self._totals(column)
        total: np.ndarray = _read(running, self.after) - _read(running, self._before(span))
        return total

    def count(self, rel: Relevance, span: Span) -> pa.Array:
        key = (rel, span)
        found = self._counts.get(key)
        if found is None:
            found = self._counts[key] = self.probes.in_row_order(self._window(("count", rel), span))
        return found

    def total(self, field: str, rel: Relevance, span: Span) -> list[pa.Array]:
        """The window's scaled sum, one array per limb."""
        index = self.summed[(field, rel)]
        return [self.probes.in_row_order(self._window(("sum", index, limb), span))
                for limb in range(self.scales[field].limbs)]

    def event_times(self, rel: Relevance) -> pa.Array:
        """The event time of the newest of ``rel``'s events up to each probe: with k of them
        up to the probe, the k-th (meaningful where the window holds one, which is then the
        probe's entity's)."""
        found = self._times.get(rel)
        if found is None:
            relevant = self.times[_numpy(self.events[f"f{self.bits[rel]}"]) != 0]
            if len(relevant) == 0:
                found = pa.nulls(self.rows, pa.int64())
            else:
                up_to = _read(self._totals(("count", rel)), self.after)
                found = self.probes.in_row_order(relevant[np.maximum(up_to - 1, 0)])
            self._times[rel] = found
        return found


@dataclass(frozen=True)
class _Probes:
    """The spine rows as probes, in (entity, time) order: the order in which binary searches
    and reads of running totals walk memory in order (and a window's lower edges are in
    order too)."""

    order: np.ndarray  # the spine row of each probe
    keys: np.ndarray
    times: np.ndarray

    @classmethod
    def of(cls, table: pa.Table) -> _Probes:
        """From ``row``, ``key_id``, ``t``, sorted by (key_id, t)."""
        return cls(_numpy(table["row"]), _numpy(table["key_id"]).astype(np.int64),
                   _numpy(table["t"]))

    def rows_of(self, values: np.ndarray) -> np.ndarray:
        """``values`` given in probe order, in spine row order."""
        out = np.empty_like(values)
        out[self.order] = values
        return out

    def in_row_order(self, values: np.ndarray) -> pa.Array:
        return pa.array(self.rows_of(values))


def _running(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Running totals of ``values`` as int64: entry i is the total of the first i + 1.
    Computed in Arrow, whose memory pool can keep the pages it frees (the ``training-set``
    command sets it so), where numpy's allocations would fault fresh ones in."""
    found: np.ndarray = pc.cumulative_sum(pc.cast(_array(values), pa.int64())).to_numpy()
    return found


def _read(running: np.ndarray, place: np.ndarray) -> np.ndarray:
    """The running totals of the first ``place`` events (0 for none)."""
    if len(running) == 0:
        return np.zeros(len(place), np.int64)
    found: np.ndarray = running[np.maximum(place - 1, 0)]
    found[place == 0] = 0
    return found


class _TimelineKeys:
    """(entity, time) pairs as one sortable int64, the entity above and the time below, and
    binary search for where a probe's (entity, time) falls among the sorted events. The time
    is its offset from the earliest, packed by DuckDB as it sorts; where entity and offset do
    not fit in ``PACKED_BITS``, the time's rank among the events' distinct times instead,
    packed here after the sort, which keeps the order and always fits."""

    def __init__(self, lowest: int, highest: int, widest_key: int, probes: _Probes) -> None:
        self.probe_keys = probes.keys
        lowest = min(lowest, int(probes.times.min(initial=lowest)))
        highest = max(highest, int(probes.times.max(initial=highest)))
        widest_key = max(widest_key, int(probes.keys.max(initial=0)))
        self.origin = lowest - 1  # every event's offset is >= 1; a time asked for is clamped
        self.shift = (highest - self.origin).bit_length()
        self.by_rank = widest_key.bit_length() + self.shift > PACKED_BITS
        self.ranks: np.ndarray | None = None
        self.events = np.zeros(0, np.int64)

    def select_sql(self, key: str, time: str) -> str:
        """The columns a sorted events query selects for ``attach``."""
        if self.by_rank:
            return f"{key} AS rank_key, {time} AS rank_time"
        return f"({key}::BIGINT << {self.shift}) | ({time} - {self.origin}) AS packed"

    def order_sql(self, key: str, time: str) -> str:
        return f"{key}, {time}" if self.by_rank else "packed"

    def attach(self, events: pa.Table) -> None:
        """The events' keys, from a query of ``select_sql`` ordered by ``order_sql``."""
        if not self.by_rank:
            self.events = _numpy(events["packed"])
            return
        times = _numpy(events["rank_time"])
        self.ranks = np.unique(times)
        self.shift = (len(self.ranks) + 1).bit_length()
        offsets = np.searchsorted(self.ranks, times, side="left") + 1
        self.events = (_numpy(events["rank_key"]).astype(np.int64) << self.shift) | offsets

    def place(self, times: np.ndarray, inclusive: bool) -> np.ndarray:
        """Per probe: how many events come before (its entity, ``times``), or at or before
        it where ``inclusive``."""
        side: Any = "right" if inclusive else "left"
        if self.ranks is None:
            asked = (self.probe_keys << self.shift) | (
                np.clip(times, self.origin, None) - self.origin)
            found: np.ndarray = np.searchsorted(self.events, asked, side=side)
            return found
        # the count of distinct event times below (or up to) each time: an event comes
        # before the time exactly when its offset (rank + 1) is at most that count
        asked = (self.probe_keys << self.shift) | np.searchsorted(self.ranks, times, side=side)
        found = np.searchsorted(self.events, asked, side="right")
        return found


def _lower_edges_ms(span: Span, times_ms: np.ndarray) -> np.ndarray:
    """The first event time each window holds, at each of ``times_ms`` (``Span.lower_ms_sql``);
    a lifetime window: before every event time."""
    if span.kind is WindowKind.LIFETIME:
        return np.full(len(times_ms), np.iinfo(np.int64).min // 2, np.int64)
    tile_ms = span.tile_seconds * 1000
    below = 0 if span.kind is WindowKind.TUMBLING else (span.size_seconds - span.tile_seconds)
    return times_ms // tile_ms * tile_ms - below * 1000


def _numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    found: np.ndarray = _array(column).to_numpy(zero_copy_only=False)
    return found


def _sums(served: ServedFeature, scale: _Scale, limbs: list[pa.Array], count: pa.Array,
          present: pa.Array) -> pa.Array:
    """The engine's result of each window's exact sum (``Sum.result`` / ``Mean.result``)."""
    aggregator = served.aggregator
    is_mean = served.feature.aggregation is Aggregation.MEAN
    floating = isinstance(aggregator, Sum) and aggregator.floating
    if len(limbs) == 1 and not floating and not is_mean and scale.emin == 0:
        return pc.if_else(present, limbs[0], pa.scalar(None, pa.int64()))
    if len(limbs) == 1 and _vectorizable(scale, limbs[0], count, is_mean):
        total = pc.cast(limbs[0], pa.float64(), safe=False)  # correctly rounded
        if is_mean:
            total = pc.divide(total, pc.cast(count, pa.float64()))  # both exact: one rounding
        value = pc.multiply(total, pa.scalar(2.0**scale.emin))  # exact: no subnormal, no overflow
        return pc.if_else(present, value, pa.scalar(None, pa.float64()))
    # Python's own rounding, row by row, through the engine's result
    totals = [
        sum((value or 0) << (LIMB_BITS * limb) for limb, value in enumerate(parts))
        for parts in zip(*(limb.to_pylist() for limb in limbs), strict=True)
    ]
    counts = count.to_pylist()
    flags = present.to_pylist()
    results: list[Any] = []
    mean, summed = Mean(), aggregator
    for total, n, flag in zip(totals, counts, flags, strict=True):
        if not flag:
            results.append(None)
        elif is_mean:
            results.append(mean.result([0, total, scale.emin, n]))
        else:
            results.append(summed.result([0, total, scale.emin]))
    kind = pa.float64() if is_mean or floating or scale.emin != 0 else pa.int64()
    if kind == pa.int64():
        results = [r if r is None or -(1 << 63) <= r < 1 << 63 else None for r in results]
    return pa.array(results, kind)


def _vectorizable(scale: _Scale, total: pa.Array, count: pa.Array, is_mean: bool) -> bool:
    """Arrow's float arithmetic rounds exactly as Python's int division here: every total and
    count is a double exactly (below 2**53), and the scaled result is a normal double."""
    if len(total) == 0:
        return True
    bounds = pc.min_max(pc.abs(total))
    widest = bounds["max"].as_py() or 0
    if widest >= 1 << 53:
        return False
    if is_mean and (pc.max(count).as_py() or 0) >= 1 << 53:
        return False
    return scale.emin > -900 and widest.bit_length() + scale.emin < 1000


def _linear_limit() -> int:
    """The most registers a sketch can have set and still be estimated by linear counting."""
    asked: list[int] = []

    def harmonic() -> float:
        asked.append(1)
        return 1.0

    limit = 0
    for present in range(REGISTERS + 1):
        estimate_from(REGISTERS - present, harmonic)
        if asked:
            break
        limit = present
    return limit


MAX_LINEAR_REGISTERS = _linear_limit()
# set registers -> the estimate where linear counting decides it, -1 where it does not
_LINEAR_BY_SET = np.array(
    [estimate_from(REGISTERS - present, lambda: 0.0) if present <= MAX_LINEAR_REGISTERS else -1
     for present in range(REGISTERS + 1)], np.int64)


def _array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _changed(*columns: pa.Array) -> pa.Array:
    """True where a row differs from the previous one in any of ``columns`` (and at row 0)."""
    if len(columns[0]) == 0:
        return pa.array([], pa.bool_())
    differs = None
    for column in columns:
        step = pc.not_equal(column[1:], column[:-1])
        differs = step if differs is None else pc.or_(differs, step)
    assert differs is not None
    return pa.concat_arrays([pa.array([True]), differs])


@dataclass(frozen=True)
class _Level:
    """The events that hold their register at rank >= ``level``, sorted by entity, register
    and time (every entity at level 1, heavy ones above), and where each (entity, register)
    begins."""

    level: int
    key: pa.Array
    time_ms: pa.Array
    first: pa.Array  # True at the first event of each (entity, register)


def _levels(events: pa.Table) -> list[_Level]:
    """``_Level`` of every level ``events`` reach; the same for every window shape."""
    key, reg, rank, time_ms, heavy = (_array(events[name]) for name in (
        "key_id", "reg", "rank", "t_ms", "heavy"))
    levels: list[_Level] = []
    level = 1
    while len(key):
        levels.append(_Level(level, key, time_ms, _changed(key, reg)))
        level += 1
        keep = pc.and_(pc.greater_equal(rank, level), heavy)
        key, reg, rank, time_ms, heavy = (pc.filter(column, keep) for column in (
            key, reg, rank, time_ms, heavy))
    return levels


def _register_runs(levels: list[_Level], span: Span, after_all: int) -> pa.Table:
    """Where the runs begin and end in which each (entity, register) is present at each rank
    level (level 1 for every entity, every level for heavy ones): ``key_id``, ``pos`` and
    ``code``, the level, positive where a run begins and negative where it ends.

    At level k, an event holding the register at rank >= k makes it present from the event's
    time until the window no longer holds the event's tile; over one (entity, register) in
    time order, an event starts a run when it comes after the previous one's presence ended,
    and ends one when the next comes after its own presence ended (or there is none)."""
    end_after = span.end_after_ms
    tile_ms = span.tile_seconds * 1000
    parts: list[pa.Table] = []
    for found in levels:
        key, time_ms, group = found.key, found.time_ms, found.first
        if end_after is None:  # lifetime: present from the first event on
            first_keys = pc.filter(key, group)
            parts.append(_edges(first_keys, pc.filter(time_ms, group), found.level))
            # and gone after every spine time (``after_all``): each entity's edges sum to
            # zero, so a running total over the whole timeline never carries one entity into
            # the next
            parts.append(_edges(first_keys, pa.repeat(pa.scalar(after_all, pa.int64()),
                                                      len(first_keys)), -found.level))
        else:
            ends = pc.add(pc.multiply(pc.divide(time_ms, tile_ms), tile_ms), end_after)
            gap = pc.greater(time_ms[1:], ends[:-1])
            starts = pc.or_(group, pa.concat_arrays([pa.array([False]), gap]))
            last = pa.concat_arrays([group[1:], pa.array([True])])
            stops = pc.or_(last, pa.concat_arrays([gap, pa.array([False])]))
            parts.append(_edges(pc.filter(key, starts), pc.filter(time_ms, starts), found.level))
            parts.append(_edges(pc.filter(key, stops), pc.filter(ends, stops), -found.level))
    if not parts:
        return _edges(pa.array([], pa.int32()), pa.array([], pa.int64()), 1)
    return pa.concat_tables(parts)


def _level_weights(level: int) -> tuple[int, int, int]:
    """What a register present at rank >= ``level`` adds to (n1, a, b): the count of set
    registers, and 2**(53 - level) split as a * 2**27 + b."""
    high = 1 << (_SPLIT_RANK - level) if level <= _SPLIT_RANK else 0
    low = 1 << (MAX_RANK - level) if level > _SPLIT_RANK else 0
    return (1 if level == 1 else 0), high, low


# What an edge of signed level c adds to (n1, a, b), at index c + MAX_RANK
_CODE_WEIGHTS = tuple(
    pa.array([(1 if code > 0 else -1) * _level_weights(abs(code))[part] if code else 0
              for code in range(-MAX_RANK, MAX_RANK + 1)], pa.int64())
    for part in range(3)
)


def _edges(key: pa.Array, pos: pa.Array, code: int) -> pa.Table:
    return pa.table({
        "key_id": pc.cast(key, pa.int32()), "pos": pc.cast(pos, pa.int64()),
        "code": pa.repeat(pa.scalar(code, pa.int8()), len(key)) if len(key)
        else pa.array([], pa.int8()),
    })


def _estimates(ones: np.ndarray, high: np.ndarray, low: np.ndarray) -> pa.Array:
    """``hll.estimate_from`` for each row's register counts (null where no register is set):
    linear counting by table where the set registers decide it; elsewhere the raw estimate,
    from the sum of ``2**-rank`` over the registers, ``m - high * 2**-26 - low * 2**-53``.
    Both terms subtracted are exact doubles and so is ``m - high * 2**-26``: the one
    subtraction left rounds once, to the correctly rounded sum the engine's sketch takes
    (``math.fsum``); the division and ``rint`` (half to even) are Python's ``/`` and
    ``round``."""
    present = ones > 0
    values = _LINEAR_BY_SET[ones]
    dense = present & (values < 0)
    if dense.any():
        whole = ((REGISTERS << _SPLIT_RANK) - high[dense]).astype(np.float64) * 2.0**-_SPLIT_RANK
        harmonic = whole - low[dense].astype(np.float64) * 2.0**-MAX_RANK
        values[dense] = np.rint(RAW_NUMERATOR / harmonic).astype(np.int64)
    return pa.array(values, mask=~present)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
