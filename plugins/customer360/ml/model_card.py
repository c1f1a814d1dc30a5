"""Model cards: a markdown page beside every artifact (data, metrics, intended use, limits).

Built only from the run's metadata (aggregates, dates, names of features), never from rows,
so a card holds no personal data.
"""

from __future__ import annotations

import json

from customer360.ml.spec import ModelSpec

LIMITS = {
    "churn_classifier": [
        "Trained on short histories the label window is only a few snapshots wide; metrics move "
        "with the season of the evaluation snapshot.",
        "A probability describes a group of similar customers, not a certainty about one person; "
        "do not use it alone for decisions with legal or similar effects on an individual.",
        "Customers with no order are not scored (risk band no_orders).",
        "Identity resolution errors (merged or split customers) carry into features and labels.",
    ],
    "behavioural_segments": [
        "Segments describe behaviour over the last year as seen in our channels; a customer's "
        "segment can change from one run to the next.",
        "Names are derived from cluster centres by fixed rules and inherited by matched clusters; "
        "a cluster that drifts far gets a new id and a fresh name.",
    ],
    "customer_value": [
        "BG/NBD assumes a customer can leave only right after a purchase and buys at a steady "
        "rate while active; seasonality and campaigns are not in it.",
        "clv_365d is undiscounted net revenue (expected purchase days x expected net amount of one); "
        "margins and costs are not in it.",
        "Customers whose first purchase lies in the holdout are scored but not validated.",
        "A value describes a group of similar customers; do not use it alone for decisions about one person.",
    ],
    "item_item_recommender": [
        "Learns only from products bought or viewed in the lookback window: new products are not "
        "recommended until someone interacts with them.",
        "Hit rate on a short holdout is noisy; compare it with the popularity baseline of the same run.",
    ],
}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if value is None:
        return "n/a"
    return str(value)


def render(spec: ModelSpec, metadata: dict) -> str:
    metrics = metadata.get("metrics", {})
    scalar = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    lines = [
        f"# Model card: {spec.name} {metadata['model_version']}",
        "",
        f"- Kind: {spec.kind}; algorithm: {spec.section('algorithm').get('estimator')}",
        f"- Trained at (UTC): {metadata.get('trained_at')}; logical date {metadata.get('logical_date')}",
        f"- Spec: models/{spec.path.name} (hash {spec.hash})",
        f"- Promoted: {metadata.get('promoted')} ({metadata.get('decision')})",
        "",
        "## Intended use",
        "",
        spec.raw.get("description", "").strip(),
        "",
        "## Data",
        "",
        f"- Source: warehouse tables {', '.join(metadata.get('sources', []))}",
        f"- Training window: {metadata.get('training_window_start')} to {metadata.get('training_window_end')}",
        f"- Evaluation: {metadata.get('evaluation_window')}",
        f"- Rows: {metadata.get('train_rows')} for training, {metadata.get('eval_rows')} for evaluation",
        f"- Population: {spec.raw.get('population', 'n/a')}",
        "",
        "## Features",
        "",
        ", ".join(f"`{f}`" for f in metadata.get("features", [])) or "n/a",
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in sorted(scalar.items())],
    ]
    if metrics.get("lift_table"):
        lines += ["", "### Lift table (evaluation snapshot, bin 1 = highest risk)", "",
                  "| bin | customers | mean probability | churn rate | lift | cumulative capture |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['bin']} | {r['customers']} | {_fmt(r['mean_probability'])} | {_fmt(r['churn_rate'])} "
                  f"| {_fmt(r['lift'])} | {_fmt(r['cumulative_capture'])} |" for r in metrics["lift_table"]]
    if metrics.get("top_features"):
        lines += ["", "### Most important features (permutation, drop in ROC AUC)", ""]
        lines += [f"- `{f['feature']}`: {_fmt(f['importance'])}" for f in metrics["top_features"][:10]]
    if metrics.get("holdout_curve"):
        lines += ["", "### Holdout: cumulative repeat purchase days after the calibration period", "",
                  "| day | predicted | actual |", "|---|---|---|"]
        lines += [f"| {r['day']} | {_fmt(r['predicted'])} | {r['actual']} |" for r in metrics["holdout_curve"]]
    if metadata.get("segments"):
        lines += ["", "### Segments (centres in transformed units)", "", "```",
                  json.dumps(metadata["segments"], indent=1), "```"]
    lines += ["", "## Hyperparameters", "", "```", json.dumps(metadata.get("hyperparameters", {}),
                                                             indent=1, sort_keys=True, default=str), "```",
              "", "## Limits", ""]
    lines += [f"- {text}" for text in LIMITS.get(spec.kind, [])]
    lines += [f"- {text}" for text in spec.raw.get("limits", [])]
    return "\n".join(lines) + "\n"
