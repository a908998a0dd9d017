"""A local server the benchmarks run in a process of their own (moto, the latency proxy): in the
benchmark's process, its threads would take the interpreter from the code being measured."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from localplatform.embedded_aws import HOST, free_port


@contextlib.contextmanager
def server_process(module: str, *arguments: str) -> Iterator[str]:
    """``python -m module *arguments --port PORT`` on a free port, until it listens; its URL for
    the duration of the block."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", module, *arguments, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{module} did not start")
            time.sleep(0.05)
        yield f"http://{HOST}:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # a kept-alive connection can hold it up
            process.kill()
            process.wait(10)
