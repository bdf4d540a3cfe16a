"""What a running gateway process holds: settings, the pipeline and the store connection."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from gateway.pipeline import Pipeline
from gateway.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    pipeline: Pipeline
    redis: aioredis.Redis
    policy_loaded_at: float = field(default_factory=time.time)
