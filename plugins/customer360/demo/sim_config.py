"""The simulator's configuration: population size, period, seed and every messiness knob.

Each knob is a dataclass field with a realistic default and a one-line doc; setting a rate
(or a count) to 0 removes the case it produces. ``c360 simulate --knob NAME=VALUE`` goes
through :meth:`SimulationConfig.from_overrides`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np


def _knob(default: Any, doc: str, *, rate: bool = True) -> Any:
    return field(default=default, metadata={"doc": doc, "knob": True, "rate": rate})


@dataclass(frozen=True)
class SimulationConfig:
    people: int = 2000
    days: int = 60
    start: dt.date = dt.date(2026, 1, 1)
    seed: int = 42

    # --- identity messiness (CRM and keys) ---
    dup_contact_rate: float = _knob(
        0.03, "share of people with a CRM contact who also get a second contact (email differing "
        "by case/spaces, another email, or only the same phone)")
    archived_contact_rate: float = _knob(
        0.005, "share of contacts erased during the period (final version archived: true); "
        "the person stops buying")
    shared_device_rate: float = _knob(
        0.02, "share of people whose main device (anonymousId) is also used, with logins, by a "
        "second person of the same household")
    messy_key_format_rate: float = _knob(
        0.3, "share of typed keys (POS loyalty_id/phone/email, CRM phone/email, web traits) in a "
        "non-canonical format such as '+86 138-0013-8000', ' Ann@Mail.com ', 'ly 0001 2345'")
    walkin_rate: float = _knob(0.3, "share of store transactions carrying no customer key")

    # --- web delivery messiness ---
    dup_message_rate: float = _knob(
        0.005, "share of web events delivered twice with the same messageId")
    late_event_rate: float = _knob(
        0.01, "share of web events landing in a date folder 1-3 days after they happened")
    late_file_rate: float = _knob(
        0.05, "share of days whose web folder gets one more part file 1-2 days later (after a "
        "first read)")
    corrupt_files: int = _knob(
        1, "number of web part files truncated mid-gzip-stream (only when days >= 3)", rate=False)

    # --- POS messiness ---
    corrected_pos_file_rate: float = _knob(
        0.01, "share of store-day POS files re-sent 1-2 days later; the corrected file replaces "
        "the first one (which missed some transactions)")
    gb18030_store_share: float = _knob(
        0.34, "share of mainland-China stores writing GB18030 files (Chinese names, Chinese "
        "payment methods)")
    stores: int = _knob(12, "number of stores", rate=False)
    store_timezones: int = _knob(
        5, "number of distinct store time zones (1-5: Asia/Shanghai, Asia/Hong_Kong, Asia/Tokyo, "
        "Europe/London, America/New_York)", rate=False)
    return_rate: float = _knob(
        0.05, "share of store SALE lines returned 3-30 days later (RETURN line, negative "
        "quantity and amount)")
    void_rate: float = _knob(0.02, "share of store SALE lines followed by a VOID line at the till")
    # --- till exports as real tills write them (docs/sources.md section 3) ---
    pos_bom_file_rate: float = _knob(
        0.05, "share of POS files exported in UTF-8 with a byte-order mark, whatever the store "
        "declares (a GB18030 store's such file loads, with a note)")
    pos_crlf_file_rate: float = _knob(0.3, "share of POS files with CRLF line endings")
    pos_trailing_blank_rate: float = _knob(
        0.2, "share of POS files ending with an empty line")
    pos_formatted_amount_rate: float = _knob(
        0.3, "share of POS files whose till prints amounts with a currency sign and thousands "
        "separators ('¥1,299.00', 'HK$1,299.00', '-£12.50'; quoted in the CSV)")
    pos_quoted_comma_rate: float = _knob(
        0.05, "share of POS lines of non-GB18030 stores whose payment method holds a comma and "
        "doubled quotes ('card, \"contactless\"')")
    pos_mismatched_encoding_files: int = _knob(
        1, "POS files of a GB18030 store written in UTF-8 without a byte-order mark: quarantined "
        "whole ('declared GB18030 but the bytes decode as UTF-8'); its transactions never load",
        rate=False)
    pos_repeated_header_files: int = _knob(
        1, "POS files whose header repeats the sku column (each line repeats its sku): "
        "quarantined whole; its transactions never load", rate=False)
    gb18030_reference_files: int = _knob(
        1, "reference files written in GB18030 instead of UTF-8 (1: products.csv, 2: also "
        "stores.csv)", rate=False)
    malformed_row_rate: float = _knob(
        0.001, "share of POS lines and web lines written malformed (wrong field count, "
        "non-numeric quantity, bad timestamp; truncated JSON)")

    # --- CRM content ---
    chinese_comment_share: float = _knob(
        0.5, "share of feedback comments and ticket texts written in Chinese (the rest English)")
    traditional_chinese_share: float = _knob(
        0.3, "share of the Chinese comments and ticket texts written in traditional characters")
    pii_in_ticket_rate: float = _knob(
        0.1, "share of tickets whose free text contains the customer's email or phone")
    consent_change_rate: float = _knob(
        0.02, "share of contacts changing marketing consent during the period (new version)")
    existing_customer_share: float = _knob(
        0.5, "share of people who already have a CRM contact before the first day")

    # --- CRM values as HubSpot serves them ---
    empty_string_rate: float = _knob(
        0.3, "share of CRM records (contacts, tickets, feedback) whose empty properties come as "
        "\"\" (a cleared HubSpot field) instead of null")
    free_text_country_rate: float = _knob(
        0.6, "share of contacts whose country is free text ('China', '中国', 'United Kingdom', "
        "'UK', 'Hong Kong, China') instead of the ISO code")
    national_phone_rate: float = _knob(
        0.3, "share of contacts whose mobile number is typed in national format ('138 0013 8000', "
        "'07712 345678', '(212) 734-5678'): it parses only with the contact's own country")
    landline_phone_rate: float = _knob(
        0.08, "share of contacts with a phone whose 'phone' is a landline typed nationally "
        "('(021) 6234-5678', '020 7946 0958'), their mobile moving to 'mobilephone'")
    unparseable_phone_rate: float = _knob(
        0.01, "share of contacts with a phone whose 'phone' holds no readable number ('n/a', "
        "'不详', a number typed short); counted as unparseable_phones in the summary")
    funnel_stage_rate: float = _knob(
        0.3, "share of leads in HubSpot's funnel stages (marketingqualifiedlead, "
        "salesqualifiedlead, opportunity) instead of lead or subscriber")
    bulk_update_contacts: int = _knob(
        200, "contacts touched by one bulk import in the middle of the period: all get a new "
        "version with the same lastmodifieddate, to the millisecond", rate=False)
    ces_survey_share: float = _knob(
        0.2, "share of CSAT surveys asked as CES (customer effort score, 1-7) instead")

    # --- web content ---
    web_usd_share: float = _knob(0.05, "share of web orders paid in USD (the rest CNY)")
    server_side_order_rate: float = _knob(
        0.3, "share of logged-in web orders whose Order Completed the shop's back end sends "
        "(server-side: userId only, no anonymousId, no page context)")
    app_session_share: float = _knob(
        0.2, "share of web sessions in the shop's app: screen calls (name) instead of page "
        "calls, no context.page")
    signup_alias_rate: float = _knob(
        0.5, "share of web sign-ups followed by a Segment alias call (previousId = the "
        "device's anonymousId -> the new userId)")
    product_id_only_rate: float = _knob(
        0.2, "share of product events and order items naming the product by product_id only, "
        "no sku (the catalogue's product id is its sku)")
    consent_device_share: float = _knob(
        0.4, "share of devices whose events carry context.consent.categoryPreferences (a "
        "quarter of them deny Advertising)")
    group_call_rate: float = _knob(
        0.1, "share of web logins followed by a group call (the person's company account: "
        "groupId and account traits)")
    experiment_exposure_rate: float = _knob(
        0.6, "share of a not-yet-exposed visitor's visit days on which each running A/B test "
        "shows them their variation (an Experiment Viewed call in the day's first session)")
    experiment_lift: float = _knob(
        0.5, "true effect of exp_free_shipping: relative rise of the daily purchase probability "
        "of people shown its treatment, for experiment_window_days after the exposure "
        "(exp_checkout_copy has no effect: a null experiment)", rate=False)
    experiment_window_days: int = _knob(
        14, "days after an exposure during which the treatment's effect lasts (the warehouse's "
        "experiment_conversion_window_days should match)", rate=False)
    parts_per_day: int = _knob(2, "regular web part files per day folder", rate=False)
    products: int = _knob(200, "number of products in the catalogue", rate=False)

    # --- latent behaviour ---
    mean_days_between_orders: float = _knob(
        40.0, "average days between two orders of an active person", rate=False)
    mean_days_between_visits: float = _knob(
        14.0, "average days between two web visits of an active web-leaning person", rate=False)
    churn_90d: float = _knob(
        0.12, "baseline probability that a satisfied, averagely engaged person churns within "
        "90 days (bad experiences raise it, engagement lowers it)")

    def __post_init__(self) -> None:
        if self.people < 1 or self.days < 1:
            raise ValueError("people and days must be >= 1")
        for f in dataclasses.fields(self):
            if not f.metadata.get("knob"):
                continue
            value = getattr(self, f.name)
            if f.metadata["rate"] and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"knob {f.name} is a rate in [0, 1], got {value}")
            if value < 0:
                raise ValueError(f"knob {f.name} must be >= 0, got {value}")
        if self.gb18030_reference_files > 2:
            raise ValueError("gb18030_reference_files must be 0, 1 or 2")
        if not 1 <= self.store_timezones <= 5:
            raise ValueError("store_timezones must be between 1 and 5")
        if self.stores < 1 or self.products < 12 or self.parts_per_day < 1:
            raise ValueError("stores >= 1, products >= 12 and parts_per_day >= 1 are required")
        if self.mean_days_between_orders <= 0 or self.mean_days_between_visits <= 0:
            raise ValueError("mean_days_between_* must be > 0")
        if not 0.0 < self.churn_90d < 1.0:
            raise ValueError("churn_90d must be strictly between 0 and 1")

    @property
    def end(self) -> dt.date:
        """The last simulated day (inclusive)."""
        return self.start + dt.timedelta(days=self.days - 1)

    @classmethod
    def knob_fields(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if f.metadata.get("knob")]

    @classmethod
    def knob_docs(cls) -> list[tuple[str, Any, str]]:
        """(name, default, description) of every knob, in declaration order."""
        return [(f.name, f.default, f.metadata["doc"]) for f in cls.knob_fields()]

    @classmethod
    def from_overrides(cls, people: int = 2000, days: int = 60, start: dt.date | None = None,
                       seed: int = 42, overrides: Iterable[str] = ()) -> "SimulationConfig":
        """Build a config from CLI values and ``NAME=VALUE`` knob overrides."""
        known = {f.name: f for f in cls.knob_fields()}
        values: dict[str, Any] = {}
        for item in overrides:
            name, sep, raw = item.partition("=")
            name = name.strip()
            if not sep or name not in known:
                raise ValueError(f"unknown knob override {item!r}; knobs: {', '.join(known)}")
            kind = type(known[name].default)
            try:
                values[name] = kind(float(raw)) if kind is int and "." in raw else kind(raw)
            except ValueError:
                raise ValueError(f"knob {name} expects a {kind.__name__}, got {raw!r}") from None
        return cls(people=people, days=days, start=start or cls.start, seed=seed, **values)

    def rng(self, *stream: str | int) -> np.random.Generator:
        """An independent random stream per purpose, so turning one knob off changes only the
        files that knob touches (names are hashed with crc32: stable across processes)."""
        words = [zlib.crc32(s.encode()) if isinstance(s, str) else int(s) for s in stream]
        return np.random.default_rng(np.random.SeedSequence([self.seed, *words]))
