"""A Kinesis stream with a customer-managed key: the events stream producers write to, and the
partials stream stage 1 writes to for the audience stage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_kms as kms
from constructs import Construct

from constructs_lib.defaults import STREAM
from constructs_lib.nag import acknowledge
from constructs_lib.props import merge_props
from constructs_lib.secure_defaults import customer_managed_key


class EventStream(Construct):
    """Exposes ``stream`` and ``key``.

    On-demand by default (no shard planning for spiky game days); ``shard_count`` switches to
    provisioned mode. Encryption with the construct's own CMK is enforced.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        retention: Duration = STREAM["retention_period"],
        shard_count: int | None = None,
        removal_policy: RemovalPolicy = RemovalPolicy.DESTROY,
        stream_props: Mapping[str, Any] | None = None,
        purpose: str = "the events stream",
    ) -> None:
        super().__init__(scope, construct_id)
        self.key: kms.Key = customer_managed_key(
            self,
            "Key",
            description=f"Fastbreak: encrypts {purpose}",
            removal_policy=removal_policy,
        )
        defaults: dict[str, Any] = {
            "retention_period": retention,
            "stream_mode": kinesis.StreamMode.ON_DEMAND,
            "removal_policy": removal_policy,
        }
        if shard_count is not None:
            defaults |= {"stream_mode": kinesis.StreamMode.PROVISIONED, "shard_count": shard_count}
        props = merge_props(
            "EventStream",
            defaults,
            stream_props,
            {"encryption": kinesis.StreamEncryption.KMS, "encryption_key": self.key},
        )
        self.stream = kinesis.Stream(self, "Stream", **props)
        acknowledge(
            self.stream,
            {
                "AwsSolutions::AwsSolutions-KDS3": (
                    "deliberate: the stream uses its own customer-managed key (rotated, with a "
                    "key policy the platform team controls) instead of the aws/kinesis key"
                )
            },
        )
