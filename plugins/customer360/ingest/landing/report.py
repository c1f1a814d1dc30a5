"""Problems found in a landing folder, and the report the validator returns."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from customer360.core.terminal import plain

ERROR = "error"
WARN = "warn"


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a landing folder: ``file`` is relative to the landing root."""

    file: str
    line: int | None
    reason: str
    severity: str = ERROR  # 'error': the loaders quarantine it; 'warn': they load it anyway


@dataclass
class ValidationReport:
    root: Path
    problems: list[Problem] = field(default_factory=list)
    files_checked: int = 0
    records_checked: int = 0

    @property
    def ok(self) -> bool:
        return not any(p.severity == ERROR for p in self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARN]

    def as_table(self, max_rows: int = 200) -> Table:
        n_err, n_warn = len(self.errors), len(self.warnings)
        verdict = "OK" if self.ok else "FAILED"
        table = Table(title=f"landing {escape(str(self.root))}: {verdict} - {self.files_checked} files, "
                            f"{self.records_checked} records checked, {n_err} errors, "
                            f"{n_warn} warnings")
        table.add_column("severity")
        table.add_column("file")
        table.add_column("line", justify="right")
        table.add_column("reason")
        ordered = sorted(self.problems, key=lambda p: (p.severity != ERROR, p.file, p.line or 0))
        for p in ordered[:max_rows]:
            style = "red" if p.severity == ERROR else "yellow"
            table.add_row(f"[{style}]{p.severity}[/{style}]", plain(p.file),
                          "" if p.line is None else str(p.line), plain(p.reason))
        if len(ordered) > max_rows:
            # The rest summarised by reason so a million identical errors stay readable.
            rest = Counter((p.severity, p.reason.split(":")[0]) for p in ordered[max_rows:])
            for (severity, reason), count in rest.most_common():
                table.add_row(severity, f"... {count} more", "", plain(reason))
        return table
