"""Data Docs: one static HTML page per gate run under ``$C360_HOME/artifacts/data_docs/``,
and an index of every run.

Great Expectations can build its own Data Docs site from an ephemeral context, but its pages
print the unexpected values as they are (raw emails and phones from a failing raw batch) and
the checkpoint path that feeds them costs about ten times a plain validation here. These
pages show the same results (expectation, severity, outcome, observed value, masked sample)
and nothing else.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path

from customer360.core.files import write_text
from customer360.quality.results import GateResult

_COLOURS = {"pass": "#1a7f37", "warn": "#9a6700", "quarantine": "#8250df", "fail": "#cf222e",
            "skipped": "#57606a"}
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2328}
table{border-collapse:collapse;width:100%;margin-bottom:2rem;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa} .outcome{font-weight:600} code{font-size:.85rem}
"""


def docs_root(settings) -> Path:
    return settings.data_docs_dir


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "run"


def _write(path: Path, text: str) -> None:
    write_text(path, text)


def render_gate(result: GateResult) -> str:
    e = html.escape
    verdict = "passed" if result.ok else "STOPPED"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>gate {e(result.stage)} "
             f"{result.logical_date}</title><style>{_STYLE}</style></head><body>",
             f"<h1>Gate {e(result.stage)} {verdict}</h1>",
             f"<p>Logical date {result.logical_date}, run <code>{e(result.run_id)}</code>.</p>",
             f"<p><strong>{e(result.summary_line())}</strong></p>"]
    for suite in result.suites:
        parts.append(f"<h2>{e(suite.suite)}</h2><p>{e(suite.target)}: {suite.rows} rows, "
                     f"{suite.seconds:.2f} s</p>")
        if not suite.results:
            parts.append("<p>nothing to validate in this run</p>")
            continue
        parts.append("<table><tr><th>expectation</th><th>severity</th><th>scope</th>"
                     "<th>outcome</th><th>observed</th><th>sample (masked)</th></tr>")
        for r in suite.results:
            colour = _COLOURS.get(r.outcome, "#1f2328")
            observed = e(r.observed_value) + (f"<br>{e(r.note)}" if r.note else "")
            sample = "<br>".join(e(s) for s in r.sample)
            parts.append(f"<tr><td><code>{e(r.label)}</code></td><td>{e(r.severity)}</td>"
                         f"<td>{e(r.scope)}</td><td class='outcome' style='color:{colour}'>"
                         f"{e(r.outcome)}</td><td>{observed}</td><td>{sample}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_gate_page(settings, result: GateResult) -> Path:
    """Write the page of one gate run and refresh the index; returns the page's path."""
    root = docs_root(settings)
    page = root / result.stage / result.logical_date.isoformat() / f"{_safe(result.run_id)}.html"
    _write(page, render_gate(result))
    write_index(root)
    return page


def write_index(root: Path) -> Path:
    pages = sorted((p for p in root.glob("*/*/*.html")), key=lambda p: p.stat().st_mtime, reverse=True)
    rows = "".join(
        f"<tr><td>{html.escape(p.parts[-3])}</td><td>{html.escape(p.parts[-2])}</td>"
        f"<td><a href='{html.escape(str(p.relative_to(root)))}'>{html.escape(p.stem)}</a></td>"
        f"<td>{dt.datetime.fromtimestamp(p.stat().st_mtime, dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC</td></tr>"
        for p in pages)
    index = root / "index.html"
    _write(index, f"<!doctype html><html><head><meta charset='utf-8'><title>customer360 data "
                  f"quality</title><style>{_STYLE}</style></head><body><h1>Quality gate runs</h1>"
                  f"<table><tr><th>stage</th><th>logical date</th><th>run</th><th>written</th></tr>"
                  f"{rows}</table></body></html>")
    return index
