"""The feature API on 127.0.0.1: API Gateway's REST proxy in front of the template's Lambda.

Routes, methods and the integration's function come from the template's
``AWS::ApiGateway::Resource``/``Method`` resources; each request becomes the REST proxy event
API Gateway sends, and the handler's proxy response becomes the HTTP response. Recorded like
API Gateway: ``AWS/ApiGateway`` Count, 4XXError, 5XXError and Latency by ``ApiName``.

Not emulated: SigV4/IAM authorization (the server listens on loopback only) and the request
validators, which the handler repeats with more precise messages.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from localplatform.deploy import DeployedStack
from localplatform.lambda_runtime import FunctionError, Invocable
from localplatform.metrics import MetricStore

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Route:
    resource: str  # "/v1/features/{entity_type}/{entity_id}"
    method: str
    function_name: str
    pattern: re.Pattern[str]


def routes_from_template(stack: DeployedStack) -> list[Route]:
    resources = stack.resources("AWS::ApiGateway::Resource")
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
        resource = path_of(properties["ResourceId"]["Ref"])
        pattern = re.compile(
            "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(resource)) + "$"
        )
        routes.append(Route(resource, properties["HttpMethod"], function_name, pattern))
    return routes


def proxy_event(
    route: Route, path: str, path_parameters: Mapping[str, str], query: str,
    headers: Mapping[str, str], body: str | None, stage: str, source_ip: str,
) -> dict[str, Any]:
    parsed = parse_qs(query, keep_blank_values=True)
    return {
        "resource": route.resource,
        "path": path,
        "httpMethod": route.method,
        "headers": dict(headers) or None,
        "multiValueHeaders": {k: [v] for k, v in headers.items()} or None,
        "queryStringParameters": {k: v[-1] for k, v in parsed.items()} or None,
        "multiValueQueryStringParameters": parsed or None,
        "pathParameters": dict(path_parameters) or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": route.resource,
            "httpMethod": route.method,
            "path": f"/{stage}{path}",
            "stage": stage,
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "protocol": "HTTP/1.1",
            "identity": {"sourceIp": source_ip, "userAgent": headers.get("User-Agent")},
        },
        "body": body,
        "isBase64Encoded": False,
    }


class LocalApiGateway:
    def __init__(
        self, stack: DeployedStack, functions: Mapping[str, Invocable], metrics: MetricStore,
        port: int = 0,
    ) -> None:
        self.routes = routes_from_template(stack)
        (api,) = stack.resources("AWS::ApiGateway::RestApi").values()
        self.api_name: str = api["Properties"]["Name"]
        stages = stack.resources("AWS::ApiGateway::Stage").values()
        self.stage: str = next(iter(stages))["Properties"]["StageName"] if stages else "prod"
        self.functions = functions
        self.metrics = metrics
        self._server = ThreadingHTTPServer((HOST, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="api",
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: str | None,
               source_ip: str = HOST) -> tuple[int, dict[str, str], bytes]:
        started = time.monotonic()
        status, response_headers, payload = self._dispatch(method, raw_path, headers, body,
                                                           source_ip)
        dimensions = {"ApiName": self.api_name}
        self.metrics.put("AWS/ApiGateway", "Count", 1, dimensions)
        self.metrics.put("AWS/ApiGateway", "4XXError", int(400 <= status < 500), dimensions)
        self.metrics.put("AWS/ApiGateway", "5XXError", int(status >= 500), dimensions)
        self.metrics.put("AWS/ApiGateway", "Latency", (time.monotonic() - started) * 1000,
                         dimensions)
        return status, response_headers, payload

    def _dispatch(self, method: str, raw_path: str, headers: Mapping[str, str],
                  body: str | None, source_ip: str) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(raw_path)
        path = split.path
        if path.startswith(f"/{self.stage}/"):
            path = path[len(self.stage) + 1:]
        matched = [(route, route.pattern.match(path)) for route in self.routes]
        candidates = [(route, match) for route, match in matched if match]
        for route, match in candidates:
            if route.method == method:
                event = proxy_event(route, path, match.groupdict(), split.query, headers, body,
                                    self.stage, source_ip)
                try:
                    response = self.functions[route.function_name].invoke(event)
                except FunctionError:
                    return _error(502, "Internal server error")
                return _proxy_response(response)
        # API Gateway's answer to a path or method the API does not define.
        return _error(403, "Missing Authentication Token")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else None
                status, headers, payload = gateway.handle(
                    self.command, self.path, dict(self.headers.items()), body,
                    self.client_address[0],
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return  # access is recorded as metrics, not printed over the demo's progress

        return Handler


def _proxy_response(response: Any) -> tuple[int, dict[str, str], bytes]:
    if not isinstance(response, dict) or "statusCode" not in response:
        return _error(502, "Internal server error")  # a malformed Lambda proxy response
    headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
    body = response.get("body") or ""
    return int(response["statusCode"]), headers, str(body).encode()


def _error(status: int, message: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps({"message": message}).encode()
