"""Country as people type it ("China", "United Kingdom", "UK", "中国", "cn", "Hong Kong") to
ISO-3166 alpha-2 ("CN", "GB", "HK").

CRM ``country`` is free text (docs/sources.md section 1), and a national phone number can only be
read with its country's code. Names come from the Unicode CLDR through Babel (already installed
with dbt-core, pinned in requirements.in for this): every territory's name in English,
Simplified and Traditional Chinese, and CLDR's alias table (alpha-3 codes such as ``GBR``, old
codes such as ``UK``). :data:`ALIASES` adds the everyday names CLDR does not spell ("UK",
"Great Britain", "USA", "Hong Kong", "Mainland China", "Korea"...). Anything else is None: an
unknown country is better than a wrong one (the phone then needs its +country code).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Everyday names CLDR's territory names do not cover, keyed as :func:`_key` writes them.
ALIASES: dict[str, str] = {
    # United Kingdom
    "uk": "GB", "u k": "GB", "great britain": "GB", "britain": "GB", "england": "GB",
    "scotland": "GB", "wales": "GB", "northern ireland": "GB", "united kingdom of great britain "
    "and northern ireland": "GB", "英国": "GB", "英國": "GB",
    # United States
    "usa": "US", "us": "US", "u s a": "US", "u s": "US", "america": "US",
    "united states of america": "US",
    # China and its SARs, Taiwan
    "prc": "CN", "p r c": "CN", "mainland china": "CN", "china mainland": "CN",
    "people s republic of china": "CN", "peoples republic of china": "CN", "中华人民共和国": "CN",
    "中國": "CN", "中国大陆": "CN", "中國大陸": "CN", "大陆": "CN", "内地": "CN",
    "hong kong": "HK", "hongkong": "HK", "hong kong sar": "HK", "hong kong china": "HK",
    "香港": "HK", "中国香港": "HK", "中國香港": "HK",
    "macau": "MO", "macao": "MO", "macau sar": "MO", "macao sar": "MO", "澳门": "MO", "澳門": "MO",
    "中国澳门": "MO", "taiwan": "TW", "台湾": "TW", "台灣": "TW", "中国台湾": "TW", "中華民國": "TW",
    # Others often typed short
    "korea": "KR", "south korea": "KR", "republic of korea": "KR", "韩国": "KR", "韓國": "KR",
    "north korea": "KP", "russia": "RU", "vietnam": "VN", "viet nam": "VN", "uae": "AE",
    "holland": "NL", "the netherlands": "NL", "czech republic": "CZ", "turkey": "TR",
    "ivory coast": "CI", "laos": "LA", "iran": "IR", "syria": "SY", "bolivia": "BO",
    "venezuela": "VE", "tanzania": "TZ", "moldova": "MD", "brunei": "BN", "burma": "MM",
}
# Two-letter CLDR territories that are not countries (EU, UN, unknown...), never an answer.
_NOT_COUNTRIES = {"EU", "EZ", "UN", "QO", "XA", "XB", "ZZ"}
_LOCALES = ("en", "zh_Hans", "zh_Hant")
_SEPARATORS = re.compile(r"[\s.,'’()\-_/]+")


def _key(text: str) -> str:
    """Case, width, accents, dots and spacing folded: " U.K. " -> "u k", "Côte d’Ivoire" ->
    "cote d ivoire"; CJK text is kept as it is (only width-folded)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = "".join(c for c in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(c))
    return _SEPARATORS.sub(" ", folded).strip()


@lru_cache(maxsize=1)
def _tables() -> tuple[frozenset[str], dict[str, str]]:
    from babel import Locale
    from babel.core import get_global

    codes: set[str] = set()
    names: dict[str, str] = {}
    for locale in _LOCALES:
        for code, name in Locale.parse(locale).territories.items():
            if len(code) == 2 and code.isalpha() and code not in _NOT_COUNTRIES:
                codes.add(code)
                names.setdefault(_key(name), code)
    for alias, targets in get_global("territory_aliases").items():
        # alpha-3 (GBR) and retired codes (UK); only aliases naming one country
        if alias.isalpha() and len(targets) == 1 and targets[0] in codes:
            names.setdefault(_key(alias), targets[0])
    for alias, code in ALIASES.items():
        names[_key(alias)] = code  # ours win: "us" is the United States, not a word
    return frozenset(codes), names


@lru_cache(maxsize=100_000)
def country_code(text: str | None) -> str | None:
    """ISO-3166 alpha-2 of a country as typed, or None when it is empty or not recognized."""
    if text is None:
        return None
    stripped = text.strip()
    if not stripped:
        return None
    codes, names = _tables()
    if len(stripped) == 2 and stripped.isascii() and stripped.isalpha():
        code = stripped.upper()
        if code in codes:
            return code
        return ALIASES.get(stripped.lower())  # "uk"
    key = _key(stripped)
    found = names.get(key)
    if found is None and key.startswith("the "):
        found = names.get(key[4:])
    return found
