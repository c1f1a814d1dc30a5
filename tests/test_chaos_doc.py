"""docs/chaos.md's table is the chaos suite's list of faults (tests/chaos_faults.py): the same
faults with the same "what stopped it", each one injected by tests/test_chaos.py."""

from __future__ import annotations

import re
from pathlib import Path

from tests.chaos_faults import FAULTS

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\|\s*(?P<fault>[^|]+?)\s*\|\s*(?P<recovered>[^|]+?)\s*\|\s*(?P<lost>[^|]+?)\s*\|"
                 r"\s*(?P<why>.+?)\s*\|\s*$")


def _doc_rows() -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in (ROOT / "docs" / "chaos.md").read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m and m["fault"] not in ("fault",) and not set(m["fault"]) <= set("-: "):
            assert m["fault"].strip("`") not in rows, f"{m['fault']} twice in docs/chaos.md"
            rows[m["fault"].strip("`")] = (m["recovered"], m["lost"], m["why"])
    return rows


def test_the_doc_lists_every_fault_of_the_suite_and_no_other():
    rows = _doc_rows()
    assert sorted(rows) == sorted(FAULTS)
    for fault, (recovered, lost, why) in rows.items():
        assert (recovered, lost) == ("yes", "0"), fault  # what the suite asserts of each
        assert why == FAULTS[fault], fault


def test_every_fault_is_injected_by_the_suite():
    suite = (ROOT / "tests" / "test_chaos.py").read_text(encoding="utf-8")
    assert len(FAULTS) >= 40
    assert not [f for f in FAULTS if f'"{f}"' not in suite]
