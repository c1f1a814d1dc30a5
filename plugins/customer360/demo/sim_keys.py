"""Identity keys of simulated people: valid phone numbers per country, emails, loyalty ids, and
the ways people and clerks type them ("+86 138-0013-8000", " Ann@Mail.com ", "ly 0001 2345").

Canonical forms (what the ground truth holds): phone E.164, email lowercase and trimmed, loyalty
id upper-case without separators. Every messy variant here parses back to its canonical form
(phonenumbers with the typing country as default region; lower/strip; remove spaces and dashes).
"""

from __future__ import annotations

import numpy as np

# Number ranges that phonenumbers accepts as valid mobile numbers (checked by the tests).
_CN_PREFIXES = np.array([130, 131, 132, 133, 135, 136, 137, 138, 139, 150, 151, 152, 155, 156,
                         157, 158, 159, 176, 177, 178, 180, 181, 182, 183, 185, 186, 187, 188, 189])
_HK_PREFIXES = np.array([61, 63, 64, 65, 69, 94, 96, 97])
_US_AREAS = np.array([212, 646, 718, 917, 347, 617, 857, 415, 312, 206, 305, 213])
CALLING_CODE = {"CN": "86", "HK": "852", "JP": "81", "GB": "44", "US": "1"}


def _unique_ints(rng: np.random.Generator, space: int, n: int) -> np.ndarray:
    return rng.choice(space, size=n, replace=False) if n else np.zeros(0, dtype=np.int64)


