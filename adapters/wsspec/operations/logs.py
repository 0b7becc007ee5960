"""Log lines for people and for log shippers (``--log-format text|json``).

``json`` writes one JSON object per line: ``time`` (RFC 3339, UTC, milliseconds), ``level``,
``logger``, ``message``, ``pid``, then every extra field of the record (the server adds
``connection_id`` and ``remote_address`` to a connection's lines, ``worker`` in a
``--workers`` process; ``logger.info(..., extra={...})`` in your hooks adds yours), and
``exception`` with the traceback when there is one. Values JSON cannot hold are written
as their ``str()``.
"""

from __future__ import annotations

import datetime
import logging
import sys
from typing import Any

import orjson

#: The attributes every LogRecord has; anything else on a record is an extra field.
#: (``color_message``: uvicorn's copy of the message with terminal colours, not a field.)
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per log line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class _WorkerField(logging.Filter):
    """Marks every record with the ``--workers`` process it comes from."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def configure_logging(level: str, log_format: str = "text", *, worker: int | None = None) -> None:
    """Log at ``level`` on stderr, as text or JSON lines; replaces any earlier setup."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif worker is None:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s [worker %(worker)s pid %(process)d]: "
                "%(message)s"
            )
        )
    if worker is not None:
        handler.addFilter(_WorkerField(worker))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
