"""The feature API on 127.0.0.1: API Gateway's REST proxy in front of the template's Lambda.

Routes, methods, the request validator's body models and the integration's function come from
the template's ``AWS::ApiGateway::*`` resources; each request becomes the REST proxy event API
Gateway sends (``proxy_event``, which tests use to build theirs), and the handler's proxy
response becomes the HTTP response. What API Gateway answers itself, the local API answers the
same way, as JSON ``{"message": ...}``:

- a path or a method the API does not define: 403 ``Missing Authentication Token`` (a REST
  API does not say 404 or 405, so that callers cannot probe which resources exist);
- a request payload over 10 MB: 413 ``Request Too Long``, without reading the body;
- a JSON body the method's model refuses (request validator): 400 ``Invalid request body``;
- a handler that raised or answered no proxy response: 502 ``Internal server error``.

Path parameters and query strings reach the handler percent-decoded, ``path`` as sent (REST
APIs keep it encoded). A body that is not UTF-8 text reaches the handler base64-encoded
(``isBase64Encoded``). Recorded like API Gateway: ``AWS/ApiGateway`` Count, 4XXError, 5XXError
and Latency by ``ApiName``.

Not emulated: SigV4/IAM authorization (any request is let in: the server listens on loopback
only), throttling, and the stage prefix being required (``/live/v1/...`` and ``/v1/...`` both
route).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jsonschema

from localplatform.aws_env import ACCOUNT
from localplatform.deploy import DeployedStack
from localplatform.lambda_runtime import FunctionError, Invocable
from localplatform.metrics import MetricStore

HOST = "127.0.0.1"
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway REST's request payload quota
_DIGITS = re.compile(r"[0-9]+")

Headers = Sequence[tuple[str, str]]
Answer = tuple[int, dict[str, str], bytes]


class BadRequest(ValueError):
    """A request API Gateway would not turn into an event (a malformed encoding)."""


@dataclass(frozen=True)
class Route:
    resource: str  # "/v1/features/{entity_type}/{entity_id}"
    method: str
    function_name: str = ""
    # content type -> JSON schema of the method's model, when its request validator checks
    # bodies
    body_schemas: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def body_validators(self) -> dict[str, jsonschema.Draft4Validator]:
        return {content_type: jsonschema.Draft4Validator(schema)
                for content_type, schema in self.body_schemas.items()}

    def match(self, raw_path: str) -> dict[str, str] | None:
        """The path parameters of ``raw_path`` (still percent-encoded), or None."""
        if not raw_path.startswith("/"):
            return None
        wanted = self.resource[1:].split("/")
        given = raw_path[1:].split("/")
        if len(wanted) != len(given):
            return None
        parameters: dict[str, str] = {}
        for part, value in zip(wanted, given, strict=True):
            if part.startswith("{") and part.endswith("}"):
                if not value:
                    return None
                parameters[part[1:-1]] = value
            elif part != value:
                return None
        return parameters


def routes_from_template(stack: DeployedStack) -> list[Route]:
    resources = stack.resources("AWS::ApiGateway::Resource")
    models = stack.resources("AWS::ApiGateway::Model")
    validators = stack.resources("AWS::ApiGateway::RequestValidator")
    paths: dict[str, str] = {}

    def path_of(logical_id: str) -> str:
        if logical_id not in paths:
            properties = resources[logical_id]["Properties"]
            parent = properties["ParentId"]
            prefix = path_of(parent["Ref"]) if "Ref" in parent else ""
            paths[logical_id] = f"{prefix}/{properties['PathPart']}"
        return paths[logical_id]

    routes = []
    for method in stack.resources("AWS::ApiGateway::Method").values():
        properties = method["Properties"]
        integration = properties.get("Integration", {})
        if integration.get("Type") != "AWS_PROXY":
            continue
        uri = stack.resolve(integration["Uri"])
        function_name = uri.split(":function:", 1)[1].split("/", 1)[0]
        validator = validators.get(properties.get("RequestValidatorId", {}).get("Ref", ""), {})
        schemas = {}
        if validator.get("Properties", {}).get("ValidateRequestBody"):
            schemas = {
                content_type: models[model["Ref"]]["Properties"]["Schema"]
                for content_type, model in properties.get("RequestModels", {}).items()
            }
        routes.append(Route(path_of(properties["ResourceId"]["Ref"]), properties["HttpMethod"],
                            function_name, schemas))
    return routes


def proxy_event(
    route: Route, raw_path: str, raw_query: str = "", headers: Headers = (),
    body: bytes | None = None, *, stage: str = "live", source_ip: str = HOST,
) -> dict[str, Any]:
    """The REST proxy event API Gateway hands the function for this request.

    ``raw_path`` and ``raw_query`` as sent (percent-encoded); raises ``BadRequest`` if they do
    not decode to UTF-8 text, or if ``raw_path`` is not a path of ``route``.
    """
    raw_parameters = route.match(raw_path)
    if raw_parameters is None:
        raise BadRequest(f"{raw_path} is not a path of {route.resource}")
    try:
        path_parameters = {name: unquote(value, errors="strict")
                           for name, value in raw_parameters.items()}
        query = parse_qsl(raw_query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("the path or query string is not percent-encoded UTF-8") from None
    multi_query: dict[str, list[str]] = {}
    for name, value in query:
        multi_query.setdefault(name, []).append(value)
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        multi_headers.setdefault(name, []).append(value)
    text: str | None = None
    encoded = False
    if body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode("ascii"), True
    return {
        "resource": route.resource,
        "path": raw_path,
        "httpMethod": route.method,
        "headers": {name: values[-1] for name, values in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {name: values[-1] for name, values in multi_query.items()}
        or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": route.resource,
            "httpMethod": route.method,
            "path": f"/{stage}{raw_path}",
            "stage": stage,
            "accountId": ACCOUNT,
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "protocol": "HTTP/1.1",
            # An IAM-authorized caller's identity would be here; the local API checks no
            # signature, so it knows none.
            "identity": {"sourceIp": source_ip,
                         "userAgent": multi_headers.get("User-Agent", [None])[-1],
                         "caller": None, "user": None, "userArn": None, "accessKey": None},
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


class LocalApiGateway:
    def __init__(
        self, routes: Sequence[Route], api_name: str, stage: str,
        functions: Mapping[str, Invocable], metrics: MetricStore, port: int = 0,
    ) -> None:
        self.routes = list(routes)
        self.api_name = api_name
        self.stage = stage
        self.functions = functions
        self.metrics = metrics
        self._server = ThreadingHTTPServer((HOST, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="api",
                                        daemon=True)

    @staticmethod
    def from_template(stack: DeployedStack, functions: Mapping[str, Invocable],
                      metrics: MetricStore, port: int = 0) -> LocalApiGateway:
        (api,) = stack.resources("AWS::ApiGateway::RestApi").values()
        stages = stack.resources("AWS::ApiGateway::Stage").values()
        stage = next(iter(stages))["Properties"]["StageName"] if stages else "prod"
        return LocalApiGateway(routes_from_template(stack), api["Properties"]["Name"], stage,
                               functions, metrics, port)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def handle(self, method: str, target: str, headers: Headers, body: bytes | None,
               source_ip: str = HOST) -> Answer:
        started = time.monotonic()
        status, response_headers, payload = self._dispatch(method, target, headers, body,
                                                           source_ip)
        self.record(status, started)
        return status, response_headers, payload

    def record(self, status: int, started: float) -> None:
        dimensions = {"ApiName": self.api_name}
        self.metrics.put("AWS/ApiGateway", "Count", 1, dimensions)
        self.metrics.put("AWS/ApiGateway", "4XXError", int(400 <= status < 500), dimensions)
        self.metrics.put("AWS/ApiGateway", "5XXError", int(status >= 500), dimensions)
        self.metrics.put("AWS/ApiGateway", "Latency", (time.monotonic() - started) * 1000,
                         dimensions)

    def _dispatch(self, method: str, target: str, headers: Headers, body: bytes | None,
                  source_ip: str) -> Answer:
        split = urlsplit(target)
        path = split.path
        if path.startswith(f"/{self.stage}/"):
            path = path[len(self.stage) + 1:]
        route = next((r for r in self.routes if r.method == method and r.match(path) is not None),
                     None)
        if route is None:
            return gateway_error(HTTPStatus.FORBIDDEN, "Missing Authentication Token")
        if not _valid_body(route, headers, body):
            return gateway_error(HTTPStatus.BAD_REQUEST, "Invalid request body")
        try:
            event = proxy_event(route, path, split.query, headers, body, stage=self.stage,
                                source_ip=source_ip)
        except BadRequest as error:
            return gateway_error(HTTPStatus.BAD_REQUEST, str(error))
        try:
            response = self.functions[route.function_name].invoke(event)
        except FunctionError:
            return gateway_error(HTTPStatus.BAD_GATEWAY, "Internal server error")
        return _proxy_response(response)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # So that a request line too broken to name a version still gets a status line.
            default_request_version = "HTTP/1.1"
            # Headers and body go out in two writes: with Nagle's algorithm the body would wait
            # for the client's delayed ACK of the headers (40 ms on Linux).
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                started = time.monotonic()
                try:
                    body = self._body()
                except _Refused as refused:
                    # The body (or what is left of it) is unread: this connection is done.
                    self.close_connection = True
                    gateway.record(refused.status, started)
                    self._answer(*gateway_error(refused.status, refused.message))
                    return
                self._answer(*gateway.handle(self.command, self.path,
                                             list(self.headers.items()), body,
                                             self.client_address[0]))

            def _body(self) -> bytes | None:
                """The request's body, refused before anything is read if its declared size is
                not a size or is over API Gateway's limit."""
                coding = self.headers.get("Transfer-Encoding")
                if coding is not None:
                    if coding.strip().lower() != "chunked":
                        raise _Refused(HTTPStatus.NOT_IMPLEMENTED,
                                       f"Transfer-Encoding {coding[:40]!r} is not supported")
                    return self._chunked()
                lengths = {value.strip() for value in self.headers.get_all("Content-Length", [])}
                if not lengths:
                    return None
                if len(lengths) > 1:
                    raise _Refused(HTTPStatus.BAD_REQUEST, "Content-Length is given twice")
                (declared,) = lengths
                if not _DIGITS.fullmatch(declared):
                    raise _Refused(HTTPStatus.BAD_REQUEST,
                                   f"Content-Length must be a number of bytes, got "
                                   f"{declared[:40]!r}")
                length = int(declared)
                if length > MAX_PAYLOAD_BYTES:
                    raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request Too Long")
                body = self.rfile.read(length)
                if len(body) < length:
                    raise _Refused(HTTPStatus.BAD_REQUEST,
                                   "the body ended before its Content-Length")
                return body or None

            def _chunked(self) -> bytes | None:
                body = bytearray()
                while True:
                    line = self.rfile.readline(1024).strip()
                    size_text = line.split(b";", 1)[0].strip()
                    try:
                        size = int(size_text, 16)
                    except ValueError:
                        raise _Refused(HTTPStatus.BAD_REQUEST, "malformed chunked body") from None
                    if size < 0 or len(body) + size > MAX_PAYLOAD_BYTES:
                        raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request Too Long")
                    if size == 0:
                        while self.rfile.readline(1024).strip():
                            pass  # trailer fields
                        return bytes(body) or None
                    chunk = self.rfile.read(size)
                    if len(chunk) < size or self.rfile.readline(1024).strip():
                        raise _Refused(HTTPStatus.BAD_REQUEST, "malformed chunked body")
                    body += chunk

            def _answer(self, status: int, headers: dict[str, str], payload: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def __getattr__(self, name: str) -> Any:
                # Every method reaches the gateway, which answers those the API does not define
                # as API Gateway does (the base class would answer 501 in HTML).
                if name.startswith("do_"):
                    return self._serve
                raise AttributeError(name)

            def send_error(self, code: int, message: str | None = None,
                           explain: str | None = None) -> None:
                # A request line or header the HTTP parser refused: JSON, like every answer.
                self.close_connection = True
                status = HTTPStatus(code)
                self._answer(*gateway_error(status, message or status.phrase))

            def log_message(self, format: str, *args: Any) -> None:
                return  # access is recorded as metrics, not printed over the demo's progress

        return Handler


class _Refused(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def gateway_error(status: HTTPStatus, message: str) -> Answer:
    """An answer of API Gateway itself: JSON with a ``message``."""
    return (status.value, {"Content-Type": "application/json"},
            json.dumps({"message": message}).encode())


def _valid_body(route: Route, headers: Headers, body: bytes | None) -> bool:
    """The request validator: a JSON body must match the method's model for its content type
    (API Gateway takes a request without Content-Type as application/json)."""
    if not route.body_schemas:
        return True
    content_type = next((value for name, value in headers if name.lower() == "content-type"),
                        "application/json")
    validator = route.body_validators.get(content_type.split(";", 1)[0].strip().lower())
    if validator is None:
        return True
    try:
        document = json.loads(body or b"")
    except ValueError:
        return False
    return bool(validator.is_valid(document))


def _proxy_response(response: Any) -> Answer:
    """A Lambda proxy response as HTTP; anything else is API Gateway's 502."""
    if not isinstance(response, dict) or not isinstance(response.get("statusCode"), int):
        return gateway_error(HTTPStatus.BAD_GATEWAY, "Internal server error")
    headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[str(name)] = ", ".join(str(value) for value in values)
    body = response.get("body") or ""
    if response.get("isBase64Encoded"):
        try:
            return response["statusCode"], headers, base64.b64decode(str(body), validate=True)
        except binascii.Error:
            return gateway_error(HTTPStatus.BAD_GATEWAY, "Internal server error")
    return response["statusCode"], headers, str(body).encode()
