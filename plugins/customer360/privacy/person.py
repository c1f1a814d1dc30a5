"""An erasure request resolved to every key of the person behind it.

A request names one key (an email, a phone, a CRM contact id). The person is whatever the
pipeline links to it, found the way the pipeline links records:

1. every version of the CRM contacts carrying the key (raw zone: the newest rows have not
   reached the warehouse yet) gives contact ids, emails, phones and loyalty ids;
2. the warehouse's identity clusters (``intermediate.int_identity__clusters``) give the
   customer ids of those keys and every other key of those customers, devices included;
3. raw web events give the devices the person logged in on or identified with, unless
   somebody else logged in on them too (a shared device: its logged-out activity belongs to
   nobody, so it stays; the person's own events on it still go);
4. raw POS rows carrying any of the keys give the person's transactions, raw web
   "Order Completed" events of the person give their web orders.

Steps 1-3 repeat until nothing new turns up. Keys on more CRM contacts than the identity
graph links (a shop's phone typed for walk-ins, a placeholder address) belong to nobody in
particular and are never followed; a request naming one, or resolving to more contacts and
customers than one person has, is refused unless forced (:class:`ErasureRefused`).

:class:`Needles` are what free text is searched for (ticket text, quarantined lines,
landing files): the emails, the phone numbers' digit strings, loyalty ids, device ids and
full names.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import duckdb
import phonenumbers

from customer360.ingest.crm_properties import load_property_map
from customer360.ingest.raw_zone import unreadable_parquet
from customer360.privacy import pii
from customer360.core.settings import Settings

log = logging.getLogger(__name__)

MAX_ROUNDS = 5
# as the warehouse's var identity_max_contacts_per_key: a key on more contacts links nobody
MAX_CONTACTS_PER_KEY = 2
# A person has a contact and perhaps a duplicate; their records can sit in up to three
# customers when the record that linked them is gone (an archived contact leaves its web
# logins in one customer and its till purchases in another). More means a shared key.
MAX_CONTACTS_PER_PERSON = 2
MAX_CUSTOMERS_PER_PERSON = 3


class ErasureRefused(RuntimeError):
    """The request is ambiguous or names nobody known; the message holds no personal data."""


@dataclass(frozen=True)
class ErasureRequest:
    """One key naming a person: ``kind`` is email, phone, contact (CRM contact id), loyalty,
    or anon (a web device; only for records returning after an erasure)."""

    kind: str
    value: str = field(repr=False)
    country: str | None = None  # how to read a phone typed without its country code
    reason: str = "request"     # request (c360 erase) or archived (the CRM deleted the contact)

    def __post_init__(self) -> None:
        if self.kind not in ("email", "phone", "contact", "loyalty", "anon"):
            raise ValueError(f"unknown erasure key kind {self.kind!r}")

    def __repr__(self) -> str:  # the value is personal: never shown
        return f"ErasureRequest(kind={self.kind!r}, reason={self.reason!r})"

    @property
    def identity_key(self) -> str:
        value = pii.normalize_key(self.kind, self.value, self.country)
        if value is None:
            hint = " (add its country code, or --country)" if self.kind == "phone" else ""
            raise ErasureRefused(f"the {self.kind} given is not a usable {self.kind}{hint}")
        return f"{self.kind}:{value}"


@dataclass
class PersonKeys:
    """Everything that identifies one person (or the few a request resolved to)."""

    contact_ids: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)
    loyalty_ids: set[str] = field(default_factory=set)
    anonymous_ids: set[str] = field(default_factory=set)
    customer_ids: set[str] = field(default_factory=set)
    web_order_ids: set[str] = field(default_factory=set)
    pos_transactions: set[tuple[str, str]] = field(default_factory=set)  # (store_id, transaction_id)
    names: set[tuple[str, str]] = field(default_factory=set)             # (first, last)

    def __repr__(self) -> str:
        return f"PersonKeys({self.counts()})"

    _TYPED = {"contact": "contact_ids", "email": "emails", "phone": "phones",
              "loyalty": "loyalty_ids", "anon": "anonymous_ids"}

    def add_identity_key(self, identity_key: str) -> bool:
        key_type, _, value = identity_key.partition(":")
        target = getattr(self, self._TYPED[key_type]) if key_type in self._TYPED else None
        if target is None or not value or value in target:
            return False
        target.add(value)
        return True

    def identity_keys(self) -> set[str]:
        return {f"{t}:{v}" for t, attr in self._TYPED.items() for v in getattr(self, attr)}

    def order_ids(self) -> set[str]:
        """How the marts name the person's orders: web order ids and POS transaction ids."""
        return self.web_order_ids | {txn for _, txn in self.pos_transactions}

    def counts(self) -> dict[str, int]:
        return {"contacts": len(self.contact_ids), "emails": len(self.emails),
                "phones": len(self.phones), "loyalty_ids": len(self.loyalty_ids),
                "devices": len(self.anonymous_ids), "customers": len(self.customer_ids),
                "web_orders": len(self.web_order_ids),
                "pos_transactions": len(self.pos_transactions)}

    def merge(self, other: "PersonKeys") -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).update(getattr(other, name))

    def __bool__(self) -> bool:
        return bool(self.identity_keys() or self.customer_ids)

    def needles(self) -> "Needles":
        return Needles.of(self)


