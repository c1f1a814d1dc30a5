"""Personal keys: the one normalization each kind gets, and their pseudonyms.

Normalization mirrors ``dbt_project/macros/normalize.sql`` (emails lower-cased and trimmed,
phones to E.164 with ``phonenumbers``, loyalty ids upper-case alphanumerics), so a key
normalized here is the very string the warehouse's identity graph holds after ``<type>:``.
The SQL forms run on raw Parquet, where the warehouse has not seen the newest rows yet.

Two pseudonyms, both keyed by ``C360_PII_KEY`` (required, never logged):

- ``hash(value)``: HMAC-SHA256 (hex) of a normalized value, what ``pii_hash()`` gives in the
  warehouse and what the marts publish as ``email_hash`` / ``phone_hash``;
- ``token(identity_key)``: SHA-256 of the HMAC of an identity key (``"email:ann@mail.com"``),
  what the erasure log keeps. It is not a published hash, so the log cannot be joined to the
  marts, and without the key it cannot be tested against a list of guessed emails.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import duckdb
import pyarrow as pa
from duckdb.sqltypes import VARCHAR

from customer360.core.settings import Settings
from customer360.warehouse.sql_functions import make_pii_hasher, normalize_phone, register_functions

KEY_TYPES = ("contact", "email", "phone", "loyalty", "anon")
_EMAIL_SHAPE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_NOT_ALNUM = re.compile(r"[^0-9A-Za-z]")
# Characters RE2 (DuckDB's and Arrow's regex engine) treats as syntax.
_RE2_META = re.compile(r"([\\.^$|?*+()\[\]{}])")


# --------------------------------------------------------------------------- normalization

def normalize_email(text: str | None) -> str | None:
    if text is None:
        return None
    value = text.strip().lower()
    return value if _EMAIL_SHAPE.fullmatch(value) else None


def normalize_loyalty(text: str | None) -> str | None:
    if text is None:
        return None
    return _NOT_ALNUM.sub("", text).upper() or None


def normalize_contact_id(text: str | None) -> str | None:
    if text is None:
        return None
    return text.strip() or None


def normalize_key(key_type: str, value: str, country: str | None = None) -> str | None:
    """``value`` as the warehouse would store it for ``key_type``; None when unusable."""
    if key_type == "email":
        return normalize_email(value)
    if key_type == "phone":
        return normalize_phone(value, country)
    if key_type == "loyalty":
        return normalize_loyalty(value)
    if key_type in ("contact", "anon"):
        return normalize_contact_id(value)
    raise ValueError(f"unknown key type {key_type!r}; expected one of {', '.join(KEY_TYPES)}")


def clean_sql(expr: str) -> str:
    return f"nullif(regexp_replace({expr}, '^\\s+|\\s+$', '', 'g'), '')"


def email_sql(expr: str) -> str:
    """SQL of normalize_email (macro normalize_email)."""
    clean = f"lower({clean_sql(expr)})"
    return f"(case when regexp_full_match({clean}, '[^@\\s]+@[^@\\s]+\\.[^@\\s]+') then {clean} end)"


def loyalty_sql(expr: str) -> str:
    """SQL of normalize_loyalty (macro normalize_loyalty_id)."""
    return f"nullif(upper(regexp_replace({expr}, '[^0-9A-Za-z]', '', 'g')), '')"


def phone_sql(raw: str, country: str) -> str:
    """SQL of normalize_phone (macro normalize_phone); needs :func:`register` on the connection."""
    return f"normalize_phone({raw}, upper({clean_sql(country)}))"


# --------------------------------------------------------------------------- pseudonyms

class Pseudonymizer:
    """Keyed hashes and tokens for one PII key. Holds the key; never prints it."""

    def __init__(self, key: bytes):
        self._hash = make_pii_hasher(key)

    def __repr__(self) -> str:
        return "Pseudonymizer(<key hidden>)"

    def hash(self, value: str | None) -> str | None:
        return self._hash(value)

    def token(self, identity_key: str | None) -> str | None:
        if identity_key is None:
            return None
        return _sha256(self._hash(identity_key))


@lru_cache(maxsize=200_000)
def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pseudonymizer(settings: Settings) -> Pseudonymizer:
    return Pseudonymizer(settings.pii_key())


def register(con: duckdb.DuckDBPyConnection, pseudo: Pseudonymizer) -> None:
    """``normalize_phone``, ``pii_hash`` (the warehouse's) and ``pii_token`` on ``con``."""
    register_functions(con)

    def token_batch(values: pa.Array) -> pa.Array:
        return pa.array([pseudo.token(v) for v in values.to_pylist()], type=pa.string())

    try:
        con.remove_function("pii_token")
    except duckdb.InvalidInputException:
        pass
    con.create_function("pii_token", token_batch, [VARCHAR], VARCHAR, type="arrow",
                        null_handling="special", side_effects=False)


# --------------------------------------------------------------------------- free text

def re2_escape(text: str) -> str:
    return _RE2_META.sub(r"\\\1", text)


def digits_text_sql(expr: str) -> str:
    """``expr`` with separators inside digit groups removed: "+86 139-1234-5678" becomes
    "+8613912345678", so a phone typed any way contains its digit string."""
    return f"regexp_replace({expr}, '([0-9])[ ().\\-]+', '\\1', 'g')"


def alnum_text_sql(expr: str) -> str:
    return f"upper(regexp_replace({expr}, '[^0-9A-Za-z]', '', 'g'))"
