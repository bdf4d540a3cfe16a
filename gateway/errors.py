"""One error tree for the whole gateway: each error decides its HTTP status and OpenAI error type once.

    GatewayError                         500 api_error
    ├── InvalidRequest                   400 invalid_request_error
    │   ├── UnprocessableRequest         422 invalid_request_error
    │   ├── RequestTooLarge              413 invalid_request_error
    │   └── ModelNotFound                404 invalid_request_error / model_not_found
    ├── AuthenticationFailed             401 invalid_request_error / invalid_api_key
    ├── PermissionDenied                 403 permission_error
    ├── RateLimited                      429 rate_limit_error (carries Retry-After)
    ├── UpstreamError                    502 api_error / upstream_error
    │   ├── UpstreamTimeout              504 api_error / upstream_timeout
    │   └── UpstreamClientError          upstream's own 4xx, passed through
    └── ServiceUnavailable               503 api_error

Foreign exceptions (aiohttp, redis, litellm) are mapped to these at the boundary that meets them;
nothing else reaches the HTTP surface.
"""

from __future__ import annotations

from typing import Any

import orjson


class GatewayError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        # Retry-After takes whole seconds; round up so clients never retry early.
        secs = max(1, int(-(-self.retry_after // 1)))
        return {"retry-after": str(secs), "retry-after-ms": str(int(self.retry_after * 1000))}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = None


class UnprocessableRequest(InvalidRequest):
    status = 422


class RequestTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class ModelNotFound(InvalidRequest):
    status = 404
    code = "model_not_found"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(GatewayError):
    """The upstream failed (5xx, refused connection, malformed answer): the client sees 502."""

    status = 502
    type = "api_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamClientError(UpstreamError):
    """The upstream refused the request itself (its 4xx): status and message pass through to the client."""

    type = "invalid_request_error"
    code = None


class ServiceUnavailable(GatewayError):
    status = 503
    code = "service_unavailable"
