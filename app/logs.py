"""Logging as one JSON object per line; the access line carries the request's facts, never secrets."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# Attributes every LogRecord has; anything else on a record was passed with `extra=` and is logged.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
# uvicorn passes a copy of some messages with ANSI colour codes; a JSON line carries the plain one.
_DROPPED = _STANDARD | {"color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _DROPPED})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


LEVEL_ENV = "AGENT_BRIDGE_LOG_LEVEL"


def configure(level: str = "info") -> None:
    """Route the bridge's and uvicorn's logs to stdout as JSON lines (uvicorn's own formatters, which
    colour their output, are never installed: `serve` runs uvicorn with `log_config=None`)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our access line replaces uvicorn's (which would log paths only, without the request's facts),
    # and counts upstream requests.
    logging.getLogger("uvicorn.access").disabled = True
