"""The local API Gateway over HTTP: what API Gateway answers itself, the proxy event the function
gets, and requests no HTTP client should send. The function is a fake that records events."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from localplatform.api_gateway import LocalApiGateway, Route
from localplatform.lambda_runtime import FunctionError
from localplatform.metrics import MetricStore

BATCH_SCHEMA = {
    "$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
    "required": ["entities"], "additionalProperties": False,
    "properties": {"entities": {"type": "array", "minItems": 1, "maxItems": 100}},
}
ROUTES = [
    Route("/v1/features/{entity_type}/{entity_id}", "GET", "reader"),
    Route("/v1/features/batch-get", "POST", "reader", {"application/json": BATCH_SCHEMA}),
]


class FakeReader:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail = False

    def invoke(self, event: Mapping[str, Any]) -> Any:
        self.events.append(dict(event))
        if self.fail:
            raise FunctionError("Unhandled", "RuntimeError: boom")
        return {"statusCode": 200, "multiValueHeaders": {"Content-Type": ["application/json"]},
                "body": json.dumps({"ok": True}), "isBase64Encoded": False}


@pytest.fixture(scope="module")
def functions() -> dict[str, FakeReader]:
    return {}


@pytest.fixture(scope="module")
def gateway(functions: dict[str, FakeReader]) -> Iterator[LocalApiGateway]:
    api = LocalApiGateway(ROUTES, "Api", "live", functions, MetricStore())
    api.start()
    yield api
    api.stop()


@pytest.fixture
def reader(functions: dict[str, FakeReader]) -> FakeReader:
    functions["reader"] = FakeReader()  # a fresh one per test, behind the module's server
    return functions["reader"]


def exchange(api: LocalApiGateway, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; read one response. The socket timeout turns a server that waits for a
    body it should have refused into a failure instead of a hang."""
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(request)
        stream = connection.makefile("rb")
        status_line = stream.readline().decode()
        headers: dict[str, str] = {}
        while (line := stream.readline().decode().strip()):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = stream.read(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


def http(api: LocalApiGateway, method: str, target: str, body: bytes | None = None,
         headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost", "Connection: close"]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    return exchange(api, ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))


def message(body: bytes) -> str:
    answer = json.loads(body)
    assert set(answer) == {"message"}
    return str(answer["message"])


# ---- what API Gateway answers itself -----------------------------------------------------------
@pytest.mark.parametrize(("method", "target"), [
    ("GET", "/v2/things"),
    ("GET", "/v1/features/user"),
    ("GET", "/v1/features/user/u-1/extra"),
    ("POST", "/v1/features/user/u-1"),
    ("GET", "/v1/features/batch-get"),
    ("DELETE", "/v1/features/user/u-1"),
    ("PATCH", "/v1/features/batch-get"),
    ("OPTIONS", "/v1/features/batch-get"),
    ("BREW", "/v1/features/user/u-1"),
])
def test_a_path_or_method_the_api_does_not_define_is_a_403_missing_authentication_token(
    gateway: LocalApiGateway, reader: FakeReader, method: str, target: str
) -> None:
    status, headers, body = http(gateway, method, target)

    assert (status, headers["content-type"]) == (403, "application/json")
    assert message(body) == "Missing Authentication Token"
    assert reader.events == []


def test_head_gets_the_status_and_no_body(gateway: LocalApiGateway, reader: FakeReader) -> None:
    status, headers, body = http(gateway, "HEAD", "/v1/features/user/u-1")

    assert (status, body) == (403, b"")
    assert int(headers["content-length"]) > 0  # the length a GET's answer would have


def test_a_body_the_model_refuses_never_reaches_the_function(
    gateway: LocalApiGateway, reader: FakeReader
) -> None:
    for body in (b'{"entities": []}', b'{"entities": [1], "x": 2}', b"not json", b"\xff"):
        status, _, answer = http(gateway, "POST", "/v1/features/batch-get", body,
                                 {"Content-Type": "application/json"})
        assert (status, message(answer)) == (400, "Invalid request body")
    assert reader.events == []


def test_a_function_error_is_a_502(gateway: LocalApiGateway, reader: FakeReader) -> None:
    reader.fail = True

    status, _, body = http(gateway, "GET", "/v1/features/user/u-1")

    assert (status, message(body)) == (502, "Internal server error")


# ---- sizes: refused before anything is read ----------------------------------------------------
@pytest.mark.parametrize("declared", ["abc", "-5", "1e3", "0x10", " "])
def test_a_content_length_that_is_not_a_size_is_a_400(
    gateway: LocalApiGateway, reader: FakeReader, declared: str
) -> None:
    status, headers, body = exchange(gateway, (
        "POST /v1/features/batch-get HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Length: {declared}\r\n\r\n{{}}"
    ).encode())

    assert (status, headers["connection"]) == (400, "close")
    assert "Content-Length" in message(body)


@pytest.mark.parametrize("declared", [10 * 1024 * 1024 + 1, 10**12, 10**40])
def test_a_declared_body_over_10_mb_is_a_413_without_reading_it(
    gateway: LocalApiGateway, reader: FakeReader, declared: int
) -> None:
    # Nothing of the body is sent: a server that tried to read it would wait (and time out).
    status, _, body = exchange(gateway, (
        "POST /v1/features/batch-get HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode())

    assert (status, message(body)) == (413, "Request Too Long")
    assert reader.events == []


def test_a_chunked_body_is_read(gateway: LocalApiGateway, reader: FakeReader) -> None:
    payload = b'{"entities": [{"entity_type": "user", "entity_id": "u-1"}]}'
    chunks = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n"
                      for part in (payload[:10], payload[10:]))
    status, _, _ = exchange(gateway, (
        b"POST /v1/features/batch-get HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    ))

    assert status == 200
    assert reader.events[0]["body"] == payload.decode()


def test_a_malformed_request_line_is_answered_in_json(
    gateway: LocalApiGateway, reader: FakeReader
) -> None:
    status, headers, body = exchange(gateway, b"GARBAGE\r\n\r\n")

    assert (status, headers["content-type"]) == (400, "application/json")
    assert message(body)


# ---- the proxy event ---------------------------------------------------------------------------
def test_path_parameters_and_query_are_percent_decoded_and_the_path_kept_as_sent(
    gateway: LocalApiGateway, reader: FakeReader
) -> None:
    status, _, _ = http(gateway, "GET",
                        "/live/v1/features/user/fan%20one%2F%C3%A5%07?groups=a%2Cb&groups=c")

    assert status == 200
    (event,) = reader.events
    assert event["pathParameters"] == {"entity_type": "user", "entity_id": "fan one/å\x07"}
    assert event["path"] == "/v1/features/user/fan%20one%2F%C3%A5%07"
    assert event["resource"] == "/v1/features/{entity_type}/{entity_id}"
    assert event["multiValueQueryStringParameters"] == {"groups": ["a,b", "c"]}
    assert event["queryStringParameters"] == {"groups": "c"}
    assert event["requestContext"]["stage"] == "live"


def test_a_path_that_is_not_percent_encoded_utf8_is_a_400(
    gateway: LocalApiGateway, reader: FakeReader
) -> None:
    status, _, body = http(gateway, "GET", "/v1/features/user/caf%E9")

    assert status == 400 and "UTF-8" in message(body)
    assert reader.events == []


def test_a_body_that_is_not_utf8_reaches_the_function_base64_encoded(
    gateway: LocalApiGateway, reader: FakeReader
) -> None:
    raw = b'{"entities": [{"entity_type": "user", "entity_id": "caf\xe9"}]}'

    http(gateway, "POST", "/v1/features/batch-get", raw, {"Content-Type": "text/plain"})

    (event,) = reader.events
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == raw


def test_a_text_body_is_passed_as_text(gateway: LocalApiGateway, reader: FakeReader) -> None:
    raw = '{"entities": [{"entity_type": "user", "entity_id": "café"}]}'.encode()

    http(gateway, "POST", "/v1/features/batch-get", raw, {"Content-Type": "application/json"})

    (event,) = reader.events
    assert (event["body"], event["isBase64Encoded"]) == (raw.decode(), False)
