"""The gateway side by side with the peers users would pick instead, in one run: `make bench`.

    python bench/peers.py [--seconds 5] [--repeats 3] [--quick] [--only gateway,litellm]

Targets, all pointed at the same upstream (nginx, one worker, answering fixed OpenAI-shaped bodies
from memory, JSON or an SSE stream, so it is never the bottleneck):

- **direct**: the upstream itself, the floor every gateway adds to;
- **gateway**: this project, one worker, full pipeline: virtual-key auth, routing policy, rate limit
  and budget checks in Redis, cost metering, the ledger, the response cache (a miss unless the
  scenario is the cache hit), Prometheus metrics and access logs;
- **litellm**: LiteLLM's proxy (pinned, own virtualenv), one worker, no database, the same upstream
  as an `openai/` model;
- **portkey**: Portkey's open-source gateway (npm `@portkey-ai/gateway`, pinned) on the machine's
  Node.js, routed by its `x-portkey-provider` and `x-portkey-custom-host` headers.

Scenarios: non-streamed chat at concurrency 1, 16 and 64 (wrk, one thread, keep-alive), a streamed
chat at concurrency 1 (time to first token, total time, every event counted), a cache hit and a
request with a grounding check (this gateway only: the peers' open-source builds have no grounding,
and Portkey's no cache). Targets alternate within every repeat. For each target it records
requests/s, p50/p90/p99 latency, latency added over direct, CPU time per request of the target's
processes (from /proc, and Redis's separately for this gateway), peak RSS, errors, and cold start
(process start to the first served chat request). Writes bench/results/peers.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(os.environ.get("PEERS_DIR", ROOT / "bench" / "peers" / ".installed"))
CLK = os.sysconf("SC_CLK_TCK")

COMPLETION = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1733000000, "model": "bench-model",
    "system_fingerprint": "fp_bench",
    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                 "message": {"role": "assistant", "content": "The capital of France is Paris. It lies on the Seine.",
                             "refusal": None}}],
    "usage": {"prompt_tokens": 14, "completion_tokens": 13, "total_tokens": 27},
}
STREAM_WORDS = ("The capital of France is Paris . It lies on the Seine , in the north of the country , "
                "and is its largest city .").split()


def sse_body() -> str:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1733000000,
            "model": "bench-model", "system_fingerprint": "fp_bench"}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}]
    events += [{**base, "choices": [{"index": 0, "delta": {"content": " " + w}, "finish_reason": None}]}
               for w in STREAM_WORDS]
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append({**base, "choices": [], "usage": {"prompt_tokens": 14, "completion_tokens": len(STREAM_WORDS),
                                                    "total_tokens": 14 + len(STREAM_WORDS)}})
    return "".join(f"data: {json.dumps(e, separators=(',', ':'))}\n\n" for e in events) + "data: [DONE]\n\n"


STREAM_EVENTS = len(STREAM_WORDS) + 4  # role, words, finish, usage, [DONE]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
UNIQUE_MESSAGES = [{"role": "user", "content": "What is the capital of France? (question @@N@@)"}]
DOCUMENTS = [{"id": "atlas", "content": "Paris is the capital and largest city of France. The city stands on "
                                        "the Seine river, in the north of the country."},
             {"id": "guide", "content": "France is a country in western Europe. Its capital, Paris, is known "
                                        "for the Eiffel Tower and the Louvre."}]

POLICY = """\
models:
  bench-json: { tier: base, provider: vllm, model: bench-model, api_base: "{upstream}/v1",
                pricing: {{ input_per_1m: 2.5, output_per_1m: 10 }} }}
  bench-sse:  {{ tier: base, provider: vllm, model: bench-model, api_base: "{upstream}/stream/v1",
                pricing: {{ input_per_1m: 2.5, output_per_1m: 10 }} }}
routes:
  - {{ name: stream, match: {{ model: bench-sse }}, target: bench-sse }}
  - {{ name: grounded, match: {{ model: bench-grounded }}, target: bench-json,
      grounding: {{ action: annotate }} }}
  - {{ name: chat, match: {{ model: {{ in: [bench-json, bench-cached] }} }}, target: bench-json }}
# Only the "bench-limited" team's key is under these (the limits scenario); never reached in a run.
budgets:
  - {{ name: bench budget, scope: team, match: bench-limited, daily_usd: 1000000 }}
rate_limits:
  - {{ scope: team, match: bench-limited, rpm: 100000000, tpm: 100000000000 }}
