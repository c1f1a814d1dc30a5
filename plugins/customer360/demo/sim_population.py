"""The simulated people: who they are (names, contact details, devices) and how they behave
(latent traits the sources never show directly but every signal comes from).

Latent traits:
- ``channel_pref``: 0 web, 1 store, 2 both; ``web_share`` is the share of their orders placed online
- ``purchase_rate``: orders per day while active; ``visit_rate``: web visits per day while active
- ``taste``: a probability per product category
- ``satisfaction`` in (0, 1): drives feedback scores and tickets, and the base churn hazard
- ``base_hazard``: daily churn hazard before experiences (tickets, low scores) and engagement move it
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from customer360.demo import sim_keys
from customer360.demo import sim_reference as ref
from customer360.demo.sim_config import SimulationConfig

WEB, STORE, BOTH = 0, 1, 2
CHANNEL_NAMES = np.array(["web", "store", "both"])
_COUNTRY_WEIGHT = {"CN": 0.62, "HK": 0.12, "JP": 0.1, "GB": 0.08, "US": 0.08}


@dataclass
class Population:
    n: int
    country: np.ndarray          # str
    home_store: np.ndarray       # int index into stores
    gender: np.ndarray           # "female" / "male"
    firstname: np.ndarray        # as the CRM holds it (Chinese characters or latin)
    lastname: np.ndarray
    email: np.ndarray            # canonical
    phone_nsn: np.ndarray        # national significant number
    phone: np.ndarray            # canonical E.164
    loyalty: np.ndarray          # canonical id, used once the person enrolls
    date_of_birth: np.ndarray    # "YYYY-MM-DD" or None
    city: np.ndarray
    consent: np.ndarray          # bool, initial marketing consent
    existing: np.ndarray         # bool: has a CRM contact before the first day
    enrolled_at_start: np.ndarray  # bool: has a loyalty id before the first day
    channel_pref: np.ndarray
    web_share: np.ndarray
    purchase_rate: np.ndarray
    visit_rate: np.ndarray
    satisfaction: np.ndarray
    base_hazard: np.ndarray
    taste: np.ndarray            # (n, categories)
    device_start: np.ndarray     # first device id of each person
    device_count: np.ndarray
    shared_device: np.ndarray    # device id of another person's device this person also uses, or -1
    device_ua: np.ndarray        # per device: index into USER_AGENTS
    device_locale: np.ndarray    # per device: locale string
    device_ip: np.ndarray        # per device: IPv4 as uint32


def base_daily_hazard(churn_90d: float) -> float:
    return -np.log1p(-churn_90d) / 90.0


def build_population(cfg: SimulationConfig, stores: ref.Stores) -> Population:
    rng = cfg.rng("population")
    n = cfg.people
    # People live where the stores are.
    countries = [c for c in ref.COUNTRIES if c in set(stores.country)]
    w = np.array([_COUNTRY_WEIGHT[c] for c in countries])
    country = np.array(countries)[rng.choice(len(countries), size=n, p=w / w.sum())]
    home_store = np.empty(n, dtype=np.int64)
    for c in countries:
        rows = np.flatnonzero(country == c)
        home_store[rows] = rng.choice(np.flatnonzero(stores.country == c), size=len(rows))

    gender = np.where(rng.random(n) < 0.55, "female", "male")
    first, last, first_latin, last_latin = _names(rng, country, gender)
    email = _emails(rng, country, first_latin, last_latin)
    phone_nsn = np.empty(n, dtype=object)
    for c in countries:
        rows = np.flatnonzero(country == c)
        phone_nsn[rows] = sim_keys.national_numbers(rng, c, len(rows))
    loyalty = np.array([f"LY{v:08d}" for v in rng.choice(10**8, size=n, replace=False)], dtype=object)
    birth = (np.datetime64(cfg.start.isoformat()) -
             rng.integers(18 * 365, 75 * 365, size=n).astype("timedelta64[D]")).astype(str)
    dob = np.where(rng.random(n) < 0.8, birth, None)
    city = np.array([r["city"] if r["file_encoding"] == "UTF-8" else _latin_city(r)
                     for r in stores.rows], dtype=object)[home_store]

    channel_pref = rng.choice(3, size=n, p=[0.35, 0.3, 0.35])
    web_share = np.array([0.95, 0.05, 0.5])[channel_pref]
    purchase_rate = rng.gamma(2.0, 1.0 / cfg.mean_days_between_orders / 2.0, size=n)
    visit_rate = (rng.gamma(1.5, 1.0 / 1.5, size=n) / cfg.mean_days_between_visits
                  * np.array([1.0, 0.25, 0.65])[channel_pref])
    satisfaction = rng.beta(4.0, 1.8, size=n)
    base_hazard = (base_daily_hazard(cfg.churn_90d) * np.exp(0.4 * rng.standard_normal(n))
                   * np.exp(2.0 * (0.69 - satisfaction)))
    taste = rng.dirichlet(np.full(len(ref.CATEGORIES), 0.6), size=n)

    existing = rng.random(n) < cfg.existing_customer_share
    enrolled = existing & (channel_pref != WEB) & (rng.random(n) < 0.7)
    consent = rng.random(n) < 0.6

    device_count = 1 + rng.binomial(2, 0.25, size=n)
    device_start = np.concatenate([[0], np.cumsum(device_count)[:-1]])
    n_dev = int(device_count.sum())
    device_owner = np.repeat(np.arange(n), device_count)
    locales = np.empty(n_dev, dtype=object)
    for c in countries:
        rows = np.flatnonzero(country[device_owner] == c)
        pool = ref.COUNTRY_LOCALES[c]
        locales[rows] = np.array(pool, dtype=object)[rng.integers(len(pool), size=len(rows))]
    device_ua = rng.integers(len(ref.USER_AGENTS), size=n_dev)
    device_ip = rng.integers(16_777_216, 3_758_096_383, size=n_dev, dtype=np.uint32)

    # Households: a person also uses another (web-active) person's main computer and logs in on it.
    shared = np.full(n, -1, dtype=np.int64)
    candidates = np.flatnonzero(existing & (channel_pref != STORE))
    k = min(int(round(cfg.shared_device_rate * n)), len(candidates) // 2)
    if k:
        chosen = rng.choice(candidates, size=2 * k, replace=False)
        users, owners = chosen[:k], chosen[k:]
        shared[users] = device_start[owners]

    return Population(
        n=n, country=country, home_store=home_store, gender=gender, firstname=first,
        lastname=last, email=email, phone_nsn=phone_nsn,
        phone=sim_keys.e164(phone_nsn, country), loyalty=loyalty, date_of_birth=dob, city=city,
        consent=consent, existing=existing, enrolled_at_start=enrolled, channel_pref=channel_pref,
        web_share=web_share, purchase_rate=purchase_rate, visit_rate=visit_rate,
        satisfaction=satisfaction, base_hazard=base_hazard, taste=taste,
        device_start=device_start, device_count=device_count, shared_device=shared,
        device_ua=device_ua, device_locale=locales, device_ip=device_ip,
    )


def _latin_city(row: dict) -> str:
    for sites in ref.STORE_SITES.values():
        for site in sites:
            if site[1] == row["city"]:
                return site[0]
    return row["city"]


def _pick(rng: np.random.Generator, pool: list, n: int) -> np.ndarray:
    arr = np.empty(len(pool), dtype=object)
    arr[:] = pool
    return arr[rng.integers(len(pool), size=n)]


def _names(rng: np.random.Generator, country: np.ndarray, gender: np.ndarray):
    n = len(country)
    first = np.empty(n, dtype=object)
    last = np.empty(n, dtype=object)
    first_latin = np.empty(n, dtype=object)
    last_latin = np.empty(n, dtype=object)
    female = gender == "female"
    for c in ("CN", "HK"):
        rows = np.flatnonzero(country == c)
        surnames = ref.CN_SURNAMES if c == "CN" else ref.HK_SURNAMES
        s = _pick(rng, surnames, len(rows))
        g = np.where(female[rows], _pick(rng, ref.CN_GIVEN_F, len(rows)),
                     _pick(rng, ref.CN_GIVEN_M, len(rows)))
        english_given = np.where(female[rows], _pick(rng, ref.EN_GIVEN_F, len(rows)),
                                 _pick(rng, ref.EN_GIVEN_M, len(rows)))
        # Most mainland customers enter their name in characters; many in Hong Kong use an
        # English given name.
        hanzi = rng.random(len(rows)) < (0.7 if c == "CN" else 0.4)
        eng_given = (~hanzi) & (rng.random(len(rows)) < (0.15 if c == "CN" else 0.7))
        for j, r in enumerate(rows):
            first_latin[r] = english_given[j] if eng_given[j] else g[j][1]
            last_latin[r] = s[j][1]
            first[r] = g[j][0] if hanzi[j] else first_latin[r]
            last[r] = s[j][0] if hanzi[j] else last_latin[r]
    rows = np.flatnonzero(country == "JP")
    first_latin[rows] = np.where(female[rows], _pick(rng, ref.JP_GIVEN_F, len(rows)),
                                 _pick(rng, ref.JP_GIVEN_M, len(rows)))
    last_latin[rows] = _pick(rng, ref.JP_SURNAMES, len(rows))
    rows = np.flatnonzero((country == "GB") | (country == "US"))
    first_latin[rows] = np.where(female[rows], _pick(rng, ref.EN_GIVEN_F, len(rows)),
                                 _pick(rng, ref.EN_GIVEN_M, len(rows)))
    last_latin[rows] = _pick(rng, ref.EN_SURNAMES, len(rows))
    latin = ~np.isin(country, ["CN", "HK"])
    first[latin] = first_latin[latin]
    last[latin] = last_latin[latin]
    return first, last, first_latin, last_latin


def _emails(rng: np.random.Generator, country: np.ndarray, first: np.ndarray,
            last: np.ndarray) -> np.ndarray:
    """Distinct lowercase emails; the running number keeps them unique, as a real address
    book's would be."""
    n = len(country)
    style = rng.integers(3, size=n)
    number = rng.permutation(n) + 10 + rng.integers(0, 90, size=n) * n
    domains = np.empty(n, dtype=object)
    for c, pool in ref.COUNTRY_EMAIL_DOMAINS.items():
        rows = np.flatnonzero(country == c)
        domains[rows] = _pick(rng, pool, len(rows))
    out = np.empty(n, dtype=object)
    for i in range(n):
        f, l = first[i].lower().replace(" ", ""), last[i].lower().replace(" ", "")
        local = (f"{f}.{l}{number[i]}", f"{f[0]}{l}{number[i]}", f"{l}_{f}{number[i]}")[style[i]]
        out[i] = f"{local}@{domains[i]}"
    return out


def start_of(day: dt.date) -> int:
    """Epoch milliseconds of 00:00 UTC on ``day``."""
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp() * 1000)
