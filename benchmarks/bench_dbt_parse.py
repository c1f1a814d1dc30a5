"""dbt's parse at the start of every dbt command of a daily run: the logical date passed as
``--vars`` (as before issue 19) against ``$C360_AS_OF_DATE`` (now), on a warehouse home.

    python benchmarks/bench_dbt_parse.py --home <a C360_HOME with a dbt target folder>

Each command is ``dbt parse`` for the next day, so every date is new as it is in a daily run.
Prints the seconds each took and whether dbt re-parsed everything (its log line).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--days", type=int, default=3)
    args = ap.parse_args(argv)
    os.environ["C360_HOME"] = str(args.home)
    os.environ.setdefault("C360_PII_KEY", "bench-pii-key-0123456789abcdef")
    from customer360.core.settings import get_settings
    from customer360.warehouse import dbt_runner

    settings = get_settings()
    log = settings.dbt_logs_dir / "dbt.log"
    day = dt.date(2030, 1, 1)
    result: dict[str, list] = {}
    for style in ("vars", "env"):
        rows = []
        for i in range(args.days + 1):
            day += dt.timedelta(days=1)
            extra = (["--vars", json.dumps({"as_of_date": day.isoformat()})] if style == "vars" else [])
            env = {"C360_AS_OF_DATE": day.isoformat()} if style == "env" else {}
            start = log.stat().st_size if log.exists() else 0
            t0 = time.monotonic()
            outcome = dbt_runner.run_dbt(settings, ["parse", *extra], env)
            wall = time.monotonic() - t0
            if not outcome.success:
                raise SystemExit(f"dbt parse failed: {outcome.exception}")
            with open(log, "rb") as fh:
                fh.seek(start)
                text = fh.read().decode("utf-8", "replace")
            full = "Unable to do partial parsing" in text or "Starting full parse" in text
            if i:  # the first command of each style only sets the saved state
                rows.append({"date": day.isoformat(), "seconds": round(wall, 2), "full_reparse": full})
        result[style] = rows
        for r in rows:
            print(f"{style:5} {r['date']}  {r['seconds']:6.2f} s  full re-parse: {r['full_reparse']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
