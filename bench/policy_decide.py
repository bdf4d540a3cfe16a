"""Benchmark of the pure decision function on a 200-route policy: decisions per second and latency percentiles.

    python bench/policy_decide.py [--decisions 200000] [--repeats 5]

The policy mixes what real ones hold: generic routes at the top that every request must pass
(headers, metadata, teams, user regexes, budget facts), 170 model routes with extra conditions and
target, split and cascade actions, and generic routes at the bottom (a model regex, a catch-all).
Requests: 70% name a routed model, 20% an unknown one (they walk every generic route), 10% carry
headers that an early route takes. Each call is timed alone with perf_counter_ns (whose own cost,
measured and reported, is included in the percentiles); throughput comes from an untimed loop.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.policy import RequestFacts, decide, load_policy_text  # noqa: E402


def build_policy(n_routes: int = 200) -> str:
    lines = ["version: 1", "models:"]
    tiers = ["base", "fine-tuned", "distilled"]
    for i in range(30):
        lines.append(f"  m{i}: {{ tier: {tiers[i % 3]}, provider: vllm, model: up-{i}, api_base: 'http://x/v1', "
                     f"capabilities: {{ tools: {'true' if i % 2 else 'false'}, context_window: {8192 * (1 + i % 4)} }} }}")
    lines.append("routes:")
    top = 20
    for i in range(top):
        kind = i % 5
        cond = [
            f"headers.x-lane-{i}: [fast, urgent]",
            f"metadata.tenant: t-{i}",
            f"team: [team-{i}, team-{i + 100}], budget.team.remaining_pct: {{ lt: 10 }}",
            f"user: {{ regex: '^svc-{i}-' }}",
            f"any: [{{ headers.x-canary-{i}: 'true' }}, {{ metadata.canary-{i}: 'true' }}]",
        ][kind]
        lines.append(f"  - {{ name: top-{i}, match: {{ {cond} }}, target: m{i % 30}, fallbacks: [m{(i + 1) % 30}] }}")
    for i in range(n_routes - top - 10):
        m = f"model-{i}"
        extra = [f"team: [team-{i % 40}, team-{(i + 7) % 40}]", "prompt_tokens: { lt: 4000 }",
                 "metadata.env: prod", "stream: false", "not: { user: { regex: '^bot-' } }"][i % 5]
        action = [f"target: m{i % 30}, fallbacks: [m{(i + 3) % 30}]",
                  f"split: [{{ target: m{i % 30}, weight: 90 }}, {{ target: m{(i + 1) % 30}, weight: 10 }}]",
                  f"cascade: [{{ target: m{i % 30}, accept: {{ finish_reason: stop }} }}, {{ target: m{(i + 2) % 30} }}]",
                  "target: { tier: distilled }, fallbacks: [{ tier: base }]"][i % 4]
        lines.append(f"  - {{ name: r-{i}, match: {{ model: [{m}, {m}-alias], {extra} }}, {action} }}")
    for i in range(9):
        lines.append(f"  - {{ name: tail-{i}, match: {{ model: {{ regex: '^family-{i}-' }} }}, target: m{i} }}")
    lines.append("  - { name: default, target: m0, fallbacks: [m1, m2] }")
    return "\n".join(lines) + "\n"


def make_requests(n: int, seed: int = 7) -> list[RequestFacts]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        roll = rng.random()
        user = rng.choice([f"user-{rng.randrange(10_000)}", f"bot-{rng.randrange(10)}", f"svc-{rng.randrange(30)}-x"])
        common = dict(team=f"team-{rng.randrange(60)}", user=user, key=f"k{rng.randrange(500)}",
                      prompt_tokens=rng.randrange(50, 9000), tools=rng.random() < 0.2,
                      metadata={"env": rng.choice(["prod", "dev"])},
                      budget={"team": {"remaining_pct": rng.uniform(0, 100)}})
        if roll < 0.7:
            model = f"model-{rng.randrange(170)}" + rng.choice(["", "-alias"])
            out.append(RequestFacts(model=model, **common))
        elif roll < 0.9:
            out.append(RequestFacts(model=rng.choice(["gpt-x", "family-3-large", "unknown"]), **common))
        else:
            out.append(RequestFacts(model=f"model-{rng.randrange(170)}",
                                    headers={f"x-lane-{rng.randrange(20)}": "fast"}, **common))
    return out


def run(decisions: int, repeats: int) -> dict:
    policy = load_policy_text(build_policy(), "bench-200.yaml", {})
    assert len(policy.routes) == 200
    reqs = make_requests(decisions)
    worst = RequestFacts(model="no-such-model", team="nobody", user="nobody", metadata={}, headers={})
    for f in reqs[:2000]:
        decide(f, policy)  # warm up
    timer_cost = min(-(time.perf_counter_ns() - time.perf_counter_ns()) for _ in range(10_000))
    rates, p50s, p99s, p999s, worsts = [], [], [], [], []
    matched = sum(1 for f in reqs if decide(f, policy) is not None)
    for _ in range(repeats):
        start = time.perf_counter()
        for f in reqs:
            decide(f, policy)
        rates.append(len(reqs) / (time.perf_counter() - start))
        samples = []
        for f in reqs:
            t0 = time.perf_counter_ns()
            decide(f, policy)
            samples.append(time.perf_counter_ns() - t0)
        samples.sort()
        p50s.append(samples[len(samples) // 2] / 1000)
        p99s.append(samples[int(len(samples) * 0.99)] / 1000)
        p999s.append(samples[int(len(samples) * 0.999)] / 1000)
        w = []
        for _ in range(20_000):
            t0 = time.perf_counter_ns()
            decide(worst, policy)
            w.append(time.perf_counter_ns() - t0)
        w.sort()
        worsts.append(w[int(len(w) * 0.99)] / 1000)
    return {"routes": len(policy.routes), "decisions": len(reqs), "repeats": repeats, "matched": matched,
            "rate": rates, "p50": p50s, "p99": p99s, "p999": p999s, "worst_p99": worsts, "timer_ns": timer_cost}


def fmt(values: list[float], digits: int = 1) -> str:
    med = statistics.median(values)
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decisions", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "policy_decide.md"))
    args = ap.parse_args()
    r = run(args.decisions, args.repeats)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    table = f"""# Policy decision benchmark

{r['routes']}-route policy, {r['decisions']:,} mixed requests ({r['matched']:,} matched a route), {r['repeats']} repeats;
median (min–max) over repeats. Commit `{commit}`, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs.
Per-call timings include the timer's own cost (~{r['timer_ns']} ns).

| figure | value |
|---|---|
| decisions per second (one core) | {fmt(r['rate'], 0)} |
| p50 latency (µs) | {fmt(r['p50'], 2)} |
| p99 latency (µs) | {fmt(r['p99'], 2)} |
| p99.9 latency (µs) | {fmt(r['p999'], 2)} |
| worst case p99 (µs): an unknown model walking every generic route | {fmt(r['worst_p99'], 2)} |

Target: p99 under 50 µs.
"""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
