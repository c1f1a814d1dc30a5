"""Text analytics (customer360.ml.text): language, sentiment, topics, masking before storage,
and the scoring helpers of customer360.demo.text_eval."""

import datetime as dt

import pandas as pd
import pytest

from customer360.core.masking import EMAIL_RE, SQL_EMAIL_PATTERN, SQL_PHONE_PATTERN
from customer360.demo import text_eval
from customer360.ml import text


@pytest.mark.parametrize("value, language", [
    ("The parcel never arrived.", "en"),
    ("包裹还没到，物流好几天没更新。", "zh-Hans"),
    ("包裹還沒到，物流好幾天沒更新。", "zh-Hant"),
    ("订单 ORD-20260301-XYZ 没有发货", "zh-Hans"),     # Latin ids inside Chinese text
    ("12345 !!!", "und"),
])
def test_language_by_script(value, language):
    assert text.detect_language(value) == language


@pytest.mark.parametrize("value, expected", [
    ("I love it, great quality, very happy!", "positive"),
    ("Terrible service, I am very angry and disappointed.", "negative"),
    ("这次购物很失望。", "negative"),
    ("這次購物很失望。", "negative"),                     # traditional reads as simplified
    ("非常喜欢，还会回购！", "positive"),
    ("我不满意", "negative"),                              # negation before a positive word
])
def test_sentiment_of_clear_texts(value, expected):
    score = text.sentiment(value)
    assert -1 <= score <= 1
    assert text.label(score) == expected


def test_negation_flips_a_chinese_sentiment_word():
    assert text.zh_sentiment(text.zh_tokens("满意")) > 0 > text.zh_sentiment(text.zh_tokens("不满意"))


def test_labels_follow_the_neutral_band():
    assert [text.label(s) for s in (-0.05, -0.049, 0.0, 0.049, 0.05)] == [
        "negative", "neutral", "neutral", "neutral", "positive"]


def _frame(texts):
    return pd.DataFrame({"source": "survey", "source_id": [str(i) for i in range(len(texts))],
                         "customer_id": "c1", "created_at": dt.datetime(2026, 3, 1), "text": texts})


def test_analyse_masks_pii_before_anything_is_kept():
    planted = ["Dear Ann Lee, write to ann.lee@example.com or call +86 138 0013 8000",
               "您好，李娜，我的身份证号是11010519491231002X，电话13800138000",
               "Great quality and fast delivery.", None, "   "]
    out = text.analyse(_frame(planted))
    assert len(out) == 3                                   # nothing to read in empty texts
    assert out.pii_masked.tolist() == [True, True, False]
    joined = " ".join(out.text)
    for secret in ("Ann Lee", "ann.lee@example.com", "138 0013 8000", "李娜", "11010519491231002X", "13800138000"):
        assert secret not in joined
    import duckdb

    con = duckdb.connect()
    con.register("t", out)
    assert con.execute(f"select count(*) from t where regexp_matches(text, '{SQL_EMAIL_PATTERN}') "
                       f"or regexp_matches(text, '{SQL_PHONE_PATTERN}')").fetchone()[0] == 0
    assert not any(EMAIL_RE.search(t) for t in out.text)


def test_topics_separate_distinct_complaints_in_both_languages():
    english = (["The delivery was late and the parcel took two weeks to arrive"] * 12
               + ["I was charged twice, please refund the duplicate payment on my card"] * 12)
    chinese = ["物流太慢了，包裹迟迟没有送到"] * 12 + ["订单重复扣款，请退款到银行卡"] * 12
    out = text.analyse(_frame(english + chinese))
    truth = ["delivery"] * 12 + ["billing"] * 12 + ["delivery"] * 12 + ["billing"] * 12
    assert text_eval.topic_purity(truth, out.topic) == 1.0
    assert out.topic.nunique() == 4                        # one model per language
    assert not (out.topic == text.UNASSIGNED).any()
    delivery_topic = out.topic.iloc[0]
    assert "delivery" in delivery_topic or "parcel" in delivery_topic or "late" in delivery_topic


def test_analyse_is_deterministic():
    texts = ["Delivery took far too long.", "送货太慢了。", "質量很好，發貨也快。", "Great value for the price."] * 5
    a, b = text.analyse(_frame(texts)), text.analyse(_frame(texts))
    pd.testing.assert_frame_equal(a.drop(columns="scored_at"), b.drop(columns="scored_at"))


def test_score_sentiment_against_the_majority_baseline():
    y = ["negative"] * 6 + ["positive"] * 3 + ["neutral"]
    perfect = text_eval.score_sentiment(y, y)
    assert perfect["accuracy"] == 1.0 and perfect["macro_f1"] == 1.0
    assert perfect["majority_label"] == "negative" and perfect["baseline_accuracy"] == 0.6
    assert perfect["accuracy_margin"] == pytest.approx(0.4)
    always_negative = text_eval.score_sentiment(y, ["negative"] * 10)
    assert always_negative["accuracy_margin"] == 0 and always_negative["macro_f1_margin"] == 0


def test_topic_purity():
    assert text_eval.topic_purity(["a", "a", "b", "b"], [1, 1, 2, 2]) == 1.0
    assert text_eval.topic_purity(["a", "b", "a", "b"], [1, 1, 1, 1]) == 0.5


def _known(frame):
    """What the next run reads back (text.read_known), from an analysis kept with its tokens."""
    import duckdb

    con = duckdb.connect()
    con.execute("create schema ml")
    con.register("kept", text.analysis_table(frame))
    con.execute(f"create table ml.{text.ANALYSIS_TABLE} as select * from kept")
    return text.read_known(con)


def test_an_analysis_reused_from_the_last_run_equals_a_fresh_one():
    texts = ["Delivery took far too long, the parcel was damaged.", "送货太慢了，包裹也坏了。",
             "質量很好，發貨也快。", "Great value for the price.", "I was charged twice for order 1234."] * 4
    first = text.analyse(_frame(texts), keep_tokens=True)
    known = _known(first)
    assert len(known) == 5                                 # one entry a distinct masked text
    again = text.analyse(_frame(texts), known=known, keep_tokens=True)
    pd.testing.assert_frame_equal(first.drop(columns="scored_at"), again.drop(columns="scored_at"))
    # and the kept entries are what it used: a planted score comes back
    planted = dict(known)
    planted[texts[3]] = (planted[texts[3]][0], -0.9)
    assert text.analyse(_frame(texts[:4]), known=planted).sentiment_score.tolist()[3] == -0.9


def test_a_text_whose_masking_changed_is_read_again():
    """A name learned since the last run changes the masked text: nothing is reused for it."""
    from customer360.core.masking import KnownNames

    texts = ["My friend Zelda Quist said the delivery was terrible.", "Great value for the price."]
    known = _known(text.analyse(_frame(texts), keep_tokens=True))
    names = KnownNames([("Zelda", "Quist")])
    fresh = text.analyse(_frame(texts), names=names)
    reused = text.analyse(_frame(texts), names=names, known=known)
    assert "Zelda" not in fresh.text[0] and fresh.text[0] not in known and fresh.text[1] in known
    pd.testing.assert_frame_equal(fresh.drop(columns="scored_at"), reused.drop(columns="scored_at"))


def test_the_kept_analysis_of_another_model_version_is_not_read():
    first = text.analyse(_frame(["Great value for the price."]), keep_tokens=True)
    first["model_version"] = "text-older"
    assert _known(first) == {}
