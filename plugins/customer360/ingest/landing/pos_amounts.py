"""How a till's amount text reads as a number: the one rule for the POS loader, the landing
validator, the raw gate and staging (docs/sources.md section 3).

Tills print amounts the way their store's locale writes them: "1,299.00", "¥88.00",
"HK$1,299.00", "-£12.50", or "1.299,00 €" where the decimal mark is a comma. The raw zone
keeps the text as sent; everything that reads a value goes through the DuckDB macros that
:func:`install_amount_macros` creates, so the loader can never accept a value staging then
reads as null (or the other way round):

- ``c360_pos_amount(text, country)``: the amount as DECIMAL(18, 2), NULL when it is not one;
- ``c360_pos_amount_problem(text, country, currency, column)``: why the loader quarantines it
  (NULL when it is fine): not a number in the store's locale, or a currency sign that does not
  fit the row's ``currency``.

``country`` is the store's ISO country from stores.csv; it says which mark is the decimal one.
A NULL country (products.csv, which belongs to no store) reads a dot as the decimal mark.
"""

from __future__ import annotations

from functools import lru_cache

import duckdb

from customer360.core.duck import sql_str

# Currency signs a till may print, and the ISO currencies each can stand for. "$" and "¥" are
# ambiguous on purpose: "$88" in a Hong Kong store is HKD, "¥88" in Tokyo is JPY. CLDR lists a
# symbol per (currency, locale), not the reverse "which currencies may this sign mean", so the
# table is written out here; an ISO code typed as the sign ("CNY 88.00") means itself.
CURRENCY_SIGNS: dict[str, tuple[str, ...]] = {
    "¥": ("CNY", "JPY"), "￥": ("CNY", "JPY"), "CN¥": ("CNY",), "RMB": ("CNY",), "元": ("CNY",),
    "JP¥": ("JPY",), "円": ("JPY",),
    "$": ("USD", "HKD", "TWD", "SGD", "AUD", "CAD", "NZD", "MXN"), "US$": ("USD",),
    "HK$": ("HKD",), "NT$": ("TWD",), "S$": ("SGD",), "A$": ("AUD",), "C$": ("CAD",),
    "£": ("GBP",), "€": ("EUR",), "₩": ("KRW",), "₹": ("INR",), "CHF": ("CHF",),
}

# sign before, currency sign, sign after it, the digits with their separators, currency sign after
_AMOUNT = (r"^([+-]?)\s*([^\d\s.,+-]*)\s*([+-]?)\s*(\d(?:[\d.,\s\x{a0}\x{202f}]*[\d.,])?|[.,]\d+)"
           r"\s*([^\d\s.,+-]*)$")
# Group separators: the other mark, and for comma-decimal locales the (no-break) spaces
# French and others group with.
_DOT_DECIMAL = r"\d{1,3}(,\d{3})+(\.\d*)?|\d+(\.\d*)?|\.\d+"
_COMMA_DECIMAL = r"\d{1,3}([.\s\x{a0}\x{202f}]\d{3})+(,\d*)?|\d+(,\d*)?|,\d+"


@lru_cache(maxsize=1)
def comma_decimal_countries() -> tuple[str, ...]:
    """Countries whose main official language writes a decimal comma (CLDR, through Babel):
    DE, FR, ES, IT, BR, RU... but not CH, GB, US, CN, HK, JP."""
    import babel
    from babel.core import get_global
    from babel.numbers import get_decimal_symbol

    out = []
    for territory, languages in get_global("territory_languages").items():
        official = [(info.get("population_percent", 0), lang)
                    for lang, info in languages.items() if info.get("official_status")]
        if not official:
            continue
        lang = max(official)[1]
        for name in (f"{lang}_{territory}", lang):
            try:
                locale = babel.Locale.parse(name)
                break
            except (ValueError, babel.UnknownLocaleError):
                locale = None
        if locale is not None and get_decimal_symbol(locale) == ",":
            out.append(territory)
    return tuple(sorted(out))


