{#- Statistics in SQL, so the experiment mart runs on any warehouse engine (a dbt Python model
    would run only on DuckDB). DuckDB 1.5 has no erf/normal CDF, hence the approximation.
    tests/test_journeys.py checks these against scipy. -#}

{#- Standard normal CDF, Phi(x): Abramowitz and Stegun 7.1.26 for erf (absolute error below
    1.5e-7), Phi(x) = (1 + erf(x / sqrt 2)) / 2, written for |x| and mirrored. -#}
{% macro normal_cdf(x) -%}
    (case when ({{ x }}) is null then null else
        0.5 + sign({{ x }}) * 0.5 * (1 - (
            ((((1.061405429 * (1 / (1 + 0.3275911 * abs({{ x }}) / sqrt(2))) - 1.453152027)
                * (1 / (1 + 0.3275911 * abs({{ x }}) / sqrt(2))) + 1.421413741)
                * (1 / (1 + 0.3275911 * abs({{ x }}) / sqrt(2))) - 0.284496736)
                * (1 / (1 + 0.3275911 * abs({{ x }}) / sqrt(2))) + 0.254829592)
            * (1 / (1 + 0.3275911 * abs({{ x }}) / sqrt(2)))
            * exp(-(({{ x }}) * ({{ x }})) / 2)))
    end)
{%- endmacro %}

{#- Two-sided p-value of a standard normal statistic z. -#}
{% macro two_sided_p(z) -%}
    (2 * (1 - {{ normal_cdf('abs(' ~ z ~ ')') }}))
{%- endmacro %}

{#- Upper tail of a chi-square statistic x with df degrees of freedom: exact through the
    normal for df = 1 (chi2 = z^2), else the Wilson-Hilferty cube-root approximation. -#}
{% macro chi_square_p(x, df) -%}
    (case when ({{ df }}) < 1 or ({{ x }}) is null then null
          when ({{ df }}) = 1 then {{ two_sided_p('sqrt(' ~ x ~ ')') }}
          else 1 - {{ normal_cdf('((pow((' ~ x ~ ') / (' ~ df ~ '), 1.0 / 3) - (1 - 2.0 / (9 * (' ~ df ~ '))))'
                                  ~ ' / sqrt(2.0 / (9 * (' ~ df ~ '))))') }}
     end)
{%- endmacro %}

{#- Marketing channel of a visit, from its UTM medium, else its referrer (Google Analytics'
    default channel grouping, shortened). -#}
{% macro marketing_channel(medium, referrer) -%}
    case
        when lower({{ medium }}) in ('cpc', 'ppc', 'paid', 'paidsearch', 'paid_search') then 'paid_search'
        when lower({{ medium }}) in ('email', 'e-mail', 'newsletter') then 'email'
        when lower({{ medium }}) in ('social', 'paid_social', 'social-network', 'sm') then 'social'
        when lower({{ medium }}) in ('display', 'banner', 'cpm') then 'display'
        when lower({{ medium }}) = 'affiliate' then 'affiliate'
        when lower({{ medium }}) = 'referral' then 'referral'
        when {{ medium }} is not null then 'other_campaign'
        when {{ regex_search("coalesce(" ~ referrer ~ ", '')", '(google|baidu|bing|yahoo|sogou|so\.com|duckduckgo)\.') }}
            then 'organic_search'
        when {{ regex_search("coalesce(" ~ referrer ~ ", '')", '(weixin|wechat|xiaohongshu|weibo|facebook|instagram|douyin|t\.co)') }}
            then 'organic_social'
        when coalesce({{ referrer }}, '') <> '' then 'referral'
        else 'direct'
    end
{%- endmacro %}
