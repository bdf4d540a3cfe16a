"""Direct adapter for every server that speaks OpenAI's HTTP protocol (OpenAI, Azure OpenAI,
vLLM, Ollama, TGI, any `/v1` server), over one pooled aiohttp session with keep-alive."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

import aiohttp
import orjson
import yarl

from gateway import metrics
from gateway.catalog import Deployment
from gateway.errors import RateLimited, UpstreamClientError, UpstreamError, UpstreamTimeout
from gateway.upstream.base import Chunk, StreamState, UpstreamCall, UpstreamResponse, upstream_body
from gateway.usage import Usage

log = logging.getLogger("gateway.upstream")


class OpenAICompatAdapter:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._targets: dict[tuple[int, str], tuple[Deployment, yarl.URL, dict[str, str]]] = {}
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=lambda o: orjson.dumps(o).decode(),
                skip_auto_headers=("User-Agent",),
                auto_decompress=True,
                # A proxy must not keep cookies: one tenant's upstream cookie would ride along on the
                # next tenant's request. (No cookie processing is also less work per call.)
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _target(self, d: Deployment, endpoint: str) -> tuple[yarl.URL, dict[str, str]]:
        """The URL and headers for a deployment's endpoint, worked out once per deployment (a
        reloaded policy brings new Deployment objects, so nothing stale survives a reload)."""
        key = (id(d), endpoint)
        hit = self._targets.get(key)
        if hit is not None and hit[0] is d:
            return hit[1], dict(hit[2])
        url, headers = self._build_target(d, endpoint)
        if len(self._targets) > 4096:
            self._targets.clear()
        parsed = yarl.URL(url, encoded=False)
        self._targets[key] = (d, parsed, headers)
        return parsed, dict(headers)

    def _build_target(self, d: Deployment, endpoint: str) -> tuple[str, dict[str, str]]:
        headers = {"content-type": "application/json", **d.headers}
        if d.provider == "azure":
            url = f"{d.api_base}/openai/deployments/{d.model}/{endpoint}?api-version={d.api_version}"
            if d.api_key:
                headers["api-key"] = d.api_key.reveal()
        else:
            url = f"{d.api_base}/{endpoint}"
            if d.api_key:
                headers["authorization"] = "Bearer " + d.api_key.reveal()
        return url, headers

    async def send(self, d: Deployment, call: UpstreamCall) -> UpstreamResponse | "OpenAIStream":
        url, headers = self._target(d, call.endpoint)
        if call.request_id:
            headers["x-request-id"] = call.request_id
        payload = orjson.dumps(upstream_body(d, call))
        timeout = self._timeouts.get((d.connect_timeout, d.read_timeout))
        if timeout is None:
            timeout = self._timeouts[(d.connect_timeout, d.read_timeout)] = aiohttp.ClientTimeout(
                total=None, sock_connect=d.connect_timeout, sock_read=d.read_timeout)
        try:
            resp = await self._client().post(url, data=payload, headers=headers, timeout=timeout)
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_error(d, exc, "could not be reached") from None
        try:
            if resp.status != 200:
                await _raise_for_status(d, resp)
            if call.stream:
                if "text/event-stream" not in resp.headers.get("content-type", ""):
                    metrics.UPSTREAM_ERRORS.labels(d.id, "malformed").inc()
                    raise UpstreamError(f"The upstream for model {d.id!r} did not answer with a stream.",
                                        code="upstream_malformed_response")
                stream = OpenAIStream(d, resp, strip_usage=not call.client_wants_usage)
                resp = None  # the stream owns it now
                return stream
            raw = await resp.read()
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_error(d, exc, "broke off its answer") from None
        finally:
            if resp is not None:
                resp.release()
        try:
            body = orjson.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            metrics.UPSTREAM_ERRORS.labels(d.id, "malformed").inc()
            raise UpstreamError(f"The upstream for model {d.id!r} answered with malformed JSON.",
                                code="upstream_malformed_response") from None
        return UpstreamResponse(body, Usage.from_openai(body.get("usage")))


def _transport_error(d: Deployment, exc: BaseException, what: str, code: str | None = None) -> UpstreamError:
    """Map a transport failure (timeout, refused or dropped connection) to the gateway's errors."""
    if isinstance(exc, asyncio.TimeoutError):
        metrics.UPSTREAM_ERRORS.labels(d.id, "timeout").inc()
        return UpstreamTimeout(f"The upstream for model {d.id!r} did not answer in time.")
    metrics.UPSTREAM_ERRORS.labels(d.id, "connection").inc()
    return UpstreamError(f"The upstream for model {d.id!r} {what} ({type(exc).__name__}).", code=code)


