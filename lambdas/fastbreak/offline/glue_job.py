"""The training-set Glue job's entry script (``constructs_lib.training_set_job``): the Spark
engine (``fastbreak.offline.spark_engine``) run with the job's arguments.

Glue runs this file as the job's script, with the ``fastbreak`` package on its path (the job's
``--extra-py-files``), and passes every job argument as a ``--name value`` pair: the job's
default arguments, as synthesized, then the run's.

- ``--raw-table DATABASE.TABLE`` (a default argument): the raw events table. Its location comes
  from the Glue Data Catalog, and its columns must be the ones the package's definitions give
  (a job deployed from other definitions than the table's is refused, naming the column).
- ``--training-sets s3://BUCKET/training-sets/`` (a default argument): the folder of spines
  and training sets. ``--spine`` and ``--out`` name a key under it (``labels/june.parquet``)
  or a whole ``s3://`` location (which the job's role may not be allowed to read or write).
- ``--spine PATH``, ``--features NAMES`` (comma separated: groups or ``group.feature_window``),
  ``--out PATH``: required, as the command line's ``fastbreak training-set``.
- optional: ``--as-served true|false``, ``--timestamp-column COLUMN``, ``--key-columns
  FIELD=COLUMN,...``, ``--timezone ZONE``.

Any other argument is Glue's own (``--JOB_NAME``, ``--enable-metrics``, ...) and is ignored.
Bad input is one line on stderr, ``error: ...``, and exit code 2, before anything is written.
S3 and Glue are reached as the AWS SDKs reach them: the job's role on Glue; locally, the
standard ``AWS_ENDPOINT_URL`` (the local platform's embedded AWS).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fastbreak.definitions import CATALOG, Catalog
from fastbreak.offline.raw import raw_columns
from fastbreak.offline.raw_files import S3Options
from fastbreak.offline.request import TrainingSetRequest
from fastbreak.offline.selection import TrainingSetError

REQUIRED = ("--raw-table", "--training-sets", "--spine", "--features", "--out")
OPTIONAL = ("--as-served", "--timestamp-column", "--key-columns", "--timezone")
USAGE_ERROR = 2


class JobArgumentError(TrainingSetError):
    """A job argument is missing or malformed: one line naming it."""


@dataclass(frozen=True)
class JobRequest:
    database: str
    table: str
    request: TrainingSetRequest  # ``raw`` is filled in from the catalog


def job_arguments(argv: Sequence[str]) -> dict[str, str]:
    """``--name value`` pairs -> {name: value}; a later value of a name wins (a run's argument
    over the job's default, as Glue merges them)."""
    found: dict[str, str] = {}
    index = 0
    while index < len(argv):
        name = argv[index]
        if not name.startswith("--"):
            raise JobArgumentError(f"expected a --name before {name!r}")
        value = argv[index + 1] if index + 1 < len(argv) else ""
        if value.startswith("--"):  # a flag without its value
            value = ""
            index += 1
        else:
            index += 2
        found[name] = value
    return found


def job_request(arguments: Mapping[str, str], s3: S3Options) -> JobRequest:
    missing = [name for name in REQUIRED if not arguments.get(name)]
    if missing:
        raise JobArgumentError(f"job argument {missing[0]} is required")
    database, dot, table = arguments["--raw-table"].partition(".")
    if not dot or not database or not table:
        raise JobArgumentError(
            f"job argument --raw-table must be DATABASE.TABLE, not {arguments['--raw-table']!r}")
    root = arguments["--training-sets"]
    if not root.startswith("s3://"):
        raise JobArgumentError(
            f"job argument --training-sets must be an s3:// folder, not {root!r}")
    as_served = arguments.get("--as-served", "false").lower()
    if as_served not in ("true", "false"):
        raise JobArgumentError(f"job argument --as-served must be true or false, not {as_served!r}")
    key_columns = {}
    for pair in filter(None, arguments.get("--key-columns", "").split(",")):
        field, sign, column = pair.strip().partition("=")
        if not sign or not field or not column:
            raise JobArgumentError(
                f"job argument --key-columns takes FIELD=COLUMN pairs, not {pair.strip()!r}")
        key_columns[field] = column
    request = TrainingSetRequest(
        spine=_under(root, arguments["--spine"]),
        features=tuple(name.strip() for name in arguments["--features"].split(",")
                       if name.strip()),
        raw="", out=_under(root, arguments["--out"]),
        timestamp_column=arguments.get("--timestamp-column") or "timestamp",
        key_columns=key_columns, timezone=arguments.get("--timezone") or None,
        as_served=as_served == "true", s3=s3,
    )
    return JobRequest(database, table, request)


def raw_table_location(glue: Any, database: str, table: str, catalog: Catalog) -> str:
    """The raw table's S3 location from the Glue Data Catalog, its columns checked against
    ``catalog``'s raw columns."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        found = glue.get_table(DatabaseName=database, Name=table)["Table"]
    except ClientError as error:
        raise TrainingSetError(
            f"cannot read raw table {database}.{table} from the Glue Data Catalog: "
            f"{error.response.get('Error', {}).get('Message') or error}") from error
    except BotoCoreError as error:
        raise TrainingSetError(
            f"cannot read raw table {database}.{table} from the Glue Data Catalog: {error}"
        ) from error
    descriptor = found.get("StorageDescriptor", {})
    declared = [(column["Name"], column["Type"]) for column in descriptor.get("Columns", [])]
    expected = [(name, kind.glue_type) for name, kind in raw_columns(catalog)]
    if declared != expected:
        differ = next((f"{e[0]} {e[1]}" for e, d in zip(expected, declared, strict=False)
                       if e != d), None) or (
            f"{len(declared)} columns, not {len(expected)}")
        raise TrainingSetError(
            f"raw table {database}.{table} does not have the columns of the job's definitions "
            f"(first difference: {differ}): deploy the job and the table from the same "
            "definitions")
    location = str(descriptor.get("Location", ""))
    if not location.startswith("s3://"):
        raise TrainingSetError(f"raw table {database}.{table} has no s3:// location")
    return location.rstrip("/")


def main(argv: Sequence[str] | None = None, catalog: Catalog = CATALOG) -> int:
    import boto3

    from fastbreak.offline.spark_engine import build_training_set

    started = time.perf_counter()
    session = boto3.session.Session()
    s3 = S3Options(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
                   session.region_name)
    try:
        job = job_request(job_arguments(list(sys.argv[1:] if argv is None else argv)), s3)
        raw = raw_table_location(session.client("glue"), job.database, job.table, catalog)
        request = replace(job.request, raw=raw)
        _, summary = build_training_set(request, catalog)
    except TrainingSetError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    print(f"wrote {request.out}: {summary.rows:,} rows, {len(summary.features)} features, "
          f"{summary.duplicates_dropped:,} duplicate copies dropped, "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


def _under(root: str, path: str) -> str:
    return path if path.startswith("s3://") else f"{root.rstrip('/')}/{path.lstrip('/')}"


if __name__ == "__main__":
    raise SystemExit(main())
