"""The Lambda asset stays light: handlers and the pure offline modules import no DuckDB, pyarrow
or rich (the training-set builder's engines load them when they run)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("duckdb", "pyarrow", "rich")


@pytest.mark.parametrize("modules", [
    ("fastbreak.handlers.stream_processor", "fastbreak.handlers.feature_api"),
    ("fastbreak.offline.raw", "fastbreak.offline.replay", "fastbreak.offline.reference",
     "fastbreak.offline.selection", "fastbreak.offline.engines", "fastbreak.cli"),
])
def test_importing_loads_no_heavy_package(modules: tuple[str, ...]) -> None:
    code = (f"import sys; import {', '.join(modules)}; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
    assert found.stdout.strip() == "[]", found.stdout
