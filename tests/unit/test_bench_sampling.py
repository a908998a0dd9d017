"""How the latency benchmarks sample and judge (``bench.sampling``), and the latency proxy's
forwarding (``bench.latency_proxy``). No timing is asserted: the sides are fakes."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any

import pytest

from bench.latency_proxy import latency_proxy
from bench.sampling import compare, interleaved, percentile, result


def test_sides_alternate_which_goes_first() -> None:
    calls: list[str] = []
    sides = [lambda: calls.append("ours") or 1.0, lambda: calls.append("base") or 1.0]

    interleaved(sides, 4)

    assert calls == ["ours", "base", "base", "ours", "ours", "base", "base", "ours"]


def test_the_verdict_is_the_median_ratio_so_one_noisy_repeat_does_not_flip_it() -> None:
    # Five repeats of 100 samples; ours is 1.2x the baseline except in one repeat where a
    # hiccup of the machine makes our slowest samples 10x slower.
    repeat = count()

    def ours() -> float:
        n = next(repeat)
        noisy = n // 100 == 2 and n % 100 >= 95  # repeat 3, its last samples
        return 120.0 if noisy else 1.2 + (n % 7) * 0.01

    base_samples = count()

    def baseline() -> float:
        return 1.0 + (next(base_samples) % 7) * 0.01

    p50, p99 = compare(ours, baseline, runs=100, repeats=5, warm=0)
    judged = result("read", "ms", "bare", p99, "<= 1.5x", lambda r: r <= 1.5, 100)

    assert len(p99.ratios) == 5
    assert max(p99.ratios) > 50  # the noisy repeat
    assert p99.ratio == pytest.approx(1.2, rel=0.02)
    assert judged.met is True
    assert judged.ratio_spread is not None and judged.ratio_spread[1] > 50
    assert (judged.repeats, judged.samples_per_repeat) == (5, 100)
    assert p50.ratio == pytest.approx(1.2, rel=0.02)


def test_a_p99_of_500_samples_moves_with_its_slowest_one_percent_not_one_sample() -> None:
    assert percentile([1.0] * 499 + [100.0], 99) == 1.0
    assert percentile([1.0] * 494 + [9.0] * 6, 99) == 9.0


@pytest.fixture
def upstream() -> Iterator[str]:
    class Echo(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            answer = json.dumps({"path": self.path, "body": body.decode(),
                                 "target": self.headers.get("X-Amz-Target")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_proxy_forwards_requests_and_answers_unchanged(upstream: str) -> None:
    with latency_proxy(upstream, delay_ms=1) as proxy:
        for n in range(3):  # over one kept-alive upstream connection
            request = urllib.request.Request(
                f"{proxy}/?n={n}", data=b'{"Keys": [1, 2]}', method="POST",
                headers={"X-Amz-Target": "DynamoDB_20120810.BatchGetItem"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.headers["Content-Type"] == "application/x-amz-json-1.0"
                assert json.loads(response.read()) == {
                    "path": f"/?n={n}", "body": '{"Keys": [1, 2]}',
                    "target": "DynamoDB_20120810.BatchGetItem",
                }
