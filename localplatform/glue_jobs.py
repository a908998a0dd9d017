"""AWS Glue jobs of the templates, run locally.

moto's CloudFormation creates no ``AWS::Glue::Job`` (nor the Glue database and tables): the
local platform runs a job's script itself, as Glue runs it.

- ``GlueJobSpec.from_template``: the job as synthesized: its script and ``--extra-py-files``
  are the cloud assembly's own assets (found through the assets manifest by their S3 keys), its
  default arguments are the template's, resolved against the deployment (bucket and log group
  names as created).
- ``register_catalog``: the templates' Glue databases and tables put into the embedded AWS's
  Glue API, which the job's script reads.
- ``run_glue_job``: ``spark-submit`` in local mode of the script with the package as
  ``--py-files`` (what ``--extra-py-files`` is to Glue), and the arguments Glue passes a
  script: ``--JOB_NAME``, ``--JOB_RUN_ID``, the job's default arguments, then the run's. The
  script's AWS SDK calls go to the embedded AWS through the standard ``AWS_ENDPOINT_URL``.
- ``start_job_run``: all of the above for a platform running in another process
  (``python -m localplatform glue-job``, the local ``aws glue start-job-run``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localplatform.aws_env import REGION
from localplatform.deploy import DeployedStack, Deployment, DeploymentError

JOB_TYPE = "AWS::Glue::Job"
EXTRA_PY_FILES = "--extra-py-files"
# Arguments that configure Glue itself; they mean nothing to a local spark-submit.
_GLUE_ONLY = ("--extra-py-files", "--job-language", "--enable-continuous-cloudwatch-log",
              "--enable-continuous-log-filter", "--continuous-log-logGroup",
              "--enable-metrics", "--enable-observability-metrics", "--job-bookmark-option")


@dataclass(frozen=True)
class GlueJobSpec:
    name: str
    script: Path
    python_files: tuple[Path, ...]
    default_arguments: dict[str, str]
    glue_version: str

    @classmethod
    def from_template(cls, stack: DeployedStack, logical_id: str, assembly: Path
                      ) -> GlueJobSpec:
        properties = stack.template["Resources"][logical_id]["Properties"]
        assets = asset_files(assembly)
        arguments = {name: str(value) for name, value in
                     stack.resolve(properties.get("DefaultArguments", {})).items()}
        python_files = tuple(_asset(assets, location) for location in
                             filter(None, arguments.get(EXTRA_PY_FILES, "").split(",")))
        return cls(
            name=stack.physical_ids[logical_id],
            script=_asset(assets, stack.resolve(properties["Command"]["ScriptLocation"])),
            python_files=python_files,
            default_arguments=arguments,
            glue_version=str(properties.get("GlueVersion", "")),
        )


@dataclass(frozen=True)
class GlueJobRun:
    run_id: str
    returncode: int
    stdout: str  # the script's stdout and stderr: spark-submit merges them, as Glue's log does
    stderr: str  # spark-submit's own (Spark's log)

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0


def glue_job(deployment: Deployment, assembly: Path, logical_id_prefix: str = ""
             ) -> GlueJobSpec:
    """The one Glue job of the deployment whose logical id starts with the prefix."""
    found = [(stack, logical_id) for stack, logical_id, _ in deployment.each(JOB_TYPE)
             if logical_id.startswith(logical_id_prefix)]
    if len(found) != 1:
        raise DeploymentError(f"expected one Glue job named {logical_id_prefix!r}*, the "
                              f"templates have {len(found)}")
    stack, logical_id = found[0]
    return GlueJobSpec.from_template(stack, logical_id, assembly)


def asset_files(assembly: Path) -> dict[str, Path]:
    """S3 object key of each file asset of the cloud assembly -> its file in the assembly."""
    found: dict[str, Path] = {}
    for manifest in assembly.glob("*.assets.json"):
        for asset in json.loads(manifest.read_text()).get("files", {}).values():
            if asset["source"].get("packaging") != "file":
                continue
            for destination in asset["destinations"].values():
                found[destination["objectKey"]] = assembly / asset["source"]["path"]
    return found


def _asset(assets: Mapping[str, Path], location: str) -> Path:
    key = location.split("://", 1)[-1].split("/", 1)[-1]
    if key not in assets:
        raise DeploymentError(f"{location} is no file asset of the cloud assembly")
    return assets[key]


def register_catalog(deployment: Deployment, glue: Any) -> list[str]:
    """Create the templates' Glue databases and tables in the embedded AWS (those that do not
    exist yet); returns the tables created, as ``database.table``."""
    created = []
    for stack, _, resource in deployment.each("AWS::Glue::Database"):
        database = stack.resolve(resource["Properties"]["DatabaseInput"])
        with contextlib.suppress(glue.exceptions.AlreadyExistsException):
            glue.create_database(DatabaseInput=database)
    for stack, _, resource in deployment.each("AWS::Glue::Table"):
        properties = stack.resolve(resource["Properties"])
        table = properties["TableInput"]
        try:
            glue.create_table(DatabaseName=properties["DatabaseName"], TableInput=table)
        except glue.exceptions.AlreadyExistsException:
            continue
        created.append(f"{properties['DatabaseName']}.{table['Name']}")
    return created


def run_glue_job(spec: GlueJobSpec, arguments: Mapping[str, str], endpoint_url: str, *,
                 cores: int = 2, timeout_s: float = 1800.0) -> GlueJobRun:
    """Run the job's script once with ``arguments`` (the run's, over the job's defaults)."""
    import pyspark

    run_id = f"jr_local_{uuid.uuid4().hex}"
    merged = {name: value for name, value in spec.default_arguments.items()
              if name not in _GLUE_ONLY}
    merged.update(arguments)
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    command = [
        str(submit), "--master", f"local[{cores}]", "--name", spec.name,
        "--conf", "spark.ui.enabled=false", "--conf", "spark.ui.showConsoleProgress=false",
        "--conf", f"spark.sql.shuffle.partitions={2 * cores}",
        "--conf", "spark.sql.session.timeZone=UTC",
        *(["--py-files", ",".join(str(path) for path in spec.python_files)]
          if spec.python_files else []),
        str(spec.script), "--JOB_NAME", spec.name, "--JOB_RUN_ID", run_id,
        *(item for name, value in merged.items() for item in (name, value)),
    ]
    environment = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "fastbreak-local", "AWS_SECRET_ACCESS_KEY": "fastbreak-local",
        "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    # The package comes from the job's --py-files only, as on Glue: not from this checkout.
    environment.pop("PYTHONPATH", None)
    done = subprocess.run(command, env=environment, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    return GlueJobRun(run_id, done.returncode, done.stdout, done.stderr)


def start_job_run(endpoint_url: str, arguments: Mapping[str, str], job: str = "TrainingSetJob",
                  workdir: Path | None = None, env_name: str = "dev") -> GlueJobRun:
    """Run a Glue job of the local platform that serves ``endpoint_url`` (started by another
    process): the app is synthesized again, as the platform synthesized it, and its deployment
    read back from the platform's CloudFormation."""
    import tempfile

    from localplatform.assembly import synthesize
    from localplatform.deploy import deployed
    from localplatform.embedded_aws import client

    with tempfile.TemporaryDirectory(prefix="fastbreak-glue-job-") as scratch:
        assembly = (workdir or Path(scratch)) / "cdk.out"
        templates = synthesize(assembly, env_name)
        deployment = deployed(templates, endpoint_url)
        register_catalog(deployment, client("glue", endpoint_url))
        return run_glue_job(glue_job(deployment, assembly, job), arguments, endpoint_url)
