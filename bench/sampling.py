"""How the latency benchmarks sample, so that a verdict does not flip on noise.

A p99 of 100 samples is the second slowest of them: on a shared 2-core machine, one hiccup
moves it by 2x. So each comparison takes enough samples per repeat for its p99 to rest on
several of them, interleaves the two sides (alternating which goes first, so that neither
always runs on a warmer or a colder machine), repeats the whole measurement, and reports per
percentile the median over repeats of each side and of their ratio, with the ratios' spread
(lowest and highest repeat). The target is judged on the median ratio.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.results_format import BenchResult

Side = Callable[[], float]  # one read; returns its duration in ms


def timed(call: Callable[[], object]) -> Side:
    """A side timed here, around the call."""
    def side() -> float:
        started = time.perf_counter()
        call()
        return (time.perf_counter() - started) * 1000

    return side


def percentile(samples: Sequence[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def interleaved(sides: Sequence[Side], runs: int) -> list[list[float]]:
    """``runs`` samples of each side, alternating the order from one run to the next."""
    samples: list[list[float]] = [[] for _ in sides]
    for run in range(runs):
        order = range(len(sides)) if run % 2 == 0 else reversed(range(len(sides)))
        for index in order:
            samples[index].append(sides[index]())
    return samples


@dataclass(frozen=True)
class Percentile:
    """One percentile of two sides over the repeats of a comparison."""

    q: int
    ours: list[float]  # per repeat, ms
    baseline: list[float]

    @property
    def ratios(self) -> list[float]:
        return [ours / base for ours, base in zip(self.ours, self.baseline, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.ratios), max(self.ratios)


def measure(sides: Sequence[Side], *, runs: int, repeats: int, warm: int = 5,
            label: str = "") -> list[list[list[float]]]:
    """``repeats`` interleaved measurements of ``runs`` samples of each side:
    ``[repeat][side][sample]``, in ms."""
    interleaved(sides, warm)  # pools, connections, caches
    measured = []
    for repeat in range(repeats):
        measured.append(interleaved(sides, runs))
        p99s = ", ".join(f"{percentile(samples, 99):.1f}" for samples in measured[-1])
        print(f"{label}: repeat {repeat + 1}/{repeats}, {runs} samples each: p99 {p99s} ms",
              file=sys.stderr)
    return measured


def percentiles(measured: list[list[list[float]]], q: int, ours: int = 0,
                baseline: int = 1) -> Percentile:
    """Percentile ``q`` of side ``ours`` and side ``baseline`` of a ``measure``."""
    return Percentile(q, [percentile(repeat[ours], q) for repeat in measured],
                      [percentile(repeat[baseline], q) for repeat in measured])


def compare(ours: Side, baseline: Side, *, runs: int, repeats: int, warm: int = 5,
            label: str = "") -> tuple[Percentile, Percentile]:
    """p50 and p99 of ``ours`` and ``baseline`` over ``repeats`` interleaved measurements of
    ``runs`` samples each."""
    measured = measure([ours, baseline], runs=runs, repeats=repeats, warm=warm, label=label)
    return percentiles(measured, 50), percentiles(measured, 99)


def result(name: str, unit: str, baseline: str, measured: Percentile, target: str,
           met: Callable[[float], bool], runs: int, informational: str | None = None
           ) -> BenchResult:
    """``met`` is judged on the median ratio (ours / baseline). The target is on p99: a p50
    result, or any result given ``informational`` (why), says it is informational."""
    if informational is None and measured.q != 99:
        informational = "the target is on p99"
    informational = "" if informational is None else f" (informational: {informational})"
    return BenchResult(
        f"{name}_p{measured.q}", round(statistics.median(measured.ours), 2), unit,
        f"{baseline}, p{measured.q} ms", round(statistics.median(measured.baseline), 2),
        round(measured.ratio, 3), f"p{measured.q} {target}{informational}", met(measured.ratio),
        repeats=len(measured.ours), samples_per_repeat=runs,
        ratio_spread=(round(measured.spread[0], 3), round(measured.spread[1], 3)),
    )
