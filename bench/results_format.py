"""The result format shared by every Fastbreak benchmark (``bench/results/latest.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class BenchResult:
    name: str
    value: float
    unit: str
    baseline: str  # what the value is compared with
    baseline_value: float
    ratio: float  # value / baseline_value (the median of the repeats' ratios when repeated)
    target: str
    met: bool
    # Latency percentiles are measured several times (``bench.sampling``): how many times, with
    # how many samples each, and the lowest and highest of the repeats' ratios.
    repeats: int = 1
    samples_per_repeat: int | None = None
    ratio_spread: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