@dataclass(frozen=True)
class Needles:
    """What free text is searched for. ``text``: lower-case substrings (emails, device ids);
    ``names``: lower-case full names; ``digits``: phone digit strings, searched in text whose
    digit groups were joined; ``alnum``: loyalty ids, searched in the text's upper-case
    alphanumerics."""

    text: tuple[str, ...]
    digits: tuple[str, ...]
    alnum: tuple[str, ...]
    names: tuple[str, ...] = ()

    MIN_NAME = 3        # "Li Na" is found; a two-character name alone matches too much text
    MIN_DIGITS = 8      # national numbers shorter than this occur inside other digit runs
    MIN_ALNUM = 6

    @classmethod
    def of(cls, keys: PersonKeys) -> "Needles":
        text = {e.lower() for e in keys.emails} | {a.lower() for a in keys.anonymous_ids}
        names = set()
        for first, last in keys.names:
            names.update({f"{first} {last}".lower(), f"{last} {first}".lower()})
            if not (first + last).isascii():  # Chinese names are written family name first
                names.add(f"{last}{first}".lower())
        digits: set[str] = set()
        for phone in keys.phones:
            digits.add(phone.lstrip("+"))
            try:
                national = phonenumbers.national_significant_number(phonenumbers.parse(phone))
            except phonenumbers.NumberParseException:
                continue
            digits.add(national)
        return cls(text=tuple(sorted(t for t in text if len(t) >= cls.MIN_NAME)),
                   digits=tuple(sorted(d for d in digits if len(d) >= cls.MIN_DIGITS)),
                   alnum=tuple(sorted(a for a in keys.loyalty_ids if len(a) >= cls.MIN_ALNUM)),
                   names=tuple(sorted(n for n in names if len(n.strip()) >= cls.MIN_NAME)))

    def without_names(self) -> "Needles":
        """For records that name their own person (CRM contacts): a namesake is someone else."""
        return Needles(text=self.text, digits=self.digits, alnum=self.alnum)

    def __repr__(self) -> str:
        return (f"Needles({len(self.text)} text, {len(self.names)} names, {len(self.digits)} digits, "
                f"{len(self.alnum)} alnum)")

    def __bool__(self) -> bool:
        return bool(self.text or self.names or self.digits or self.alnum)

    # Values per RE2 alternation. Past a few hundred literals RE2 outgrows its DFA budget and
    # falls back to a far slower matcher: 7.3 M raw web events took 20 s against 500 e-mail
    # needles, over 250 s against 3,000 in one pattern, 78 s against six patterns of 500.
    ALTERNATION_SIZE = 400

    @classmethod
    def _alternations(cls, values: tuple[str, ...]) -> list[str]:
        return ["|".join(pii.re2_escape(v) for v in values[i:i + cls.ALTERNATION_SIZE])
                for i in range(0, len(values), cls.ALTERNATION_SIZE)]

    def patterns(self) -> dict[str, list[str]]:
        """RE2 alternations per kind (for DuckDB and Arrow alike; a text matches a kind when
        it matches any of them); empty kinds left out."""
        return {kind: self._alternations(values)
                for kind, values in (("text", self.text + self.names), ("digits", self.digits),
                                     ("alnum", self.alnum)) if values}

    def sql(self, expr: str) -> str:
        """A SQL condition: the text ``expr`` mentions the person (false for NULL text)."""
        parts = []
        pats = self.patterns()
        for kind, text in (("text", f"lower({expr})"), ("digits", pii.digits_text_sql(expr)),
                           ("alnum", pii.alnum_text_sql(expr))):
            parts += [f"regexp_matches({text}, {_sql_str(p)})" for p in pats.get(kind, ())]
        if not parts:
            return "false"
        return f"coalesce(({' or '.join(parts)}), false)"


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# --------------------------------------------------------------------------- raw zone access

