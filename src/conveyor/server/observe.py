"""What the server tells its operators: one JSON log line a request, and Prometheus metrics.

Log lines carry the request id, the principal, the route *template* (``/api/v1/environments/
{environment}/history``, never the raw path or its query string, which may hold secrets),
status and duration. No header, body, token or signature is ever logged.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

ACCESS_LOGGER = "conveyor.server.access"
LOGGER = "conveyor.server"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type only: a message may quote request data.
            document["exception"] = record.exc_info[0].__name__
        return json.dumps(document, ensure_ascii=False, default=str)


def configure_logging(level: str = "info") -> dict[str, Any]:
    """The logging config for uvicorn and conveyor: JSON lines on stderr. Uvicorn's own
    access log is off (it prints raw paths with their query strings)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            "conveyor": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
        },
    }


def log(logger: str, message: str, level: int = logging.INFO, **fields: Any) -> None:
    logging.getLogger(logger).log(level, message, extra={"fields": fields})


class Metrics:
    """The server's metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "conveyor_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "conveyor_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.promotions = Counter(
            "conveyor_promotions_total",
            "Promotions and rollbacks by environment and outcome "
            "(promoted, unchanged, denied, failed).",
            ["environment", "outcome"],
            registry=self.registry,
        )
        self.gate_denials = Counter(
            "conveyor_gate_denials_total",
            "Gates that said no in a promotion, rollback or check, by gate.",
            ["gate"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "conveyor_auth_refusals_total",
            "Requests refused by authentication (401) or authorisation (403).",
            ["status"],
            registry=self.registry,
        )