"""

LITELLM_CONFIG = """\
model_list:
  - model_name: bench-json
    litellm_params: {{ model: openai/bench-model, api_base: "{upstream}/v1", api_key: sk-bench }}
  - model_name: bench-sse
    litellm_params: {{ model: openai/bench-model, api_base: "{upstream}/stream/v1", api_key: sk-bench }}
litellm_settings:
  telemetry: false
  set_verbose: false
"""

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  fastcgi_temp_path {tmp}/nginx-fastcgi;
  uwsgi_temp_path {tmp}/nginx-uwsgi;
  scgi_temp_path {tmp}/nginx-scgi;
  client_body_buffer_size 64k;
  server {{
    listen 127.0.0.1:{port};
    root {tmp}/www;
    sendfile on;
    tcp_nodelay on;
    # the bodies are files; a POST to a file is a 405, which answers the same file with 200
    location = /v1/chat/completions {{ default_type application/json; error_page 405 =200 $uri; }}
    location = /stream/v1/chat/completions {{ default_type text/event-stream; error_page 405 =200 $uri; }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------ processes


def tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK


def peak_rss_mb(pids: list[int]) -> float:
    """The largest peak RSS (VmHWM) of any one process: per worker, not summed."""
    best = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    best = max(best, int(line.split()[1]))
        except OSError:
            continue
    return best / 1024


@dataclass
class Target:
    name: str
    url: str  # the chat completions URL
    headers: dict[str, str]
    stream_url: str = ""
    stream_headers: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    body_model: str = "bench-json"
    stream_model: str = "bench-sse"

    def pids(self) -> list[int]:
        return tree(self.proc.pid) if self.proc else []


def spawn(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=cwd,
                            start_new_session=True)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with_group = os.getpgid(proc.pid)
    os.killpg(with_group, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(with_group, signal.SIGKILL)
        proc.wait()


def wait_first_answer(target: Target, timeout: float = 120.0) -> float:
    """Poll until the target serves a chat completion; return seconds since its process started."""
    assert target.proc is not None
    started = target.started  # type: ignore[attr-defined]
    body = {"model": target.body_model, "messages": MESSAGES}
    deadline = time.perf_counter() + timeout
    with httpx.Client(timeout=5) as client:
        while time.perf_counter() < deadline:
            if target.proc.poll() is not None:
                raise RuntimeError(f"{target.name} exited with {target.proc.returncode}")
            try:
                r = client.post(target.url, json=body, headers=target.headers)
                if r.status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
    raise RuntimeError(f"{target.name} did not answer within {timeout:.0f} s")


# ------------------------------------------------------------------------------------------ targets


class Bench:
    def __init__(self, tmp: Path, redis_url: str) -> None:
        self.tmp = tmp
        self.redis_url = redis_url
        self.upstream_port = free_port()
        self.upstream = f"http://127.0.0.1:{self.upstream_port}"
        self.nginx: subprocess.Popen | None = None
        self.prefix = f"bench-{os.getpid()}:"
        self.master = "sk-bench-master-" + os.urandom(8).hex()
        self.key = ""
        self.limited_key = ""  # a key whose team has a budget and rate limits

    def start_upstream(self) -> None:
        conf = NGINX_CONF.format(tmp=self.tmp, port=self.upstream_port)
        for path, text in (("v1/chat/completions", json.dumps(COMPLETION, separators=(",", ":"))),
                           ("stream/v1/chat/completions", sse_body())):
            (self.tmp / "www" / path).parent.mkdir(parents=True, exist_ok=True)
            (self.tmp / "www" / path).write_text(text)
        for p in [self.tmp, *self.tmp.joinpath("www").rglob("*")]:  # nginx's workers run as nobody under root
            p.chmod(0o755)
        (self.tmp / "nginx.conf").write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.nginx = spawn([nginx, "-p", str(self.tmp), "-c", str(self.tmp / "nginx.conf"), "-e",
                            str(self.tmp / "nginx-error.log")], dict(os.environ), self.tmp / "nginx.log")
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if httpx.post(self.upstream + "/v1/chat/completions", json={}).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start: " + (self.tmp / "nginx-error.log").read_text())

    def direct(self) -> Target:
        return Target("direct", self.upstream + "/v1/chat/completions", {},
                      self.upstream + "/stream/v1/chat/completions", {})

    def gateway(self) -> Target:
        port = free_port()
        (self.tmp / "policy.yaml").write_text(POLICY.replace("{upstream}", self.upstream).replace("{{", "{")
                                              .replace("}}", "}"))
        env = {**os.environ, "GATEWAY_POLICY": str(self.tmp / "policy.yaml"), "GATEWAY_PORT": str(port),
               "GATEWAY_HOST": "127.0.0.1", "GATEWAY_REDIS_URL": self.redis_url,
               "GATEWAY_REDIS_PREFIX": self.prefix, "GATEWAY_MASTER_KEY": self.master,
               "GATEWAY_DATA_DIR": str(self.tmp / "gateway-data"), "GATEWAY_LOG_LEVEL": "info"}
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        t = Target("gateway", url, {}, url, {})
        t.started = time.perf_counter()  # type: ignore[attr-defined]
        t.proc = spawn([str(ROOT / ".venv" / "bin" / "python"), "-m", "gateway", "serve"], env,
                       self.tmp / f"gateway-{port}.log", cwd=ROOT)
        if not self.key:
            deadline = time.time() + 60
            while True:
                try:
                    r = httpx.post(f"http://127.0.0.1:{port}/admin/keys", json={"team": "bench"},
                                   headers={"authorization": f"Bearer {self.master}"})
                    r.raise_for_status()
                    self.key = r.json()["key"]
                    self.limited_key = httpx.post(f"http://127.0.0.1:{port}/admin/keys", json={"team": "bench-limited"},
                                                  headers={"authorization": f"Bearer {self.master}"}).json()["key"]
                    break
                except httpx.HTTPError:
                    if time.time() > deadline or t.proc.poll() is not None:
                        raise
                    time.sleep(0.02)
        t.headers = t.stream_headers = {"authorization": f"Bearer {self.key}"}
        return t

    def litellm(self) -> Target:
        port = free_port()
        (self.tmp / "litellm.yaml").write_text(LITELLM_CONFIG.replace("{upstream}", self.upstream)
                                               .replace("{{", "{").replace("}}", "}"))
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
               "LITELLM_MASTER_KEY": self.master,  # it refuses to start without one; no database to look keys up
               "LITELLM_TELEMETRY": "False", "DISABLE_SCHEMA_UPDATE": "true"}
        env.pop("DATABASE_URL", None)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        auth = {"authorization": f"Bearer {self.master}"}
        t = Target("litellm", url, auth, url, auth)
        t.started = time.perf_counter()  # type: ignore[attr-defined]
        t.proc = spawn([str(PEERS / "litellm" / "bin" / "litellm"), "--config", str(self.tmp / "litellm.yaml"),
                        "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"], env,
                       self.tmp / f"litellm-{port}.log")
        return t

    def portkey(self) -> Target:
        port = free_port()
        node = shutil.which("node") or "node"
        server = PEERS / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        common = {"authorization": "Bearer sk-bench", "x-portkey-provider": "openai"}
        t = Target("portkey", url, {**common, "x-portkey-custom-host": self.upstream + "/v1"}, url,
                   {**common, "x-portkey-custom-host": self.upstream + "/stream/v1"})
        t.started = time.perf_counter()  # type: ignore[attr-defined]
        t.proc = spawn([node, str(server), f"--port={port}", "--headless"],
                       {**os.environ, "NODE_ENV": "production"}, self.tmp / f"portkey-{port}.log")
        return t

    def redis_pid(self) -> int | None:
        try:
            return int(redis.Redis.from_url(self.redis_url).info("server")["process_id"])
        except (redis.RedisError, KeyError, ValueError):
            return None

    def close(self) -> None:
        stop(self.nginx)
        try:
            r = redis.Redis.from_url(self.redis_url)
            for k in r.scan_iter(match=self.prefix + "*", count=1000):
                r.delete(k)
        except redis.RedisError:
            pass


# ------------------------------------------------------------------------------------------ load


WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = {body}
{headers}
"""
# Every request a different prompt (a counter in the message), so a cache can only miss.
WRK_VARY = """\
local head, tail, n = {head}, {tail}, 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, head .. n .. tail)
end
"""
UNIQUE = "@@N@@"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def run_wrk(target: Target, body: dict[str, Any], headers: dict[str, str], concurrency: int, seconds: float,
            tmp: Path) -> dict[str, float]:
    script = tmp / f"wrk-{target.name}.lua"
    lines = [f"wrk.headers[ {lua_string(k)} ] = {lua_string(v)}"
             for k, v in {"content-type": "application/json", **headers}.items()]
    text = json.dumps(body)
    script_text = WRK_SCRIPT.format(body=lua_string(text), headers="\n".join(lines))
    if UNIQUE in text:
        head, tail = text.split(UNIQUE, 1)
        head = head + os.urandom(4).hex() + "-"  # a fresh run: no earlier run's cache entry can match
        script_text += WRK_VARY.format(head=lua_string(head), tail=lua_string(tail))
    script.write_text(script_text)
    pids = target.pids()
    cpu0 = cpu_seconds(pids)
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script),
                          target.url], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"wrk against {target.name} failed: {out.stderr or out.stdout}")
    out = out.stdout
    cpu = cpu_seconds(pids) - cpu0
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "requests": requests,
              "errors": 0.0, "cpu_ms": cpu * 1000 / max(1, requests)}
    for label, key in (("50%", "p50"), ("90%", "p90"), ("99%", "p99")):
        m = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)\b", out)
        result[key] = float(m.group(1)) * _UNITS[m.group(2)]
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        result["errors"] += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        result["errors"] += sum(int(x) for x in m.groups())
    return result


