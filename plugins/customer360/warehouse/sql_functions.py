"""Scalar functions the warehouse SQL needs but cannot express well: E.164 phone numbers, ISO
countries from free text and keyed PII hashes.

``register_functions(con)`` installs them on any DuckDB connection as ``normalize_phone(raw,
country)``, ``normalize_country(text)`` and ``pii_hash(value)``, with the POS amount macros
(``c360_pos_amount``, :mod:`customer360.ingest.landing.pos_amounts`); the dbt project gets them through the dbt-duckdb plugin in
:mod:`customer360.warehouse.dbt_plugin`. They are vectorized over Arrow batches and cached per distinct
value, because the same phone or email repeats on many rows.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import lru_cache
from typing import Callable

import duckdb
import phonenumbers
from phonenumbers.phonenumberutil import ValidationResult
import pyarrow as pa
from duckdb.sqltypes import VARCHAR

from customer360.core.countries import country_code
from customer360.ingest.landing.pos_amounts import install_amount_macros
from customer360.core.settings import SettingsError, get_settings

_CACHE_SIZE = 500_000
_FULL_NUMBER = ValidationResult.IS_POSSIBLE
_NON_DIGITS = re.compile(r"\D")


def _full_number(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    # "possible" (a full-length number of its country) rather than "valid" (an allocated
    # range): test ranges such as 555-01xx are real keys for linking, while local-only
    # fragments ("12345", an 8-digit Beijing number with no area code) are not.
    if phonenumbers.is_possible_number_with_reason(number) != _FULL_NUMBER:
        return None
    return number


@lru_cache(maxsize=_CACHE_SIZE)
def normalize_phone(raw: str | None, country: str | None) -> str | None:
    """``raw`` as typed ("+86 138-0013-8000", "13800138000", "(212) 555-0101") to E.164.

    ``country`` (the contact's or the store's: ISO-3166 alpha-2, or a name as typed, "China",
    "United Kingdom", "中国", read by :func:`customer360.core.countries.country_code`) says how
    to read a number typed without its country code. Returns None when the text cannot be a phone number of
    that country: an unusable key is better than a wrong link.
    """
    if raw is None:
        return None
    text = raw.strip()
    if not text:
        return None
    region = country_code(country)
    # "00" is the international prefix almost everywhere, so people type it even where the
    # local one differs (Hong Kong dials 001): "0085269230759" is +852 6923 0759. No national
    # number starts with 00, so that reading goes first.
    digits = _NON_DIGITS.sub("", text)
    number = _full_number("+" + digits[2:], None) if digits.startswith("00") else None
    if number is None:
        number = _full_number(text, region)
    if number is None:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def make_pii_hasher(key: bytes) -> Callable[[str | None], str | None]:
    """An HMAC-SHA256 (hex) pseudonymizer for one secret key, cached per distinct value."""

    @lru_cache(maxsize=_CACHE_SIZE)
    def pii_hash(value: str | None) -> str | None:
        if value is None:
            return None
        return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()

    return pii_hash


def _missing_key_hasher(reason: str) -> Callable[[str | None], str | None]:
    def pii_hash(value: str | None) -> str | None:
        raise SettingsError(reason)

    return pii_hash


def phone_batch(raw: pa.Array, country: pa.Array) -> pa.Array:
    """normalize_phone over one Arrow batch (both engines' SQL function)."""
    return pa.array([normalize_phone(r, c) for r, c in zip(raw.to_pylist(), country.to_pylist())],
                    type=pa.string())


def country_batch(values: pa.Array) -> pa.Array:
    """normalize_country over one Arrow batch."""
    return pa.array([country_code(v) for v in values.to_pylist()], type=pa.string())


def hash_batch(hasher: Callable[[str | None], str | None]) -> Callable[[pa.Array], pa.Array]:
    """pii_hash over one Arrow batch, for one hasher."""
    def batch(values: pa.Array) -> pa.Array:
        return pa.array([hasher(v) for v in values.to_pylist()], type=pa.string())

    return batch


def hasher_for_settings() -> Callable[[str | None], str | None]:
    """``pii_hash`` for the key in ``C360_PII_KEY``; when it is missing, one that fails on
    first use with a message naming the variable (never a value), so models that hash
    nothing still build. Both engines' ``pii_hash`` come from here."""
    try:
        return make_pii_hasher(get_settings().pii_key())
    except SettingsError as exc:
        return _missing_key_hasher(str(exc))


def register_functions(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``normalize_phone(VARCHAR, VARCHAR)``, ``normalize_country(VARCHAR)`` and
    ``pii_hash(VARCHAR)`` on ``con``.

    The PII key is read from ``C360_PII_KEY`` now; when it is missing, ``pii_hash`` fails on
    first use with a message naming the variable (never a value), so models that hash nothing
    still build.
    """
    for name, fn, params in (("normalize_phone", phone_batch, [VARCHAR, VARCHAR]),
                             ("normalize_country", country_batch, [VARCHAR]),
                             ("pii_hash", hash_batch(hasher_for_settings()), [VARCHAR])):
        try:
            con.remove_function(name)
        except duckdb.InvalidInputException:
            pass  # not registered yet on this connection
        con.create_function(name, fn, params, VARCHAR, type="arrow",
                            null_handling="special", side_effects=False)
    # Staging reads till amounts by the POS loader's own rule (one owner: pos_amounts).
    install_amount_macros(con)