async def _raise_for_status(d: Deployment, resp: aiohttp.ClientResponse) -> None:
    status = resp.status
    try:
        raw = await resp.read()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        raw = b""
    message = _upstream_message(raw)
    if status == 429:
        metrics.UPSTREAM_ERRORS.labels(d.id, "status_429").inc()
        raise RateLimited(f"The upstream for model {d.id!r} is rate limited: {message}",
                          code="upstream_rate_limited", retry_after=_retry_after(resp.headers))
    if status in (401, 403):
        # The client's key was fine; ours (the provider key) was refused. Not the client's fault.
        metrics.UPSTREAM_ERRORS.labels(d.id, "auth").inc()
        raise UpstreamError(f"The upstream for model {d.id!r} refused the gateway's credentials.",
                            code="upstream_auth_failed")
    if status == 408 or status == 504:
        metrics.UPSTREAM_ERRORS.labels(d.id, "timeout").inc()
        raise UpstreamTimeout(f"The upstream for model {d.id!r} timed out: {message}")
    if 400 <= status < 500:
        metrics.UPSTREAM_ERRORS.labels(d.id, "status_4xx").inc()
        raise UpstreamClientError(message, status=status)
    metrics.UPSTREAM_ERRORS.labels(d.id, "status_5xx").inc()
    raise UpstreamError(f"The upstream for model {d.id!r} failed with status {status}: {message}")


def _upstream_message(raw: bytes) -> str:
    try:
        err = orjson.loads(raw)
        if isinstance(err, dict):
            inner = err.get("error", err)
            msg = inner.get("message") if isinstance(inner, dict) else inner
            if msg:
                return str(msg)[:500]
    except ValueError:
        pass
    return raw[:200].decode("utf-8", "replace") or "(no message)"


def _retry_after(headers: Any) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


class OpenAIStream:
    """Server-sent events from an OpenAI-compatible upstream, parsed as they pass."""

    def __init__(self, d: Deployment, resp: aiohttp.ClientResponse, strip_usage: bool) -> None:
        self._d = d
        self._resp = resp
        self._strip_usage = strip_usage
        self._state = StreamState()

    @property
    def usage(self) -> Usage | None:
        return self._state.usage

    @property
    def finished(self) -> bool:
        return self._state.finished

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        buf = b""
        data_lines: list[bytes] = []
        try:
            async for piece in self._resp.content.iter_any():
                buf += piece
                while True:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        break
                    line = buf[:nl].rstrip(b"\r")
                    buf = buf[nl + 1:]
                    if line.startswith(b"data:"):
                        data_lines.append(line[5:].lstrip(b" "))
                        continue
                    if line or not data_lines:
                        continue  # comments, event:/id: fields, keep-alives
                    payload = b"\n".join(data_lines)
                    data_lines = []
                    if payload == b"[DONE]":
                        self._state.finished = True
                        return
                    chunk = self._chunk(payload)
                    if chunk is not None:
                        yield chunk
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            raise _transport_error(self._d, exc, "broke off its stream", code="upstream_disconnected") from None
        finally:
            await self.aclose()
        metrics.UPSTREAM_ERRORS.labels(self._d.id, "connection").inc()
        raise UpstreamError(f"The upstream for model {self._d.id!r} ended its stream without [DONE].",
                            code="upstream_disconnected")

    def _chunk(self, payload: bytes) -> Chunk | None:
        try:
            data = orjson.loads(payload)
        except ValueError:
            metrics.UPSTREAM_ERRORS.labels(self._d.id, "malformed").inc()
            raise UpstreamError(f"The upstream for model {self._d.id!r} sent a malformed stream event.",
                                code="upstream_malformed_response") from None
        if not isinstance(data, dict):
            return None
        if "error" in data and "choices" not in data:
            raise UpstreamError(f"The upstream for model {self._d.id!r} failed mid-stream: "
                                f"{_upstream_message(payload)}", code="upstream_error")
        self._state.chunks += 1
        usage = data.get("usage")
        if usage:
            self._state.usage = Usage.from_openai(usage)
            if self._strip_usage and not data.get("choices"):
                return None  # the usage-only chunk we asked for on the client's behalf
            if self._strip_usage:
                data = dict(data)
                data.pop("usage", None)
                return Chunk(orjson.dumps(data), data)
        return Chunk(payload, data)

    async def aclose(self) -> None:
        if self._state.finished:
            self._resp.release()
        else:
            self._resp.close()  # drop the connection: the upstream sees the cancellation
