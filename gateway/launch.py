"""Starting the server process: validate the policy, resolve the store, hand over to uvicorn."""

from __future__ import annotations

import os
import signal
import sys

from gateway import logs, store
from gateway.settings import Settings


def check_policy(path: str | None) -> bool:
    from gateway.policy import PolicyError, load_policy

    if not path:
        print("gateway: no policy given (--policy FILE or GATEWAY_POLICY)", file=sys.stderr)
        return False
    try:
        load_policy(path)
    except PolicyError as exc:
        print(f"gateway: the policy {path} is invalid:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return False
    return True


def serve(settings: Settings) -> int:
    import uvicorn

    logs.setup(settings.log_level)
    if not check_policy(settings.policy):
        return 2
    # uvicorn shuts down gracefully on SIGTERM and then re-raises it; as SystemExit (rather than the
    # default handler's instant death) it unwinds through the `with` below, which stops the embedded
    # Redis, and through `gateway demo`, which stops its fake upstream.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with store.resolve_url(settings.redis_url, settings.data_dir) as url:
        os.environ.update(settings.to_env())
        os.environ["GATEWAY_REDIS_URL"] = url
        uvicorn.run(
            "gateway.server.app:create_app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers if settings.workers > 1 else None,
            loop="auto",
            http="auto",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)