async def run_stream(target: Target, requests: int) -> dict[str, float]:
    """Sequential streamed requests: time to first content token, total time, events delivered."""
    body = {"model": target.stream_model, "messages": MESSAGES, "stream": True,
            "stream_options": {"include_usage": True}}
    ttft, total, missing = [], [], 0
    pids = target.pids()
    cpu0 = cpu_seconds(pids)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for _ in range(requests):
            t0 = time.perf_counter()
            first = None
            events = 0
            words = 0
            async with session.post(target.stream_url, json=body, headers=target.stream_headers) as r:
                if r.status != 200:
                    return {"failed": f"HTTP {r.status}: {(await r.text())[:120]}"}
                buffer = b""
                async for chunk in r.content.iter_any():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if not line.startswith(b"data: "):
                            continue
                        events += 1
                        if line == b"data: [DONE]":
                            continue
                        event = json.loads(line[6:])
                        if event.get("choices") and event["choices"][0].get("delta", {}).get("content"):
                            words += 1
                            if first is None:
                                first = time.perf_counter()
            end = time.perf_counter()
            ttft.append(((first or end) - t0) * 1000)
            total.append((end - t0) * 1000)
            missing += max(0, len(STREAM_WORDS) - words)
    cpu = cpu_seconds(pids) - cpu0
    return {"ttft_p50": pct(ttft, 0.5), "ttft_p99": pct(ttft, 0.99), "total_p50": pct(total, 0.5),
            "total_p99": pct(total, 0.99), "missing": float(missing), "cpu_ms": cpu * 1000 / requests}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


