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
    "processor_throughput", "write_amplification", "feature_read", "local_pipeline", "feast_peer",
    "training_set", "training_set_parity",
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
            print(f"{result.name:28} {result.value:>12} {result.unit:34} "
                  f"ratio {result.ratio:<8} {'met' if result.met else 'NOT met'}: {result.target}")
            results.append(result.to_json())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
