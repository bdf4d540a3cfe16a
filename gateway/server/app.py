"""Builds the FastAPI application: routes, error handlers and the lifespan that opens the store,
loads the policy and closes both again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway import gctune, metrics, store
from gateway.errors import GatewayError, InvalidRequest
from gateway.cache import Cache
from gateway.keys import KeyStore
from gateway.ledger import Ledger
from gateway.limits import Limits
from gateway.pipeline import Pipeline
from gateway.policy import load_policy
from gateway.server import admin_api, grounding_api, openai_api
from gateway.server.protocol import error_response, json_response
from gateway.server.reload import PolicyReloader
from gateway.server.runtime import Runtime
from gateway.settings import Settings
from gateway.upstream import Upstreams

log = logging.getLogger("gateway.server")


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.policy:
            raise RuntimeError("no policy: pass --policy FILE or set GATEWAY_POLICY")
        policy = load_policy(settings.policy)
        with store.resolve_url(settings.redis_url, settings.data_dir) as url:
            redis = store.client(url, settings.redis_timeout)
            upstreams = Upstreams()
            ledger = Ledger(redis, settings.redis_prefix, Path(settings.data_dir) / "spool")
            hot = store.scripts_client(url, settings.redis_timeout, redis)  # the per-request scripts' client
            pipeline = Pipeline(policy, KeyStore(redis, settings.redis_prefix, settings.key_cache_ttl), upstreams,
                                ledger, Limits(hot, settings.redis_prefix), Cache(hot), settings.redis_prefix)
            reloader = PolicyReloader(pipeline, settings.policy)
            app.state.runtime = Runtime(settings, pipeline, redis, reloader)
            metrics.POLICY_INFO.set(time.time())
            loop = asyncio.get_running_loop()
            background: set[asyncio.Task] = set()
            with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off the main thread
                loop.add_signal_handler(signal.SIGHUP, lambda: background.add(
                    loop.create_task(reloader.reload("SIGHUP"))))
            if settings.policy_poll_s > 0:
                background.add(loop.create_task(reloader.watch(settings.policy_poll_s)))
            writer = loop.create_task(ledger.run())
            log.info("gateway ready", extra={"fields": {"policy": policy.source, "sha256": policy.sha256[:12],
                                                        "routes": len(policy.routes)}})
            gctune.tune()
            try:
                yield
            finally:
                for task in background:
                    task.cancel()
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
                await ledger.flush()  # to the stream, or to the spool if Redis is down
                if pipeline.cache is not None:
                    await pipeline.cache.drain()  # answers waiting for their batch
                await upstreams.aclose()
                if hot is not redis:
                    await hot.aclose()
                await redis.aclose()

    app = FastAPI(title="LLM gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(openai_api.router)
    app.include_router(admin_api.router)
    app.include_router(grounding_api.router)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get("/readyz")
    async def readyz(request: Request) -> Response:
        rt: Runtime | None = getattr(request.app.state, "runtime", None)
        if rt is None:
            return json_response({"status": "starting"}, status=503)
        try:
            await asyncio.wait_for(rt.redis.ping(), timeout=rt.settings.redis_timeout)
            store_state = "ok"
        except Exception:  # any failure to ping is "unreachable"; we keep serving
            store_state = "unreachable"
        policy = rt.pipeline.policy
        return json_response({
            "status": "ready" if store_state == "ok" else "degraded",
            "store": store_state,
            "policy": {"source": policy.source, "sha256": policy.sha256, "loaded_at": rt.policy_loaded_at},
        })

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            err: GatewayError = InvalidRequest(f"Unknown request URL: {request.method} {request.url.path}.",
                                               status=404, code="unknown_url")
        elif exc.status_code == 405:
            err = InvalidRequest(f"Method {request.method} is not allowed on {request.url.path}.",
                                 status=405, code="method_not_allowed")
        else:
            err = InvalidRequest(str(exc.detail), status=exc.status_code)
        return error_response(err)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return _internal_error(exc)

    return app


def _internal_error(exc: Exception) -> Response:
    """The last resort for an error no handler turned into an answer: logged, and OpenAI-shaped."""
    log.error("unhandled error", exc_info=exc)
    return error_response(GatewayError("The gateway failed to handle this request."))


class FastPath:
    """The hot endpoints straight from the server, around FastAPI's routing and middleware stack.

    OpenAI's POST endpoints are most of the traffic, and their handlers already do everything the
    stack would (every error becomes an OpenAI-shaped answer inside them), so for them the stack's
    layers of ASGI wrappers are pure per-request cost. Everything else (admin, health, metrics,
    404s, 405s, lifespan) goes through FastAPI as before.
    """

    def __init__(self, app: FastAPI, routes: dict[str, Any]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.routes.get(scope["path"])
            if handler is not None:
                scope["app"] = self.app  # what request.app reads
                try:
                    response = await handler(Request(scope, receive))
                except Exception as exc:  # as the stack's last-resort handler would
                    response = _internal_error(exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app_from_env() -> FastPath:
    """Factory for uvicorn workers: every setting comes from GATEWAY_* variables."""
    from gateway import logs

    settings = Settings.from_env()
    logs.setup(settings.log_level)
    app = create_app(settings)
    # the POST routes of OpenAI's endpoints and the grounding check, as their routers declare them
    return FastPath(app, {r.path: r.endpoint for router in (openai_api.router, grounding_api.router)
                          for r in router.routes if isinstance(r, APIRoute) and "POST" in r.methods})
