"""Deploy the synthesized templates into the embedded AWS through its CloudFormation.

What ``cdk deploy`` needs from ``cdk bootstrap`` (the bootstrap version parameter and the
assets bucket) is created first. The Lambda code uploaded there is a placeholder: moto cannot
run it without Docker, and the local platform imports the real handlers in-process instead.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from localplatform.assembly import StackTemplate
from localplatform.aws_env import ACCOUNT, REGION, client
from localplatform.intrinsics import Resolver, attribute
from localplatform.template_prep import PreparedStack, prepare, supported_types

BOOTSTRAP_VERSION_PARAMETER = "/cdk-bootstrap/hnb659fds/version"
BOOTSTRAP_VERSION = "30"
ASSETS_BUCKET = f"cdk-hnb659fds-assets-{ACCOUNT}-{REGION}"
PLACEHOLDER_CODE = (
    "# The embedded local platform runs the real handler in-process; see localplatform.\n"
)


class DeploymentError(RuntimeError):
    """A stack did not reach CREATE_COMPLETE in the embedded AWS."""


@dataclass
class DeployedStack:
    name: str
    template: dict[str, Any]  # as synthesized, skipped resources included
    physical_ids: dict[str, str]
    resolver: Resolver
    prepared: PreparedStack

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.template.get("Resources", {}).items()
            if resource["Type"] == resource_type
        }

    def resolve(self, value: Any) -> Any:
        return self.resolver.resolve(value)


@dataclass
class Deployment:
    endpoint_url: str
    stacks: list[DeployedStack]
    exports: dict[str, str]

    def each(self, resource_type: str) -> Iterator[tuple[DeployedStack, str, dict[str, Any]]]:
        """Every resource of a type, with its stack, across the deployment."""
        for stack in self.stacks:
            for logical_id, resource in stack.resources(resource_type).items():
                yield stack, logical_id, resource

    def one(self, resource_type: str) -> tuple[DeployedStack, str, dict[str, Any]]:
        found = list(self.each(resource_type))
        if len(found) != 1:
            raise DeploymentError(f"expected one {resource_type}, the templates have {len(found)}")
        return found[0]

    @property
    def skipped_types(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for stack in self.stacks:
            for resource_type, count in stack.prepared.skipped_types.items():
                totals[resource_type] = totals.get(resource_type, 0) + count
        return totals


def deploy(templates: Sequence[StackTemplate], endpoint_url: str) -> Deployment:
    _bootstrap(templates, endpoint_url)
    cloudformation = client("cloudformation", endpoint_url)
    supported = supported_types()
    created: list[tuple[StackTemplate, PreparedStack, dict[str, str]]] = []
    for stack in templates:
        prepared = prepare(stack, supported)
        with warnings.catch_warnings():
            # moto warns for each type it skips; those are exactly the removed ones, listed
            # in the deployment summary instead.
            warnings.simplefilter("ignore")
            cloudformation.create_stack(
                StackName=stack.name,
                TemplateBody=json.dumps(prepared.for_moto),
                Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM",
                              "CAPABILITY_AUTO_EXPAND"],
            )
        created.append((stack, prepared, _physical_ids(cloudformation, stack, prepared)))
    return _deployment(cloudformation, endpoint_url, created)


def deployed(templates: Sequence[StackTemplate], endpoint_url: str) -> Deployment:
    """The deployment of ``templates`` that a running local platform made (from another
    process): what its CloudFormation created, read back."""
    cloudformation = client("cloudformation", endpoint_url)
    supported = supported_types()
    return _deployment(cloudformation, endpoint_url, [
        (stack, prepared, _physical_ids(cloudformation, stack, prepared))
        for stack in templates for prepared in [prepare(stack, supported)]
    ])


def _physical_ids(cloudformation: Any, stack: StackTemplate, prepared: PreparedStack
                  ) -> dict[str, str]:
    description = cloudformation.describe_stacks(StackName=stack.name)["Stacks"][0]
    if description["StackStatus"] != "CREATE_COMPLETE":
        raise DeploymentError(
            f"{stack.name}: {description['StackStatus']} "
            f"{description.get('StackStatusReason', '')}"
        )
    physical_ids = dict(prepared.local_names)
    paginator = cloudformation.get_paginator("list_stack_resources")
    for page in paginator.paginate(StackName=stack.name):
        for summary in page["StackResourceSummaries"]:
            if summary.get("PhysicalResourceId"):
                physical_ids[summary["LogicalResourceId"]] = summary["PhysicalResourceId"]
    physical_ids.update(_alias_arns(stack, physical_ids))
    return physical_ids


def _deployment(cloudformation: Any, endpoint_url: str,
                created: list[tuple[StackTemplate, PreparedStack, dict[str, str]]]) -> Deployment:
    exports = {
        export["Name"]: export.get("Value", "")
        for export in cloudformation.list_exports()["Exports"]
    }
    stacks = [
        DeployedStack(stack.name, stack.template, physical_ids,
                      Resolver(stack.template, physical_ids, exports, stack.name), prepared)
        for stack, prepared, physical_ids in created
    ]
    return Deployment(endpoint_url, stacks, exports)


def _alias_arns(stack: StackTemplate, physical_ids: dict[str, str]) -> dict[str, str]:
    """What ``Ref`` of a (skipped) alias returns on AWS: the function's ARN qualified by the
    alias name; the local platform runs the alias (``localplatform.aliases``)."""
    return {
        logical_id: attribute("AWS::Lambda::Function",
                              physical_ids[alias["Properties"]["FunctionName"]["Ref"]], "Arn")
        + f":{alias['Properties']['Name']}"
        for logical_id, alias in stack.resources("AWS::Lambda::Alias").items()
    }


def _bootstrap(templates: Sequence[StackTemplate], endpoint_url: str) -> None:
    client("ssm", endpoint_url).put_parameter(
        Name=BOOTSTRAP_VERSION_PARAMETER, Value=BOOTSTRAP_VERSION, Type="String", Overwrite=True
    )
    s3 = client("s3", endpoint_url)
    s3.create_bucket(Bucket=ASSETS_BUCKET)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as placeholder:
        placeholder.writestr("README.py", PLACEHOLDER_CODE)
    for stack in templates:
        for function in stack.resources("AWS::Lambda::Function").values():
            key = function["Properties"].get("Code", {}).get("S3Key")
            if isinstance(key, str):
                s3.put_object(Bucket=ASSETS_BUCKET, Key=key, Body=archive.getvalue())
