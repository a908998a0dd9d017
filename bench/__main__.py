"""Run the benchmarks and write ``bench/results/latest.json``.

    python -m bench                 # every benchmark
    python -m bench --only NAME     # one module, a name of BENCHMARKS
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

BENCHMARKS = (
    "processor_throughput", "write_amplification", "online_store_costs", "audience_read_fanout",
    "feature_read", "local_pipeline", "feast_peer",
    "cost_ratios",
    "training_set", "training_set_parity", "training_set_spark", "flink_audience_stage",
)
RESULTS = Path(__file__).parent / "results" / "latest.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", choices=BENCHMARKS, help="run one benchmark")
    args = parser.parse_args(argv)
    results = []
    for name in [args.only] if args.only else BENCHMARKS:
        module = importlib.import_module(f"bench.{name}")
        for result in module.run():
            spread = ("" if result.ratio_spread is None else
                      f" ({result.ratio_spread[0]}-{result.ratio_spread[1]} over "
                      f"{result.repeats} repeats)")
            print(f"{result.name:34} {result.value:>12} vs {result.baseline_value:<12} "
                  f"ratio {result.ratio}{spread} {'met' if result.met else 'NOT met'}: "
                  f"{result.target}")
            results.append(result.to_json())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
