"""CTAP error decoding: one kind, one message, one next step per code."""

from __future__ import annotations

import pytest
from fido2.ctap import CtapError

from tui.fido.errors import FidoError, FidoErrorKind, decode_ctap_error

ERR = CtapError.ERR


@pytest.mark.parametrize(
    ("code", "kind", "words"),
    [
        (ERR.PIN_INVALID, FidoErrorKind.PIN_INVALID, "Wrong FIDO PIN"),
        (ERR.PIN_AUTH_BLOCKED, FidoErrorKind.PIN_AUTH_BLOCKED, "removed and re-inserted"),
        (ERR.PIN_BLOCKED, FidoErrorKind.PIN_BLOCKED, "Only a FIDO reset"),
        (ERR.PIN_NOT_SET, FidoErrorKind.PIN_NOT_SET, "not a failure"),
        (ERR.NOT_ALLOWED, FidoErrorKind.NOT_ALLOWED, "re-insert"),
        (ERR.OPERATION_DENIED, FidoErrorKind.OPERATION_DENIED, "declined"),
        (ERR.USER_ACTION_TIMEOUT, FidoErrorKind.USER_ACTION_TIMEOUT, "No touch"),
        (ERR.ACTION_TIMEOUT, FidoErrorKind.USER_ACTION_TIMEOUT, "No touch"),
        (ERR.KEEPALIVE_CANCEL, FidoErrorKind.KEEPALIVE_CANCEL, "cancelled"),
        (ERR.PIN_POLICY_VIOLATION, FidoErrorKind.PIN_POLICY_VIOLATION, "63 bytes"),
        (ERR.PIN_AUTH_INVALID, FidoErrorKind.PIN_AUTH_INVALID, "no PIN try was used"),
        (ERR.CHANNEL_BUSY, FidoErrorKind.CHANNEL_BUSY, "busy"),
    ],
)
def test_code_decodes_to_kind(code, kind, words):
    result = decode_ctap_error(CtapError(code), transport="usb-hid")
    assert result.kind is kind
    assert result.code == code
    assert words in result.message
    assert f"0x{int(code):02X}" in result.message


def test_pin_invalid_carries_retries():
    result = decode_ctap_error(CtapError(ERR.PIN_INVALID), retries=6)
    assert result.retries == 6
    assert "6 tries left" in result.message
    assert result.consumed_retry
    assert "tries left unknown" in decode_ctap_error(ERR.PIN_INVALID).message


def test_pin_blocked_has_zero_retries():
    assert decode_ctap_error(CtapError(ERR.PIN_BLOCKED)).retries == 0


def test_auth_blocked_requires_power_cycle():
    result = decode_ctap_error(CtapError(ERR.PIN_AUTH_BLOCKED))
    assert result.power_cycle_required
    assert not decode_ctap_error(CtapError(ERR.PIN_INVALID)).power_cycle_required


def test_reset_window_in_not_allowed_message():
    assert "within 5 seconds of inserting" in decode_ctap_error(ERR.NOT_ALLOWED, reset_window_s=5).message


def test_other_depends_on_transport():
    over_pcsc = decode_ctap_error(CtapError(ERR.OTHER), transport="pcsc")
    assert over_pcsc.kind is FidoErrorKind.OTHER_OVER_PCSC
    assert over_pcsc.message.startswith("unknown CTAP error over PC/SC, retry over USB HID if available")
    over_hid = decode_ctap_error(CtapError(ERR.OTHER), transport="usb-hid")
    assert over_hid.kind is FidoErrorKind.OTHER


def test_unknown_vendor_code():
    result = decode_ctap_error(CtapError(0xF3))
    assert result.kind is FidoErrorKind.OTHER
    assert "0xF3" in result.message


def test_fido_error_message_is_result_message():
    result = decode_ctap_error(CtapError(ERR.PIN_BLOCKED))
    assert str(FidoError(result)) == result.message
