"""A Python Lambda with the kit's defaults: python3.14 on arm64, the public Powertools layer,
active tracing, an encrypted log group, a role with no AWS-managed policies, and a ``live``
alias on a published version for safe deployments.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import BundlingOptions, DockerImage, ILocalBundling, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from constructs_lib.defaults import LOG_RETENTION_DAYS
from constructs_lib.nag import acknowledge
from constructs_lib.props import ConstructPropsError, merge_props
from constructs_lib.secure_defaults import encrypted_log_group

LAMBDA_ASSET_DIR = Path(__file__).resolve().parent.parent / "lambdas"

# The public layer's version number for the Powertools release pinned in requirements.txt
# (3.31.1). Bump both together: the layer carries the library the handlers import.
POWERTOOLS_VERSION = "3.31.1"
POWERTOOLS_LAYER_VERSION = 36
POWERTOOLS_LAYER_ACCOUNT = "017000801446"

RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
METRICS_NAMESPACE = "Fastbreak"
# The alias every caller invokes; CodeDeploy shifts it from one published version to the next.
LIVE_ALIAS = "live"

# Keep tests, caches and local tooling out of the asset that is uploaded to Lambda.
ASSET_EXCLUDES = ["**/__pycache__", "**/*.pyc", "**/.mypy_cache", "**/.pytest_cache"]
REQUIREMENTS = LAMBDA_ASSET_DIR.parent / "requirements.txt"
# Wheels the asset carries besides the Powertools layer, for python3.14 on arm64 (the tags
# orjson publishes). Binary wheels only: pip downloads them, no Docker, no compiler.
ASSET_WHEELS = ("orjson",)
# What the offline functions (the consistency check) carry besides: the training-set builder's
# engine. About 200 MB unpacked, within Lambda's 250 MB with the Powertools layer; pyarrow
# needs no numpy for what the builder does.
OFFLINE_WHEELS = (*ASSET_WHEELS, "pyarrow", "duckdb")
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64")
WHEEL_PYTHON = "3.14"
# Build-time files of the wheels, never imported at run time (C++ headers, Cython sources,
# the libraries' own tests): left out of the asset.
_BUILD_ONLY = ("*.h", "*.hpp", "*.cc", "*.cpp", "*.pyx", "*.pxd", "*.pxi", "include", "tests",
               "__pycache__")
# Installed wheels, by pins and platform: a synth after the first copies them from here.
WHEEL_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
    "fastbreak" / "lambda-wheels"


def pinned(package: str) -> str:
    """``package==version`` as requirements.txt pins it (one pin for tests and the asset)."""
    match = re.search(rf"^{re.escape(package)}==\S+", REQUIREMENTS.read_text(), re.MULTILINE)
    if match is None:
        raise ValueError(f"requirements.txt pins no version of {package}")
    return match.group(0)


class WheelsUnavailable(RuntimeError):
    """pip could not install a function's wheels for the Lambda platform."""


@jsii.implements(ILocalBundling)
class _AssetWithWheels:
    """The Lambda folder plus ``wheels`` for the function's platform. Where PyPI cannot be
    reached an asset whose wheels are all ``ASSET_WHEELS`` ships without them, with a warning
    (the engine then decodes with json: the same outcomes, more slowly); any other fails the
    synth, naming them."""

    def __init__(self, wheels: Sequence[str]) -> None:
        self.wheels = tuple(wheels)

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_: Any) -> bool:
        shutil.copytree(
            LAMBDA_ASSET_DIR, output_dir, dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache"),
        )
        try:
            installed = installed_wheels(self.wheels)
        except WheelsUnavailable as error:
            if set(self.wheels) - set(ASSET_WHEELS):
                raise
            warnings.warn(f"the Lambda asset ships without {', '.join(self.wheels)}: {error}",
                          stacklevel=1)
            return True
        shutil.copytree(installed, output_dir, dirs_exist_ok=True, copy_function=_link)
        return True


