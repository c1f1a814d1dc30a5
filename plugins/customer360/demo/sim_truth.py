"""Ground truth, written outside the landing folder (the pipeline never reads it).

``sim_dir/ground_truth/``:
- ``people.parquet``: one row a person (``person_id`` from 1): latent traits, what happened to
  them, and ``true_churn_probability`` = P(no order in the 90 days after the last day)
- ``keys.parquet``: (key_type, key_value, person_id, is_shared_device) for every source key:
  crm_contact_id, web_user_id, anonymous_id (one row per person using it), email (lowercase),
  phone (E.164), loyalty_id (upper-case, no separators), pos_transaction_id (null person for
  walk-ins), web_order_id
- ``crm_phones.parquet``: every non-empty CRM phone field (contact_id, property phone or
  mobilephone, value as typed, country_typed as the contact's free-text country, country ISO,
  e164 it means or null when nothing can be read from it, shape international / national /
  landline / unparseable, person_id): what a phone parser is scored on; ``summary.json``
  counts the unparseable ones as ``unparseable_phones``
- ``defects.parquet``: the deliberately broken lines and files (file, line, kind) in the final
  landing state, so a validator can be scored on finding exactly these
- ``experiments.parquet``: one row a person shown an A/B test (experiment_id, variation_id,
  person_id, exposed_day_index, exposed_date, orders_in_window = their orders, web or store,
  from the exposure day through ``experiment_window_days`` after it, converted = orders > 0);
  ``summary.json`` has, per experiment, ``true_purchase_rate_lift`` (0 for the null test) and
  the simulated people and conversions per variation
- ``texts.parquet``: one row a ticket or survey comment (source ticket/survey, source_id,
  language en/zh-Hans/zh-Hant, true_topic, true_sentiment negative/neutral/positive, has_pii):
  what sentiment and topics are scored on
- ``summary.json``: every count, including each messy case
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from customer360.demo import sim_reference as ref
from customer360.demo.sim_behaviour import NEVER, Activity, true_churn_probability
from customer360.demo.sim_config import SimulationConfig
from customer360.demo.sim_crm import CrmResult
from customer360.demo.sim_identity import Identity
from customer360.demo.sim_population import CHANNEL_NAMES, Population
from customer360.demo.sim_pos import PosResult
from customer360.demo.sim_web import WebResult

KEY_TYPES = ["crm_contact_id", "web_user_id", "anonymous_id", "email", "phone", "loyalty_id",
             "pos_transaction_id", "web_order_id"]


def _write(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, compression="zstd")


def write_ground_truth(cfg: SimulationConfig, pop: Population, act: Activity, ident: Identity,
                       stores: ref.Stores, web: WebResult, pos: PosResult, crm: CrmResult,
                       out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    n = pop.n
    erased = ident.archive_day < NEVER
    churned = act.churn_day < NEVER
    active = ~churned & ~erased
    p_churn = true_churn_probability(pop, act, active)
    web_orders = np.bincount(web.orders.person, minlength=n)
    store_orders = np.bincount(act.o_person[~act.o_web], minlength=n)
    consent_end = np.where(ident.consent_day < NEVER, ~pop.consent, pop.consent)
    people = pa.table({
        "person_id": np.arange(1, n + 1),
        "country": pop.country.astype(str),
        "home_store_id": stores.store_id[pop.home_store],
        "channel_preference": CHANNEL_NAMES[pop.channel_pref],
        "purchase_rate_per_day": pop.purchase_rate,
        "visit_rate_per_day": pop.visit_rate,
        "favourite_category": np.array(ref.CATEGORIES)[np.argmax(pop.taste, axis=1)],
        "category_taste": pa.array(list(pop.taste.round(4))),
        "satisfaction": pop.satisfaction,
        "base_churn_hazard_per_day": pop.base_hazard,
        "churn_hazard_per_day_end": act.hazard_end,
        "open_tickets_end": act.open_tickets_end,
        "bad_experience_end": act.bad_end,
        "engagement_end": act.engagement_end,
        "has_crm_contact": ident.primary_id >= 0,
        "has_duplicate_contact": ident.dup_id >= 0,
        "has_marketing_consent": consent_end & (ident.primary_id >= 0),
        "erased": erased,
        "churned_during_sim": churned,
        "churn_day_index": pa.array(np.where(churned, act.churn_day, 0), mask=~churned),
        "web_orders": web_orders,
        "store_orders": store_orders,
        "true_churn_probability": p_churn,
        # The horizon starts after this day (the oracle in customer360.ml reads it).
        "truth_date": pa.array([cfg.end] * n, pa.date32()),
    })
    _write(people, out / "people.parquet")

    parts: list[pa.Table] = []

    def add(kind: str, values, persons, shared=None) -> None:
        """persons are 0-based indexes, -1 for none (walk-ins)."""
        persons = np.asarray(persons, dtype=np.int64)
        parts.append(pa.table({
            "key_type": pa.array(np.full(len(persons), kind), pa.string()),
            "key_value": pa.array(np.asarray(values, dtype=object).astype(str), pa.string()),
            "person_id": pa.array(persons + 1, pa.int64(), mask=persons < 0),
            "is_shared_device": pa.array(np.zeros(len(persons), bool) if shared is None
                                         else np.asarray(shared, bool)),
        }))

    contact_ids = np.array(sorted(crm.contact_person), dtype=np.int64)
    add("crm_contact_id", contact_ids, [crm.contact_person[c] for c in contact_ids])
    add("web_user_id", web.user_ids, [crm.contact_person[int(u)] for u in web.user_ids])
    anon = sorted(set(web.anon_rows))
    owners: dict[str, set] = {}
    for a, p in anon:
        owners.setdefault(a, set()).add(p)
    add("anonymous_id", [a for a, _ in anon], [p for _, p in anon],
        [len(owners[a]) > 1 for a, _ in anon])
    by_kind = {"email": set(crm.emails), "phone": set(crm.phones), "loyalty_id": set(crm.loyalty)}
    for kind, value, person in pos.key_rows:
        by_kind[kind].add((value, person))
    # Web identify traits carry the contact's own email and phone, so the CRM ones cover them
    # (including the second address of a duplicate contact).
    for kind in ("email", "phone", "loyalty_id"):
        pairs = sorted(by_kind[kind])
        add(kind, [v for v, _ in pairs], [p for _, p in pairs])
    add("pos_transaction_id", pos.txn_id, pos.txn_person)
    add("web_order_id", web.orders.order_id, web.orders.person)
    _write(pa.concat_tables(parts), out / "keys.parquet")

    phones = crm.phone_fields
    persons = phones.column("person_index").to_numpy()
    _write(phones.drop(["person_index"]).append_column("person_id", pa.array(persons + 1, pa.int64())),
           out / "crm_phones.parquet")

    defects = sorted(web.defects + pos.defects, key=lambda d: (d["file"], d["line"] or 0))
    _write(pa.table({"file": pa.array([d["file"] for d in defects], pa.string()),
                     "line": pa.array([d["line"] for d in defects], pa.int64()),
                     "kind": pa.array([d["kind"] for d in defects], pa.string())}),
           out / "defects.parquet")

    experiments = _write_experiments(cfg, act, out / "experiments.parquet")

    shared_ids = sum(1 for a in owners if len(owners[a]) > 1)
    if crm.texts is not None:
        _write(pa.Table.from_pandas(crm.texts, preserve_index=False), out / "texts.parquet")
    summary = {
        "config": {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                   for k, v in cfg.__dict__.items()},
        "people": n,
        "people_with_contact": int((ident.primary_id >= 0).sum()),
        "churned_during_sim": int(churned.sum()),
        "erased_people": int(erased.sum()),
        "mean_true_churn_probability": float(np.mean(p_churn)),
        "stores": len(stores),
        "store_timezones": len(set(stores.timezone)),
        "gb18030_stores": int(stores.gb18030.sum()),
        "products": cfg.products,
        "duplicate_contacts": int((ident.dup_id >= 0).sum()),
        "shared_devices": shared_ids,
        "defects": len(defects),
        "experiments": experiments,
        **web.counts, **pos.counts, **crm.counts,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n",
                                      encoding="utf-8")
    return summary


def _write_experiments(cfg: SimulationConfig, act: Activity, path: Path) -> dict:
    """Who was shown which variation, and whether they ordered in the effect's window."""
    import datetime as dt

    window = cfg.experiment_window_days
    rows: dict[str, list] = {k: [] for k in ("experiment_id", "variation_id", "person_id",
                                             "exposed_day_index", "exposed_date",
                                             "orders_in_window", "converted")}
    out: dict = {}
    # orders per (person, day): a person's orders in a window by cumulative sums
    by_person_day = np.zeros((len(act.contact_day), cfg.days + 1), dtype=np.int64)
    np.add.at(by_person_day, (act.o_person, act.o_day + 1), 1)
    cum = np.cumsum(by_person_day, axis=1)
    for e, (exp_id, _) in enumerate(ref.EXPERIMENTS):
        people = np.flatnonzero(act.exp_exposed_day[e] < NEVER)
        day = act.exp_exposed_day[e, people].astype(np.int64)
        last = np.minimum(day + window, cfg.days - 1)
        orders = cum[people, last + 1] - cum[people, day]
        arm = act.exp_variation[e, people]
        rows["experiment_id"] += [exp_id] * len(people)
        rows["variation_id"] += [ref.VARIATIONS[a][0] for a in arm]
        rows["person_id"] += (people + 1).tolist()
        rows["exposed_day_index"] += day.tolist()
        rows["exposed_date"] += [cfg.start + dt.timedelta(days=int(d)) for d in day]
        rows["orders_in_window"] += orders.tolist()
        rows["converted"] += (orders > 0).tolist()
        out[exp_id] = {
            "true_purchase_rate_lift": float(act.exp_true_lift[e]),
            "window_days": window,
            "variations": {ref.VARIATIONS[a][0]: {"people": int((arm == a).sum()),
                                                  "converted": int(((arm == a) & (orders > 0)).sum())}
                           for a in range(len(ref.VARIATIONS))},
        }
    _write(pa.table({"experiment_id": pa.array(rows["experiment_id"], pa.string()),
                     "variation_id": pa.array(rows["variation_id"], pa.string()),
                     "person_id": pa.array(rows["person_id"], pa.int64()),
                     "exposed_day_index": pa.array(rows["exposed_day_index"], pa.int32()),
                     "exposed_date": pa.array(rows["exposed_date"], pa.date32()),
                     "orders_in_window": pa.array(rows["orders_in_window"], pa.int64()),
                     "converted": pa.array(rows["converted"], pa.bool_())}), path)
    return out
