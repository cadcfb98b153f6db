"""Log output of the worker and the API: plain text, or one JSON object per line.

``PAYOUTS_LOG_FORMAT=json`` gives lines a log pipeline can index: ``time``, ``level``,
``logger``, ``message``, and, where the record has them, ``workflow_id``, ``run_id``,
``activity`` (from the context Temporal's ``workflow.logger`` / ``activity.logger``
attach) and ``tx_hash`` / ``reason`` (passed as ``extra`` by the engine). Nothing secret
is ever logged (promise 6): the engine logs hashes, states and reasons, never a key.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

FORMATS = ("text", "json")
_EXTRA_FIELDS = ("tx_hash", "reason")


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = getattr(record, "temporal_workflow", None) or getattr(record, "temporal_activity", None)
        if isinstance(context, dict):
            line["workflow_id"] = context.get("workflow_id")
            line["run_id"] = context.get("workflow_run_id") or context.get("run_id")
            if "activity_type" in context:
                line["activity"] = context["activity_type"]
        for name in _EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
