"""Hot reload of the routing policy: validate the whole file, then swap it in one assignment.

Three triggers share one path: the file changing on disk (polled, so it also sees Kubernetes
ConfigMap symlink swaps), SIGHUP, and `POST /admin/policy/reload`. A file that fails validation
is refused, logged with every error, counted, and the policy already serving stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field

from gateway import metrics
from gateway.pipeline import Pipeline
from gateway.policy import PolicyError, load_policy

log = logging.getLogger("gateway.policy")


@dataclass
class ReloadResult:
    result: str  # applied, unchanged, rejected
    sha256: str
    errors: list[str] = field(default_factory=list)


class PolicyReloader:
    def __init__(self, pipeline: Pipeline, path: str) -> None:
        self.pipeline = pipeline
        self.path = path
        self.loaded_at = time.time()
        self.last_error: list[str] = []
        self._lock = asyncio.Lock()
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def reload(self, trigger: str) -> ReloadResult:
        async with self._lock:
            self._stamp = self._stat()
            try:
                # Off the event loop: a large policy takes milliseconds to validate, and requests keep flowing.
                policy = await asyncio.to_thread(load_policy, self.path)
            except PolicyError as exc:
                self.last_error = [str(i) for i in exc.issues]
                metrics.POLICY_RELOADS.labels("rejected").inc()
                log.error("policy reload rejected; the previous policy keeps serving", extra={"fields": {
                    "trigger": trigger, "source": self.path, "errors": self.last_error}})
                return ReloadResult("rejected", self.pipeline.policy.sha256, self.last_error)
            if policy.sha256 == self.pipeline.policy.sha256:
                metrics.POLICY_RELOADS.labels("unchanged").inc()
                return ReloadResult("unchanged", policy.sha256)
            self.pipeline.policy = policy
            self.loaded_at = time.time()
            self.last_error = []
            metrics.POLICY_RELOADS.labels("applied").inc()
            metrics.POLICY_INFO.set(self.loaded_at)
            log.info("policy reloaded", extra={"fields": {"trigger": trigger, "source": self.path,
                                                          "sha256": policy.sha256[:12], "routes": len(policy.routes)}})
            return ReloadResult("applied", policy.sha256)

    async def watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            stamp = self._stat()
            if stamp is not None and stamp != self._stamp:
                await self.reload("file changed")
