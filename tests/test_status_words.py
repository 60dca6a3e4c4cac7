"""Every row of `decode_sw`, and how the scan turns status-query replies into counters."""

import pytest

from tui.apdu import StatusKind, decode_sw
from tui.model import PinState, Source
from tui.piv import counter_from_status_query

FIXED_ROWS = [
    (0x9000, StatusKind.OK),
    (0x6983, StatusKind.BLOCKED),
    (0x6A88, StatusKind.NOT_DEFINED),
    (0x6A82, StatusKind.NOT_SUPPORTED),
    (0x6D00, StatusKind.NOT_SUPPORTED),
    (0x6E00, StatusKind.NOT_SUPPORTED),
    (0x6982, StatusKind.SECURITY_STATUS),
    (0x6985, StatusKind.CONDITIONS),
    (0x6A80, StatusKind.WRONG_DATA),
    (0x6700, StatusKind.WRONG_LENGTH),
    (0x6A86, StatusKind.WRONG_PARAMETERS),
    (0x6B00, StatusKind.WRONG_PARAMETERS),
]


@pytest.mark.parametrize(("sw", "kind"), FIXED_ROWS)
def test_fixed_status_words(sw, kind):
    status = decode_sw(sw)
    assert status.kind is kind
    assert status.tries is None


@pytest.mark.parametrize("tries", range(16))
def test_63cx_carries_tries(tries):
    status = decode_sw(0x63C0 | tries)
    assert status.kind is StatusKind.VERIFY_FAILED
    assert status.tries == tries


@pytest.mark.parametrize("tries", range(16))
def test_630x_neo_form_carries_tries(tries):
    status = decode_sw(0x6300 | tries)
    assert status.kind is StatusKind.VERIFY_FAILED
    assert status.tries == tries


def test_6300_without_counter_is_warning():
    status = decode_sw(0x6300, counter_in_630x=False)
    assert status.kind is StatusKind.WARNING
    assert status.tries is None


def test_other_63xx_is_warning():
    assert decode_sw(0x6381).kind is StatusKind.WARNING


def test_9000_to_status_query_is_count_unknown():
    status = decode_sw(0x9000, status_query=True)
    assert status.kind is StatusKind.VERIFIED_COUNT_UNKNOWN
    assert status.ok
    assert "not readable" in status.words()


def test_61xx_is_more_data():
    assert decode_sw(0x6110).kind is StatusKind.MORE_DATA


def test_6cxx_is_wrong_le():
    assert decode_sw(0x6C08).kind is StatusKind.WRONG_LE


def test_unmapped_word_is_other():
    status = decode_sw(0x6F00)
    assert status.kind is StatusKind.OTHER
    assert "6F00" in status.words()


@pytest.mark.parametrize("sw", [-1, 0x10000])
def test_out_of_range_word_rejected(sw):
    with pytest.raises(ValueError):
        decode_sw(sw)


def test_words_singular_and_plural():
    assert decode_sw(0x63C1).words() == "verify failed, 1 try left"
    assert decode_sw(0x63C3).words() == "verify failed, 3 tries left"


STATUS_QUERY_ROWS = [
    (0x63C3, PinState.OK, 3),
    (0x63C0, PinState.BLOCKED, 0),
    (0x6983, PinState.BLOCKED, 0),
    (0x6A88, PinState.NOT_SET, None),
    (0x9000, PinState.VERIFIED_COUNT_UNKNOWN, None),
    (0x6D00, PinState.UNKNOWN, None),
    (0x6982, PinState.UNKNOWN, None),
]


@pytest.mark.parametrize(("sw", "state", "remaining"), STATUS_QUERY_ROWS)
def test_status_query_counter(sw, state, remaining):
    counter = counter_from_status_query(decode_sw(sw, status_query=True), Source.STATUS_QUERY)
    assert counter.state is state
    assert counter.remaining == remaining
    assert counter.source is Source.STATUS_QUERY


def test_unread_counter_is_never_zero():
    counter = counter_from_status_query(decode_sw(0x6D00, status_query=True), Source.STATUS_QUERY)
    assert counter.remaining is None
    assert "6D00" in counter.detail
