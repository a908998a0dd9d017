"""Small queries over synthesized templates, shared by the infra tests."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Template


def only(template: Template, resource_type: str) -> dict[str, Any]:
    """The one resource of a type in a template, as its CloudFormation JSON."""
    resources = template.find_resources(resource_type)
    assert len(resources) == 1, f"expected one {resource_type}, found {sorted(resources)}"
    return next(iter(resources.values()))


def logical_id(template: Template, resource_type: str) -> str:
    resources = template.find_resources(resource_type)
    assert len(resources) == 1, f"expected one {resource_type}, found {sorted(resources)}"
    return next(iter(resources))


def named(template: Template, resource_type: str, prefix: str) -> dict[str, Any]:
    """The one resource of a type whose logical id starts with ``prefix`` (the construct's id:
    ``StreamProcessor``, ``AudienceStage``...)."""
    resources = {logical: resource for logical, resource in
                 template.find_resources(resource_type).items() if logical.startswith(prefix)}
    assert len(resources) == 1, f"expected one {resource_type} {prefix}*, found {sorted(resources)}"
    return next(iter(resources.values()))
