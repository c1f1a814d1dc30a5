"""Audience exports for marketing campaigns: consenting customers only, match keys only.

    export = export_audience(settings, "win_back")     # c360 audience --segment win_back

A segment is a named condition over the published ``marts.customer_360`` (what passed the
marts gate). Whatever the segment says, a customer is exported only when
``marketing_consent`` is true and their latest Segment consent (``web_consent_denied``, from
``context.consent.categoryPreferences``) denies none of the categories an audience export
falls under: the consent filters are applied here, not left to each segment, and a customer
whose marketing consent is unknown is not exported.

The purpose of every export is ad-platform customer matching, so it falls under the consent
categories ``WEB_CONSENT_CATEGORIES``: Segment's Advertising category and data sharing with
third parties (the category ids are the consent manager's; they are compared lower-cased). A
category the latest consent does not mention does not deny.

Each member carries keyed hashes and nothing else personal:

- ``email_hash`` / ``phone_hash``: the keyed hashes of the marts (HMAC with C360_PII_KEY), to
  join the audience back to the published tables; useless to whoever gets the file without
  the key;
- ``customer_id``, ``country`` and the segment's reason columns (value tier, churn risk);
- only when asked for (``platform_match_keys``, ``c360 audience --platform-match-keys``):
  ``email_sha256`` / ``phone_sha256``, SHA-256 of the normalized email (trimmed, lower case)
  and of the E.164 phone. That is the format ad platforms' customer matching takes (Google Ads
  Customer Match's ``hashed_email``: SHA-256 after normalization, unkeyed by design, so the
  platform can match it against its own users), and for the same reason anyone can reverse
  it with a dictionary of addresses: such a file is an upload for the platform, to be handled
  as personal data, not a keyed export. Its event in the audit log says it carried them.

The plain values are read from the restricted warehouse (the identity graph's keys) and only
their digests leave it; a customer without an email or phone is not exportable. Files are
``$C360_HOME/published/audiences/<segment>.csv`` and ``<segment>.json`` (same members, plus
what was selected and why), each written under a temporary name and renamed into place.
Only the latest export of a segment is kept: older copies of personal data serve nobody.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from customer360.core import audit, duck
from customer360.core.files import atomic_path, write_text
from customer360.privacy import pii
from customer360.privacy.person import PersonKeys
from customer360.core.masking import EMAIL_RE, PHONE_RE
from customer360.core.settings import Settings

log = logging.getLogger(__name__)

CONSENT = "marketing_consent IS TRUE"
# Segment consent categories (lower-cased category ids) an audience export needs: handing
# hashed match keys to an ad platform is advertising, and it shares data with a third party.
WEB_CONSENT_CATEGORIES = ("advertising", "datasharing", "data sharing", "data_sharing")
WEB_CONSENT = ("NOT list_has_any(coalesce(web_consent_denied, []::VARCHAR[]), ["
               + ", ".join(f"'{c}'" for c in WEB_CONSENT_CATEGORIES) + "])")
COLUMNS = ["customer_id", "email_sha256", "phone_sha256", "email_hash", "phone_hash", "country",
           "value_tier", "rfm_segment", "lifecycle_stage", "churn_probability"]


@dataclass(frozen=True)
class Segment:
    name: str
    description: str
    condition: str  # SQL over marts.customer_360


SEGMENTS = {s.name: s for s in (
    Segment("win_back", "High-value customers at risk of churning: a win-back campaign",
            "value_tier = 'high' AND (lifecycle_stage IN ('at risk', 'lapsed', 'churned') "
            "OR rfm_segment IN ('at risk', 'cannot lose them', 'about to sleep', 'hibernating') "
            "OR churn_probability >= 0.5)"),
    Segment("champions", "Best customers (RFM champions and loyal customers): referral and "
            "early-access campaigns", "rfm_segment IN ('champions', 'loyal customers')"),
    Segment("new_customers", "First purchase recently: onboarding campaign",
            "rfm_segment IN ('new customers', 'promising')"),
    Segment("browsers", "Registered customers who browse but have not bought yet",
            "orders_count = 0 AND web_sessions_30d > 0"),
)}


class AudienceError(RuntimeError):
    pass


@dataclass
class AudienceExport:
    segment: str
    csv_path: Path
    json_path: Path
    members: int
    in_segment: int
    without_consent: int
    without_match_key: int
    as_of_date: str | None = None
    columns: list[str] = field(default_factory=list)
    web_consent_denied: int = 0

    def as_dict(self) -> dict:
        return {"segment": self.segment, "csv": str(self.csv_path), "json": str(self.json_path),
                "members": self.members, "in_segment": self.in_segment,
                "without_consent": self.without_consent,
                "web_consent_denied": self.web_consent_denied,
                "without_match_key": self.without_match_key, "as_of_date": self.as_of_date}


def audiences_dir(settings: Settings) -> Path:
    return settings.audiences_dir


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _match_keys(settings: Settings, con: duckdb.DuckDBPyConnection) -> bool:
    """Temp table ``match_keys`` (customer_id, email, phone): the plain values behind each
    customer's published email_hash / phone_hash, from the warehouse's identity keys."""
    con.execute("CREATE OR REPLACE TEMP TABLE match_keys (customer_id VARCHAR, email VARCHAR, phone VARCHAR)")
    path = settings.warehouse_path
    if not path.exists():
        return False
    con.execute(f"ATTACH '{_sql_path(path)}' AS wh (READ_ONLY)")
    try:
        found = con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'wh' AND "
                            "schema_name = 'intermediate' AND table_name = 'int_identity__clusters'").fetchone()[0]
        if not found:
            return False
        con.execute("""
            INSERT INTO match_keys
            SELECT a.customer_id,
                   max(substr(k.identity_key, 7)) FILTER (WHERE k.key_type = 'email'
                       AND pii_hash(substr(k.identity_key, 7)) = a.email_hash),
                   max(substr(k.identity_key, 7)) FILTER (WHERE k.key_type = 'phone'
                       AND pii_hash(substr(k.identity_key, 7)) = a.phone_hash)
            FROM audience AS a
            JOIN wh.intermediate.int_identity__clusters AS k USING (customer_id)
            WHERE k.key_type IN ('email', 'phone')
            GROUP BY a.customer_id""")
        return True
    finally:
        con.execute("DETACH wh")


def _check_no_pii(frame: pd.DataFrame) -> None:
    """The export is published: no value may look like an email or a phone number."""
    for col in frame.columns:
        values = frame[col].dropna().astype(str)
        if values.map(lambda v: bool(EMAIL_RE.search(v) or PHONE_RE.search(v))).any():
            raise AudienceError(f"column {col!r} of the audience holds values that look like an "
                                "email or phone number: refusing to export")


def _write(settings: Settings, segment: Segment, frame: pd.DataFrame, meta: dict) -> tuple[Path, Path]:
    out = audiences_dir(settings)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / f"{segment.name}.csv", out / f"{segment.name}.json"
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False)
    document = {**meta, "members": json.loads(frame.to_json(orient="records"))}
    write_text(json_path, json.dumps(document, indent=1, ensure_ascii=False))
    return csv_path, json_path


KEYED_MATCH_KEYS = ["email_hash", "phone_hash"]
PLATFORM_MATCH_KEYS = ["email_sha256", "phone_sha256"]


def export_audience(settings: Settings, name: str, *, platform_match_keys: bool = False) -> AudienceExport:
    """Select the segment's consenting, matchable customers from the publication and write
    its CSV and JSON; returns counts and paths. ``platform_match_keys`` adds the unkeyed
    SHA-256 keys an ad platform matches on (see the module's docstring)."""
    if name not in SEGMENTS:
        raise AudienceError(f"unknown segment {name!r}; known: {', '.join(sorted(SEGMENTS))}")
    segment = SEGMENTS[name]
    published = settings.published_db
    if not published.exists():
        raise AudienceError(f"nothing is published yet ({published}): run the pipeline first")
    con = duck.connect(settings)
    try:
        pii.register(con, pii.pseudonymizer(settings))
        con.execute(f"ATTACH '{_sql_path(published)}' AS pub (READ_ONLY)")
        columns = {r[0] for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = 'pub' "
            "AND schema_name = 'marts' AND table_name = 'customer_360'").fetchall()}
        if "marketing_consent" not in columns:
            raise AudienceError("marts.customer_360 has no marketing_consent column: without "
                                "consent nobody can be exported")
        if "web_consent_denied" not in columns:
            raise AudienceError("marts.customer_360 has no web_consent_denied column: without "
                                "the customers' Segment consent nobody can be exported")
        optional = [c for c in ("country", "value_tier", "rfm_segment", "lifecycle_stage",
                                "churn_probability") if c in columns]
        con.execute(f"""CREATE TEMP TABLE in_segment AS
            SELECT customer_id, marketing_consent, web_consent_denied, email_hash, phone_hash,
                   {', '.join(optional)}
            FROM pub.marts.customer_360 WHERE {segment.condition}""")
        as_of = con.execute("SELECT max(as_of_date)::VARCHAR FROM pub.marts.customer_360").fetchone()[0] \
            if "as_of_date" in columns else None
        con.execute("DETACH pub")
        con.execute(f"CREATE TEMP TABLE audience AS SELECT * FROM in_segment "
                    f"WHERE {CONSENT} AND {WEB_CONSENT}")
        try:
            have_plain = _match_keys(settings, con)
        except duckdb.IOException as exc:  # a pipeline run holds the warehouse for writing
            raise AudienceError(f"the warehouse is busy ({type(exc).__name__}): export again "
                                "once the running pipeline has finished") from None
        frame = con.execute(f"""
            SELECT a.customer_id,
                   sha256(m.email) AS email_sha256, sha256(m.phone) AS phone_sha256,
                   a.email_hash, a.phone_hash, {', '.join('a.' + c for c in optional)}
            FROM audience AS a LEFT JOIN match_keys AS m USING (customer_id)
            ORDER BY a.customer_id""").df()
        in_segment = con.execute("SELECT count(*) FROM in_segment").fetchone()[0]
        without_consent = con.execute(f"SELECT count(*) FROM in_segment WHERE NOT coalesce({CONSENT}, false)").fetchone()[0]
        web_denied = con.execute(f"SELECT count(*) FROM in_segment WHERE {CONSENT} AND NOT {WEB_CONSENT}").fetchone()[0]
    finally:
        con.close()
    match_keys = KEYED_MATCH_KEYS + (PLATFORM_MATCH_KEYS if platform_match_keys else [])
    if not platform_match_keys:
        frame = frame.drop(columns=PLATFORM_MATCH_KEYS)
    matchable = frame[match_keys].notna().any(axis=1)
    frame = frame[matchable].reset_index(drop=True)
    _check_no_pii(frame)
    meta = {"segment": segment.name, "description": segment.description,
            "condition": segment.condition, "consent": CONSENT, "web_consent": WEB_CONSENT,
            "as_of_date": as_of,
            "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "match_keys": {k: v for k, v in {
                "email_sha256": "SHA-256 of the trimmed, lower-case email (unkeyed: for an ad platform)",
                "phone_sha256": "SHA-256 of the E.164 phone number (unkeyed: for an ad platform)",
                "email_hash": "HMAC-SHA256 (C360_PII_KEY), as in the published marts",
                "phone_hash": "HMAC-SHA256 (C360_PII_KEY), as in the published marts"}.items()
                if k in match_keys},
            "plain_keys_available": have_plain, "count": int(len(frame))}
    csv_path, json_path = _write(settings, segment, frame, meta)
    export = AudienceExport(segment.name, csv_path, json_path, int(len(frame)), int(in_segment),
                            int(without_consent), int((~matchable).sum()), as_of, list(frame.columns),
                            int(web_denied))
    # handing personal data (hashed) to a marketing tool is a publication: on the record
    audit.log_event(settings, "audience_export", export.as_dict() | {
        "csv": csv_path.name, "json": json_path.name, "platform_match_keys": platform_match_keys})
    log.info("audience %s: %d member(s) of %d in the segment (%d without marketing consent, "
             "%d whose Segment consent denies advertising or data sharing, %d without a match "
             "key)", name, export.members, in_segment, without_consent, web_denied,
             export.without_match_key)
    return export


