-- One row a date and complaint topic: texts received, how many read negative, and the
-- negative share against the topic's trailing 28 days before that date. A spike is a share
-- above the baseline by more than three binomial standard errors, on at least
-- var('feedback_spike_min_texts') texts and with more negatives than the baseline expects:
-- a small day cannot raise it by chance.
with daily as (

    select
        created_date as date,
        topic,
        count(*) as texts,
        count(*) filter (where sentiment_label = 'negative') as negative_texts
    from {{ ref('fct_feedback_text') }}
    group by 1, 2

),

with_baseline as (

    select
        daily.*,
        sum(negative_texts) over recent as baseline_negative_texts,
        sum(texts) over recent as baseline_texts
    from daily
    window recent as (partition by topic order by date
                      range between interval 28 days preceding and interval 1 day preceding)

)

select
    date,
    topic,
    texts,
    negative_texts,
    cast(negative_texts as double) / texts as negative_share,
    cast(coalesce(baseline_texts, 0) as bigint) as baseline_texts,
    cast(baseline_negative_texts as double) / nullif(baseline_texts, 0) as baseline_negative_share,
    coalesce(
        texts >= {{ var('feedback_spike_min_texts', 10) }}
        and baseline_texts >= {{ var('feedback_spike_min_texts', 10) }}
        and cast(negative_texts as double) / texts
            > baseline_negative_texts / baseline_texts
              + 3 * sqrt(greatest(baseline_negative_texts / baseline_texts
                                  * (1 - baseline_negative_texts / baseline_texts), 0.0025) / texts),
        false) as is_spike
from with_baseline