def national_numbers(rng: np.random.Generator, country: str, n: int) -> list[str]:
    """``n`` distinct national significant numbers (no trunk prefix) valid for ``country``."""
    if country == "CN":
        k = _unique_ints(rng, len(_CN_PREFIXES) * 10**8, n)
        return [f"{p}{s:08d}" for p, s in zip(_CN_PREFIXES[k // 10**8], k % 10**8)]
    if country == "HK":
        k = _unique_ints(rng, len(_HK_PREFIXES) * 10**6, n)
        return [f"{p}{s:06d}" for p, s in zip(_HK_PREFIXES[k // 10**6], k % 10**6)]
    if country == "JP":
        k = _unique_ints(rng, 3 * 9 * 10**7, n)
        return [f"{(7, 8, 9)[a]}0{b + 1}{s:07d}"
                for a, b, s in zip(k // (9 * 10**7), (k // 10**7) % 9, k % 10**7)]
    if country == "GB":
        k = _unique_ints(rng, 7 * 10**7, n)
        return [f"77{a + 1}{s:07d}" for a, s in zip(k // 10**7, k % 10**7)]
    if country == "US":
        k = _unique_ints(rng, len(_US_AREAS) * 8 * 10**6, n)
        return [f"{_US_AREAS[a]}{e + 2}{s:06d}"
                for a, e, s in zip(k // (8 * 10**6), (k // 10**6) % 8, k % 10**6)]
    raise ValueError(f"no phone plan for {country}")


def phone_variants(nsn: str, country: str) -> tuple[list[str], list[str]]:
    """(national-style variants, international-style variants) of one number as people type it.
    National ones only parse with the right default region, so they are used only where the
    typing happens in the number's own country."""
    cc = CALLING_CODE[country]
    if country == "CN":
        a, b, c = nsn[:3], nsn[3:7], nsn[7:]
        national = [nsn, f"{a}-{b}-{c}", f"{a} {b} {c}"]
        intl = [f"+{cc} {a}-{b}-{c}", f"+{cc} {a} {b} {c}", f"00{cc} {nsn}", f"+{cc}{nsn}"]
    elif country == "HK":
        a, b = nsn[:4], nsn[4:]
        national = [nsn, f"{a} {b}", f"{a}-{b}"]
        intl = [f"+{cc} {a} {b}", f"(+{cc}) {nsn}", f"00{cc}{nsn}"]
    elif country == "JP":
        a, b, c = nsn[:2], nsn[2:6], nsn[6:]
        national = [f"0{a}-{b}-{c}", f"0{nsn}", f"0{a} {b} {c}"]
        intl = [f"+{cc} {a}-{b}-{c}", f"+{cc} {a} {b} {c}", f"+{cc}{nsn}"]
    elif country == "GB":
        a, b = nsn[:4], nsn[4:]
        national = [f"0{a} {b}", f"0{nsn}", f"0{a}-{b}"]
        intl = [f"+{cc} {a} {b}", f"+{cc}{nsn}", f"00{cc} {a} {b}"]
    else:  # US
        a, b, c = nsn[:3], nsn[3:6], nsn[6:]
        national = [f"({a}) {b}-{c}", f"{a}-{b}-{c}", nsn, f"{a}.{b}.{c}"]
        intl = [f"+{cc} {a}-{b}-{c}", f"+{cc} ({a}) {b}-{c}", f"+{cc}{nsn}"]
    return national, intl


def messy_phones(nsn: np.ndarray, country: np.ndarray, same_country: np.ndarray,
                 pick: np.ndarray) -> np.ndarray:
    """One messy typing per row; ``pick`` are uniforms in [0, 1) choosing the variant."""
    out = np.empty(len(nsn), dtype=object)
    for i, (n, c, local, u) in enumerate(zip(nsn, country, same_country, pick)):
        national, intl = phone_variants(n, c)
        pool = national + intl if local else intl
        out[i] = pool[int(u * len(pool))]
    return out


def e164(nsn: np.ndarray, country: np.ndarray) -> np.ndarray:
    return np.array([f"+{CALLING_CODE[c]}{n}" for n, c in zip(nsn, country)], dtype=object)


# How people type their country into a free-text field (the ISO code is what the ground truth
# holds). "Hong Kong, China" and "England" are deliberate traps for a naive name lookup.
COUNTRY_TEXT = {
    "CN": ["China", "中国", "PRC", "People's Republic of China", "china", "Mainland China",
           "中华人民共和国", " China "],
    "HK": ["Hong Kong", "香港", "Hong Kong SAR", "Hong Kong, China", "hong kong"],
    "JP": ["Japan", "日本", "japan", "JAPAN"],
    "GB": ["United Kingdom", "UK", "England", "Great Britain", "U.K.", "united kingdom",
           "英国"],
    "US": ["United States", "USA", "United States of America", "U.S.", "U.S.A.", "美国",
           "usa"],
}

# Phone fields no parser can read: placeholders typed instead of a number, and numbers typed
# short (phonenumbers raises, or the number is not valid in any region).
UNPARSEABLE_PHONE_TEXT = ["n/a", "N/A", "none", "-", "ask at till", "see notes", "不详", "无",
                          "tbd", "0"]

# Landline area codes (national significant number prefix, subscriber digits, first digits).
_LANDLINE_PLAN = {
    "CN": [("21", 8, "56"), ("10", 8, "568"), ("20", 8, "38"), ("755", 8, "28")],
    "HK": [("", 8, "23")],
    "JP": [("3", 8, "56"), ("6", 8, "6")],
    "GB": [("20", 8, "37"), ("161", 7, "2"), ("131", 7, "2")],
    "US": [(str(a), 7, "2345678") for a in (212, 718, 617, 415, 312, 206)],
}


def free_text_countries(country: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """One free-text spelling per row of the ISO ``country`` (``pick`` uniforms in [0, 1))."""
    out = np.empty(len(country), dtype=object)
    for i, (c, u) in enumerate(zip(country, pick)):
        pool = COUNTRY_TEXT[c]
        out[i] = pool[int(u * len(pool))]
    return out


def landline_numbers(rng: np.random.Generator, country: np.ndarray,
                     taken: set[str] = frozenset()) -> np.ndarray:
    """A distinct valid fixed-line national significant number per row (none in ``taken``,
    a set of E.164 numbers)."""
    import phonenumbers

    out = np.empty(len(country), dtype=object)
    seen = set(taken)
    for i, c in enumerate(country):
        plan = _LANDLINE_PLAN[c]
        while True:
            area, digits, first = plan[int(rng.integers(len(plan)))]
            sub = first[int(rng.integers(len(first)))] + "".join(
                str(d) for d in rng.integers(0, 10, size=digits - 1))
            nsn = area + sub
            e = f"+{CALLING_CODE[c]}{nsn}"
            if e not in seen and phonenumbers.is_valid_number(phonenumbers.parse(e, None)):
                seen.add(e)
                out[i] = nsn
                break
    return out


def landline_national(nsn: str, country: str, pick: float) -> str:
    """A landline as typed in its own country: "(021) 6234-5678", "020 7946 0958", "03-5123-4567"."""
    if country == "CN":
        area = nsn[:-8]
        a, b = nsn[-8:-4], nsn[-4:]
        pool = [f"(0{area}) {a}-{b}", f"0{area}-{a}{b}", f"0{area} {a} {b}", f"0{area}-{a}-{b}"]
    elif country == "HK":
        pool = [f"{nsn[:4]} {nsn[4:]}", f"{nsn[:4]}-{nsn[4:]}", nsn]
    elif country == "JP":
        area, rest = nsn[:-8], nsn[-8:]
        pool = [f"0{area}-{rest[:4]}-{rest[4:]}", f"(0{area}) {rest[:4]}-{rest[4:]}", f"0{nsn}"]
    elif country == "GB":
        if nsn.startswith("20"):
            pool = [f"020 {nsn[2:6]} {nsn[6:]}", f"(020) {nsn[2:6]} {nsn[6:]}",
                    f"0{nsn[:3]} {nsn[3:6]} {nsn[6:]}"]
        else:
            pool = [f"0{nsn[:3]} {nsn[3:6]} {nsn[6:]}", f"(0{nsn[:3]}) {nsn[3:]}", f"0{nsn}"]
    else:  # US
        pool = [f"({nsn[:3]}) {nsn[3:6]}-{nsn[6:]}", f"{nsn[:3]}-{nsn[3:6]}-{nsn[6:]}",
                f"{nsn[:3]}.{nsn[3:6]}.{nsn[6:]}"]
    return pool[int(pick * len(pool))]


def national_phones(nsn: np.ndarray, country: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """One national-format typing per row ("138 0013 8000", "07712 345678", "(212) 734-5678"):
    these parse only with the number's own country as the default region."""
    out = np.empty(len(nsn), dtype=object)
    for i, (n, c, u) in enumerate(zip(nsn, country, pick)):
        national, _ = phone_variants(n, c)
        if c == "CN":
            national = national + [f"{n[:3]} {n[3:7]} {n[7:]}"]
        elif c == "GB":
            national = national + [f"0{n[:4]} {n[4:]}"]
        out[i] = national[int(u * len(national))]
    return out


def unparseable_phones(nsn: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """Phone fields that hold no readable number: a placeholder, or the number typed short."""
    out = np.empty(len(nsn), dtype=object)
    for i, (n, u) in enumerate(zip(nsn, pick)):
        k = int(u * (len(UNPARSEABLE_PHONE_TEXT) + 2))
        if k < len(UNPARSEABLE_PHONE_TEXT):
            out[i] = UNPARSEABLE_PHONE_TEXT[k]
        elif k == len(UNPARSEABLE_PHONE_TEXT):
            out[i] = f"{n[:3]} {n[3:6]}"        # typed short
        else:
            out[i] = f"{n[:4]} ext."
    return out


def messy_emails(email: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """Case changes and stray spaces, as typed at a till or in a sign-up form."""
    out = np.empty(len(email), dtype=object)
    for i, (e, u) in enumerate(zip(email, pick)):
        local, _, domain = e.partition("@")
        k = int(u * 5)
        if k == 0:
            out[i] = f" {local.title()}@{domain.title()} "
        elif k == 1:
            out[i] = e.upper()
        elif k == 2:
            out[i] = f"{e} "
        elif k == 3:
            out[i] = f" {local[:1].upper()}{local[1:]}@{domain}"
        else:
            out[i] = f"{local.title()}@{domain}"
    return out


def messy_loyalty(loyalty: np.ndarray, pick: np.ndarray) -> np.ndarray:
    out = np.empty(len(loyalty), dtype=object)
    for i, (v, u) in enumerate(zip(loyalty, pick)):
        digits = v[2:]
        k = int(u * 5)
        out[i] = (f"ly {digits[:4]} {digits[4:]}", f"LY-{digits}", f" {v}", v.lower(),
                  f"LY {digits[:4]} {digits[4:]}")[k]
    return out


def normalize_email(values: np.ndarray) -> np.ndarray:
    return np.array([v.strip().lower() for v in values], dtype=object)


def normalize_loyalty(values: np.ndarray) -> np.ndarray:
    return np.array([v.replace(" ", "").replace("-", "").upper() for v in values], dtype=object)
