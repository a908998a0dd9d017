"""The identity of the embedded AWS, and pointing this process's SDK at it.

The server and its clients come from ``localplatform.embedded_aws``; this module adds what the
deployment needs to know (moto's account) and what the in-process handlers need (environment).
"""

from __future__ import annotations

import os

from localplatform.embedded_aws import REGION, client

__all__ = ["ACCOUNT", "REGION", "client", "point_sdk_at"]

ACCOUNT = "123456789012"  # moto's default account: the one its ARNs name


def point_sdk_at(endpoint_url: str) -> None:
    """Make every boto3 client of this process (the handlers' too) talk to the embedded AWS.

    The handlers are imported unchanged and build their clients with ``boto3.client(...)``;
    the SDK's standard ``AWS_ENDPOINT_URL`` setting redirects them without a code change.
    """
    os.environ["AWS_ENDPOINT_URL"] = endpoint_url
    os.environ["AWS_DEFAULT_REGION"] = REGION
    os.environ["AWS_REGION"] = REGION
    os.environ["AWS_ACCESS_KEY_ID"] = "fastbreak-local"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "fastbreak-local"
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
