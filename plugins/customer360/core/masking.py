"""Masking of personal data in anything the gates write down (samples, observed values, events).

Gate failures have to show offending values so that a data engineer can act, but the audit
store, the Data Docs and the task log must hold nothing personal. Emails keep their first
letters and top-level domain (``a***@m***.com``), phone numbers their country code and last
four digits (``+86*******8000``), and values of columns known to be personal keep only their
first character. Masking errs on the side of hiding: an id that looks like a phone number is
masked too.

Free text (ticket contents, survey comments) also carries Chinese resident identity numbers
and names after a greeting ("Dear Ann Lee", "王先生", "您好，李娜"). ``mask_text`` masks
those as well; ``mask_text(text, placeholders=True)`` replaces each finding by a tag such as
``[email]`` instead, for text that is published (a partial mask of a name still narrows it).
"""

from __future__ import annotations

import re
from typing import Any

from customer360.core.settings import secret_values

EMAIL_RE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# Phone numbers as people type them: with a country code (+86 138-0013-8000), a Chinese
# mobile number (13800138000), or digit groups with separators (021-6123-4567). A bare run of
# digits is not masked: ids and amounts look like that too.
PHONE_RE = re.compile(
    r"(?<![\w.+])(?:\+\d(?:[ \-()]*\d){6,14}|1[3-9]\d{9}|\(?\d{2,4}\)?(?:[ \-]\d{2,4}){2,4})(?![\w])")
# Dates and times also look like digit runs but are not personal: matched first, kept as they are.
_DATE_OR_PHONE = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?|\d{2}:\d{2}:\d{2})"
    r"|(?P<phone>" + PHONE_RE.pattern + ")")

# GB 11643-1999 citizen identity numbers: 6-digit region, birth date, sequence, check character.
# Only those whose birth date and ISO 7064 MOD 11-2 check character agree are masked: 18-digit
# order and transaction ids are common in the same texts and must stay readable.
RESIDENT_ID_RE = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![0-9A-Za-z])")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
# A name is whatever follows a greeting or precedes an honorific; no library segments names
# in free text in both languages offline, and the greeting is what marks a name here.
_EN_GREETING_NAME = re.compile(
    r"\b(?P<lead>(?:Dear|Hi|Hello|Hey|Attn:?)\s+(?:(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.?\s+)?)"
    r"(?P<name>[A-Z][A-Za-z'\-]+(?:\s+[A-Z][A-Za-z'\-]+){0,2})")
_ZH_HONORIFIC_NAME = re.compile(r"(?P<name>[\u4e00-\u9fff]{1,2})(?P<lead>先生|女士|小姐|太太)")
_ZH_GREETING_NAME = re.compile(
    r"(?P<lead>(?:您好|你好|尊敬的|亲爱的|親愛的)[，,：:\s]*)(?P<name>[\u4e00-\u9fff]{2,3})(?=[，,。！!：:\s]|$)")


def is_resident_id(value: str) -> bool:
    """Whether an 18-character string is a GB 11643 identity number with a valid check character."""
    if not RESIDENT_ID_RE.fullmatch(value):
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == value[17].upper()


# The same patterns as DuckDB regular expressions (RE2), for scanning whole tables in SQL.
SQL_EMAIL_PATTERN = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
# Phone numbers as people type them: E.164 / international ("+86 138-0013-8000",
# "0085291239904"), Chinese mobiles ("13800138000"), and national numbers written with
# separators ("(212) 555-0101", "020 7946 0018", "9123 9904"). Bounded by characters that
# are not letters, digits, "_", "." or "-", so that hex hashes, ids such as "c_0012...", UUID
# groups ("a1b2-2014-4079") and decimals ("0.00123...") do not match.
SQL_PHONE_PATTERN = (r"(^|[^0-9A-Za-z_.\-])("
                     r"\+[1-9][0-9 \-]{7,17}[0-9]"
                     r"|00[1-9][0-9]{8,13}"
                     r"|1[3-9][0-9][ \-]?[0-9]{4}[ \-]?[0-9]{4}"
                     r"|\(?0?[1-9][0-9]{1,3}\)?[ \-][0-9]{3,4}[ \-][0-9]{4}"
                     r"|[2-9][0-9]{3}[ \-][0-9]{4}"
                     r")($|[^0-9A-Za-z_.\-])")

