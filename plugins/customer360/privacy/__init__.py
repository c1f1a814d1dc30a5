"""Privacy and security of customer360: the PII boundary, erasure, consent, the audit trail.

    pii          how each kind of personal key is normalized (the warehouse's rules) and
                 pseudonymized: keyed hashes (HMAC-SHA256 with C360_PII_KEY) and one-way tokens
    person       an erasure request resolved to every key of the person behind it
    lake_purge   rows of a person removed from raw and quarantine Parquet and from landing
                 files (atomically), with the loaders' manifests kept in step
    duck_purge   a person removed from the warehouse (snapshot, identity memory, incremental
                 models) and from the publication; DuckDB files compacted so no freed block
                 keeps a deleted value
    erasure      the erasure itself: request -> keys -> purge -> rebuild -> republish -> log
    erasure_log  the erasure log in the audit store (tokens, times, counts; nothing personal)
    audience     consent-aware audience exports for marketing (CSV + JSON)
    scan         a deep search of a folder for strings (Parquet, DuckDB, SQLite, gzip, text),
                 used to prove that an erased person or a secret is nowhere on disk
    tasks        the DAG entry points: erasure, compaction, audiences
"""
