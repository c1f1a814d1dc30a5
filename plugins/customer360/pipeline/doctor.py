"""``c360 doctor``: check every store of a home, say what is wrong and which command repairs
it; and the repairs themselves, ``c360 doctor --repair STORE`` and ``c360 rebuild-warehouse``.

The checks only read (databases are opened read-only; the run lock is only looked at, never
taken). Each store gives one or more :class:`Finding` lines: ``ok``, ``warn`` (worth knowing,
nothing to repair now) or ``problem`` (with the path, the reason and the command that repairs
it). A repair takes the run lock, never deletes evidence (a broken file is moved aside under
``<name>.broken-<UTC time>``, or for a raw batch under ``lake/broken/``), and says what to run
next when the repair itself cannot recreate the data (a raw batch is landed again by the
source's extract).

Stores (docs/operations.md, "Recovery"): the run lock, the warehouse (against the tables the
last dbt run built), the kept copies a rebuild restores (warehouse/keep.py), the state store
(manifests, watermarks), every raw and quarantine Parquet batch (against its manifest's rows
and checksums), the append-only logs (reconciliation, anchors, erased keys), the audit store
(``c360 audit verify``'s check), the publication and Airflow's metadata database.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from customer360.core import audit, duck, layers
from customer360.core.files import DUCKDB_SIDECARS, move_aside, move_file, remove_temps, write_text
from customer360.core.settings import Settings
from customer360.ingest.raw_zone import unreadable_parquet
from customer360.ingest.state import (LANDING_SOURCES, StateError, StateStore, backup_state,
                                      restore_state, sha256_of, state_backup_path, state_db_path)
from customer360.warehouse import keep

log = logging.getLogger(__name__)

OK, WARN, PROBLEM = "ok", "warn", "problem"
REPAIRS = ("warehouse", "raw", "state", "audit", "published", "airflow", "leftovers")
TEMP_SUFFIXES = (".tmp", ".link", ".erasing")


def repair_command(store: str) -> str:
    return "c360 rebuild-warehouse" if store == "warehouse" else f"c360 doctor --repair {store}"


@dataclass
class Finding:
    store: str                 # run, warehouse, kept, state, manifest, raw, logs, audit, published, airflow, leftovers
    status: str                # ok | warn | problem
    path: str
    detail: str
    repair: str | None = None  # the command that repairs it

    def line(self) -> str:
        text = f"{self.status:<7} {self.store:<10} {self.path}: {self.detail}"
        return text + (f" -> repair: {self.repair}" if self.repair else "")


@dataclass
class Diagnosis:
    home: str
    findings: list[Finding] = field(default_factory=list)
    run_in_progress: str | None = None

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.status == PROBLEM]

    @property
    def ok(self) -> bool:
        return not self.problems

    def repairs(self) -> list[str]:
        """The distinct repair commands, in the order to run them (the warehouse last: its
        rebuild reads the raw zone and republishes)."""
        found = {f.repair for f in self.problems if f.repair}
        order = [repair_command(s) for s in ("state", "raw", "audit", "airflow", "leftovers",
                                             "published", "warehouse")]
        return [c for c in order if c in found] + sorted(found - set(order))

    def as_dict(self) -> dict:
        return {"home": self.home, "ok": self.ok, "run_in_progress": self.run_in_progress,
                "findings": [asdict(f) for f in self.findings], "repairs": self.repairs()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _rel(settings: Settings, path: Path) -> str:
    try:
        return str(path.relative_to(settings.home))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- run lock

def run_holder(settings: Settings) -> str | None:
    """Who holds the run lock (its "pid N since T"), or None; looks without taking it."""
    path = settings.run_lock_path
    if not path.exists():
        return None
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().strip().rsplit(" token ", 1)[0] or "another process"
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


# --------------------------------------------------------------------------- warehouse

def built_relations(settings: Settings) -> dict[str, tuple[str, str]]:
    """{unique_id: (schema, name)} of every table, view, seed and snapshot the last dbt run of
    each layer built, from the kept run results and dbt's manifest."""
    manifest_path = settings.dbt_target_dir / "manifest.json"
    if not manifest_path.exists():
        return {}
    nodes = json.loads(manifest_path.read_text(encoding="utf-8")).get("nodes", {})
    built: set[str] = set()
    for layer in layers.DBT_LAYERS:
        path = settings.dbt_results_path(layer)
        if path.exists():
            for r in json.loads(path.read_text(encoding="utf-8")).get("results", []):
                if r.get("status") == "success" and r["unique_id"].split(".")[0] in ("model", "seed", "snapshot"):
                    built.add(r["unique_id"])
    out = {}
    for uid in sorted(built):
        node = nodes.get(uid)
        if node and node.get("config", {}).get("materialized") != "ephemeral":
            out[uid] = (node["schema"], node.get("alias") or node["name"])
    return out


