"""The training-set Glue job's arguments: Glue's ``--name value`` pairs read as the job's
request, every fault one line naming the argument; and the local runner's own command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fastbreak.offline.glue_job import JobArgumentError, job_arguments, job_request
from fastbreak.offline.raw_files import S3Options
from fastbreak.offline.request import TrainingSetRequest

DEFAULTS = ["--raw-table", "fastbreak_dev.raw_events",
            "--training-sets", "s3://offline/training-sets/",
            "--job-bookmark-option", "job-bookmark-disable"]
RUN = ["--spine", "labels/june.parquet", "--features", "user_engagement, game_live.viewers_10m",
       "--out", "june.parquet"]


def request(*extra: str) -> TrainingSetRequest:
    return job_request(job_arguments([*DEFAULTS, *RUN, *extra]), S3Options()).request


def test_glue_arguments_become_the_request_with_paths_under_the_training_sets_folder() -> None:
    job = job_request(job_arguments(["--JOB_NAME", "job", *DEFAULTS, *RUN]), S3Options())
    assert (job.database, job.table) == ("fastbreak_dev", "raw_events")
    assert job.request.spine == "s3://offline/training-sets/labels/june.parquet"
    assert job.request.out == "s3://offline/training-sets/june.parquet"
    assert job.request.features == ("user_engagement", "game_live.viewers_10m")
    assert job.request.as_served is False and job.request.timestamp_column == "timestamp"


def test_a_runs_argument_overrides_the_jobs_default_and_whole_locations_are_kept() -> None:
    built = request("--raw-table", "other.raw_events", "--out", "s3://elsewhere/x.parquet",
                    "--as-served", "TRUE", "--key-columns", "user_id=fan, game_id=match",
                    "--timezone", "Europe/Paris", "--timestamp-column", "ts")
    job = job_request(job_arguments([*DEFAULTS, *RUN, "--raw-table", "other.raw_events"]),
                      S3Options())
    assert job.database == "other"
    assert built.out == "s3://elsewhere/x.parquet"
    assert built.as_served is True
    assert dict(built.key_columns) == {"user_id": "fan", "game_id": "match"}
    assert (built.timezone, built.timestamp_column) == ("Europe/Paris", "ts")


@pytest.mark.parametrize(("argv", "fragment"), [
    ([*DEFAULTS, "--spine", "x.parquet", "--out", "y.parquet"], "--features is required"),
    (["--training-sets", "s3://b/t/", *RUN], "--raw-table is required"),
    ([*DEFAULTS, *RUN, "--raw-table", "raw_events"], "--raw-table must be DATABASE.TABLE"),
    ([*DEFAULTS, *RUN, "--training-sets", "/tmp/sets"], "--training-sets must be an s3://"),
    ([*DEFAULTS, *RUN, "--as-served", "yes"], "--as-served must be true or false"),
    ([*DEFAULTS, *RUN, "--key-columns", "user_id"], "--key-columns takes FIELD=COLUMN"),
    (["stray", *DEFAULTS, *RUN], "expected a --name before 'stray'"),
])
def test_a_bad_job_argument_is_one_line_naming_it(argv: list[str], fragment: str) -> None:
    with pytest.raises(JobArgumentError, match=fragment) as raised:
        job_request(job_arguments(argv), S3Options())
    assert "\n" not in str(raised.value)


def test_the_local_runner_needs_a_running_platform_and_a_json_object() -> None:
    command = [sys.executable, "-m", "localplatform", "glue-job", "--arguments"]
    environment = {"PATH": "/usr/bin:/bin"}
    no_platform = subprocess.run([*command, '{"--spine": "x"}'], capture_output=True, text=True,
                                 env=environment, check=False)
    assert no_platform.returncode == 2
    assert no_platform.stderr.startswith("error: no local platform: source ")
    assert no_platform.stderr.count("\n") == 1
    not_an_object = subprocess.run([*command, '["--spine"]'], capture_output=True, text=True,
                                   env=environment, check=False)
    assert not_an_object.returncode == 2 and "expected {" in not_an_object.stderr
    assert "Traceback" not in not_an_object.stderr
