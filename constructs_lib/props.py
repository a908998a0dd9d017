"""Three-layer props, as in AWS Solutions Constructs: kit defaults < user props < enforced.

A construct's secure defaults are overridable; what it enforces is not, and a user prop that
tries to change an enforced value is an error naming the prop, not a silent override.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ConstructPropsError(ValueError):
    """Props given to a Fastbreak construct conflict with what it enforces or with each other."""


def merge_props(
    construct: str,
    defaults: Mapping[str, Any],
    user: Mapping[str, Any] | None,
    enforced: Mapping[str, Any],
) -> dict[str, Any]:
    user = user or {}
    for key in user.keys() & enforced.keys():
        if user[key] is not enforced[key] and user[key] != enforced[key]:
            raise ConstructPropsError(
                f"{construct}: prop '{key}' is enforced by the construct and cannot be overridden"
            )
    return {**defaults, **user, **enforced}


def exactly_one(construct: str, existing_name: str, existing: Any, props_name: str,
                props: Any) -> None:
    """Reject passing both an existing resource and props to build a new one."""
    if existing is not None and props is not None:
        raise ConstructPropsError(
            f"{construct}: pass either '{existing_name}' or '{props_name}', not both"
        )