def installed_wheels(wheels: Sequence[str]) -> Path:
    """``wheels`` installed for the Lambda platform, less their build-time files: a folder of
    ``WHEEL_CACHE``, made on first use."""
    pins = [pinned(package) for package in wheels]
    key = hashlib.sha256(json.dumps([pins, WHEEL_PLATFORMS, WHEEL_PYTHON, _BUILD_ONLY])
                         .encode()).hexdigest()[:16]
    target = WHEEL_CACHE / key
    if target.is_dir():
        return target
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    staging = WHEEL_CACHE / f".{key}.{uuid.uuid4().hex}"
    platforms = [arg for platform in WHEEL_PLATFORMS for arg in ("--platform", platform)]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--no-compile", "--only-binary=:all:", "--implementation", "cp",
         "--python-version", WHEEL_PYTHON, *platforms, "--target", str(staging), *pins],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise WheelsUnavailable(
            f"cannot install {', '.join(pins)} for the Lambda platform: "
            f"{done.stderr.strip()[-300:]}")
    for pattern in _BUILD_ONLY:
        for path in list(staging.rglob(pattern)):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    try:
        staging.rename(target)
    except OSError:  # another synth cached the same wheels first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _link(source: str, destination: str) -> None:
    """Hard links where the file system allows: an asset of 200 MB costs no copy."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def lambda_code(wheels: Sequence[str] = ASSET_WHEELS) -> lambda_.Code:
    """The Lambda folder with its wheels, bundled locally (the image is never pulled)."""
    return lambda_.Code.from_asset(
        str(LAMBDA_ASSET_DIR), exclude=ASSET_EXCLUDES,
        bundling=BundlingOptions(
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.14"),
            local=_AssetWithWheels(wheels),
            # Part of the key CDK caches bundled assets by (the local bundler is not): assets
            # with other wheels are bundled apart.
            environment={"FASTBREAK_WHEELS": ",".join(wheels)},
        ),
    )


def powertools_layer_arn(region: str) -> str:
    return (
        f"arn:aws:lambda:{region}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-python314-arm64:{POWERTOOLS_LAYER_VERSION}"
    )


class PowertoolsFunction(Construct):
    """Exposes ``function``, ``role``, ``log_group``, ``version`` (the published version of
    this synth) and ``alias`` (``live``: what event sources, integrations and deployments
    target).

    ``defaults`` < ``function_props`` < what the kit enforces: the runtime and architecture
    the Powertools layer is built for, the handler and code, the role, the log group, JSON
    logs and active tracing. ``log_group`` is an existing group to log to; without one the
    construct creates a group encrypted with ``log_key``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: str,
        service_name: str,
        environment: Mapping[str, str],
        reaches: str,
        defaults: Mapping[str, Any],
        function_props: Mapping[str, Any] | None = None,
        log_group: logs.ILogGroup | None = None,
        log_key: kms.IKey | None = None,
        log_retention_days: int = LOG_RETENTION_DAYS,
        provisioned_concurrency: int | None = None,
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
        wheels: Sequence[str] = ASSET_WHEELS,
    ) -> None:
        super().__init__(scope, construct_id)
        construct = f"{service_name} function"
        if log_group is None:
            if log_key is None:
                raise ConstructPropsError(
                    f"{construct}: pass 'log_key' to encrypt a new log group, or 'log_group'"
                )
            log_group = encrypted_log_group(
                self, "LogGroup", key=log_key, retention_days=log_retention_days,
                removal_policy=removal_policy,
            )
        self.log_group: logs.ILogGroup = log_group
        # An explicit role instead of the L2 default, which attaches the AWS-managed
        # AWSLambdaBasicExecutionRole with logs:* on every log group of the account.
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Fastbreak {service_name}: writes only to its own log group",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        layer = lambda_.LayerVersion.from_layer_version_arn(
            self, "PowertoolsLayer", powertools_layer_arn(Stack.of(self).region)
        )
        enforced: dict[str, Any] = {
            # The Powertools layer is built for this runtime and architecture.
            "runtime": RUNTIME,
            "architecture": ARCHITECTURE,
            "handler": handler,
            "code": lambda_code(wheels),
            "layers": [layer],
            "role": self.role,
            "log_group": self.log_group,
            "logging_format": lambda_.LoggingFormat.JSON,
            "tracing": lambda_.Tracing.ACTIVE,
            "environment": {
                "POWERTOOLS_SERVICE_NAME": service_name,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                "POWERTOOLS_LOG_LEVEL": "INFO",
                **environment,
            },
        }
        self.function = lambda_.Function(
            self, "Function", **merge_props(construct, defaults, function_props, enforced)
        )
        # Every synth that changes the code or configuration publishes a new version; the
        # alias moves to it through the deployment group, never all at once by itself.
        self.version: lambda_.Version = self.function.current_version
        self.alias = lambda_.Alias(
            self,
            "Live",
            alias_name=LIVE_ALIAS,
            version=self.version,
            provisioned_concurrent_executions=provisioned_concurrency or None,
        )
        acknowledge(
            self,
            {
                "AwsSolutions::AwsSolutions-IAM5[Resource::*]": (
                    "xray:PutTraceSegments and xray:PutTelemetryRecords, added by active "
                    "tracing, support no resource-level permissions"
                ),
                "NIST.800.53.R5::NIST.800.53.R5-IAMNoInlinePolicy": (
                    f"the inline policy of the {service_name} role holds the grants of this one "
                    "function; a customer-managed policy would be attached to nothing else"
                ),
                "NIST.800.53.R5::NIST.800.53.R5-LambdaInsideVPC": (
                    f"{service_name} reaches only {reaches} through IAM-authorized AWS "
                    "endpoints; a VPC would add NAT cost and cold-start time without shielding "
                    "any private resource"
                ),
            },
        )
