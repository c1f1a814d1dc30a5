"""normalize_phone and pii_hash, the functions the dbt plugin installs on DuckDB."""

from __future__ import annotations

import hashlib
import hmac

import duckdb
import pytest

from customer360.warehouse.sql_functions import make_pii_hasher, normalize_phone, register_functions


@pytest.mark.parametrize("raw, country, e164", [
    ("+86 138-0013-8000", None, "+8613800138000"),   # international: country not needed
    ("13800138000", "CN", "+8613800138000"),         # national, read in the given country
    ("13800138000", "cn", "+8613800138000"),
    ("0086 138 0013 8000", "CN", "+8613800138000"),  # 00 international prefix
    ("0085269230759", "HK", "+85269230759"),         # 00 typed where the local prefix is 001
    ("011 86 138 0013 8000", "US", "+8613800138000"),
    ("(212) 555-0101", "US", "+12125550101"),        # a test range: possible, kept
    ("9123 4567", "HK", "+85291234567"),
    ("020 7946 0018", "GB", "+442079460018"),
    ("  +44 20 7946 0018  ", "CN", "+442079460018"),  # the country only matters without +
    ("12345", "CN", None),                           # too short to be a whole number
    ("not a phone", "CN", None),
    ("", "CN", None),
    (None, "CN", None),
])
def test_normalize_phone(raw, country, e164):
    assert normalize_phone(raw, country) == e164


def test_functions_on_duckdb_with_the_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("C360_PII_KEY", "k" * 24)
    con = duckdb.connect()
    register_functions(con)
    rows = con.execute("select normalize_phone(p, c), pii_hash(e) from (values "
                       "('13800138000', 'CN', 'ann@mail.com'), (null, 'CN', null)) t(p, c, e)").fetchall()
    assert rows == [("+8613800138000", hmac.new(b"k" * 24, b"ann@mail.com", hashlib.sha256).hexdigest()),
                    (None, None)]
    register_functions(con)  # installing twice replaces, never fails


def test_pii_hash_without_a_key_fails_naming_the_variable(monkeypatch):
    monkeypatch.delenv("C360_PII_KEY", raising=False)
    con = duckdb.connect()
    register_functions(con)  # the phone function works without a key
    assert con.execute("select normalize_phone('+86 138 0013 8000', null)").fetchone()[0] == "+8613800138000"
    with pytest.raises(duckdb.Error, match="C360_PII_KEY"):
        con.execute("select pii_hash('ann@mail.com')").fetchall()


def test_hashes_depend_on_the_key():
    assert make_pii_hasher(b"a" * 16)("x") != make_pii_hasher(b"b" * 16)("x")
