"""cdk-nag 3 acknowledgements: one finding id, one reason specific to the resource."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct


def acknowledge(scope: IConstruct, findings: Mapping[str, str]) -> None:
    """Acknowledge each ``finding id -> reason`` on ``scope`` (a resource, not a whole stack)."""
    for finding_id, reason in findings.items():
        Validations.of(scope).acknowledge(Acknowledgment(id=finding_id, reason=reason))


def iam5_resource_finding(scope: IConstruct, resource: str) -> str:
    """The id cdk-nag gives an IAM5 finding on ``resource`` (an ARN that may hold tokens).

    cdk-nag names intrinsics the way it prints them: ``<LogicalId.Attr>`` for GetAtt,
    ``<LogicalId>`` for Ref and the export name for ImportValue, so the id follows the
    construct tree instead of being pasted from one synth.
    """
    return (
        f"AwsSolutions::AwsSolutions-IAM5[Resource::{_render(Stack.of(scope).resolve(resource))}]"
    )


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Fn::Join":
            separator, parts = argument
            return str(separator).join(_render(part) for part in parts)
        if function == "Fn::GetAtt":
            return f"<{argument[0]}.{argument[1]}>"
        if function == "Ref":
            return f"<{argument}>"
        if function == "Fn::ImportValue":
            return _render(argument)
    raise ValueError(f"cannot render {value!r} as cdk-nag does")