def export_all(settings: Settings, *, platform_match_keys: bool = False) -> dict:
    return {name: export_audience(settings, name, platform_match_keys=platform_match_keys).as_dict()
            for name in sorted(SEGMENTS)}


def purge_audiences(settings: Settings, person: PersonKeys) -> dict[str, int]:
    """Rewrite every audience export without the person (by customer id or match key)."""
    folder = audiences_dir(settings)
    if not folder.exists():
        return {}
    pseudo = pii.pseudonymizer(settings)
    digests = ({hashlib.sha256(v.encode()).hexdigest() for v in person.emails | person.phones}
               | {pseudo.hash(v) for v in person.emails | person.phones})
    removed = {}
    for json_path in sorted(folder.glob("*.json")):
        document = json.loads(json_path.read_text())
        members = pd.DataFrame(document.get("members", []))
        if members.empty:
            continue
        keyed = members.reindex(columns=["email_sha256", "phone_sha256", "email_hash", "phone_hash"])
        drop = members["customer_id"].isin(person.customer_ids) | keyed.isin(digests).any(axis=1)
        if not drop.any():
            continue
        kept = members[~drop].reset_index(drop=True)
        segment = SEGMENTS.get(json_path.stem) or Segment(json_path.stem, document.get("description", ""), "")
        document["count"] = int(len(kept))
        document.pop("members", None)
        _write(settings, segment, kept, document)
        removed[json_path.stem] = int(drop.sum())
    return removed