def check_warehouse(settings: Settings, busy: bool) -> list[Finding]:
    path = settings.warehouse_path
    rel = _rel(settings, path)
    try:
        expected = built_relations(settings)
    except (ValueError, KeyError) as exc:
        return [Finding("warehouse", WARN, _rel(settings, settings.dbt_target_dir / "manifest.json"),
                        f"dbt's manifest or run results do not parse ({_first_line(exc)}): tables "
                        "not compared; the next dbt run writes them again")]
    if not path.exists():
        if expected:
            return [Finding("warehouse", PROBLEM, rel, f"missing, but dbt built {len(expected)} "
                            "relations in it", repair_command("warehouse"))]
        return [Finding("warehouse", OK, rel, "not built yet")]
    try:
        con = duck.connect(settings, path, read_only=True)
    except duckdb.Error as exc:
        if "lock" in str(exc).lower():  # open for writing elsewhere: busy, not broken
            who = "the run in progress" if busy else f"another process ({_first_line(exc)})"
            return [Finding("warehouse", WARN, rel, f"in use by {who}: not checked")]
        return [Finding("warehouse", PROBLEM, rel, f"does not open ({_first_line(exc)})",
                        repair_command("warehouse"))]
    try:
        present = {(s, t) for s, t in con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables").fetchall()}
        missing = sorted(f"{s}.{t}" for s, t in expected.values() if (s, t) not in present)
        unreadable = []
        for schema, name in sorted(expected.values()):
            if (schema, name) in present:
                try:
                    con.execute(f'SELECT count(*) FROM "{schema}"."{name}"').fetchone()
                except duckdb.Error as exc:
                    unreadable.append(f"{schema}.{name} ({_first_line(exc)})")
    except duckdb.Error as exc:
        return [Finding("warehouse", PROBLEM, rel, f"its catalog does not read ({_first_line(exc)})",
                        repair_command("warehouse"))]
    finally:
        con.close()
    if missing or unreadable:
        parts = ([f"{len(missing)} table(s) dbt built are missing: {', '.join(missing[:8])}"] if missing else []) + \
                ([f"unreadable: {', '.join(unreadable[:4])}"] if unreadable else [])
        return [Finding("warehouse", PROBLEM, rel, "; ".join(parts), repair_command("warehouse"))]
    return [Finding("warehouse", OK, rel, f"opens; all {len(expected)} relations dbt built are there")]


def check_kept(settings: Settings) -> list[Finding]:
    index_path = keep.kept_index_path(settings)
    rel = _rel(settings, index_path)
    try:
        index = keep.read_index(settings)
    except ValueError as exc:
        return [Finding("kept", PROBLEM, rel, f"does not parse ({_first_line(exc)}); the next "
                        "publication writes it again", "c360 run --date <next date>")]
    if not index:
        if settings.publication_path.exists():
            return [Finding("kept", WARN, rel, "nothing kept yet: a rebuild would not find the id "
                            "memory or the snapshot history (the next publication keeps them)")]
        return [Finding("kept", OK, rel, "nothing published yet")]
    bad = []
    for key, entry in sorted(index.get("tables", {}).items()):
        path = keep.kept_dir(settings) / entry["file"]
        why = unreadable_parquet(path) if path.exists() else "missing"
        if why is None:
            import pyarrow.parquet as pq

            rows = pq.read_metadata(path).num_rows
            if rows != entry["rows"]:
                why = f"{rows} rows, kept.json says {entry['rows']}"
        if why:
            bad.append(f"{key}: {why}")
    if bad:
        return [Finding("kept", PROBLEM, rel, "; ".join(bad) + " (a rebuild now would lose it; the "
                        "next publication copies it again from a good warehouse)",
                        "c360 stage publish --date <last published date>")]
    try:
        published_at = json.loads(settings.publication_path.read_text()).get("published_at")
    except (OSError, ValueError):
        published_at = None  # the publication's own check reports it
    if published_at and index.get("exported_at", "") < published_at:
        return [Finding("kept", WARN, rel, f"older ({index.get('exported_at')}) than the current "
                        f"publication ({published_at}): keeping failed after it; a rebuild now "
                        "restores the older id memory and history")]
    return [Finding("kept", OK, rel, f"{len(index.get('tables', {}))} table(s) kept, as of "
                    f"{index.get('exported_at', '?')}")]


# --------------------------------------------------------------------------- state, manifests, raw

@dataclass
class BadBatch:
    batch_id: str
    source: str
    entity: str | None
    load_date: str
    path: str
    reason: str


def _read_state(settings: Settings) -> tuple[list[Finding], dict | None]:
    """Findings of the state store, and its rows (None when it does not read)."""
    path = state_db_path(settings)
    rel = _rel(settings, path)
    if not path.exists():
        return [Finding("state", OK, rel, "no state yet (nothing extracted)")], {"batches": [], "watermarks": [], "pending": []}
    has_copy = state_backup_path(settings).exists()
    fix = repair_command("state") if has_copy else None
    no_copy = "" if has_copy else (" (no good copy to put back: move it aside and extract every "
                                   "source again from the start)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                return [Finding("state", PROBLEM, rel, f"fails SQLite's check: {check}{no_copy}", fix)], None
            rows = {}
            for table in ("batches", "watermarks", "pending"):
                cur = db.execute(f"SELECT * FROM {table}")
                names = [d[0] for d in cur.description]
                rows[table] = [dict(zip(names, r)) for r in cur.fetchall()]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return [Finding("state", PROBLEM, rel, f"does not open ({_first_line(exc)}){no_copy}", fix)], None
    findings = []
    for w in rows["watermarks"]:
        try:
            json.loads(w["keys_at_watermark"])
            if w.get("cursor"):
                json.loads(w["cursor"])
        except (TypeError, ValueError) as exc:
            findings.append(Finding("state", PROBLEM, f"{rel} (watermarks {w['source']}/{w['entity']})",
                                    f"does not parse ({_first_line(exc)}){no_copy}", fix))
    good_batches = []
    for b in rows["batches"]:
        try:
            b["outputs"] = json.loads(b["outputs"])
            b["checksums"] = json.loads(b["checksums"]) if b.get("checksums") else None
            good_batches.append(b)
        except (TypeError, ValueError) as exc:
            findings.append(Finding("manifest", PROBLEM, f"{rel} (batch {b['batch_id']})",
                                    f"its manifest row does not parse ({_first_line(exc)}){no_copy}", fix))
    rows["batches"] = good_batches
    for p in rows["pending"]:
        findings.append(Finding("state", WARN, f"{rel} (pending {p['batch_id']})",
                                f"a {p['source']} batch began and never committed: the next "
                                f"`c360 extract {p['source']}` completes or undoes it"))
    if not findings:
        findings.append(Finding("state", OK, rel, f"opens; {len(rows['batches'])} batch(es), "
                                f"{len(rows['watermarks'])} watermark(s) parse"))
    legacy = settings.state_dir / "crm"
    for old in sorted(legacy.glob("*.json")) if legacy.is_dir() else []:
        try:
            json.loads(old.read_text(encoding="utf-8"))
        except ValueError as exc:
            findings.append(Finding("state", PROBLEM, _rel(settings, old), f"a legacy CRM state file "
                                    f"that does not parse ({_first_line(exc)}): move it aside and the "
                                    "object loads in full on the next extract", None))
    return findings, rows


def _expected_rows(batch: dict, role: str) -> int | None:
    return {"raw": batch.get("rows_landed"), "quarantine": batch.get("rows_quarantined")}.get(role)


def bad_batches(settings: Settings, batches: list[dict]) -> list[BadBatch]:
    """Committed batches with an output file that is missing, unreadable or not what its
    manifest says (rows; size and SHA-256 where the manifest has them)."""
    out = []
    for b in batches:
        for role, p in sorted(b["outputs"].items()):
            path = Path(p)
            sums = (b.get("checksums") or {}).get(role)
            why = None
            if not path.exists():
                why = "missing"
            elif sums is not None:
                if path.stat().st_size != sums["bytes"]:
                    why = f"{path.stat().st_size} bytes, the manifest says {sums['bytes']}"
                elif sha256_of(path) != sums["sha256"]:
                    why = "content differs from the manifest's SHA-256"
            if why is None:
                why = unreadable_parquet(path)
            if why is None:
                import pyarrow.parquet as pq

                rows = pq.read_metadata(path).num_rows
                want = sums["rows"] if sums is not None else _expected_rows(b, role)
                # a manifest from before checksums knows the rows landed; an erasure since may
                # have removed some
                if want is not None and (rows != want if sums is not None else rows > want):
                    why = f"{rows} rows, the manifest says {want}"
            if why:
                out.append(BadBatch(b["batch_id"], b["source"], b.get("entity"), b["load_date"], str(path), why))
    return out


def _parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith(".")) if root.exists() else []


def check_raw(settings: Settings, batches: list[dict] | None) -> list[Finding]:
    findings = []
    if batches is None:
        return [Finding("raw", WARN, _rel(settings, settings.lake_raw),
                        "not checked against the manifests: the state store does not read")]
    for bad in bad_batches(settings, batches):
        findings.append(Finding("raw", PROBLEM, _rel(settings, Path(bad.path)),
                                f"{bad.source}/{bad.entity} batch {bad.batch_id}: {bad.reason}",
                                repair_command("raw")))
    listed = {str(Path(p)) for b in batches for p in b["outputs"].values()}
    strays = unreadable_strays = 0
    for root in (settings.lake_raw, settings.quarantine):
        for path in _parquet_files(root):
            if str(path) in listed:
                continue
            strays += 1
            why = unreadable_parquet(path)
            if why:
                unreadable_strays += 1
                findings.append(Finding("raw", PROBLEM, _rel(settings, path), f"unreadable ({why}) and "
                                        "in no manifest", repair_command("raw")))
    if not findings:
        note = f"; {strays} file(s) in no manifest, readable" if strays else ""
        findings.append(Finding("raw", OK, _rel(settings, settings.home / "lake"),
                                f"{len(listed)} batch file(s) match their manifests{note}"))
    return findings


# --------------------------------------------------------------------------- logs and audit

def verify_audit(settings: Settings) -> tuple[audit.Verification, list[audit.ChainBreak]]:
    """``c360 audit verify``'s check: the chain and its anchors (the anchors log and the
    current publication's), and every erasure the erased-keys copy knows is in the log."""
    from customer360.privacy.erasure_log import unlogged_erasures
    from customer360.serve.publish import publication_anchors

    report = audit.verify(settings, extra_anchors=publication_anchors(settings))
    breaks = list(report.breaks) + [
        audit.ChainBreak(0, f"erasure {e} is in the erased-keys copy but not in the log "
                            "(its entry was cut off or the store replaced)")
        for e in unlogged_erasures(settings)]
    return report, breaks


def check_audit(settings: Settings) -> list[Finding]:
    rel = _rel(settings, settings.audit_db)
    try:
        report, breaks = verify_audit(settings)
    except Exception as exc:  # a store that does not open: any DuckDB or file error
        has_copy = audit.backup_path(settings).exists()
        return [Finding("audit", PROBLEM, rel, f"does not open ({_first_line(exc)})"
                        + ("" if has_copy else "; no good copy to put back"),
                        repair_command("audit") if has_copy else None)]
    if breaks:
        return [Finding("audit", PROBLEM, rel, f"{len(breaks)} break(s) in {report.entries} entries, "
                        f"first: {breaks[0]} (evidence of tampering or loss: no automatic repair; "
                        "`c360 audit verify` lists them)")]
    if report.unkeyed:
        return [Finding("audit", WARN, rel, f"intact, but {report.unkeyed} of {report.entries} "
                        "entries are not keyed")]
    return [Finding("audit", OK, rel, f"{report.entries} entries, chain and {report.anchors} anchor(s) verified")]


def check_logs(settings: Settings) -> list[Finding]:
    """The append-only JSON-lines logs: a torn last line is a warning (the next append cuts it
    off into ``<log>.torn``); a whole line that does not parse is a problem."""
    findings = []
    for path in (settings.reconciliation_path, settings.audit_anchors_path, settings.erased_keys_copy_path):
        if not path.exists():
            continue
        data = path.read_bytes()
        whole, _, torn = data.rpartition(b"\n")
        bad = []
        for no, line in enumerate(whole.split(b"\n"), 1):
            if line.strip():
                try:
                    json.loads(line)
                except ValueError:
                    bad.append(no)
        rel = _rel(settings, path)
        if bad:
            findings.append(Finding("logs", PROBLEM, rel, f"line(s) {', '.join(map(str, bad[:5]))} do not "
                                    "parse (an append-only log edited by hand: restore it from a copy)"))
        elif torn:
            findings.append(Finding("logs", WARN, rel, f"a torn last line of {len(torn)} bytes (a write "
                                    "that did not finish); the next append keeps it in "
                                    f"{path.name}.torn and cuts it off"))
        else:
            findings.append(Finding("logs", OK, rel, f"{whole.count(b'{')} line(s)"))
    return findings


# --------------------------------------------------------------------------- publication, Airflow

def check_published(settings: Settings) -> list[Finding]:
    from customer360.serve.publish import CURRENT, versions

    root = settings.published_dir
    link = root / CURRENT
    fix = repair_command("published")
    if not link.is_symlink():
        if versions(settings):
            return [Finding("published", PROBLEM, _rel(settings, link), "missing, but version folders "
                            "exist", fix)]
        return [Finding("published", OK, _rel(settings, root), "nothing published yet")]
    folder = link.resolve()
    if not folder.is_dir():
        return [Finding("published", PROBLEM, _rel(settings, link), f"points to {os.readlink(link)}, "
                        "which does not exist", fix)]
    try:
        pub = json.loads((folder / "publication.json").read_text(encoding="utf-8"))
        tables = {f"{t['schema']}.{t['name']}": t["rows"] for t in pub["tables"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [Finding("published", PROBLEM, _rel(settings, folder / "publication.json"),
                        f"does not read ({_first_line(exc)})", fix)]
    db = folder / "c360.duckdb"
    try:
        con = duck.connect(settings, db, read_only=True)
        try:
            wrong = []
            for key, rows in tables.items():
                schema, name = key.split(".", 1)
                found = con.execute(f'SELECT count(*) FROM "{schema}"."{name}"').fetchone()[0]
                if found != rows:
                    wrong.append(f"{key} has {found} rows, publication.json says {rows}")
        finally:
            con.close()
    except duckdb.Error as exc:
        return [Finding("published", PROBLEM, _rel(settings, db), f"does not open or read "
                        f"({_first_line(exc)})", fix)]
    for key in tables:
        parquet = folder / "marts" / f"{key.split('.', 1)[1]}.parquet"
        why = unreadable_parquet(parquet) if parquet.exists() else "missing"
        if why:
            wrong.append(f"{_rel(settings, parquet)}: {why}")
    if wrong:
        return [Finding("published", PROBLEM, _rel(settings, folder), "; ".join(wrong[:4]), fix)]
    return [Finding("published", OK, _rel(settings, folder), f"current; {len(tables)} table(s) of "
                    f"{pub.get('logical_date')} open and match publication.json")]


def airflow_db_path(settings: Settings) -> Path:
    """Airflow's SQLite metadata database (AIRFLOW_HOME's default, pipeline/airflow.py sets no other)."""
    return settings.airflow_home / "airflow.db"


def check_airflow(settings: Settings) -> list[Finding]:
    path = airflow_db_path(settings)
    rel = _rel(settings, path)
    if not path.exists():
        return [Finding("airflow", OK, rel, "not created yet (the next `c360 run` creates it)")]
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            check = db.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        check = _first_line(exc)
    if check != "ok":
        return [Finding("airflow", PROBLEM, rel, f"fails SQLite's integrity check ({check}); run "
                        "history is lost with it, the warehouse is not", repair_command("airflow"))]
    return [Finding("airflow", OK, rel, "integrity check ok")]


# --------------------------------------------------------------------------- leftovers

def _is_temp(name: str) -> bool:
    stem = name
    for sidecar in DUCKDB_SIDECARS:
        stem = stem.removesuffix(sidecar)
    return name.startswith(".") and stem.endswith(TEMP_SUFFIXES)


def leftovers(settings: Settings) -> list[Path]:
    """Temporary files and staging folders a killed writer left (the hidden names of
    core.files.temp_path), under the home but for the simulation and Airflow's own files."""
    skip = {settings.simulation_dir, settings.airflow_home}
    found = []
    for folder, dirs, names in os.walk(settings.home):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d not in skip]
        for name in [*names, *dirs]:
            if _is_temp(name):
                found.append(here / name)
        dirs[:] = [d for d in dirs if not _is_temp(d)]
    return sorted(found)


def check_leftovers(settings: Settings, busy: bool) -> list[Finding]:
    found = leftovers(settings)
    if not found:
        return [Finding("leftovers", OK, ".", "no temporary files left by a killed writer")]
    if busy:
        return [Finding("leftovers", WARN, ".", f"{len(found)} temporary file(s), likely the run's own")]
    return [Finding("leftovers", WARN, _rel(settings, p), "a temporary file a killed writer left",
                    repair_command("leftovers")) for p in found]


# --------------------------------------------------------------------------- the check

def diagnose(settings: Settings) -> Diagnosis:
    """Every check, read-only."""
    diagnosis = Diagnosis(home=str(settings.home))
    holder = run_holder(settings)
    diagnosis.run_in_progress = holder
    busy = holder is not None
    diagnosis.findings.append(Finding("run", WARN if busy else OK, _rel(settings, settings.run_lock_path),
                                      f"a run is in progress ({holder}): what it writes may look "
                                      "unfinished" if busy else "no run in progress"))
    diagnosis.findings += check_warehouse(settings, busy)
    diagnosis.findings += check_kept(settings)
    state_findings, rows = _read_state(settings)
    diagnosis.findings += state_findings
    diagnosis.findings += check_raw(settings, rows["batches"] if rows is not None else None)
    diagnosis.findings += check_logs(settings)
    diagnosis.findings += check_audit(settings)
    diagnosis.findings += check_published(settings)
    diagnosis.findings += check_airflow(settings)
    diagnosis.findings += check_leftovers(settings, busy)
    return diagnosis


# --------------------------------------------------------------------------- repairs

def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _broken_dest(settings: Settings, path: Path) -> Path:
    for zone, root in (("raw", settings.lake_raw), ("quarantine", settings.quarantine)):
        if root in path.parents:
            return settings.lake_broken / zone / path.relative_to(root)
    return settings.lake_broken / "other" / path.name


def _set_file_aside(settings: Settings, path: Path, reason: str) -> str:
    dest = move_file(path, _broken_dest(settings, path))
    write_text(dest.with_name(dest.name + ".reason.json"),
               json.dumps({"from": str(path), "reason": reason, "set_aside_at": _stamp()}, indent=2))
    return str(dest)


def _reland_command(source: str, load_date: str) -> str:
    if source in LANDING_SOURCES:
        return (f"c360 extract {source} --date <today's logical date> (its landing files are "
                "kept and are loaded again)")
    return (f"c360 extract {source} --date <today's logical date> (the object's watermark was "
            "reset: it loads in full from the CRM)")


def set_aside_batches(settings: Settings, bad: list[BadBatch], reason_prefix: str = "") -> list[dict]:
    """Move every output of each bad batch to ``lake/broken/`` (with a ``.reason.json``) and
    forget the batch in the state store, so the source's next extract lands it again."""
    done = []
    by_batch: dict[str, list[BadBatch]] = {}
    for b in bad:
        by_batch.setdefault(b.batch_id, []).append(b)
    for batch_id, items in by_batch.items():
        first = items[0]
        reason = reason_prefix + "; ".join(f"{Path(i.path).name}: {i.reason}" for i in items)
        with StateStore(settings, first.source) as store:
            row = store.db.execute("SELECT outputs FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
            outputs = json.loads(row[0]) if row else {}
            moved = {role: _set_file_aside(settings, Path(p), reason)
                     for role, p in outputs.items() if Path(p).exists()}
            store.set_aside(batch_id, moved, reason)
        done.append({"batch_id": batch_id, "source": first.source, "entity": first.entity,
                     "moved": moved, "reason": reason,
                     "next": _reland_command(first.source, first.load_date)})
    return done


def repair_raw(settings: Settings) -> dict:
    _, rows = _read_state(settings)
    if rows is None:
        raise StateError(f"the state store {state_db_path(settings)} does not read: "
                         f"`{repair_command('state')}` first")
    batches = set_aside_batches(settings, bad_batches(settings, rows["batches"]))
    listed = {str(Path(p)) for b in rows["batches"] for p in b["outputs"].values()}
    strays = []
    for root in (settings.lake_raw, settings.quarantine):
        for path in _parquet_files(root):
            why = None if str(path) in listed else unreadable_parquet(path)
            if why:
                strays.append(_set_file_aside(settings, path, f"unreadable and in no manifest: {why}"))
    backup_state(settings)  # a copy put back later must not bring the set-aside batches back
    return {"batches": batches, "strays": strays,
            "next": sorted({b["next"] for b in batches})}


def repair_state(settings: Settings) -> dict:
    """Put back the state store's last good copy; batches landed after the copy was made are
    not in it, so their files are set aside too and the next extracts land them again (the
    landing files are kept; the CRM's restored watermark is from before them)."""
    out = restore_state(settings)
    with StateStore(settings, "crm") as store:  # opening upgrades a copy of an older schema
        committed = store.db.execute("SELECT batch_id, source, entity, load_date, outputs FROM batches").fetchall()
    listed = {str(Path(p)) for *_, outputs in committed for p in json.loads(outputs).values()}
    newer = []
    for root in (settings.lake_raw, settings.quarantine):
        for path in _parquet_files(root):
            parts = path.relative_to(root).parts
            # only the extracts' batches (<source>/<entity>/load_date=*/): the raw gate's
            # rejects (_gate_rejects/) are no extract's and stay
            if len(parts) != 4 or not parts[2].startswith("load_date="):
                continue
            if str(path) not in listed and path.stat().st_mtime > state_backup_path(settings).stat().st_mtime:
                newer.append(_set_file_aside(settings, path, "landed after the state store's last "
                                             "good copy was made; the store put back does not know it"))
    # batches the copy knows whose files were set aside since (by a repair after the copy)
    gone = [BadBatch(batch_id, source, entity, load_date, p, "its file was gone when the state "
                     "store's last good copy was put back")
            for batch_id, source, entity, load_date, outputs in committed
            for p in json.loads(outputs).values() if not Path(p).exists()]
    forgotten = set_aside_batches(settings, gone)
    out["set_aside"] = newer
    out["forgotten"] = [b["batch_id"] for b in forgotten]
    out["next"] = ("c360 extract crm|web|pos --date <today's logical date> lands them again"
                   if newer or forgotten else None)
    backup_state(settings)
    return out


def repair_airflow(settings: Settings) -> dict:
    path = airflow_db_path(settings)
    moved = move_aside(path) if path.exists() else None
    (settings.airflow_home / ".c360-initialized").unlink(missing_ok=True)  # migrate again
    return {"moved_aside": str(moved) if moved else None,
            "next": "the next `c360 run` creates Airflow's database again (run history starts anew)"}


def repair_leftovers(settings: Settings) -> dict:
    removed = []
    for folder in sorted({p.parent for p in leftovers(settings)}):
        removed += [str(p) for p in remove_temps(folder, TEMP_SUFFIXES)]
    return {"removed": removed}


def last_published_date(settings: Settings) -> dt.date | None:
    from customer360.privacy.erasure import last_published_date as published

    return published(settings)


def repair_published(settings: Settings, as_of: dt.date | None = None) -> dict:
    from customer360.pipeline.stages import publish

    as_of = as_of or last_published_date(settings) or _last_built_date(settings)
    if as_of is None:
        raise ValueError("no publication says its date: give --date")
    return publish(as_of, settings)


def _last_built_date(settings: Settings) -> dt.date | None:
    """The as_of_date of the last dbt build (its kept run results), for a home whose
    publication.json is lost."""
    for layer in reversed(layers.DBT_LAYERS):
        path = settings.dbt_results_path(layer)
        if path.exists():
            try:
                value = json.loads(path.read_text())["args"]["vars"]["as_of_date"]
                return dt.date.fromisoformat(value)
            except (ValueError, KeyError, TypeError):
                continue
    return None


def rebuild_warehouse(settings: Settings, as_of: dt.date | None = None, run_id: str = "rebuild") -> dict:
    """Move the warehouse aside, put what dbt cannot derive into a new one (the old file's
    tables where it still opens, else the kept copies: id memory, snapshot history, ML run
    history), build it from the raw zone with the DAG's rebuild stages (dbt layers with their
    gates, ML, publication) and record it in the audit log. The caller holds the run lock."""
    from customer360.pipeline.stages import rebuild

    as_of = as_of or last_published_date(settings) or _last_built_date(settings)
    if as_of is None:
        raise ValueError("nothing says which logical date the warehouse was as of: give --date")
    path = settings.warehouse_path
    if path.exists():
        try:
            duck.connect(settings, path, read_only=True).close()
        except duckdb.Error as exc:
            if "lock" in str(exc).lower():  # moving it aside would leave its writer in the old file
                raise RuntimeError(f"{path} is open for writing in another process; stop it first "
                                   f"({_first_line(exc)})") from None
    moved = move_aside(path) if path.exists() else None
    restored = keep.restore_kept(settings, path, moved)
    missing = [k for k in ("intermediate.int_identity__clusters",) if k not in restored]
    if missing:
        log.warning("rebuild: no id memory found (%s): customer ids of clusters that merged or "
                    "split may change", ", ".join(missing))
    steps = rebuild(settings, as_of, run_id)
    out = {"as_of": as_of.isoformat(), "moved_aside": str(moved) if moved else None,
           "restored": restored, "steps": steps}
    audit.log_event(settings, "warehouse_rebuilt", {
        "as_of": as_of.isoformat(), "moved_aside": moved.name if moved else None,
        "restored": sorted(restored)})
    return out


def repair(settings: Settings, store: str, as_of: dt.date | None = None) -> dict:
    """Run one repair (one of :data:`REPAIRS`); the caller holds the run lock."""
    if store == "warehouse":
        return rebuild_warehouse(settings, as_of)
    if store == "raw":
        return repair_raw(settings)
    if store == "state":
        return repair_state(settings)
    if store == "audit":
        return audit.restore_backup(settings)
    if store == "published":
        return repair_published(settings, as_of)
    if store == "airflow":
        return repair_airflow(settings)
    if store == "leftovers":
        return repair_leftovers(settings)
    raise ValueError(f"unknown store {store!r}; expected one of {', '.join(REPAIRS)}")
