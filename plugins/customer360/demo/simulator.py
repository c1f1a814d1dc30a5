"""Demo source simulator: ``c360 simulate --people N --days D --start YYYY-MM-DD --seed S``.

A population of people with latent behaviour (sim_population, sim_behaviour) produces the three
sources of docs/sources.md with every messy reality behind a knob (sim_config):

- landing files (web NDJSON parts, POS CSVs, POS reference files) go to ``sim_dir/outbox`` with
  a delivery schedule; :func:`deliver` copies them to the landing folder as they stood at the
  end of a given day (sim_delivery);
- the CRM store (every version of every record) to ``sim_dir/crm`` (sim_crm), served by the
  mock CRM server;
- the ground truth to ``sim_dir/ground_truth`` (sim_truth): the pipeline never reads it.

Deterministic for a seed: the same configuration gives byte-identical files.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from customer360.demo import sim_reference as ref
from customer360.demo.sim_behaviour import simulate_behaviour
from customer360.demo.sim_config import SimulationConfig
from customer360.demo.sim_crm import write_crm
from customer360.demo.sim_delivery import OUTBOX, SCHEDULE, Outbox, deliver, undeliver
from customer360.demo.sim_identity import build_identity
from customer360.demo.sim_population import build_population
from customer360.demo.sim_pos import PRODUCT_COLUMNS, STORE_COLUMNS, write_pos
from customer360.demo.sim_truth import write_ground_truth
from customer360.demo.sim_web import write_web

__all__ = ["SimulationConfig", "SimulationSummary", "simulate", "deliver"]

DELIVER_ALL_SLACK_DAYS = 3   # late web parts and corrected POS files arrive up to 2 days later

_SECTIONS = {
    "people": ["people", "people_with_contact", "churned_during_sim", "erased_people",
               "mean_true_churn_probability"],
    "CRM": ["contacts", "contact_versions", "duplicate_contacts", "archived_contacts", "tickets",
            "ticket_versions", "open_tickets_at_end", "tickets_with_pii", "chinese_tickets",
            "feedback_submissions", "ces_surveys", "chinese_comments", "english_comments",
            "empty_string_records", "free_text_countries", "national_phones", "landline_phones",
            "unparseable_phones", "funnel_stage_contacts", "bulk_update_contacts"],
    "web": ["web_sessions", "web_events", "web_orders", "web_files", "shared_devices",
            "duplicate_message_ids", "late_events", "late_files", "corrupt_files",
            "malformed_web_lines"],
    "POS": ["stores", "store_timezones", "gb18030_stores", "products", "pos_files",
            "gb18030_files", "store_transactions", "pos_lines", "walkin_transactions",
            "return_lines", "void_lines", "messy_keys", "corrected_pos_files",
            "malformed_pos_rows", "bom_pos_files", "crlf_pos_files",
            "trailing_blank_pos_files", "formatted_amount_pos_files", "quoted_comma_pos_lines",
            "mismatched_encoding_pos_files", "repeated_header_pos_files",
            "unloadable_pos_transactions", "unloadable_pos_lines"],
    "run": ["defects", "delivered_files", "seconds"],
}


@dataclass
class SimulationSummary:
    counts: dict
    landing: Path
    sim_dir: Path

    def __getitem__(self, key: str):
        return self.counts[key]

    def as_table(self) -> Table:
        table = Table(title="simulation")
        table.add_column("part")
        table.add_column("count")
        table.add_column("value", justify="right")
        for section, keys in _SECTIONS.items():
            for i, key in enumerate(keys):
                if key not in self.counts:
                    continue
                value = self.counts[key]
                text = f"{value:.3f}" if isinstance(value, float) else f"{value:,}"
                table.add_row(section if i == 0 else "", key.replace("_", " "), text)
        return table


class _NoProgress:
    def add_task(self, *a, **k) -> int:
        return 0

    def update(self, *a, **k) -> None:
        pass

    def advance(self, *a, **k) -> None:
        pass


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress | _NoProgress]:
    if not enabled:
        yield _NoProgress()
        return
    with Progress(TextColumn("[bold]{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn()) as bar:
        yield bar


def _reset(sim_dir: Path, landing: Path) -> None:
    """Forget a previous simulation: its delivered landing files and its own outputs. Files in
    the landing folder that no simulation scheduled are left alone."""
    undeliver(sim_dir, landing)
    for sub in ("web", "pos"):
        root = landing / sub
        if root.is_dir():
            for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                if not any(d.iterdir()):
                    d.rmdir()
    for name in (OUTBOX, "crm", "ground_truth"):
        shutil.rmtree(sim_dir / name, ignore_errors=True)
    (sim_dir / SCHEDULE).unlink(missing_ok=True)
    sim_dir.mkdir(parents=True, exist_ok=True)


def _csv_bytes(columns: list[str], rows: list[dict], encoding: str = "utf-8") -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode(encoding)


def simulate(cfg: SimulationConfig, landing: Path, sim_dir: Path, progress: bool = False,
             deliver_all: bool = True) -> SimulationSummary:
    """Simulate the period and write the outbox, the CRM store and the ground truth; with
    ``deliver_all`` also fill the landing folder with every file (as after the last day + 3)."""
    started = time.perf_counter()
    landing, sim_dir = Path(landing), Path(sim_dir)
    _reset(sim_dir, landing)
    with _progress(progress) as bar:
        task = bar.add_task("population", total=2 * cfg.days + 5)
        stores = ref.build_stores(cfg)
        products = ref.build_products(cfg)
        pop = build_population(cfg, stores)
        bar.update(task, advance=1, description="behaviour (days)")
        act = simulate_behaviour(cfg, pop, tick=lambda k: bar.advance(task, k))
        ident = build_identity(cfg, pop, act)

        outbox = Outbox(sim_dir)
        # Reference files have no declared encoding; some come in the mainland stores' GB18030.
        ref_encoding = lambda k: "gb18030" if cfg.gb18030_reference_files > k else "utf-8"
        outbox.put("pos/reference/products.csv",
                   [(cfg.start, _csv_bytes(PRODUCT_COLUMNS, products.rows, ref_encoding(0)))])
        outbox.put("pos/reference/stores.csv",
                   [(cfg.start, _csv_bytes(STORE_COLUMNS, stores.rows, ref_encoding(1)))])
        bar.update(task, description="web events (days)")
        web = write_web(cfg, pop, act, ident, products, outbox, tick=lambda k: bar.advance(task, k))
        bar.update(task, description="POS files")
        pos = write_pos(cfg, pop, act, ident, stores, products, outbox)
        bar.update(task, advance=1, description="CRM store")
        crm = write_crm(cfg, pop, act, ident, web, pos, sim_dir / "crm")
        bar.update(task, advance=1, description="ground truth")
        counts = write_ground_truth(cfg, pop, act, ident, stores, web, pos, crm,
                                    sim_dir / "ground_truth")
        outbox.close()
        bar.update(task, advance=1, description="delivery")
        delivered = []
        if deliver_all:
            delivered = deliver(sim_dir, landing, cfg.end + dt.timedelta(days=DELIVER_ALL_SLACK_DAYS))
        bar.update(task, advance=1, description="done")
    counts = dict(counts, delivered_files=len(delivered),
                  seconds=round(time.perf_counter() - started, 2))
    return SimulationSummary(counts=counts, landing=landing, sim_dir=sim_dir)