_SCAN_PHONE_RE = re.compile(SQL_PHONE_PATTERN)


def mask_email(value: str) -> str:
    local, _, domain = value.strip().partition("@")
    host, _, tld = domain.rpartition(".")
    return f"{local[:1]}***@{host[:1]}***.{tld}"


def mask_phone(value: str) -> str:
    digits = re.sub(r"\D", "", value)
    plus = "+" if value.strip().startswith("+") else ""
    keep_head = 2 if len(digits) > 8 else 1
    hidden = max(len(digits) - keep_head - 4, 1)
    return f"{plus}{digits[:keep_head]}{'*' * hidden}{digits[-4:]}"


def _mask_phone_match(match: re.Match) -> str:
    text = match.group(0)
    if match.group("date") is not None or len(re.sub(r"\D", "", text)) < 7:
        return text
    return mask_phone(text)


def _names(text: str, placeholder: str | None) -> str:
    def english(m: re.Match) -> str:
        return m.group("lead") + (placeholder or f"{m.group('name')[:1]}***")

    def chinese_before(m: re.Match) -> str:
        return (placeholder or "*" * len(m.group("name"))) + m.group("lead")

    def chinese_after(m: re.Match) -> str:
        return m.group("lead") + (placeholder or "*" * len(m.group("name")))

    text = _EN_GREETING_NAME.sub(english, text)
    text = _ZH_GREETING_NAME.sub(chinese_after, text)
    return _ZH_HONORIFIC_NAME.sub(chinese_before, text)


class KnownNames:
    """The names a business knows (its CRM contacts' first and last names), to mask wherever
    they appear in free text, greeting or not ("My friend Zelda Quist recommended you").

    Latin names match whole capitalised words; Chinese names (family name + given name, and
    given names of two characters or more) match inside a run of Han characters. Lookups are
    set memberships, not one regular expression of every name: 100k contacts would make that
    alternation too slow to run on every text."""

    _WORD = re.compile(r"[A-Z][A-Za-z'\-]+")
    _HAN_RUN = re.compile(r"[\u4e00-\u9fff]{2,}")

    def __init__(self, pairs):
        """``pairs``: (first_name, last_name) tuples, either may be None."""
        self.latin: set[str] = set()
        self.han: set[str] = set()
        for first, last in pairs:
            for part in (first, last):
                part = (part or "").strip()
                if len(part) >= 2 and part.isascii() and part.isalpha():
                    self.latin.add(part.lower())
            first, last = (first or "").strip(), (last or "").strip()
            if first and _CJK_NAME.fullmatch(first):
                if last and _CJK_NAME.fullmatch(last):
                    self.han.add(last + first)
                if len(first) >= 2:
                    self.han.add(first)
        self.longest = max((len(n) for n in self.han), default=0)

    def sub(self, text: str, placeholder: str = "[name]") -> str:
        if self.latin:
            text = self._WORD.sub(lambda m: placeholder if m.group(0).lower() in self.latin else m.group(0), text)
        if self.han:
            text = self._HAN_RUN.sub(lambda m: self._han_sub(m.group(0), placeholder), text)
        return text

    def _han_sub(self, run: str, placeholder: str) -> str:
        out, i = [], 0
        while i < len(run):
            for size in range(min(self.longest, len(run) - i), 1, -1):
                if run[i:i + size] in self.han:
                    out.append(placeholder)
                    i += size
                    break
            else:
                out.append(run[i])
                i += 1
        return "".join(out)


_CJK_NAME = re.compile(r"[\u4e00-\u9fff]{1,4}")


