"""Failure alerts for the DAG: a log line, a JSON file under artifacts, and a webhook only
when ``C360_ALERT_WEBHOOK`` is configured."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re

log = logging.getLogger("customer360.core.alerts")


def _redact(text: str) -> str:
    from customer360.core.masking import redact

    return redact(text)


def on_task_failure(context) -> None:
    """Airflow ``on_failure_callback``: never raises, never leaks a secret or personal data
    (the message is redacted as every log line is)."""
    try:
        from customer360.core.settings import get_settings

        ti = context.get("task_instance") or context.get("ti")
        task_id = getattr(ti, "task_id", "?")
        dag_id = getattr(ti, "dag_id", "c360_daily")
        logical = context.get("logical_date") or context.get("ds")
        exc = context.get("exception")
        message = _redact(f"{type(exc).__name__}: {exc}" if exc else "task failed")
        alert = {
            "dag_id": dag_id,
            "task_id": task_id,
            "logical_date": str(logical),
            "try_number": getattr(ti, "try_number", None),
            "error": message,
            "at": dt.datetime.now(dt.timezone.utc).isoformat(),
        }
        log.error("C360 ALERT %s.%s for %s failed: %s", dag_id, task_id, logical, message)
        settings = get_settings()
        folder = settings.alerts_dir
        folder.mkdir(parents=True, exist_ok=True)
        stamp = re.sub(r"[^0-9A-Za-z]+", "", str(logical))[:15]
        (folder / f"{stamp}-{task_id}.json").write_text(json.dumps(alert, indent=2))
        if settings.alert_webhook:  # C360_ALERT_WEBHOOK
            import requests

            requests.post(settings.alert_webhook, json=alert, timeout=10)
    except Exception:  # an alert must never mask the original failure
        log.exception("could not write the failure alert")
