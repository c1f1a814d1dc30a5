"""The one rule for a logical date from outside (the CLI, an Airflow trigger): not in the future.

A run for a day that has not happened lands nothing real, yet it moves what the pipeline
remembers past today (the CRM watermark, the runs the gates compare against), so later real
changes would be skipped. "Today" is taken in the easternmost time zone (UTC+14): a store there
closes its business day while it is still the day before in UTC.
"""

from __future__ import annotations

import datetime as dt

EARLIEST_OFFSET = dt.timedelta(hours=14)


class FutureDateError(ValueError):
    """A logical date after today everywhere on Earth."""


def latest_allowed(now: dt.datetime | None = None) -> dt.date:
    now = now or dt.datetime.now(dt.timezone.utc)
    return (now.astimezone(dt.timezone.utc) + EARLIEST_OFFSET).date()


def check_logical_date(day: dt.date, now: dt.datetime | None = None) -> dt.date:
    """``day`` if it is not in the future, else :class:`FutureDateError` saying so."""
    latest = latest_allowed(now)
    if day > latest:
        raise FutureDateError(
            f"logical date {day.isoformat()} is in the future (the latest day that has begun "
            f"anywhere is {latest.isoformat()}): a run for it would move the watermarks past "
            f"today and skip later changes")
    return day
