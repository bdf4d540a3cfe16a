"""`make run`: the fake upstream and the gateway on the demo policy, with a fresh dev key.

Everything runs offline: the embedded Redis, the fake upstream (a separate process) and the
gateway. The dev key and a curl and an `openai` SDK example are printed before serving.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time

from gateway import store
from gateway.keys import KeyStore
from gateway.launch import serve
from gateway.settings import Settings


def _wait_port(port: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


async def _dev_key(url: str, prefix: str) -> str:
    redis = store.client(url, timeout=5.0)
    try:
        key, _ = await KeyStore(redis, prefix).create("demo", user="dev", name="make run")
        return key
    finally:
        await redis.aclose()


def run_demo(policy: str, settings: Settings, upstream_port: int) -> int:
    upstream = subprocess.Popen([sys.executable, "-m", "gateway", "fake-upstream", "--port", str(upstream_port)])
    try:
        if not _wait_port(upstream_port):
            print(f"gateway: the fake upstream did not start on port {upstream_port}", file=sys.stderr)
            return 1
        os.environ["GATEWAY_DEMO_UPSTREAM"] = f"http://127.0.0.1:{upstream_port}/v1"
        master = settings.master_key.reveal() if settings.master_key else "sk-master-" + secrets.token_urlsafe(16)
        settings = Settings.from_env(**{**settings.__dict__, "policy": policy, "master_key": master})
        with store.resolve_url(settings.redis_url, settings.data_dir) as url:
            key = asyncio.run(_dev_key(url, settings.redis_prefix))
            base = f"http://{settings.host}:{settings.port}/v1"
            print(_banner(base, key, master), flush=True)
            settings = Settings.from_env(**{**settings.__dict__, "redis_url": url})
            return serve(settings)
    finally:
        upstream.terminate()
        upstream.wait(timeout=5)


def _banner(base: str, key: str, master: str) -> str:
    return f"""
================================================================================
 LLM gateway demo: fake upstream + embedded Redis, no internet, no provider keys
--------------------------------------------------------------------------------
 base URL    {base}
 dev key     {key}
 master key  {master}   (admin API: /admin/keys, /admin/policy)
 models      base, fine-tuned, distilled, auto, embed

 curl {base}/chat/completions \\
   -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
   -d '{{"model": "auto", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

 python -c "from openai import OpenAI; c = OpenAI(base_url='{base}', api_key='{key}'); \\
print(c.chat.completions.create(model='distilled', messages=[{{'role': 'user', 'content': 'Hi'}}]).choices[0].message.content)"
================================================================================
"""