def _list(values) -> str:
    return "[" + ", ".join(sql_str(v) for v in values) + "]::VARCHAR[]"


def macros_sql() -> list[str]:
    """The CREATE MACRO statements (temporary: they belong to the connection, not a database)."""
    signs = " ".join(f"WHEN {sql_str(s)} THEN {_list(c)}" for s, c in CURRENCY_SIGNS.items())
    return [
        f"""CREATE OR REPLACE TEMP MACRO c360_pos_amount_parts(txt) AS
            regexp_extract(trim(txt), {sql_str(_AMOUNT)}, ['s1', 'pre', 's2', 'num', 'post'])""",
        f"""CREATE OR REPLACE TEMP MACRO c360_pos_comma_decimal(country) AS
            coalesce(list_contains({_list(comma_decimal_countries())}, upper(trim(country))),
                     false)""",
        """CREATE OR REPLACE TEMP MACRO c360_pos_sign_of(p) AS
            CASE WHEN p.pre <> '' AND p.post <> '' THEN NULL ELSE p.pre || p.post END""",
        """CREATE OR REPLACE TEMP MACRO c360_pos_currency_sign(txt) AS
            c360_pos_sign_of(c360_pos_amount_parts(txt))""",
        f"""CREATE OR REPLACE TEMP MACRO c360_pos_sign_currencies(sign) AS
            CASE sign {signs}
                 WHEN '' THEN NULL
                 ELSE CASE WHEN regexp_full_match(sign, '[A-Z]{{3}}') THEN [sign] END END""",
        f"""CREATE OR REPLACE TEMP MACRO c360_pos_amount_of(p, country) AS
            CASE
                WHEN p.num IS NULL OR p.num = '' OR (p.s1 <> '' AND p.s2 <> '')
                     OR (p.pre <> '' AND p.post <> '') THEN NULL
                WHEN p.pre || p.post <> '' AND c360_pos_sign_currencies(p.pre || p.post) IS NULL
                     THEN NULL
                WHEN c360_pos_comma_decimal(country) THEN
                     CASE WHEN regexp_full_match(p.num, {sql_str(_COMMA_DECIMAL)})
                          THEN try_cast(p.s1 || p.s2 || replace(regexp_replace(
                                   p.num, '[.\\s\\x{{a0}}\\x{{202f}}]', '', 'g'), ',', '.')
                               AS DECIMAL(18, 2)) END
                ELSE CASE WHEN regexp_full_match(p.num, {sql_str(_DOT_DECIMAL)})
                          THEN try_cast(p.s1 || p.s2 || replace(p.num, ',', '')
                               AS DECIMAL(18, 2)) END
            END""",
        """CREATE OR REPLACE TEMP MACRO c360_pos_amount(txt, country) AS
            c360_pos_amount_of(c360_pos_amount_parts(txt), country)""",
        """CREATE OR REPLACE TEMP MACRO c360_pos_amount_problem(txt, country, currency, col) AS
            CASE
              WHEN c360_pos_amount(txt, country) IS NULL
                THEN col || ' is not a number: '
                     || coalesce('''' || left(txt, 40) || '''', 'null')
                     || CASE WHEN c360_pos_comma_decimal(country)
                             THEN ' (store country ' || upper(trim(country))
                                  || ' writes a decimal comma)' ELSE '' END
              WHEN c360_pos_currency_sign(txt) <> '' AND NOT coalesce(list_contains(
                       c360_pos_sign_currencies(c360_pos_currency_sign(txt)),
                       upper(trim(currency))), false)
                THEN col || ' has the currency sign ''' || c360_pos_currency_sign(txt)
                     || ''' but currency is ' || coalesce('''' || trim(currency) || '''', 'null')
            END""",
    ]


def install_amount_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Create the amount macros on ``con`` (idempotent)."""
    for statement in macros_sql():
        con.execute(statement)