# ------------------------------------------------------------------------------------------ report


def med(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def spread(rows: list[dict[str, float]], key: str, fmt: str = "{:,.0f}") -> str:
    values = [r[key] for r in rows]
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stream-requests", type=int, default=300)
    ap.add_argument("--cold-starts", type=int, default=3)
    ap.add_argument("--only", default="gateway,litellm,portkey")
    ap.add_argument("--quick", action="store_true", help="1 repeat of 2 s: a smoke run")
    ap.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "peers.md"))
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.repeats, args.stream_requests, args.cold_starts = 2.0, 1, 50, 1
    names = [n for n in args.only.split(",") if n]
    tmp = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    bench = Bench(tmp, args.redis_url)
    targets: dict[str, Target] = {}
    cold: dict[str, list[float]] = {n: [] for n in names}
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    redis_cpu: dict[str, list[float]] = {}
    stream_failures: dict[str, str] = {}
    try:
        bench.start_upstream()
        targets["direct"] = bench.direct()
        for name in names:  # start, time the cold start, keep running for the load scenarios
            t = getattr(bench, name)()
            cold[name].append(wait_first_answer(t))
            targets[name] = t
            print(f"{name}: first answer {cold[name][-1]:.2f} s after start", flush=True)
        for name in names:  # warm every target up (JIT, pools, caches) before measuring anything
            run_wrk(targets[name], {"model": "bench-json", "messages": MESSAGES}, targets[name].headers, 16,
                    max(2.0, args.seconds / 2), tmp)
        rpid = bench.redis_pid()
        order = ["direct"] + names
        scenarios: list[tuple[str, int, dict[str, Any], list[str]]] = [
            (f"chat c={c}", c, {"model": "bench-json", "temperature": 0, "messages": UNIQUE_MESSAGES}, order)
            for c in (1, 16, 64)]
        if "gateway" in names:
            scenarios.append(("cache hit c=1", 1, {"model": "bench-cached", "temperature": 0, "messages": MESSAGES},
                              ["direct", "gateway"]))
            scenarios.append(("grounding c=1", 1, {"model": "bench-grounded", "messages": MESSAGES,
                                                   "grounding": {"documents": DOCUMENTS}}, ["direct", "gateway"]))
            for c in (1, 16):  # the chat scenario again, for a team under a budget and rate limits
                scenarios.append((f"limits c={c}", c, {"model": "bench-json", "temperature": 0,
                                                       "messages": UNIQUE_MESSAGES}, ["direct", "gateway"]))
        for repeat in range(args.repeats):
            for label, concurrency, body, who in scenarios:
                rotated = who[repeat % len(who):] + who[:repeat % len(who)]  # alternate the order too
                for name in rotated:
                    t = targets[name]
                    b = {**body, "model": "bench-json"} if name == "direct" else body
                    r_cpu0 = cpu_seconds([rpid]) if rpid and name == "gateway" else 0.0
                    headers = t.headers
                    if label.startswith("limits") and name == "gateway":
                        headers = {"authorization": f"Bearer {bench.limited_key}"}
                    res = run_wrk(t, b, headers, concurrency, args.seconds, tmp)
                    if rpid and name == "gateway":
                        redis_cpu.setdefault(label, []).append(
                            (cpu_seconds([rpid]) - r_cpu0) * 1000 / max(1, res["requests"]))
                    results.setdefault((label, name), []).append(res)
                    print(f"[{repeat + 1}/{args.repeats}] {label:14s} {name:8s} {res['rps']:9,.0f} rps  "
                          f"p50 {res['p50']:6.2f}  p99 {res['p99']:7.2f} ms  cpu {res['cpu_ms']:.3f} ms/req  "
                          f"errors {res['errors']:.0f}", flush=True)
            for name in order:
                res = asyncio.run(run_stream(targets[name], args.stream_requests))
                if "failed" in res:
                    stream_failures[name] = res["failed"]
                    print(f"[{repeat + 1}/{args.repeats}] stream         {name:8s} failed: {res['failed']}", flush=True)
                    continue
                results.setdefault(("stream c=1", name), []).append(res)
                print(f"[{repeat + 1}/{args.repeats}] stream         {name:8s} ttft p50 {res['ttft_p50']:.2f} ms  "
                      f"total p50 {res['total_p50']:.2f} ms  missing {res['missing']:.0f}", flush=True)
        rss = {name: peak_rss_mb(targets[name].pids()) for name in names}
        for name in names:  # further cold starts: stop, start afresh, time the first answer
            for _ in range(args.cold_starts - 1):
                stop(targets[name].proc)
                t = getattr(bench, name)()
                cold[name].append(wait_first_answer(t))
                targets[name] = t
        report = render(args, names, results, rss, cold, redis_cpu, stream_failures)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report)
        print(report)
        return 0
    finally:
        for t in targets.values():
            stop(t.proc)
        bench.close()


