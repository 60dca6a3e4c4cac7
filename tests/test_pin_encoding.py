"""PIN and PUK encodings: FF padding, length and character rules, no value in messages."""

import pytest

from tui.errors import PolicyError
from tui.model import PinPolicy
from tui.pin import encode_aca_pin, encode_pin, encode_piv_pin, encode_puk
from tui.secret import Secret

NUMERIC_4_8 = PinPolicy(4, 8, numeric_only=True)
ANY_6_8 = PinPolicy(6, 8, numeric_only=False)


def test_piv_pin_padded_with_ff():
    encoded = encode_piv_pin(Secret("123456", "PIV PIN"))
    assert isinstance(encoded, Secret)
    assert encoded.reveal() == bytes.fromhex("313233343536FFFF")


def test_eight_char_pin_unpadded():
    assert encode_piv_pin(Secret("12345678")).reveal() == b"12345678"


def test_aca_pin_padded_with_ff():
    assert encode_aca_pin(Secret("0000"), NUMERIC_4_8).reveal() == bytes.fromhex("30303030FFFFFFFF")


def test_encoded_repr_hides_value():
    encoded = encode_piv_pin(Secret("123456"))
    assert "313233" not in repr(encoded)
    assert "123456" not in repr(encoded)


def test_short_piv_pin_message():
    with pytest.raises(PolicyError) as info:
        encode_piv_pin(Secret("12345"))
    assert str(info.value) == "PIN has 5 characters; this key needs 6 to 8"


def test_long_piv_pin_rejected():
    with pytest.raises(PolicyError, match="9 characters"):
        encode_piv_pin(Secret("123456789"))


def test_error_never_echoes_value():
    for value in ("98765", "987654321", "98a7"):
        with pytest.raises(PolicyError) as info:
            encode_aca_pin(Secret(value), PinPolicy(6, 8, numeric_only=True))
        assert value not in str(info.value)


def test_empty_pin_rejected():
    with pytest.raises(PolicyError, match="empty"):
        encode_piv_pin(Secret(""))


def test_numeric_policy_rejects_letters():
    with pytest.raises(PolicyError, match="digits only"):
        encode_aca_pin(Secret("12ab56"), NUMERIC_4_8)


def test_numeric_policy_rejects_unicode_digits():
    with pytest.raises(PolicyError):
        encode_aca_pin(Secret("١٢٣٤"), NUMERIC_4_8)


def test_alphanumeric_policy_accepts_letters():
    assert encode_aca_pin(Secret("ab12cd"), ANY_6_8).reveal() == b"ab12cd\xff\xff"


def test_policy_bounds_apply():
    with pytest.raises(PolicyError, match="this key needs 6 to 8"):
        encode_aca_pin(Secret("1234"), ANY_6_8)
    assert encode_aca_pin(Secret("1234"), NUMERIC_4_8).reveal()[:4] == b"1234"


def test_utf8_length_counted_in_bytes():
    # Four characters, eight UTF-8 bytes: fits 6..8 bytes.
    assert len(encode_piv_pin(Secret("éééé")).reveal()) == 8
    with pytest.raises(PolicyError, match="take 10 bytes"):
        encode_piv_pin(Secret("ééééé"))


def test_encode_pin_without_policy_uses_piv_rule():
    with pytest.raises(PolicyError, match="6 to 8"):
        encode_pin(Secret("1234"), None)
    assert encode_pin(Secret("1234"), NUMERIC_4_8).reveal() == b"1234\xff\xff\xff\xff"


def test_puk_padded():
    assert encode_puk(Secret("12345678")).reveal() == b"12345678"
    with pytest.raises(PolicyError, match="PUK has 4 characters"):
        encode_puk(Secret("1234"))


def test_puk_hex_8_bytes():
    encoded = encode_puk(Secret("0011223344556677"), "hex-8-bytes")
    assert encoded.reveal() == bytes.fromhex("0011223344556677")


def test_puk_hex_wrong_length():
    with pytest.raises(PolicyError, match="PUK has 15 characters; the hex-8-bytes encoding needs 16 hex digits"):
        encode_puk(Secret("001122334455667"), "hex-8-bytes")


def test_puk_hex_bad_digit():
    with pytest.raises(PolicyError, match="not hex digits") as info:
        encode_puk(Secret("00112233445566ZZ"), "hex-8-bytes")
    assert "ZZ" not in str(info.value)


def test_unknown_puk_encoding():
    with pytest.raises(PolicyError, match="unknown PUK encoding"):
        encode_puk(Secret("12345678"), "base64")
