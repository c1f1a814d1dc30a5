"""`make bench`: run every benchmark script in this folder (never part of the tests).

Each bench_*.py prints its own numbers; set C360_BENCH_SCALE=small|medium|large to choose the
data size where a script supports it (default medium: 100k people where the issue asks for it).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    only = set(argv)
    failures = 0
    for script in sorted(HERE.glob("bench_*.py")):
        if only and script.stem not in only and script.stem.removeprefix("bench_") not in only:
            continue
        print(f"\n=== {script.name} ===", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, str(script)])
        print(f"=== {script.name}: exit {rc} in {time.monotonic() - t0:.1f} s ===", flush=True)
        failures += rc != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
