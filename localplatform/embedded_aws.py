"""An embedded AWS: moto in server mode on 127.0.0.1, on a free port.

Server mode (not ``mock_aws``) so that real boto3 clients, other threads and other processes
all talk to the same endpoint, exactly as the handlers talk to AWS.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HOST = "127.0.0.1"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def embedded_aws() -> Iterator[str]:
    """Run a moto server for the duration of the block; yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    # One access-log line per request drowns everything else (and costs time).
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address=HOST, port=port, verbose=False)
    server.start()
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.stop()


def client(service: str, endpoint_url: str, **config: Any) -> Any:
    """A boto3 client bound to the embedded endpoint with dummy credentials."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id="fastbreak-local",
        aws_secret_access_key="fastbreak-local",
        **config,
    )
