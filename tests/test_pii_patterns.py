"""The PII scan of the marts gate: phone numbers as people type them, and not ids or hashes."""

import duckdb
import pytest

from customer360.core.masking import SQL_EMAIL_PATTERN, SQL_PHONE_PATTERN


def matches(pattern: str, value: str) -> bool:
    return duckdb.execute(f"SELECT regexp_matches($1, '{pattern}')", [value]).fetchone()[0]


@pytest.mark.parametrize("value", [
    "+86 138-0013-8000", "13800138000", "call 13800138000 now", "tel:13800138000",
    "(212) 555-0101", "020 7946 0018", "9123 9904", "0085291239904", "+1 212 555 0101",
])
def test_phones_as_typed_are_found(value):
    assert matches(SQL_PHONE_PATTERN, value)


@pytest.mark.parametrize("value", [
    "c_0012345678901234", "a1b2-2014-4079-8c1d", "0.0012345678901169", "2026-03-01 10:00:00",
    "T-000123", "1234.5678", "order 100012345678",
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
])
def test_ids_dates_hashes_and_decimals_are_not_phones(value):
    assert not matches(SQL_PHONE_PATTERN, value)


def test_emails_are_found_in_free_text():
    assert matches(SQL_EMAIL_PATTERN, "please write to Ann.Li+news@Mail.example.com today")
    assert not matches(SQL_EMAIL_PATTERN, "c_0012345678901234")
