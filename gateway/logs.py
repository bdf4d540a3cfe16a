"""JSON log lines on stderr, scrubbed of secrets before they are written."""

from __future__ import annotations

import atexit
import collections
import logging
import sys
import threading
import time
import traceback

import orjson

from gateway.redact import scrub


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if extra:
            line.update(extra)
        if record.exc_info:
            line["exc"] = "".join(traceback.format_exception(*record.exc_info))
        return scrub(orjson.dumps(line, default=str).decode())


class BufferedStderr(logging.Handler):
    """Log lines to stderr in batches: written every `interval` seconds by a daemon thread, and at
    once for warnings and errors. One write per batch instead of one per line (per request)."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__()
        self._lines: collections.deque[str] = collections.deque()  # appends and pops are thread-safe
        self._interval = interval
        self._thread = threading.Thread(target=self._run, name="log-flush", daemon=True)
        self._thread.start()
        atexit.register(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)  # list.append is atomic: no lock on the request path
        if record.levelno >= logging.WARNING:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            queued = self._lines
            if not queued:
                return
            lines = [queued.popleft() for _ in range(len(queued))]  # what arrives meanwhile waits its turn
            try:
                sys.stderr.write("\n".join(lines) + "\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            self.flush()


_batcher: BufferedStderr | None = None


def access(logger: str, fields: dict) -> bool:
    """An access line (one per request) straight into the current batch, the same JSON a logger would
    write, without building a LogRecord. False if our handler is not the one in place (then log it)."""
    h = _batcher
    if h is None or h not in logging.getLogger().handlers:
        return False
    line = {"ts": round(time.time(), 3), "level": "info", "logger": logger, "msg": "request"}
    line.update(fields)
    h._lines.append(scrub(orjson.dumps(line, default=str).decode()))
    return True


def setup(level: str = "info") -> None:
    # What our lines never show, not worked out for every record (the logging HOWTO's "Optimization"):
    # the caller's file and line, thread, process and asyncio task names.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]
    global _batcher
    handler = _batcher = BufferedStderr()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # we write our own access line, with routing facts


def now_ms() -> float:
    return time.perf_counter() * 1000.0
