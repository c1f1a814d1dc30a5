"""The chaos suite's faults (tests/test_chaos.py) and, for each, what stopped it from losing
data. docs/chaos.md holds the same table; tests/test_chaos_doc.py keeps the two equal, and the
suite refuses a row for a fault missing here."""

FAULTS: dict[str, str] = {
    # bad files in the landing (reference run)
    "corrupt gzip": "the web loader quarantines the file whole, with its name and the zlib error",
    "truncated gzip": "read up to the cut; the unreadable rest quarantined with the file name",
    "same file delivered twice": "its records are landed and counted as duplicates (duplicates_in_raw)",
    "truncated csv": "the POS loader quarantines the cut last line with file and line",
    "extra columns": "unknown columns are kept and reported, the rows land",
    "wrong encoding": "a file that is not UTF-8 where the store sends UTF-8 is quarantined whole, named",
    "utf-16 with byte-order mark": "read as its byte-order mark says",
    "empty csv": "on record as a file with 0 rows, not skipped",
    # the extracts
    "disk full writing a web batch (ENOSPC)": "the batch is written to a temp file and renamed: nothing half-landed, nothing on record",
    "CRM bad token": "401 is not retried: ExtractError at once, the token never in the message",
    "SIGKILL mid CRM extract, retried": "the watermark commits with each batch; the retry resumes after the last one",
    "SIGKILL mid POS extract, retried": "pending batches are discarded or adopted on the next start (state store)",
    "days run out of order (extract)": "files are loaded by content hash, not by date: nothing lands twice",
    "CRM 429 storm + 5xx burst + cut pages (DAG)": "bounded retries with backoff and Retry-After; a cut page is re-asked",
    "CRM request hangs (timeout)": "C360_CRM_TIMEOUT_SECONDS on every request, a ceiling of C360_CRM_MAX_ATTEMPTS",
    "CRM cursor does not advance": "the paging checks the cursor moves on; a loop is an error",
    "CRM pages never end (page cap)": "C360_CRM_MAX_PAGES caps a listing",
    "CRM 5xx on every request (retry ceiling)": "C360_CRM_MAX_ATTEMPTS, then a CrmApiError naming the request",
    "CRM record dated in the future": "landed at once flagged _modified_in_future without moving the watermark; its own search finds it again, known, not landed twice",
    "host clock behind the CRM's": "the watermark never passes this host's clock minus C360_CRM_LOOKBACK_SECONDS: later changes are still searched for",
    "a day run twice (its extracts again)": "files already loaded are known by their hash; the CRM by its watermark",
    "corrected POS file": "a new version of a file supersedes the first; both stay in the raw zone",
    # the warehouse, ML and publication
    "SIGKILL mid dbt marts layer, retried": "DuckDB's WAL: the killed transaction is rolled back at the next open",
    "SIGKILL mid ML, retried": "scores are written in one transaction; the rerun replaces them",
    "SIGKILL mid publish, retried": "the publication is a new version folder swapped in by one symlink rename",
    "SIGKILL mid audience export, retried": "each export is written to a temp file and renamed",
    "two runs started at once": "the run lock ($C360_HOME/.run.lock): the second is refused naming the holder",
    "scheduler task and CLI writer at once": "the run lock: a scheduled task waits (wait=True), other CLI writers are refused",
    "future logical date": "check_logical_date in the CLI and in every stage",
    "late data, the day rerun": "incremental models and idempotent extracts: the rerun passes every gate",
    "corrupt Airflow metadata DB": "ensure_airflow checks it (PRAGMA quick_check), moves it aside and re-creates it",
    # full disks
    "disk full in dbt (warehouse)": "dbt fails the layer; DuckDB rolls the transaction back; the rerun rebuilds it",
    "disk full at publish": "the new version is staged beside the old one; the old one stays current",
    "disk full in the audit store": "the gate fails before its results are written; the chain stays whole",
    "disk full in the SQLite state": "SQLite rolls the write back (the last commit stands); c360 extract says so in one line naming the store (exit 1)",
    # PostgreSQL
    "PostgreSQL down at publish": "publish fails naming the connection; the DuckDB publication stands; rerun",
    "PostgreSQL backend killed mid-transaction": "the schema swap is one transaction: rolled back whole",
    "PostgreSQL reader lock past lock_timeout": "lock_timeout on each of 3 attempts, then PublishLockTimeout",
    "PostgreSQL analyst TEMP/CONNECT revoked": "ensure_roles revokes TEMP and CONNECT from PUBLIC",
    # corrupt stores
    "corrupt ingest state file (SQLite)": "StateStore refuses it naming the file (ExtractError), nothing extracted",
    "corrupt audit store": "the audit store refuses it naming the file (AuditError); verify exits 2",
    "corrupt dbt manifest": "dbt re-parses the project when its saved manifest cannot be read",
    "corrupt warehouse": "DuckDB refuses the file naming it; the warehouse is rebuilt from the raw zone",
    "corrupt warehouse: c360 doctor, rebuild-warehouse": "doctor names the file and its repair; rebuild-warehouse rebuilds from the raw zone with the id memory put back, and publishes",
    "truncated raw batch: c360 doctor --repair raw": "doctor checks each batch file against its manifest; the repair sets it aside and forgets it; the extract lands it again",
    # logs and the audit trail
    "torn tail: reconciliation log": "read_jsonl_lines skips a torn last line; the next append cuts it off",
    "torn tail: audit anchors log": "read_jsonl_lines skips a torn last line; the next append cuts it off",
    "torn tail: erased-keys log": "read_jsonl_lines skips a torn last line; the audit store holds the same keys",
    "audit chain: tail truncated": "the anchors (published/audit_anchors.jsonl, publication.json) no longer match",
    "audit chain: entry rewritten": "the keyed hash chain breaks at the entry",
    "audit store deleted": "the anchors name entries the store no longer has",
    "audit store lost after an erasure": "the erased keys' copy in lake/_state; verify names the missing erasure",
    "placeholder secret (deploy/.env.example)": "check_secrets refuses the example's values, naming the variable",
    "secrets and PII in logs at -v": "the masking log filter on every handler",
    # the landing
    "symlink in the landing": "the landing scan refuses symbolic links",
    "FIFO in the landing": "the landing scan refuses FIFOs, sockets and devices before opening",
    "rich markup in a source value": "source text is escaped before printing; the record is quarantined with its reason",
    "read-only landing folder": "the extracts never write the landing",
    "gzip bomb in the web landing": "each file is read once as a stream and stopped at C360_MAX_DECOMPRESSED_BYTES: quarantined whole with the reason",
    "over-long line in a web file": "a line past C360_MAX_LINE_BYTES is quarantined with its number (a short prefix kept); the rest of the file loads",
    # privacy
    "erasure matching nothing": "refused (exit 4) and logged as erasure_refused",
    "SIGKILL mid erasure, resumed": "the 'started' row and the keys are on record before the purge; the rerun resumes it",
    "SIGKILL mid compaction, retried": "the compacted copy is renamed into place; the next compaction removes a killed one's copy",
}
