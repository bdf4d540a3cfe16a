"""JSON log lines on stderr, scrubbed of secrets before they are written."""

from __future__ import annotations

import logging
import sys
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


def setup(level: str = "info") -> None:
    # What our lines never show, not worked out for every record (the logging HOWTO's "Optimization"):
    # the caller's file and line, thread, process and asyncio task names.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # type: ignore[attr-defined]
    handler = logging.StreamHandler(sys.stderr)
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
