"""Grants with exact actions and resources. Key grants: CDK's ``grant_*`` helpers add
``kms:GenerateDataKey*`` and ``kms:ReEncrypt*``, wildcards that a role reading or writing one
table or prefix never needs. Glue Data Catalog grants: one table, not the catalog's.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms

# DynamoDB with a customer-managed key calls KMS on the caller's behalf.
TABLE_READ_KEY_ACTIONS = ("kms:Decrypt", "kms:DescribeKey")
TABLE_READ_WRITE_KEY_ACTIONS = ("kms:Decrypt", "kms:DescribeKey", "kms:Encrypt",
                                "kms:GenerateDataKey")
# SSE-KMS PutObject with a bucket key: a data key to encrypt, Decrypt for multipart parts.
OBJECT_WRITE_KEY_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")
# SendMessage to an SSE-KMS queue: a data key to encrypt the message (reused for the queue's
# data key reuse period), Decrypt to use a cached one.
QUEUE_SEND_KEY_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")
# PutRecords to a stream with server-side encryption: Kinesis asks KMS for a data key as the
# producer.
STREAM_WRITE_KEY_ACTIONS = ("kms:GenerateDataKey",)
# GetRecords from a stream with server-side encryption: Kinesis decrypts as the consumer.
STREAM_READ_KEY_ACTIONS = ("kms:Decrypt",)


def allow_key_use(role: iam.IRole, key: kms.IKey, actions: Sequence[str]) -> None:
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=list(actions), resources=[key.key_arn])
    )


def glue_table_arns(stack: Stack, database: str, table: str) -> list[str]:
    """What a Glue Data Catalog read of one table is authorized on: the catalog, the database
    and the table."""
    return [
        stack.format_arn(service="glue", resource="catalog"),
        stack.format_arn(service="glue", resource="database", resource_name=database),
        stack.format_arn(service="glue", resource="table", resource_name=f"{database}/{table}"),
    ]
