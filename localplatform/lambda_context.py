"""The context object the Lambda service passes to a handler: the attributes handlers and
Powertools read. The local platform builds one per invocation; tests and benchmarks that call a
handler directly build theirs with the defaults."""

from __future__ import annotations

import time
import uuid

FIXED_REQUEST_ID = "00000000-0000-0000-0000-000000000000"


class LambdaContext:
    """``deadline`` is a ``time.monotonic()`` instant; without one the invocation has
    ``remaining_s`` left whenever asked (a handler called outside a runtime never times out)."""

    def __init__(
        self,
        function_name: str = "fastbreak-stream-processor",
        *,
        function_arn: str | None = None,
        memory_mb: int = 1024,
        request_id: str = FIXED_REQUEST_ID,
        deadline: float | None = None,
        remaining_s: float = 300.0,
        version: str = "$LATEST",
    ) -> None:
        self.function_name = function_name
        self.function_version = version
        self.invoked_function_arn = (
            function_arn or f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        )
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = deadline
        self._remaining_s = remaining_s

    @staticmethod
    def invocation(function_name: str, function_arn: str, memory_mb: int,
                   timeout_s: float, version: str = "$LATEST") -> LambdaContext:
        """A fresh request id and a deadline ``timeout_s`` from now, as each invocation has."""
        return LambdaContext(function_name, function_arn=function_arn, memory_mb=memory_mb,
                             request_id=str(uuid.uuid4()),
                             deadline=time.monotonic() + timeout_s, version=version)

    def get_remaining_time_in_millis(self) -> int:
        if self._deadline is None:
            return int(self._remaining_s * 1000)
        return max(0, int((self._deadline - time.monotonic()) * 1000))
