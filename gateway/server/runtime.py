"""What a running gateway process holds: settings, the pipeline and the store connection."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway.pipeline import Pipeline
from gateway.server.reload import PolicyReloader
from gateway.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    pipeline: Pipeline
    redis: aioredis.Redis
    reloader: PolicyReloader

    @property
    def policy_loaded_at(self) -> float:
        return self.reloader.loaded_at
