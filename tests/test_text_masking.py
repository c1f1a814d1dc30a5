"""PII planted in free text, in English and Chinese (simplified and traditional), is masked."""

import pytest

from customer360.core.masking import is_resident_id, mask_text

# 11010519491231002X is the standard's worked example; its check character is X.
VALID_ID = "11010519491231002X"


def test_resident_id_checksum():
    assert is_resident_id(VALID_ID)
    assert is_resident_id(VALID_ID.lower())
    assert not is_resident_id("110105194912310021")   # wrong check character
    assert not is_resident_id("110105194913310029")   # month 13


@pytest.mark.parametrize("text, secret", [
    ("我的身份证号是11010519491231002X，请核实。", VALID_ID),
    ("ID: 11010519491231002x please verify", "11010519491231002x"),
    ("请联系我：13800138000。", "13800138000"),
    ("請聯繫我：+86 138-0013-8000。", "138-0013-8000"),
    ("call me on 9123 9904 tonight", "9123 9904"),
    ("You can reach me at ann.lee@example.com.", "ann.lee@example.com"),
    ("Dear Ann Lee, my parcel is late.", "Ann Lee"),
    ("Hi Mr. Zhang, thanks", "Zhang"),
    ("王小明先生您好，订单没到", "王小明"),
    ("李女士的订单", "李"),
    ("您好，李娜，我的包裹还没到。", "李娜"),
    ("親愛的陳美玲：包裹破損了", "陳美玲"),
])
def test_planted_pii_is_masked(text, secret):
    for placeholders in (False, True):
        masked = mask_text(text, placeholders=placeholders)
        assert secret not in masked, masked
        assert secret.lower() not in masked.lower() or len(secret) == 1, masked


def test_placeholders_name_what_was_removed():
    masked = mask_text(f"Dear Ann, call 13800138000 or ann@example.com, ID {VALID_ID}",
                       placeholders=True)
    assert masked == "Dear [name], call [phone] or [email], ID [id]"


@pytest.mark.parametrize("text", [
    "Order 202603011234567890 was charged twice",      # 18 digits, not a valid identity number
    "同一个订单被扣了两次款，请退还一笔。",
    "The item arrived on 2026-03-01 10:00:00 damaged",
    "Great quality and fast delivery.",
])
def test_text_without_pii_is_unchanged(text):
    assert mask_text(text, placeholders=True) == text


def test_known_contact_names_are_masked_anywhere_in_the_text():
    from customer360.core.masking import KnownNames

    names = KnownNames([("Zelda", "Quist"), ("芳", "王"), ("美玲", "陈"), (None, None), ("A", None)])
    masked = mask_text("My friend Zelda Quist recommended your shop. Great service, thanks! Zelda",
                       placeholders=True, names=names)
    assert "Zelda" not in masked and "Quist" not in masked
    assert masked == "My friend [name] [name] recommended your shop. Great service, thanks! [name]"
    assert mask_text("王芳推荐的，美玲也说好", placeholders=True, names=names) == "[name]推荐的，[name]也说好"
    # lower-case words and single letters are not names
    assert mask_text("a quist of zelda", placeholders=True, names=names) == "a quist of zelda"
