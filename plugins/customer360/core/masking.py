"""Masking of personal data in anything the gates write down (samples, observed values, events).

Gate failures have to show offending values so that a data engineer can act, but the audit
store, the Data Docs and the task log must hold nothing personal. Emails keep their first
letters and top-level domain (``a***@m***.com``), phone numbers their country code and last
four digits (``+86*******8000``), and values of columns known to be personal keep only their
first character. Masking errs on the side of hiding: an id that looks like a phone number is
masked too.
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


def mask_text(text: str) -> str:
    """Mask every email address and phone-number-like digit run inside ``text``."""
    text = EMAIL_RE.sub(lambda m: mask_email(m.group(0)), text)
    return _DATE_OR_PHONE.sub(_mask_phone_match, text)


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
