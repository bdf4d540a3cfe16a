"""Every Prometheus metric the gateway exports, declared once with its help text."""

from __future__ import annotations

import functools

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "gateway_requests_total",
    "Requests answered, by endpoint, route, model, tier and HTTP status.",
    ["endpoint", "route", "model", "tier", "status"],
    registry=REGISTRY,
)
REQUEST_LATENCY = Histogram(
    "gateway_request_duration_seconds",
    "Time from request received to response complete (streams: last byte).",
    ["endpoint", "route", "model"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total",
    "Upstream calls that failed, by model and kind (timeout, status_5xx, status_429, connection, malformed).",
    ["model", "kind"],
    registry=REGISTRY,
)
CLIENT_DISCONNECTS = Counter(
    "gateway_client_disconnects_total",
    "Requests whose client went away before the answer was complete; the upstream call was cancelled.",
    ["endpoint"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "gateway_tokens_total",
    "Tokens metered, by model, tier and kind (prompt, completion).",
    ["model", "tier", "kind"],
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "gateway_store_errors_total",
    "Store (Redis) operations that failed or timed out; the gateway degraded instead of failing.",
    ["operation"],
    registry=REGISTRY,
)
FALLBACKS = Counter(
    "gateway_fallbacks_total",
    "Upstream calls that failed and made the gateway try the next target, by route, model and error code.",
    ["route", "model", "code"],
    registry=REGISTRY,
)
ESCALATIONS = Counter(
    "gateway_cascade_escalations_total",
    "Cascade answers that failed their accept condition and were escalated to the next target.",
    ["route", "model"],
    registry=REGISTRY,
)
CIRCUIT_OPEN = Gauge(
    "gateway_circuit_open",
    "1 while a model's circuit breaker is open (skipped after consecutive failures).",
    ["model"],
    registry=REGISTRY,
)
AT_CAPACITY = Counter(
    "gateway_model_at_capacity_total",
    "Times a model was skipped because it was at its max_concurrency.",
    ["model"],
    registry=REGISTRY,
)
POLICY_RELOADS = Counter(
    "gateway_policy_reloads_total",
    "Policy reload attempts, by result (applied, unchanged, rejected).",
    ["result"],
    registry=REGISTRY,
)
LEDGER_RECORDS = Counter(
    "gateway_ledger_records_total",
    "Usage ledger records written, by where they went: stream, spool (Redis unreachable), replayed (spool to stream).",
    ["destination"],
    registry=REGISTRY,
)
COST = Counter(
    "gateway_cost_usd_total",
    "Metered cost in USD, by team, model, tier and route.",
    ["team", "model", "tier", "route"],
    registry=REGISTRY,
)
CACHE = Counter(
    "gateway_cache_total",
    "Cache lookups and stores by result: hit, miss, bypass, refresh, error (Redis failed: bypassed), too_large.",
    ["result"],
    registry=REGISTRY,
)
CACHE_BYTES = Counter(
    "gateway_cache_stored_bytes_total",
    "Bytes written to the cache (after compression).",
    registry=REGISTRY,
)
CACHE_SAVED = Counter(
    "gateway_cache_saved_usd_total",
    "What cache hits would have cost, by team and model.",
    ["team", "model"],
    registry=REGISTRY,
)
GROUNDING = Counter(
    "gateway_grounding_checks_total",
    "Grounding checks of answers, by model, tier and verdict (grounded, ungrounded).",
    ["model", "tier", "verdict"],
    registry=REGISTRY,
)
SUPPORT = Histogram(
    "gateway_grounding_support_score",
    "Support scores of checked answers (the weakest claim's), by model and tier.",
    ["model", "tier"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    registry=REGISTRY,
)
GROUNDING_VERIFIER_ERRORS = Counter(
    "gateway_grounding_verifier_errors_total",
    "Model-verifier calls that failed or answered unreadably; the CPU checker's result stood.",
    ["model"],
    registry=REGISTRY,
)
POLICY_INFO = Gauge(
    "gateway_policy_loaded_timestamp_seconds",
    "When the active routing policy was loaded.",
    registry=REGISTRY,
)



def _memoise_labels() -> None:
    """`metric.labels(...)` takes a lock and validates on every call; the label sets are few (routes,
    models, tiers, statuses from the policy), so each metric remembers its children."""
    for metric in list(REGISTRY._collector_to_names):  # type: ignore[attr-defined]
        if getattr(metric, "_labelnames", None):
            metric.labels = functools.lru_cache(maxsize=4096)(metric.labels)  # type: ignore[method-assign]


_memoise_labels()

def render() -> bytes:
    return generate_latest(REGISTRY)
