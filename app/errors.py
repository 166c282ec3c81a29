"""The one error tree: every error a client can see, with its HTTP status and OpenAI error type.

    BridgeError                      500 server_error
    ├── InvalidRequestError          400 invalid_request_error   (names the field in `param`)
    │   └── ToolOutputsExpiredError  400 invalid_request_error   code=tool_outputs_expired
    ├── AuthenticationError          401 authentication_error    code=invalid_api_key
    ├── PermissionDeniedError        403 permission_error
    ├── NotFoundError                404 invalid_request_error   (unknown or another owner's id)
    │   └── ModelNotFoundError       404 invalid_request_error   code=model_not_found
    ├── ConflictError                409 invalid_request_error   code=conversation_busy
    ├── PayloadTooLargeError         413 invalid_request_error   code=request_too_large
    ├── AgentFailedError             422 agent_error             code=<the run's last_error.code> (deterministic)
    ├── RateLimitError               429 rate_limit_error        (+ Retry-After)
    ├── UpstreamError                502 upstream_error          (Azure failed; its message kept)
    │   ├── RunFailedError           502 upstream_error          code=<the run's last_error.code>
    │   └── UpstreamAuthError        502 upstream_error          code=upstream_authentication_failed
    ├── StoreUnavailableError        503 service_unavailable     code=state_store_unavailable
    ├── ShuttingDownError            503 service_unavailable     code=shutting_down (+ Retry-After)
    ├── ClientDisconnectedError      499 client_disconnected     (the client hung up; never rendered)
    └── UpstreamTimeoutError         504 timeout_error           code=upstream_timeout

Foreign exceptions (httpx, redis, azure-identity) are translated where they are caught, with
`raise ... from exc`; one handler in `app/api/` renders the envelope. `code` is never null: an
error without one of its own takes its class's. Azure's reason (`details[]`, `innererror`) rides
along in the envelope as extra fields, so the refused parameter or filter category stays visible.
"""

from __future__ import annotations

from typing import Any, ClassVar


class BridgeError(Exception):
    """A subclass names its HTTP status, OpenAI error type and default code in its bases' keywords:
    `class NotFoundError(BridgeError, status=404, type="invalid_request_error", code="not_found")`; what it
    leaves out it inherits."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str] = "internal_error"

    def __init_subclass__(
        cls, *, status: int | None = None, type: str | None = None, code: str | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if type is not None:
            cls.type = type
        if code is not None:
            cls.default_code = code

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        details: list[Any] | None = None,
        innererror: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code: str = code if code else self.default_code
        self.headers: dict[str, str] = dict(headers or {})
        self.details = details
        """Azure's `details[]` (one entry per refused parameter), passed on as they came."""
        self.innererror = innererror
        """Azure's `innererror` (a content filter's category and results), passed on as it came."""

    def envelope(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        if self.details:
            error["details"] = self.details
        if self.innererror:
            error["innererror"] = self.innererror
        return {"error": error}


class InvalidRequestError(BridgeError, status=400, type="invalid_request_error", code="invalid_request"): ...


class ToolOutputsExpiredError(InvalidRequestError, code="tool_outputs_expired"): ...


class AuthenticationError(BridgeError, status=401, type="authentication_error", code="invalid_api_key"): ...


class PermissionDeniedError(BridgeError, status=403, type="permission_error", code="permission_denied"): ...


class NotFoundError(BridgeError, status=404, type="invalid_request_error", code="not_found"): ...


class ModelNotFoundError(NotFoundError, code="model_not_found"): ...


class ConflictError(BridgeError, status=409, type="invalid_request_error", code="conversation_busy"): ...


class PayloadTooLargeError(BridgeError, status=413, type="invalid_request_error", code="request_too_large"): ...


class AgentFailedError(BridgeError, status=422, type="agent_error", code="run_failed"):
    """The agent's run failed for a reason a retry would meet again: not a status SDKs retry."""


class RateLimitError(BridgeError, status=429, type="rate_limit_error", code="rate_limit_exceeded"):
    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        if retry_after is not None:
            self.headers.setdefault("Retry-After", str(max(1, round(retry_after))))


class UpstreamError(BridgeError, status=502, type="upstream_error", code="upstream_error"): ...


class RunFailedError(UpstreamError, code="run_failed"): ...


class UpstreamAuthError(UpstreamError, code="upstream_authentication_failed"): ...


class StoreUnavailableError(BridgeError, status=503, type="service_unavailable", code="state_store_unavailable"): ...


class ShuttingDownError(BridgeError, status=503, type="service_unavailable", code="shutting_down"):
    """The bridge is stopping and its shutdown grace has passed: the turn ends, the client may retry."""

    def __init__(self, message: str, *, retry_after_s: int = 1, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("Retry-After", str(retry_after_s))


class ClientDisconnectedError(BridgeError, status=499, type="client_disconnected", code="client_disconnected"):
    """The client hung up: the turn ends (its run is cancelled); nobody reads this error."""


class ResponseCancelledError(ClientDisconnectedError, code="response_cancelled"):
    """A background response the client cancelled: its run is cancelled, its thread kept."""


class UpstreamTimeoutError(BridgeError, status=504, type="timeout_error", code="upstream_timeout"): ...


class ConfigError(Exception):
    """An invalid `config.yaml` or environment: start-up stops with this message (never sent to a client)."""
