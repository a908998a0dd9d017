"""The Flink job's settings: what the CDK app passes as the application's runtime properties
(the ``fastbreak.audience`` property group) and the job reads back. Plain Python: the stacks
import it to name the properties, the job to parse them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# Where Managed Flink writes the application's runtime properties for the job to read.
PROPERTIES_FILE = Path("/etc/flink/application_properties.json")
PROPERTY_GROUP = "fastbreak.audience"
# The application zip's layout (fastbreak_flink.package writes it, the application's run options
# name it): the entry point, the one jar of connectors, the folder of Python code.
ZIP_ENTRY = "main.py"
ZIP_JAR = "lib/fastbreak-flink-connectors.jar"
ZIP_PYTHON = "python/"


@dataclass(frozen=True)
class JobSettings:
    """The job's settings: Managed Flink passes them as the ``fastbreak.audience`` property
    group (strings), the local runner as arguments."""

    table_name: str
    bucket_name: str
    stream_arn: str = ""
    region: str = ""
    endpoint_url: str = ""  # a local endpoint (moto); empty on AWS
    quarantine_prefix: str = "quarantine/"
    feature_log_prefix: str = "features/"
    remember_seconds: int = 7 * 3600
    key_buckets: int = 8
    flush_interval_ms: int = 1000
    flush_max_records: int = 2000
    flush_attempts: int = 4
    write_concurrency: int = 16
    initial_position: str = "TRIM_HORIZON"

    @classmethod
    def from_properties(cls, properties: Mapping[str, str]) -> JobSettings:
        known = {field.name: field for field in fields(cls)}
        unknown = sorted(set(properties) - set(known))
        if unknown:
            raise ValueError(f"property group {PROPERTY_GROUP}: unknown keys {unknown}")
        missing = [name for name in ("table_name", "bucket_name") if not properties.get(name)]
        if missing:
            raise ValueError(f"property group {PROPERTY_GROUP}: {missing} must be set")
        values: dict[str, Any] = {}
        for name, text in properties.items():
            if known[name].type == "int":
                try:
                    values[name] = int(text)
                except ValueError:
                    raise ValueError(f"property group {PROPERTY_GROUP}: {name} must be an "
                                     f"integer, not {text!r}") from None
            else:
                values[name] = text
        return cls(**values)


def read_properties(path: Path = PROPERTIES_FILE) -> dict[str, str]:
    """The ``fastbreak.audience`` group of the runtime properties Managed Flink writes."""
    groups = json.loads(path.read_text())
    for group in groups:
        if group.get("PropertyGroupId") == PROPERTY_GROUP:
            return {str(key): str(value) for key, value in group["PropertyMap"].items()}
    raise ValueError(f"{path} has no property group {PROPERTY_GROUP}")



def as_properties(settings: Mapping[str, Any]) -> dict[str, str]:
    """``settings`` (JobSettings field names) as the strings a property group holds."""
    unknown = sorted(set(settings) - {field.name for field in fields(JobSettings)})
    if unknown:
        raise ValueError(f"not settings of the Flink job: {unknown}")
    return {name: str(value) for name, value in settings.items()}
