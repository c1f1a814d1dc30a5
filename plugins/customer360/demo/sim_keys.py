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
