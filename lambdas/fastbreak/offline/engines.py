"""The engines that build training sets, by name (``python -m fastbreak training-set --engine``).

Each is ``"module:function"``, imported only when chosen; the function takes
``(request: TrainingSetRequest, catalog, progress)`` and returns ``(table, summary)`` as
``fastbreak.offline.builder.build_training_set`` does, with the same semantics.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

ENGINES: dict[str, str] = {
    "duckdb": "fastbreak.offline.builder:build_training_set",
    "spark": "fastbreak.offline.spark_engine:build_training_set",
}
DEFAULT_ENGINE = "duckdb"


def engine(name: str) -> Callable[..., Any]:
    module, _, function = ENGINES[name].partition(":")
    found: Callable[..., Any] = getattr(importlib.import_module(module), function)
    return found
