"""Make a synthesized template deployable by moto's CloudFormation, and say what changed.

moto skips resource types it does not model, and a ``Fn::GetAtt`` on a skipped resource fails
the whole stack (the dashboard reads its alarms' ARNs). So the skipped resources are taken out
and every reference to them is replaced by the name the local platform gives them; the ones
that matter (Firehose delivery, alarms, the Glue table) are then emulated from the original
template. Event source mappings are taken out too, although moto models them: moto would
invoke the function through Docker on every PutRecords, and the local platform runs them
itself (``event_source_mapping``). The only other rewrite is a moto quirk:
``AWS::KMS::Key`` rejects CloudFormation's ``Key``/``Value`` tags.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from localplatform.assembly import StackTemplate
from localplatform.intrinsics import attribute

# Where a removed resource keeps its own name, if the template gives it one.
_NAME_PATHS: Mapping[str, tuple[str, ...]] = {
    "AWS::CloudWatch::Alarm": ("AlarmName",),
    "AWS::CloudWatch::Dashboard": ("DashboardName",),
    "AWS::KinesisFirehose::DeliveryStream": ("DeliveryStreamName",),
    "AWS::Glue::Database": ("DatabaseInput", "Name"),
    "AWS::Glue::Table": ("TableInput", "Name"),
    "AWS::Athena::WorkGroup": ("Name",),
}


# Types moto creates but the local platform runs itself.
EMULATED_TYPES = frozenset({"AWS::Lambda::EventSourceMapping"})
ALIAS_TYPE = "AWS::Lambda::Alias"


@dataclass
class PreparedStack:
    name: str
    original: dict[str, Any]
    for_moto: dict[str, Any]
    # logical id -> the physical name the local platform gives a resource moto skips
    local_names: dict[str, str] = field(default_factory=dict)
    skipped_types: dict[str, int] = field(default_factory=dict)


def supported_types() -> frozenset[str]:
    """Resource types moto's CloudFormation can create."""
    from moto.cloudformation.parsing import get_model_map

    return frozenset(get_model_map())


def prepare(stack: StackTemplate, supported: Collection[str]) -> PreparedStack:
    template = copy.deepcopy(stack.template)
    resources: dict[str, Any] = template.get("Resources", {})
    removed = {
        logical_id: resource
        for logical_id, resource in resources.items()
        if resource["Type"] not in supported or resource["Type"] in EMULATED_TYPES
    }
    prepared = PreparedStack(stack.name, stack.template, template)
    for logical_id, resource in removed.items():
        prepared.local_names[logical_id] = _local_name(stack.name, logical_id, resource)
        prepared.skipped_types[resource["Type"]] = (
            prepared.skipped_types.get(resource["Type"], 0) + 1
        )
        del resources[logical_id]
    types = {logical_id: resource["Type"] for logical_id, resource in removed.items()}
    # An alias is skipped, but what moto creates may name it (the API's invoke permissions):
    # those references name its function instead.
    aliases = {
        logical_id: {"Fn::GetAtt": [resource["Properties"]["FunctionName"]["Ref"], "Arn"]}
        for logical_id, resource in removed.items() if resource["Type"] == ALIAS_TYPE
    }
    replaced = _replace_references(template, prepared.local_names, types, aliases)
    assert isinstance(replaced, dict)
    prepared.for_moto = replaced
    for resource in replaced.get("Resources", {}).values():
        depends = resource.get("DependsOn")
        if isinstance(depends, list):
            resource["DependsOn"] = [d for d in depends if d not in removed]
        elif isinstance(depends, str) and depends in removed:
            del resource["DependsOn"]
        if resource["Type"] == "AWS::KMS::Key":
            resource.get("Properties", {}).pop("Tags", None)
    return prepared


def _local_name(stack_name: str, logical_id: str, resource: Mapping[str, Any]) -> str:
    value: Any = resource.get("Properties", {})
    for key in _NAME_PATHS.get(resource["Type"], ("<none>",)):
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, str):
        return value
    return f"{stack_name}-{logical_id}"[:64]


def _replace_references(
    value: Any, names: Mapping[str, str], types: Mapping[str, str],
    aliases: Mapping[str, Any],
) -> Any:
    if isinstance(value, list):
        return [_replace_references(item, names, types, aliases) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (function, argument), = value.items()
        if function == "Ref" and argument in aliases:
            return aliases[argument]
        if function == "Ref" and argument in names:
            return names[argument]
        if function == "Fn::GetAtt":
            logical_id, attr = argument.split(".", 1) if isinstance(argument, str) else argument
            if logical_id in names:
                return attribute(types[logical_id], names[logical_id], attr)
    return {key: _replace_references(item, names, types, aliases) for key, item in value.items()}