# A raw web event's and a raw POS line's customer keys, normalized as staging does: the SQL the
# erasure's resolution, its purge predicates and its returning-record check all read them by.
WEB_EVENT_EMAIL = pii.email_sql("json_extract_string(traits, '$.email')")
WEB_EVENT_PHONE = pii.phone_sql("json_extract_string(traits, '$.phone')",
                                "regexp_extract(json_extract_string(context, '$.locale'), '[-_]([A-Za-z]{2})$', 1)")
POS_LOYALTY = pii.loyalty_sql("loyalty_id")
POS_EMAIL = pii.email_sql("customer_email")
POS_PHONE = pii.phone_sql("customer_phone", '"_store_country"')


def raw_files(root: Path, source: str, entity: str) -> list[Path]:
    """The readable Parquet files of one raw (or quarantine) entity, in load order. An
    unreadable one (truncated, corrupt) is left out with a warning naming it, so that one bad
    batch never blocks an erasure; ``c360 doctor`` says how to land it again."""
    out = []
    for path in sorted((root / source / entity).glob("load_date=*/*.parquet")):
        why = unreadable_parquet(path)
        if why:
            log.warning("erasure: skipping the unreadable raw batch %s (%s); run `c360 doctor`",
                        path, why)
            continue
        out.append(path)
    return out


def parquet_sql(files: list[Path]) -> str:
    listed = ", ".join(_sql_str(str(p)) for p in files)
    return f"read_parquet([{listed}], union_by_name = true)"


def _table(con: duckdb.DuckDBPyConnection, name: str, values) -> None:
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} (v VARCHAR)")
    rows = [(v,) for v in sorted(values)]
    if rows:
        con.executemany(f"INSERT INTO {name} VALUES (?)", rows)


def load_key_tables(con: duckdb.DuckDBPyConnection, keys: PersonKeys) -> None:
    """Temp tables ``p_contacts``, ``p_emails``, ``p_phones``, ``p_loyalty``, ``p_anon``,
    ``p_customers``, ``p_orders``, ``p_identity`` for the row predicates."""
    _table(con, "p_contacts", keys.contact_ids)
    _table(con, "p_emails", keys.emails)
    _table(con, "p_phones", keys.phones)
    _table(con, "p_loyalty", keys.loyalty_ids)
    _table(con, "p_anon", keys.anonymous_ids)
    _table(con, "p_customers", keys.customer_ids)
    _table(con, "p_orders", keys.order_ids())
    _table(con, "p_identity", keys.identity_keys())
    con.execute("CREATE OR REPLACE TEMP TABLE p_txns (store_id VARCHAR, transaction_id VARCHAR)")
    if keys.pos_transactions:
        con.executemany("INSERT INTO p_txns VALUES (?, ?)", sorted(keys.pos_transactions))


