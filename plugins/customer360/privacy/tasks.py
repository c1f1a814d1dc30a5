"""The privacy steps of the daily DAG, as ``fn(logical_date, settings=None) -> dict`` like the
other stages in :mod:`customer360.pipeline.stages` (small JSON-able results, kept as XComs: counts
and tokens, never a personal value).

    extract >> erasure >> gate_raw >> ... >> publish >> compact >> audiences >> report

- :func:`erasure` (after extract, warehouse pool): contacts the CRM archived, and records of
  erased people that came back in today's batches, are erased from the lake, the landing
  copies, the warehouse and the current publication. The day's build then rebuilds the
  warehouse from the purged raw zone, and the day's publish republishes.
- :func:`compact` (after publish, warehouse pool): once the day's build has replaced the
  tables, the warehouse file is compacted, so that no freed block keeps a value of a person
  erased since the last compaction. Does nothing on a day without erasures.
- :func:`audiences` (after compact): the marketing audience exports of every segment.
"""

from __future__ import annotations

import datetime as dt
import logging

from customer360.core.settings import Settings, get_settings

log = logging.getLogger(__name__)


def erasure(logical_date: dt.date, settings: Settings | None = None) -> dict:
    from customer360.privacy import pii
    from customer360.privacy.erasure import archived_contact_requests, erase, returning_requests

    s = settings or get_settings()
    requests = archived_contact_requests(s) + returning_requests(s, logical_date, pii.pseudonymizer(s))
    if not requests:
        log.info("erasure: no archived contact and no returning record of an erased person")
        return {"requests": 0, "status": "nothing to erase"}
    result = erase(s, requests, trigger=f"dag {logical_date.isoformat()}")
    out = result.as_dict()
    out["requests"] = len(requests)
    return out


def compact(logical_date: dt.date, settings: Settings | None = None) -> dict:
    from customer360.privacy import duck_purge, erasure_log

    s = settings or get_settings()
    pending = erasure_log.awaiting_compaction(s)
    if not pending:
        return {"compacted": False, "erasures": 0}
    detail = duck_purge.compact(s.warehouse_path, s)
    erasure_log.mark_compacted(s, pending, {"logical_date": logical_date.isoformat(), **detail})
    log.info("compacted the warehouse after %d erasure(s): %s", len(pending), detail)
    return {**detail, "erasures": len(pending)}


def audiences(logical_date: dt.date, settings: Settings | None = None) -> dict:
    from customer360.privacy.audience import export_all

    s = settings or get_settings()
    out = export_all(s)
    log.info("audiences for %s: %s", logical_date,
             ", ".join(f"{name} {a['members']}" for name, a in out.items()))
    return out