def mask_text(text: str, *, placeholders: bool = False, names: KnownNames | None = None) -> str:
    """Mask every email address, phone-number-like digit run, valid resident identity number
    and name after a greeting inside ``text``, and every name in ``names``. With
    ``placeholders`` each is replaced by ``[email]``, ``[phone]``, ``[id]`` or ``[name]``."""
    def resident_id(m: re.Match) -> str:
        if not is_resident_id(m.group(0)):
            return m.group(0)
        return "[id]" if placeholders else f"{m.group(0)[:1]}{'*' * 16}{m.group(0)[-1:]}"

    def phone(m: re.Match) -> str:
        masked = _mask_phone_match(m)
        return "[phone]" if placeholders and masked != m.group(0) else masked

    text = EMAIL_RE.sub(lambda m: "[email]" if placeholders else mask_email(m.group(0)), text)
    text = RESIDENT_ID_RE.sub(resident_id, text)
    text = _DATE_OR_PHONE.sub(phone, text)
    # then whatever the published-table scan (marts gate pii_scan) would call a phone, so that
    # masked text always passes it: short national numbers such as "9123 9904"
    text = _SCAN_PHONE_RE.sub(lambda m: m.group(1) + ("[phone]" if placeholders else mask_phone(m.group(2)))
                              + m.group(3), text)
    text = _names(text, "[name]" if placeholders else None)
    return names.sub(text, "[name]" if placeholders else "***") if names is not None else text


def mask_personal(value: Any) -> str | None:
    """A value from a column known to be personal: show only its shape."""
    if value is None:
        return None
    text = str(value)
    if EMAIL_RE.fullmatch(text.strip()):
        return mask_email(text)
    if PHONE_RE.fullmatch(text.strip()):
        return mask_phone(text)
    return f"{text[:1]}***" if text else text


def mask_value(value: Any, personal: bool = False) -> Any:
    """Mask a sample value: strings are scanned for emails and phones; others pass through."""
    if personal:
        return mask_personal(value)
    if isinstance(value, str):
        return mask_text(value)
    return value


def mask_payload(obj: Any) -> Any:
    """Mask every string inside a JSON-like structure (dict keys are left alone)."""
    if isinstance(obj, dict):
        return {k: mask_payload(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [mask_payload(v) for v in obj]
    if isinstance(obj, str):
        return mask_text(obj)
    return obj


# --------------------------------------------------------------------------- logs and alerts
# Every log record of the process and every alert goes through :func:`redact`: secrets out
# (configured ones and ones met at run time, such as the CRM token of the Airflow connection:
# settings.secret_values() knows both; credentials written into URLs; bearer tokens and
# "password=..." pairs), then personal data masked. It is installed
# once, as the process's log record factory (:func:`install_log_masking`, done on importing
# the package), not as a filter on some handlers: Airflow's task handlers, a library's own
# handler and the CLI's all see records already redacted, at every level, -v included.

_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s@:]+(?::[^/\s@]*)?@")
_BEARER = re.compile(r"(?i)\b(bearer|(?:access_|api_|auth_)?token|password|passwd|pwd|secret)"
                     r"((?<=bearer)\s+|(?<!bearer)\s*[=:]\s*)(['\"]?)[^\s'\",;&]+")


def redact(text: str) -> str:
    """``text`` with every known secret replaced by ``***``, URL credentials and bearer-style
    tokens cut, and emails and phone numbers masked."""
    if not isinstance(text, str) or not text:
        return text
    for secret in sorted(set(secret_values()), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _URL_CREDENTIALS.sub("***@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}***", text)
    return mask_text(text)


def install_log_masking() -> None:
    """Make every log record of this process redacted at creation (idempotent)."""
    import logging

    current = logging.getLogRecordFactory()
    if getattr(current, "_c360_masking", False):
        return

    def factory(*args, **kwargs):
        record = current(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return record
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return record

    factory._c360_masking = True
    logging.setLogRecordFactory(factory)
