"""Keep the offline store's files after a local run: moto's S3 lives in memory and vanishes
with the platform, so the demo copies the prefixes a user wants to open (with DuckDB, pandas,
Spark) into a folder of the working tree, keys and partition folders unchanged."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# What the offline store holds for readers; raw-errors/ and athena-results/ are operational.
EXPORTED_PREFIXES = ("raw/", "features/", "quarantine/", "training-sets/")
REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_DESTINATION = REPOSITORY / "demo-output" / "offline"


def export_offline_store(s3: Any, bucket: str, destination: Path,
                         prefixes: Sequence[str] = EXPORTED_PREFIXES) -> Counter[str]:
    """Copy every object under ``prefixes`` to ``destination``/<key>; returns the files written
    per prefix. Each prefix's folder is replaced, so that a run never mixes with the last one;
    nothing else in ``destination`` is touched."""
    root = destination.resolve()
    written: Counter[str] = Counter()
    for prefix in prefixes:
        folder = root / prefix.rstrip("/")
        if folder.exists():
            shutil.rmtree(folder)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                target = (root / item["Key"]).resolve()
                if not target.is_relative_to(folder):  # a key with "..": not ours to write
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
                written[prefix] += 1
    return written
