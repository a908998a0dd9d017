"""Bare feature stores in the embedded AWS, for tests and benchmarks that exercise the handlers
without deploying the templates: an online store table with the key schema of
``constructs_lib.online_store`` and an offline store bucket.
"""

from __future__ import annotations

from typing import Any


def create_feature_stores(dynamodb: Any, s3: Any, *, table: str, bucket: str) -> None:
    dynamodb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
    )
    s3.create_bucket(Bucket=bucket)
