"""Decoding and encoding OpenAI's HTTP protocol: bodies with a size limit, required fields,
error responses, and the guard that cancels work when the client goes away.

Strict about what we need, lenient about the rest: unknown fields pass through to the upstream.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any, Awaitable, Callable, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError, InvalidRequest, RequestTooLarge

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before the answer was complete."""


_ids = itertools.count(1)
_id_prefix = (os.getpid(), os.urandom(6).hex())


def new_request_id(request: Request) -> str:
    """The client's x-request-id if it sent a sane one, else a new id: a random per-process prefix and a
    counter (unique across processes and restarts, no system call per request)."""
    global _id_prefix
    given = request.headers.get("x-request-id")
    if given and len(given) <= 128 and given.isprintable():
        return given
    pid, prefix = _id_prefix
    if pid != os.getpid():  # a forked worker must not repeat its parent's ids
        _id_prefix = pid, prefix = os.getpid(), os.urandom(6).hex()
    return f"req_{prefix}{next(_ids):012x}"


def bearer_token(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return auth.strip() or None
    return request.headers.get("api-key") or None


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestTooLarge(f"The request body is {int(length)} bytes; the limit is {limit}.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"The request body is larger than the limit of {limit} bytes.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request ({exc.msg} at byte {exc.pos}).",
                             code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


def _require(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    if name not in body or body[name] is None:
        raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    value = body[name]
    if not isinstance(value, kind):
        raise InvalidRequest(f"Invalid type for '{name}': expected {what}.", param=name, code="invalid_type")
    return value


def _optional(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> None:
    value = body.get(name)
    if value is not None and (not isinstance(value, kind) or (isinstance(value, bool) and kind is int)):
        raise InvalidRequest(f"Invalid type for '{name}': expected {what}.", param=name, code="invalid_type")


def validate_chat(body: dict[str, Any]) -> None:
    _require(body, "model", str, "a string")
    messages = _require(body, "messages", list, "an array of messages")
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages", code="invalid_value")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidRequest(f"Invalid value for 'messages[{i}]': each message needs a string 'role'.",
                                 param=f"messages[{i}]", code="invalid_value")
    _common(body)
    _optional(body, "tools", list, "an array of tools")


def validate_completion(body: dict[str, Any]) -> None:
    _require(body, "model", str, "a string")
    _require(body, "prompt", (str, list), "a string or an array")
    _common(body)


def validate_embedding(body: dict[str, Any]) -> None:
    _require(body, "model", str, "a string")
    _require(body, "input", (str, list), "a string or an array")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise InvalidRequest("Invalid value for 'encoding_format': expected 'float' or 'base64'.",
                             param="encoding_format", code="invalid_value")


def _common(body: dict[str, Any]) -> None:
    _optional(body, "stream", bool, "a boolean")
    _optional(body, "n", int, "an integer")
    _optional(body, "stream_options", dict, "an object")
    _optional(body, "max_tokens", int, "an integer")
    n = body.get("n")
    if n is not None and n < 1:
        raise InvalidRequest("Invalid value for 'n': must be at least 1.", param="n", code="invalid_value")


class JSONBytes(Response):
    """A JSON answer from bytes already encoded: headers built once as raw pairs, two ASGI messages.
    (Starlette's Response does the same with more general machinery on every request.)"""

    media_type = "application/json"

    def __init__(self, content: bytes, status_code: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status_code = status_code
        self.body = content
        self.background = None
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        if headers:
            raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers = raw

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> Response:
    return JSONBytes(exc.to_json(), exc.status, {**(headers or {}), **exc.headers()})


def json_response(body: Any, headers: dict[str, str] | None = None, status: int = 200) -> Response:
    return JSONBytes(orjson.dumps(body), status, headers)


async def until_disconnect(receive: Callable[[], Awaitable[dict]], work: Callable[[], Awaitable[T]],
                           grace: float = 0.005) -> T:
    """Run `work` in this task; if the client disconnects first, cancel it and raise ClientDisconnected.

    Cancelling the work cancels the upstream call inside it, which closes that connection, so the
    upstream stops generating (and billing) an answer nobody will read. The watcher (a task reading
    the client's side) starts only once the work has run for `grace` seconds: most answers from a
    fast upstream or the cache are done by then, and a task per request is a measurable share of
    the hot path. A client that left earlier is seen at once when the watcher starts.
    """
    task = asyncio.current_task()
    assert task is not None
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
                task.cancel()
                return

    def start() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    loop = asyncio.get_running_loop()
    timer = loop.call_later(grace, start)
    try:
        return await work()
    except asyncio.CancelledError:
        if gone:
            task.uncancel()
            raise ClientDisconnected() from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