def render(args: argparse.Namespace, names: list[str], results: dict, rss: dict[str, float],
           cold: dict[str, list[float]], redis_cpu: dict[str, list[float]], stream_failures: dict[str, str]) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    litellm_version = ""
    if "litellm" in names:
        litellm_version = subprocess.run([str(PEERS / "litellm" / "bin" / "python"), "-c",
                                          "import importlib.metadata as m; print(m.version('litellm'))"],
                                         capture_output=True, text=True).stdout.strip()
    portkey_version = ""
    pkg = PEERS / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
    if "portkey" in names and pkg.exists():
        portkey_version = json.loads(pkg.read_text())["version"]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Side by side: this gateway, LiteLLM's proxy and Portkey's gateway", "",
        f"Commit `{commit}`{' (with uncommitted changes)' if dirty else ''}, {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, Node.js {node}. "
        f"LiteLLM {litellm_version or '—'}, Portkey gateway {portkey_version or '—'}. "
        f"Upstream: nginx, 1 worker, fixed bodies. Load: wrk, 1 thread, {args.seconds:g} s per run, "
        f"{args.repeats} repeats, targets alternated; median (min–max) over repeats. Every target runs one "
        "worker (one process). The load generator, the upstream and the target share the 2 CPUs.", "",
        "This gateway runs its whole pipeline on every request: virtual-key auth, the routing policy, "
        "a response-cache lookup in Redis (127.0.0.1:6379) that misses (every prompt is unique; the "
        "answer is then stored), cost metering, the usage ledger, metrics and access logs. The `limits` "
        "rows add a budget and RPM/TPM limits for the caller's team (one more Redis script before the "
        "call, one after); the `cache hit` row repeats one prompt; the `grounding` row checks the answer "
        "against two documents. Its CPU column is its own process; Redis's CPU per request is listed "
        "beside it.", "",
        "## Non-streamed chat", "",
        "| scenario | target | requests/s | p50 ms | p90 ms | p99 ms | added p50 ms | added p99 ms | CPU ms/req | errors |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    labels = sorted({label for label, _ in results if label != "stream c=1"},
                    key=lambda s: (not s.startswith("chat"), s.split(" ")[0], int(s.split("c=")[1])))
    for label in labels:
        direct = results[(label, "direct")]
        for name in ["direct"] + names:
            rows = results.get((label, name))
            if not rows:
                continue
            added50 = med(rows, "p50") - med(direct, "p50")
            added99 = med(rows, "p99") - med(direct, "p99")
            cpu = spread(rows, "cpu_ms", "{:.3f}") if name != "direct" else "—"
            if name == "gateway" and redis_cpu.get(label):
                cpu += f" (+ Redis {statistics.median(redis_cpu[label]):.3f})"
            lines.append(
                f"| {label} | {name} | {spread(rows, 'rps')} | {spread(rows, 'p50', '{:.2f}')} | "
                f"{med(rows, 'p90'):.2f} | {spread(rows, 'p99', '{:.2f}')} | "
                f"{'—' if name == 'direct' else f'{added50:+.2f}'} | {'—' if name == 'direct' else f'{added99:+.2f}'} | "
                f"{cpu} | {sum(r['errors'] for r in rows):.0f} |")
    lines += ["", f"## Streamed chat, concurrency 1 ({args.stream_requests} requests per repeat, "
                  f"{len(STREAM_WORDS)} content events each)", "",
              "| target | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms | total p50 ms | total p99 ms | CPU ms/req | events missing |",
              "|---|---|---|---|---|---|---|---|"]
    direct = results[("stream c=1", "direct")]
    for name in ["direct"] + names:
        if name in stream_failures:
            lines.append(f"| {name} | failed: {stream_failures[name]} | | | | | | |")
            continue
        rows = results[("stream c=1", name)]
        added_ttft = "—" if name == "direct" else f"{med(rows, 'ttft_p50') - med(direct, 'ttft_p50'):+.2f}"
        cpu = "—" if name == "direct" else f"{med(rows, 'cpu_ms'):.3f}"
        lines.append(f"| {name} | {spread(rows, 'ttft_p50', '{:.2f}')} | {med(rows, 'ttft_p99'):.2f} | {added_ttft} | "
                     f"{spread(rows, 'total_p50', '{:.2f}')} | {med(rows, 'total_p99'):.2f} | {cpu} | "
                     f"{sum(r['missing'] for r in rows):.0f} |")
    lines += ["", "## Memory and start-up", "",
              "| target | peak RSS per worker MB | cold start to first answer s |", "|---|---|---|"]
    for name in names:
        c = cold[name]
        lines.append(f"| {name} | {rss[name]:.0f} | {statistics.median(c):.2f} ({min(c):.2f}–{max(c):.2f}) |")
    if "gateway" in names:
        lines += ["", "## Ratios (gateway against each peer, medians)", "",
                  "| measure | vs litellm | vs portkey |", "|---|---|---|"]

        def ratio(label: str, key: str, invert: bool = False) -> list[str]:
            out = []
            for peer in ("litellm", "portkey"):
                if (label, peer) in results:
                    g, p = med(results[(label, "gateway")], key), med(results[(label, peer)], key)
                    out.append(f"{(p / g if invert else g / p):.1f}×" if g and p else "—")
                else:
                    out.append("—")
            return out

        for c in (1, 16, 64):
            lines.append(f"| throughput, c={c} (higher is better) | " + " | ".join(ratio(f"chat c={c}", "rps")) + " |")
        for c in (1, 16, 64):
            lines.append(f"| CPU per request, c={c} (peer ÷ gateway) | "
                         + " | ".join(ratio(f"chat c={c}", "cpu_ms", invert=True)) + " |")
        added = {}
        for name in names:
            added[name] = med(results[("chat c=1", name)], "p50") - med(results[("chat c=1", "direct")], "p50")
        lines.append("| added p50 latency, c=1 (peer ÷ gateway) | " + " | ".join(
            f"{added[p] / added['gateway']:.1f}×" if p in added and added["gateway"] > 0 else "—"
            for p in ("litellm", "portkey")) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
