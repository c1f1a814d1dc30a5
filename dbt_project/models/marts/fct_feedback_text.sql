-- One row a ticket (subject and content) or survey comment: its language, sentiment and
-- complaint topic as the ML stage read them (customer360.ml.text). The text is the masked
-- copy: emails, phones, identity numbers and greeted names are replaced by tags.
with scored as (

    {{ ml_output('ml_feedback_text', {
        'source': 'varchar', 'source_id': 'varchar', 'customer_id': 'varchar',
        'language': 'varchar', 'sentiment_score': 'double', 'sentiment_label': 'varchar',
        'topic': 'varchar', 'created_at': 'timestamp', 'text': 'varchar',
        'pii_masked': 'boolean', 'model_version': 'varchar', 'scored_at': 'timestamp'}) }}

)

select
    source,
    source_id,
    customer_id,
    language,
    sentiment_score,
    sentiment_label,
    topic,
    created_at,
    cast(created_at as date) as created_date,
    text as masked_text,
    pii_masked,
    model_version,
    scored_at
from scored