# --------------------------------------------------------------------------- resolution

class Resolver:
    """Resolves requests against one home's raw zone and warehouse (opened read-only)."""

    def __init__(self, settings: Settings, con: duckdb.DuckDBPyConnection):
        self.settings = settings
        self.con = con
        self.contacts = raw_files(settings.lake_raw, "crm", "contacts")
        self.events = raw_files(settings.lake_raw, "web", "events")
        self._events_columns: set[str] | None = None
        self.pos = raw_files(settings.lake_raw, "pos", "transactions")
        self.clusters = self._attach_clusters()
        self.ambiguous: set[str] = set()
        if self.contacts:
            # the portal's property names (config/crm_properties.yml), as staging reads them
            prop = load_property_map(settings)["contacts"].sql
            # one row per phone the contact has (phone and mobilephone are both keys)
            selects = [f"""
                SELECT trim(id) AS contact_id,
                       {pii.email_sql(prop("email"))} AS email,
                       {pii.phone_sql(prop(column), prop("country"))} AS phone,
                       {pii.loyalty_sql(prop("loyalty_id"))} AS loyalty,
                       {pii.clean_sql(prop("first_name"))} AS first_name,
                       {pii.clean_sql(prop("last_name"))} AS last_name
                FROM {parquet_sql(self.contacts)} WHERE id IS NOT NULL""" for column in ("phone", "mobile_phone")]
            con.execute("CREATE OR REPLACE TEMP TABLE r_contacts AS " + " UNION ALL ".join(selects))
            self.ambiguous = self._shared_keys()

    def _shared_keys(self) -> set[str]:
        """Keys on more CRM contacts than the identity graph links (a shop's own phone typed
        for customers, a placeholder address): nobody's in particular, so never followed."""
        rows = self.con.execute(f"""
            SELECT key FROM (
                SELECT 'email:' || email AS key, contact_id FROM r_contacts WHERE email IS NOT NULL
                UNION SELECT 'phone:' || phone, contact_id FROM r_contacts WHERE phone IS NOT NULL
                UNION SELECT 'loyalty:' || loyalty, contact_id FROM r_contacts WHERE loyalty IS NOT NULL)
            GROUP BY key HAVING count(DISTINCT contact_id) > {MAX_CONTACTS_PER_KEY}""").fetchall()
        shared = {r[0] for r in rows}
        if self.clusters is not None:
            found = self.con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'wh' AND "
                "schema_name = 'intermediate' AND table_name = 'int_identity__ambiguous_keys'").fetchone()[0]
            if found:
                shared |= {r[0] for r in self.con.execute(
                    "SELECT identity_key FROM wh.intermediate.int_identity__ambiguous_keys "
                    "WHERE key_type <> 'anon'").fetchall()}
        return shared

    def _attach_clusters(self) -> str | None:
        path = self.settings.warehouse_path
        if not path.exists():
            return None
        self.con.execute(f"ATTACH {_sql_str(str(path))} AS wh (READ_ONLY)")
        found = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'wh' "
            "AND schema_name = 'intermediate' AND table_name = 'int_identity__clusters'").fetchone()[0]
        return "wh.intermediate.int_identity__clusters" if found else None

    def close(self) -> None:
        if self.settings.warehouse_path.exists():
            self.con.execute("DETACH DATABASE IF EXISTS wh")

    # -- the steps ---------------------------------------------------------------------
    def _contacts_with_seed(self, identity_key: str) -> set[str]:
        if not self.contacts:
            return set()
        key_type, _, value = identity_key.partition(":")
        column = {"email": "email", "phone": "phone", "loyalty": "loyalty", "contact": "contact_id"}.get(key_type)
        if column is None:
            return set()
        rows = self.con.execute(f"SELECT DISTINCT contact_id FROM r_contacts WHERE {column} = ?",
                                [value]).fetchall()
        return {r[0] for r in rows}

    def _from_contacts(self, keys: PersonKeys) -> None:
        if not self.contacts or not keys.contact_ids:
            return
        _table(self.con, "q_contacts", keys.contact_ids)
        for email, phone, loyalty, first, last in self.con.execute(
                "SELECT DISTINCT email, phone, loyalty, first_name, last_name FROM r_contacts "
                "WHERE contact_id IN (SELECT v FROM q_contacts)").fetchall():
            for key_type, value in (("email", email), ("phone", phone), ("loyalty", loyalty)):
                if value and f"{key_type}:{value}" not in self.ambiguous:
                    keys.add_identity_key(f"{key_type}:{value}")
            if first and last:
                keys.names.add((first, last))

    def _from_clusters(self, keys: PersonKeys) -> None:
        if self.clusters is None:
            return
        _table(self.con, "q_identity", keys.identity_keys())
        rows = self.con.execute(f"""
            SELECT DISTINCT mine.customer_id, other.identity_key
            FROM {self.clusters} AS mine
            JOIN {self.clusters} AS other USING (customer_id)
            WHERE mine.identity_key IN (SELECT v FROM q_identity)""").fetchall()
        for customer_id, identity_key in rows:
            keys.customer_ids.add(customer_id)
            keys.add_identity_key(identity_key)

    @cached_property
    def _event_keys(self) -> str:
        """``r_events``: the keys of every raw web event, normalized once per Resolver and kept
        distinct (devices, contact ids, emails, phones, alias ids, web order ids).

        Every request of a batch asks the events the same questions with other keys; reading
        and normalizing the whole year of events for each (a phone parsed per row, in Python)
        took the 458 erasures of a 100k x 365 day past 14 minutes (BENCHMARKS.md)."""
        alias = ("CASE WHEN \"type\" = 'alias' THEN nullif(trim(\"previousId\"), '') END"
                 if "previousId" in self._event_columns() else "CAST(NULL AS VARCHAR)")
        self.con.execute(f"""
            CREATE OR REPLACE TEMP TABLE r_events AS
            SELECT "anonymousId" AS anon, nullif(trim("userId"), '') AS user_id,
                   {WEB_EVENT_EMAIL} AS email,
                   {WEB_EVENT_PHONE} AS phone,
                   {alias} AS previous_id,
                   CASE WHEN event = 'Order Completed'
                        THEN trim(json_extract_string(properties, '$.order_id')) END AS order_id
            FROM {parquet_sql(self.events)}
            GROUP BY ALL""")
        return "r_events"

    def _devices(self, keys: PersonKeys) -> None:
        if not self.events:
            return
        load_key_tables(self.con, keys)
        events = self._event_keys
        rows = self.con.execute(f"""
            SELECT anon FROM {events} WHERE anon IS NOT NULL GROUP BY anon
            HAVING bool_or(user_id IN (SELECT v FROM p_contacts) OR email IN (SELECT v FROM p_emails)
                           OR phone IN (SELECT v FROM p_phones))
               AND NOT coalesce(bool_or(user_id IS NOT NULL AND user_id NOT IN (SELECT v FROM p_contacts)), false)
            """).fetchall()
        keys.anonymous_ids.update(r[0] for r in rows)
        # A Segment alias hands the device (or an earlier id) to the contact: its events
        # before the login carry only that previousId as their anonymousId.
        keys.anonymous_ids.update(r[0] for r in self.con.execute(f"""
            SELECT DISTINCT previous_id FROM {events}
            WHERE previous_id IS NOT NULL AND user_id IN (SELECT v FROM p_contacts)""").fetchall())

    def _events_of_user(self, contact_id: str) -> bool:
        if not self.events:
            return False
        return bool(self.con.execute(
            f"SELECT count(*) FROM {self._event_keys} WHERE user_id = ?", [contact_id]).fetchone()[0])

    def _event_columns(self) -> set[str]:
        if self._events_columns is None:
            self._events_columns = {r[0] for r in self.con.execute(
                f"DESCRIBE SELECT * FROM {parquet_sql(self.events)}").fetchall()}
        return self._events_columns

    @cached_property
    def _pos_keys(self) -> str:
        """``r_pos``: each raw POS transaction's customer keys, normalized once per Resolver
        (as ``r_events``)."""
        self.con.execute(f"""
            CREATE OR REPLACE TEMP TABLE r_pos AS
            SELECT trim(store_id) AS store_id, trim(transaction_id) AS transaction_id,
                   {POS_LOYALTY} AS loyalty,
                   {POS_EMAIL} AS email,
                   {POS_PHONE} AS phone
            FROM {parquet_sql(self.pos)}
            GROUP BY ALL""")
        return "r_pos"

    def _orders(self, keys: PersonKeys) -> None:
        load_key_tables(self.con, keys)
        if self.events:
            # web_event_predicate's test, on the normalized keys
            rows = self.con.execute(f"""
                SELECT DISTINCT order_id FROM {self._event_keys}
                WHERE order_id IS NOT NULL AND (user_id IN (SELECT v FROM p_contacts)
                    OR anon IN (SELECT v FROM p_anon) OR email IN (SELECT v FROM p_emails)
                    OR phone IN (SELECT v FROM p_phones))""").fetchall()
            keys.web_order_ids.update(r[0] for r in rows if r[0])
        if self.pos:
            # pos_keys_predicate's test, on the normalized keys
            rows = self.con.execute(f"""
                SELECT DISTINCT store_id, transaction_id FROM {self._pos_keys}
                WHERE loyalty IN (SELECT v FROM p_loyalty) OR email IN (SELECT v FROM p_emails)
                   OR phone IN (SELECT v FROM p_phones)""").fetchall()
            keys.pos_transactions.update((s, t) for s, t in rows if t)

    def resolve(self, request: ErasureRequest, force: bool = False) -> PersonKeys:
        keys = PersonKeys()
        seed = request.identity_key
        if seed in self.ambiguous and not force:
            raise ErasureRefused(
                f"the {request.kind} given is shared by several CRM contacts, so it names no one "
                "person: erase by contact id, or check with --dry-run and pass --force")
        keys.add_identity_key(seed)
        carried = self._contacts_with_seed(seed)
        for contact_id in carried:
            keys.contact_ids.add(contact_id)
        for _ in range(MAX_ROUNDS):
            before = keys.counts()
            self._from_contacts(keys)
            self._from_clusters(keys)
            self._devices(keys)
            if keys.counts() == before:
                break
        self._orders(keys)
        found_anything = keys.contact_ids or keys.customer_ids or keys.anonymous_ids or keys.pos_transactions \
            or keys.web_order_ids
        if request.kind == "contact":
            # The seed itself is in contact_ids: only a record carrying it (a CRM contact, an
            # event of that userId) or a key found through it means there is someone to erase.
            found_anything = (carried or self._events_of_user(seed.partition(":")[2])
                              or keys.identity_keys() - {seed} or keys.customer_ids
                              or keys.pos_transactions or keys.web_order_ids)
        if not found_anything:
            raise ErasureRefused(f"no record carries the {request.kind} given: nothing to erase")
        if (len(keys.contact_ids) > MAX_CONTACTS_PER_PERSON
                or len(keys.customer_ids) > MAX_CUSTOMERS_PER_PERSON) and not force:
            raise ErasureRefused(
                f"the {request.kind} given links {len(keys.contact_ids)} CRM contacts and "
                f"{len(keys.customer_ids)} customers, more than one person has; check with "
                "--dry-run and pass --force to erase all of them")
        return keys


