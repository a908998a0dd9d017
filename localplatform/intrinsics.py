"""Resolve CloudFormation intrinsic functions against what the embedded AWS created.

The templates are the source of truth for names, environment variables, mapping settings and
alarms; these values are intrinsics (``Ref``, ``Fn::GetAtt``, ``Fn::ImportValue``, ...) until a
deployment gives them physical names. Only the functions CDK emits for these stacks are
supported; anything else raises, so a new construct cannot silently resolve to garbage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from localplatform.aws_env import ACCOUNT, REGION

PSEUDO_PARAMETERS = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::NoValue": None,
}

# How an ARN is spelled for each type whose Ref is its name (SNS topics' Ref is the ARN).
_ARN_FORMATS = {
    "AWS::Kinesis::Stream": "arn:aws:kinesis:{region}:{account}:stream/{name}",
    "AWS::DynamoDB::Table": "arn:aws:dynamodb:{region}:{account}:table/{name}",
    "AWS::S3::Bucket": "arn:aws:s3:::{name}",
    "AWS::SQS::Queue": "arn:aws:sqs:{region}:{account}:{name}",
    "AWS::Lambda::Function": "arn:aws:lambda:{region}:{account}:function:{name}",
    "AWS::IAM::Role": "arn:aws:iam::{account}:role/{name}",
    "AWS::KMS::Key": "arn:aws:kms:{region}:{account}:key/{name}",
    "AWS::CloudWatch::Alarm": "arn:aws:cloudwatch:{region}:{account}:alarm:{name}",
    "AWS::KinesisFirehose::DeliveryStream":
        "arn:aws:firehose:{region}:{account}:deliverystream/{name}",
    "AWS::Logs::LogGroup": "arn:aws:logs:{region}:{account}:log-group:{name}:*",
    "AWS::SNS::Topic": "{name}",
}

_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


class UnresolvableError(ValueError):
    """A template value uses an intrinsic or a reference the local platform cannot resolve."""


def queue_name(physical_id: str) -> str:
    """moto's physical id of a queue is its URL (as CloudFormation's Ref); the name ends it."""
    return physical_id.rstrip("/").rsplit("/", 1)[-1]


def attribute(resource_type: str, physical_id: str, name: str) -> str:
    """The value of ``Fn::GetAtt [resource, name]`` for a resource with ``physical_id``."""
    if resource_type == "AWS::SQS::Queue":
        short = queue_name(physical_id)
        values = {"QueueName": short, "QueueUrl": physical_id,
                  "Arn": _ARN_FORMATS[resource_type].format(region=REGION, account=ACCOUNT,
                                                            name=short)}
        if name in values:
            return values[name]
    if resource_type == "AWS::SNS::Topic" and name == "TopicName":
        return physical_id.rsplit(":", 1)[-1]
    if name in ("Arn", "TopicArn", "StreamArn") and resource_type in _ARN_FORMATS:
        return _ARN_FORMATS[resource_type].format(region=REGION, account=ACCOUNT, name=physical_id)
    raise UnresolvableError(f"Fn::GetAtt {name} of {resource_type} is not known locally")


class Resolver:
    """Resolves the values of one stack's template."""

    def __init__(
        self,
        template: Mapping[str, Any],
        physical_ids: Mapping[str, str],
        exports: Mapping[str, str],
        stack_name: str,
    ) -> None:
        self._resources: Mapping[str, Any] = template.get("Resources", {})
        self._physical_ids = physical_ids
        self._exports = exports
        self._pseudo = {**PSEUDO_PARAMETERS, "AWS::StackName": stack_name}

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (function, argument), = value.items()
            if function == "Ref":
                return self.ref(argument)
            if function == "Fn::GetAtt":
                logical_id, name = (
                    argument.split(".", 1) if isinstance(argument, str) else argument
                )
                return self.get_att(logical_id, name)
            if function == "Fn::ImportValue":
                export = self.resolve(argument)
                if export not in self._exports:
                    raise UnresolvableError(f"no export named {export!r}")
                return self._exports[export]
            if function == "Fn::Join":
                separator, parts = argument
                return separator.join(str(self.resolve(part)) for part in parts)
            if function == "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            if function == "Fn::Split":
                separator, text = argument
                return str(self.resolve(text)).split(separator)
            if function == "Fn::Sub":
                return self._sub(argument)
            if function.startswith("Fn::"):
                raise UnresolvableError(f"{function} is not supported by the local platform")
        return {key: self.resolve(item) for key, item in value.items()}

    def ref(self, name: str) -> Any:
        if name in self._pseudo:
            return self._pseudo[name]
        if name in self._physical_ids:
            return self._physical_ids[name]
        raise UnresolvableError(f"Ref {name!r}: no such resource was created")

    def get_att(self, logical_id: str, name: str) -> str:
        resource = self._resources.get(logical_id)
        if resource is None or logical_id not in self._physical_ids:
            raise UnresolvableError(f"Fn::GetAtt {logical_id}.{name}: no such resource")
        return attribute(resource["Type"], self._physical_ids[logical_id], name)

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        resolved = {key: self.resolve(item) for key, item in variables.items()}

        def replace(match: re.Match[str]) -> str:
            token = match.group(1)
            if token in resolved:
                return str(resolved[token])
            if "." in token:
                logical_id, name = token.split(".", 1)
                return self.get_att(logical_id, name)
            return str(self.ref(token))

        return _SUB_VARIABLE.sub(replace, text)
