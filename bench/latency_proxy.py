"""A model of network distance for the read benchmarks: an HTTP proxy in front of moto that holds
every request for a fixed time before forwarding it.

moto answers on the same machine in about a millisecond plus its own work per key; a client in
the same AWS region as its DynamoDB table waits a network round trip per request on top of
DynamoDB's work. Clients that need several round trips in a row (one request per feature view,
one after the other) pay that several times; clients that send one round of parallel requests
pay it once. The proxy adds ``delay_ms`` per request, the same for every client that goes
through it, so that the benchmark sees the number of round trips as production would.

The model: 3 ms per request, the order of an in-region DynamoDB round trip for a small
request (single-digit milliseconds at p50 is DynamoDB's published figure for reads). It adds to,
and does not replace, moto's own time.

    python -m bench.latency_proxy --upstream http://127.0.0.1:5000 --delay-ms 3 --port 5001

runs it in a process of its own (``latency_proxy`` starts that process).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from bench.server_process import server_process
from localplatform.embedded_aws import HOST

MODEL_DELAY_MS = 3.0
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te",
               "trailer", "upgrade"}


def serve(upstream: str, delay_ms: float, port: int) -> None:
    target = urlsplit(upstream)
    local = threading.local()

    def connection() -> http.client.HTTPConnection:
        # One upstream connection per proxy thread (per client connection), kept alive.
        if getattr(local, "upstream", None) is None:
            local.upstream = http.client.HTTPConnection(target.hostname or HOST, target.port,
                                                        timeout=60)
        upstream_connection: http.client.HTTPConnection = local.upstream
        return upstream_connection

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: with Nagle's algorithm the body would wait
        # for the client's delayed ACK of the headers (40 ms), dwarfing the modelled delay.
        disable_nagle_algorithm = True

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(delay_ms / 1000)  # the modelled network distance
            headers = {name: value for name, value in self.headers.items()
                       if name.lower() not in _HOP_BY_HOP}
            try:
                upstream_connection = connection()
                upstream_connection.request(self.command, self.path, body or None, headers)
                response = upstream_connection.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                local.upstream = None
                self.send_error(502)
                return
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((HOST, port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def latency_proxy(upstream: str, delay_ms: float = MODEL_DELAY_MS
                  ) -> contextlib.AbstractContextManager[str]:
    """The proxy's URL, for the duration of the block, in a process of its own."""
    return server_process("bench.latency_proxy", "--upstream", upstream,
                          "--delay-ms", str(delay_ms))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency_proxy")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--delay-ms", type=float, default=MODEL_DELAY_MS)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.upstream, args.delay_ms, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