# --------------------------------------------------------------------------- row predicates
# Each is a SQL condition over one raw entity's columns and the p_* tables of
# load_key_tables: true for a row that belongs to the person.

def crm_contact_predicate() -> str:
    return "trim(id) IN (SELECT v FROM p_contacts)"


def crm_owner_predicate(columns: set[str] | frozenset[str]) -> str | None:
    """A raw ticket or survey answer of the person: one of its associated contacts
    (``associations``, {"contacts": [...]}) is theirs; batches landed before associations
    existed named the contact in the ``contact_id`` property. None when neither column exists."""
    parts = []
    if "associations" in columns:
        parts.append("EXISTS (SELECT 1 FROM p_contacts k WHERE list_contains("
                     "json_extract_string(associations, '$.\"contacts\"[*]'), k.v))")
    if "properties" in columns:
        parts.append("trim(json_extract_string(properties, '$.contact_id')) IN (SELECT v FROM p_contacts)")
    return "(" + " OR ".join(parts) + ")" if parts else None


def json_association_predicate(expr: str, table: str = "p_contacts") -> str:
    """``expr`` (a quarantined record as JSON text) associates one of the person's contacts:
    {"contacts": ["1001"]}, the same escaped inside a JSON string, or HubSpot's own
    {"contacts": {"results": [{"id": "1001", ...}]}}; read without parsing, as
    :func:`json_id_predicate`."""
    return (f"EXISTS (SELECT 1 FROM {table} k WHERE regexp_matches({expr}, "
            "'\\\\?\"contacts\\\\?\"\\s*:[^\\]]*?\\\\?\"' || regexp_escape(k.v) || '\\\\?\"'))")


