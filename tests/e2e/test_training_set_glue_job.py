"""The training-set Glue job, run by the local platform as Glue would run it.

The app is synthesized and deployed into moto in server mode; moto creates no Glue job, so
``localplatform.glue_jobs`` runs the job's synthesized script with its synthesized package and
default arguments (read from the template), after registering the template's Glue tables. The
raw table is in the moto bucket where the Glue table says; the job writes under
``training-sets/``, and what it writes equals the DuckDB engine's training set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fastbreak.definitions import CATALOG
from fastbreak.offline.builder import build_training_set
from fastbreak.offline.raw_files import S3Options, resolve, write_raw
from fastbreak.offline.request import TrainingSetRequest
from localplatform.assembly import synthesize
from localplatform.deploy import Deployment, deploy
from localplatform.embedded_aws import client
from localplatform.glue_jobs import GlueJobSpec, glue_job, register_catalog, run_glue_job
from tests.fixtures.histories import assert_identical, catalog_history, catalog_spine
from tests.fixtures.offline import s3_on_moto, stream_records
from tests.fixtures.raw_events import raw_rows

pytestmark = pytest.mark.e2e

GROUPS = ("user_engagement", "user_affinity", "game_live", "content_trending")


@dataclass(frozen=True)
class Deployed:
    endpoint: str
    deployment: Deployment
    job: GlueJobSpec
    bucket: str

    @property
    def s3(self) -> S3Options:
        return S3Options(self.endpoint)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    assembly = tmp_path_factory.mktemp("glue-job") / "cdk.out"
    templates = synthesize(assembly)
    with s3_on_moto() as url:  # the test's own reads and writes go to moto as the job's do
        deployment = deploy(templates, url)
        (bucket,) = [stack.physical_ids[logical_id]
                     for stack, logical_id, resource in deployment.each("AWS::S3::Bucket")
                     if "LoggingConfiguration" in resource["Properties"]]  # the data bucket
        job = glue_job(deployment, assembly, "TrainingSetJob")
        assert register_catalog(deployment, client("glue", url)) == [
            "fastbreak_dev.raw_events", "fastbreak_dev.feature_log"]
        yield Deployed(url, deployment, job, bucket)


@pytest.fixture(scope="module")
def offline_store(deployed: Deployed) -> Deployed:
    """The raw table written where the Glue table says it is, and a spine of labels."""
    write_raw(raw_rows(stream_records(catalog_history()), CATALOG),
              f"s3://{deployed.bucket}/raw", CATALOG, deployed.s3)
    filesystem, path = resolve(f"s3://{deployed.bucket}/training-sets/labels/parity.parquet",
                               deployed.s3)
    with filesystem.open_output_stream(path) as sink:
        pq.write_table(catalog_spine(), sink)
    return deployed


def read(deployed: Deployed, location: str) -> pa.Table:
    filesystem, path = resolve(location, deployed.s3)
    with filesystem.open_input_file(path) as source:
        return pq.read_table(source)


def duckdb_training_set(deployed: Deployed, as_served: bool) -> pa.Table:
    """The DuckDB engine's training set from the same S3 spine and raw table."""
    table, _ = build_training_set(TrainingSetRequest(
        f"s3://{deployed.bucket}/training-sets/labels/parity.parquet", GROUPS,
        f"s3://{deployed.bucket}/raw", as_served=as_served, s3=deployed.s3))
    return table


def test_the_job_runs_the_synthesized_script_and_package_with_the_templates_arguments(
    deployed: Deployed,
) -> None:
    job = deployed.job
    assert job.glue_version == "5.1"
    assert job.script.read_bytes() == (
        Path(__file__).resolve().parents[2] / "lambdas/fastbreak/offline/glue_job.py"
    ).read_bytes()
    assert [path.suffix for path in job.python_files] == [".zip"]
    assert job.default_arguments["--raw-table"] == "fastbreak_dev.raw_events"
    assert job.default_arguments["--training-sets"] == f"s3://{deployed.bucket}/training-sets/"


def test_the_glue_job_writes_the_duckdb_engines_training_set_under_training_sets(
    offline_store: Deployed,
) -> None:
    # As served: every feature through the reference path in both engines, and the job's
    # --as-served reaching the engine (the Spark engine's event-time mode has its own test).
    out = "parity-as-served.parquet"
    run = run_glue_job(offline_store.job, {
        "--spine": "labels/parity.parquet", "--features": ",".join(GROUPS), "--out": out,
        "--as-served": "true",
    }, offline_store.endpoint)
    assert run.succeeded, run.stderr[-4000:]
    written = f"s3://{offline_store.bucket}/training-sets/{out}"
    assert run.stdout.startswith(f"wrote {written}: 30 rows"), run.stdout
    assert_identical(read(offline_store, written),
                     duckdb_training_set(offline_store, as_served=True))


def test_a_run_without_features_fails_with_one_line_and_writes_nothing(
    offline_store: Deployed,
) -> None:
    run = run_glue_job(offline_store.job, {"--spine": "labels/parity.parquet",
                                           "--out": "never.parquet"}, offline_store.endpoint)
    assert run.returncode == 2
    assert run.stdout == "error: job argument --features is required\n"
    listed = client("s3", offline_store.endpoint).list_objects_v2(
        Bucket=offline_store.bucket, Prefix="training-sets/never")
    assert listed.get("KeyCount", 0) == 0


def test_a_table_deployed_from_other_definitions_is_refused_naming_the_column(
    offline_store: Deployed,
) -> None:
    glue = client("glue", offline_store.endpoint)
    table = glue.get_table(DatabaseName="fastbreak_dev", Name="raw_events")["Table"]
    columns = table["StorageDescriptor"]["Columns"]
    drifted = {**table["StorageDescriptor"], "Columns": [
        {**column, "Type": "string"} if column["Name"] == "position" else column
        for column in columns]}
    glue.create_table(DatabaseName="fastbreak_dev", TableInput={
        "Name": "raw_events_drifted", "StorageDescriptor": drifted,
        "PartitionKeys": table.get("PartitionKeys", [])})
    run = run_glue_job(offline_store.job, {
        "--raw-table": "fastbreak_dev.raw_events_drifted", "--spine": "labels/parity.parquet",
        "--features": "user_engagement", "--out": "drifted.parquet",
    }, offline_store.endpoint)
    assert run.returncode == 2, run.stderr[-3000:]
    assert ("error: raw table fastbreak_dev.raw_events_drifted does not have the columns of "
            "the job's definitions (first difference: position bigint)") in run.stdout
