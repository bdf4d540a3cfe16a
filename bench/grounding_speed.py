"""Grounding checker speed: a 300-word answer against 10 documents of 1,000 words each.

    python bench/grounding_speed.py [--runs 200]

Documents are built from a 3,000-word vocabulary drawn with Zipf weights (as words are in real text),
with numbers and names; the answer mixes sentences copied from them, shuffled paraphrases and
invented claims, so every rule of the checker runs.
Each check is timed alone, in-process (no HTTP): the figure is the checker's own cost.
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

from gateway.grounding import Checker  # noqa: E402
from gateway import gctune  # noqa: E402
from gateway.grounding import checker as checker_module  # noqa: E402

WORDS = ("market revenue growth company quarter report analyst forecast product launch customer service "
         "factory supply chain energy price policy government election city council budget school student "
         "hospital patient treatment research study result climate weather storm river bridge road "
         "transport train airport flight team season match player coach score league title record").split()
NAMES = "Alice Moreno Bilal Chen Dana Okafor Emil Novak Fatima Haddad George Ivanov Hana Sato".split()


VOCAB = WORDS + ["".join(random.Random(i).choice("bcdfghklmnprstvz") + random.Random(i * 7 + j).choice("aeiou")
                         for j in range(3)) for i in range(3000 - len(WORDS))]
ZIPF = [1.0 / (rank + 1) for rank in range(len(VOCAB))]


def sentence(rng: random.Random) -> str:
    n = rng.randint(10, 22)
    words = rng.choices(VOCAB, weights=ZIPF, k=n)
    words[rng.randrange(n)] = rng.choice(NAMES)
    if rng.random() < 0.5:
        words[rng.randrange(n)] = str(rng.randint(2, 2030))
    return " ".join(words).capitalize() + "."


def document(rng: random.Random, words: int = 1000) -> str:
    out, count = [], 0
    while count < words:
        s = sentence(rng)
        out.append(s)
        count += len(s.split())
    return " ".join(out)


def answer(rng: random.Random, docs: list[str], words: int = 300) -> str:
    out, count = [], 0
    while count < words:
        doc_sentences = rng.choice(docs).split(". ")
        roll = rng.random()
        if roll < 0.5:
            s = rng.choice(doc_sentences).rstrip(".") + "."
        elif roll < 0.8:
            s = " ".join(rng.sample(rng.choice(doc_sentences).split(), 8)).capitalize() + "."
        else:
            s = sentence(rng)
        out.append(s)
        count += len(s.split())
    return " ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "grounding_speed.md"))
    args = ap.parse_args()
    rng = random.Random(1)
    cases = []
    for _ in range(20):
        docs = [document(rng) for _ in range(10)]
        cases.append((answer(rng, docs), [{"id": f"d{i}", "content": d} for i, d in enumerate(docs)]))
    gctune.tune()  # the collector settings the gateway runs with
    checker = Checker()
    for text, docs in cases[:3]:
        checker.check(text, docs)
    timings: dict[str, list[float]] = {"cold": [], "warm": []}
    for i in range(args.runs):
        text, docs = cases[i % len(cases)]
        for mode in ("cold", "warm"):
            if mode == "cold":
                checker_module._PREPARED.clear()  # documents never seen: every one is split and tokenised
            t0 = time.perf_counter()
            checker.check(text, docs, "What happened?")
            timings[mode].append((time.perf_counter() - t0) * 1000)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    words = statistics.mean(len(t.split()) for t, _ in cases)
    rows = []
    for mode, times in timings.items():
        times.sort()
        p50, p95, p99 = (times[int(len(times) * q)] for q in (0.5, 0.95, 0.99))
        rows.append(f"| {mode} | {p50:.2f} | {p95:.2f} | {p99:.2f} | {statistics.mean(times):.2f} |")
    table = f"""# Grounding checker speed

A {words:.0f}-word answer checked against 10 documents of ~1,000 words each; {args.runs} checks of each kind over
20 generated cases, in-process, with the gateway's garbage-collector settings (`gateway/gctune.py`). Commit `{commit}`, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs.

- **cold**: documents the checker has never seen (its per-document cache emptied before each check).
- **warm**: the same documents again, as in a cascade's escalation or the next turn of a conversation:
  their sentences and tokens come from the per-document cache.

| documents | p50 ms | p95 ms | p99 ms | mean ms |
|---|---|---|---|---|
{chr(10).join(rows)}

Target: p95 under 20 ms.
"""
    Path(args.out).write_text(table)
    print(table)

if __name__ == "__main__":
    main()