def crm_activity_predicate(needles: Needles, text_fields: tuple[str, ...]) -> str:
    """Tickets and survey answers: the person's own, or any whose free text mentions them."""
    own = crm_owner_predicate({"associations", "properties"})
    mentions = [needles.sql(f"json_extract_string(properties, '$.{f}')") for f in text_fields]
    return " or ".join([own, *mentions])


def web_event_predicate() -> str:
    return f"""(trim("userId") IN (SELECT v FROM p_contacts)
        OR "anonymousId" IN (SELECT v FROM p_anon)
        OR {WEB_EVENT_EMAIL} IN (SELECT v FROM p_emails)
        OR {WEB_EVENT_PHONE}
           IN (SELECT v FROM p_phones))"""


def pos_keys_predicate() -> str:
    return f"""({POS_LOYALTY} IN (SELECT v FROM p_loyalty)
        OR {POS_EMAIL} IN (SELECT v FROM p_emails)
        OR {POS_PHONE} IN (SELECT v FROM p_phones))"""


def pos_transaction_predicate() -> str:
    """Every line of the person's transactions (returns and voids too), found by any key."""
    return ("(trim(store_id) || '|' || trim(transaction_id) IN "
            "(SELECT store_id || '|' || transaction_id FROM p_txns))"
            f" OR {pos_keys_predicate()}")


_JSON_ID_FIELD = re.compile(r"^[A-Za-z_]+$")


def json_id_predicate(expr: str, fields: tuple[str, ...], table: str = "p_contacts") -> str:
    """``expr`` (a raw JSON line) has one of ``fields`` equal to a value of ``table``: finds
    the person's quarantined lines without parsing them (they are quarantined because they
    do not parse)."""
    assert all(_JSON_ID_FIELD.match(f) for f in fields)
    alternation = "|".join(fields)
    return (f"EXISTS (SELECT 1 FROM {table} k WHERE regexp_matches({expr}, "
            f"'\"(?:{alternation})\"\\s*:\\s*\"?' || regexp_escape(k.v) || '(?:\"|[,}}\\s])'))")
