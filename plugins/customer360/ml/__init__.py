"""The ML stage: churn scores, behavioural segments and product recommendations.

Entry point: ``customer360.ml.pipeline.run_ml(settings, logical_date)``, called by the DAG and
the CLI after ``dbt build --select ml`` has built the point-in-time features.

Modules, top-down:
    pipeline      run_ml: train what is due, decide promotion, score, write, record
    spec          the model specs in the repository's models/ folder (one YAML a model)
    churn         churn label, time split, calibrated gradient boosting, metrics, heuristic
    segments      KMeans behavioural clusters, names from centres, stable ids across runs
    recommend     item-item affinity (co-purchase, co-view), hit rate vs popularity
    registry      ml.ml_model_runs, artifacts, champion lookup, promotion rule
    drift         population stability index against the previous run (ml.ml_drift)
    metrics       ROC/PR AUC, Brier, lift table, PSI
    model_card    markdown model cards beside the artifacts
    warehouse_io  reading features, atomic writes of the outputs

The simulator's churn ceiling, the synthetic marts and the dbt-free feature build used by tests
and benchmarks live in customer360.demo (ml_oracle, ml_synthetic, ml_dbt_render).
"""
