"""Step 5: the OTP slot listing on lab keys, and the explicit one-code HOTP generation."""

import logging

import pytest

from tui.errors import PolicyError
from tui.hotp import hotp
from tui.lab.backend import LabBackend
from tui.lab.card import VirtualCard
from tui.lab.oath import (
    RFC_4226_SEED,
    HidOathInstance,
    OathAccount,
    hotp_slot,
    install_hid_oath,
    install_yubikey_otp,
    totp_slot,
)
from tui.lab.scenarios import crescendo_key, yubikey
from tui.model import Profile
from tui.oath import HotpOutcome, OtpApplet, generate_hotp_code, list_otp_slots, parse_hid_oath_select, OtpSlot
from tui.settings import SiteSettings
from tui.transport import TRAFFIC, Channel

HOTP_AUTHENTICATE_HEADER = "80 88 00 00"


class CardTransport:
    """A transport straight onto a lab `VirtualCard`, for cards no scenario builds."""

    reader = "Lab test reader 00 00"

    def __init__(self, card):
        self.card = card

    def connect(self):
        return self.card.atr

    def transmit_raw(self, apdu):
        return self.card.transmit(apdu)

    def begin_transaction(self):
        pass

    def end_transaction(self):
        pass

    def disconnect(self):
        pass


def drift_channel():
    backend = LabBackend("otp-drift")
    key = backend.keys[0]
    transport = backend.open(key.reader)
    transport.connect()
    slot_one = next(a for a in key.card.applets if isinstance(a, HidOathInstance) and a.slot == 1)
    return Channel(transport), key, slot_one


def crescendo_channel(slots, *, needs_button=False):
    key = crescendo_key(11)
    instances = install_hid_oath(key.card, slots, store=key.store, needs_button=needs_button)
    return Channel(CardTransport(key.card)), instances


def headers(channel):
    return [e.command.header for e in channel.exchanges]


# --- HID listing ---------------------------------------------------------------------------


def test_lab_listing_reads_slot_one():
    channel, _, _ = drift_channel()
    slots = list_otp_slots(channel, Profile.HID_CRESCENDO, SiteSettings(), is_lab=True)
    first = slots.button_slot()
    assert first.slot == "1"
    assert first.present is True
    assert first.configured is True
    assert first.mode == "HOTP"
    assert first.algorithm == "SHA-1"
    assert first.digits == 6
    assert first.name == "VPN OTP"
    assert first.counter == 1042
    assert first.inferred is True
    assert [s.configured for s in slots.slots] == [True, False, False]


def test_listing_sends_no_generate_command():
    channel, _, slot_one = drift_channel()
    list_otp_slots(channel, Profile.HID_CRESCENDO, SiteSettings(), is_lab=True)
    assert HOTP_AUTHENTICATE_HEADER not in headers(channel)
    assert all(e.command.ins == 0xA4 for e in channel.exchanges)
    assert len(channel.exchanges) == 3
    assert slot_one.config.counter == 1042
    assert slot_one.codes_generated == 0


def test_real_key_fields_unknown_without_setting():
    channel, _, _ = drift_channel()
    slots = list_otp_slots(channel, Profile.HID_CRESCENDO, SiteSettings(), is_lab=False)
    first = slots.button_slot()
    assert first.present is True
    assert first.configured is None
    assert first.mode == "HOTP"  # slot 1 is HOTP-only by HID's documentation
    assert first.algorithm is None
    assert first.digits is None
    assert first.name is None
    assert first.counter is None
    assert first.inferred is False
    texts = first.field_texts()
    assert texts["state"] == "unknown"
    assert texts["algorithm"] == "unknown"
    assert any("no command that reads an OATH slot configuration back" in note for note in slots.notes)


def test_real_key_fields_read_with_setting():
    channel, _, _ = drift_channel()
    settings = SiteSettings(allow_unverified_commands=True)
    slots = list_otp_slots(channel, Profile.HID_CRESCENDO, settings, is_lab=False)
    assert slots.button_slot().name == "VPN OTP"
    assert slots.inferred is True


def test_totp_slot_listed():
    channel, _ = crescendo_channel({1: hotp_slot(), 2: totp_slot(name="Portal", digits=8, algorithm="SHA-256")})
    slots = list_otp_slots(channel, Profile.HID_CRESCENDO, SiteSettings(), is_lab=True)
    second = slots.slots[1]
    assert second.mode == "TOTP"
    assert second.digits == 8
    assert second.algorithm == "SHA-256"
    assert second.counter is None


def test_missing_instances_not_present():
    key = crescendo_key(12)
    channel = Channel(CardTransport(key.card))
    slots = list_otp_slots(channel, Profile.HID_CRESCENDO, SiteSettings(), is_lab=True)
    assert [s.present for s in slots.slots] == [False, False, False]
    assert slots.slots[0].field_texts()["state"] == "not present"
    assert any("no OTP function" in note for note in slots.notes)


def test_unparseable_select_reply_stays_unknown():
    slot = OtpSlot(OtpApplet.HID_OATH, "2", "A0000000792301")
    parse_hid_oath_select(bytes.fromhex("6F2F") + bytes(10), slot)
    assert slot.configured is None
    assert slot.inferred is False
    parse_hid_oath_select(bytes.fromhex("6F07A505800109810101"), slot)
    assert slot.configured is None  # mode 09 is no documented slot type


def test_listing_to_dict():
    channel, _, _ = drift_channel()
    data = list_otp_slots(channel, Profile.HID_CRESCENDO, SiteSettings(), is_lab=True).to_dict()
    assert data["profile"] == "hid-crescendo"
    assert data["slots"][0]["counter"] == 1042
    assert data["slots"][1]["configured"] is False
    assert data["inferred"] is True


# --- YubiKey listing -----------------------------------------------------------------------


def yubikey_channel(accounts, **otp_options):
    key = yubikey(3)
    otp, oath = install_yubikey_otp(key.card, accounts, **otp_options)
    return Channel(CardTransport(key.card)), otp, oath


def test_yubikey_listing_calculates_nothing():
    accounts = [OathAccount("Example:alice", "TOTP"), OathAccount("VPN:alice", "HOTP", "SHA-256", counter=7)]
    channel, _, oath = yubikey_channel(accounts)
    slots = list_otp_slots(channel, Profile.YUBIKEY, SiteSettings(), is_lab=True)

    assert oath.calculations == 0
    assert accounts[1].counter == 7
    # CALCULATE is INS A2; CALCULATE ALL shares INS A4 with SELECT but has P1 00.
    assert not any(e.command.ins == 0xA2 for e in channel.exchanges)
    assert not any(e.command.ins == 0xA4 and e.command.p1 == 0x00 for e in channel.exchanges)

    listed = [s for s in slots.slots if s.applet is OtpApplet.YUBIKEY_OATH]
    assert [(s.name, s.mode, s.algorithm) for s in listed] == [("Example:alice", "TOTP", "SHA-1"), ("VPN:alice", "HOTP", "SHA-256")]
    assert all(s.digits is None for s in listed)
    assert any("listed, not calculated" in note for note in slots.notes)


def test_yubikey_otp_status_flags():
    channel, _, _ = yubikey_channel([], short_press=True, long_press=False)
    slots = list_otp_slots(channel, Profile.YUBIKEY, SiteSettings(), is_lab=False)
    short, long = [s for s in slots.slots if s.applet is OtpApplet.YUBIKEY_OTP]
    assert short.configured is True
    assert short.touch_triggered is True
    assert short.button_slot is True
    assert short.mode is None
    assert long.configured is False
    assert long.touch_triggered is None


def test_yubikey_old_firmware_touch_unknown():
    channel, _, _ = yubikey_channel([], firmware=(2, 2, 0), short_press=True)
    slots = list_otp_slots(channel, Profile.YUBIKEY, SiteSettings(), is_lab=False)
    short = slots.button_slot()
    assert short.configured is True
    assert short.touch_triggered is None


def test_yubikey_oath_password_skips_list():
    channel, _, oath = yubikey_channel([OathAccount("A:b")])
    oath.password_set = True
    slots = list_otp_slots(channel, Profile.YUBIKEY, SiteSettings(), is_lab=True)
    assert not any(e.command.ins == 0xA1 for e in channel.exchanges)
    assert any("OATH password" in note for note in slots.notes)


def test_unknown_profile_keeps_only_answering_slots():
    channel, _, _ = drift_channel()
    slots = list_otp_slots(channel, Profile.UNKNOWN, SiteSettings(), is_lab=True)
    assert [s.slot for s in slots.slots] == ["1", "2", "3"]
    assert all(s.applet is OtpApplet.HID_OATH for s in slots.slots)


# --- generating one HOTP code --------------------------------------------------------------


def test_generate_needs_acknowledgement():
    channel, _, slot_one = drift_channel()
    with pytest.raises(PolicyError) as error:
        generate_hotp_code(channel, acknowledge_counter_advance=False, on_button_prompt=lambda n: True)
    assert channel.exchanges == []
    assert slot_one.config.counter == 1042
    assert "advances the token's counter by one" in str(error.value)


def test_generate_advances_counter_by_one():
    channel, _, slot_one = drift_channel()
    result = generate_hotp_code(channel, acknowledge_counter_advance=True, on_button_prompt=lambda n: True)
    assert result.outcome is HotpOutcome.CODE
    assert result.code.reveal() == hotp(RFC_4226_SEED, 1042)
    assert slot_one.config.counter == 1043
    assert headers(channel).count(HOTP_AUTHENTICATE_HEADER) == 1


def test_code_is_secret_and_not_logged(caplog):
    channel, _, _ = drift_channel()
    caplog.set_level(1)
    result = generate_hotp_code(channel, acknowledge_counter_advance=True, on_button_prompt=lambda n: True)
    code = result.code.reveal()
    assert code not in repr(result)
    assert code not in str(result.code)
    assert code not in result.message()
    assert code not in caplog.text
    assert all(code not in e.describe() for e in channel.exchanges)


def test_button_prompt_until_pressed():
    channel, instances = crescendo_channel({1: hotp_slot(counter=5)}, needs_button=True)
    prompts = []

    def prompt(number):
        prompts.append(number)
        if number == 3:
            instances[0].press_button()
        return True

    result = generate_hotp_code(channel, acknowledge_counter_advance=True, on_button_prompt=prompt, poll_interval=0)
    assert result.outcome is HotpOutcome.CODE
    assert prompts == [1, 2, 3]
    assert result.button_prompts == 3
    assert result.code.reveal() == hotp(RFC_4226_SEED, 5)
    assert instances[0].config.counter == 6
    assert headers(channel).count(HOTP_AUTHENTICATE_HEADER) == 4


def test_button_prompt_cancel():
    channel, instances = crescendo_channel({1: hotp_slot(counter=5)}, needs_button=True)
    result = generate_hotp_code(channel, acknowledge_counter_advance=True, on_button_prompt=lambda n: False, poll_interval=0)
    assert result.outcome is HotpOutcome.CANCELLED
    assert result.code is None
    assert instances[0].config.counter == 5
    assert headers(channel).count(HOTP_AUTHENTICATE_HEADER) == 1


def test_button_prompt_bounded():
    channel, instances = crescendo_channel({1: hotp_slot(counter=5)}, needs_button=True)
    sleeps = []
    result = generate_hotp_code(channel, acknowledge_counter_advance=True, on_button_prompt=lambda n: True,
                                max_prompts=4, poll_interval=0.25, sleep=sleeps.append)
    assert result.outcome is HotpOutcome.TIMED_OUT
    assert result.button_prompts == 4
    assert sleeps == [0.25] * 4
    assert headers(channel).count(HOTP_AUTHENTICATE_HEADER) == 5
    assert instances[0].config.counter == 5


def test_generate_on_empty_slot_fails():
    channel, _ = crescendo_channel({})
    result = generate_hotp_code(channel, acknowledge_counter_advance=True, on_button_prompt=lambda n: True)
    assert result.outcome is HotpOutcome.FAILED
    assert result.status.sw == 0x6A88


def test_eight_digit_slot_code():
    channel, _ = crescendo_channel({1: hotp_slot(counter=128, digits=8)})
    result = generate_hotp_code(channel, acknowledge_counter_advance=True, on_button_prompt=lambda n: True)
    assert result.code.reveal() == "71425216"


def test_lab_card_totp_needs_pin():
    card = VirtualCard([HidOathInstance(2, totp_slot())], b"\x3b\x00")
    card.transmit(bytes.fromhex("00A4040007A000000079230100"))
    assert card.transmit(bytes.fromhex("8088110004") + (59).to_bytes(4, "big"))[-2:] == b"\x69\x82"
    assert card.transmit(bytes.fromhex("80881100020000"))[-2:] == b"\x67\x00"


def test_lab_slot_one_rejects_totp():
    with pytest.raises(ValueError):
        HidOathInstance(1, totp_slot())


def test_traffic_log_has_no_code():
    # A handler on the logger itself, because other tests may stop keytriage loggers propagating to caplog.
    records = []
    handler = logging.Handler(level=TRAFFIC)
    handler.emit = records.append
    logger = logging.getLogger("keytriage.apdu")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(TRAFFIC)
    try:
        channel, _, _ = drift_channel()
        result = generate_hotp_code(channel, acknowledge_counter_advance=True, on_button_prompt=lambda n: True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

    lines = [record.getMessage() for record in records]
    assert any("HOTP AUTHENTICATE" in line for line in lines)
    assert all(result.code.reveal() not in line for line in lines)


def test_malformed_yubikey_replies_become_notes():
    class ShortReplies:
        reader = "Scripted 00 00"

        def __init__(self):
            # SELECT OTP: 3-byte status; SELECT OATH: a TLV cut short.
            self.answers = [bytes.fromhex("0504039000"), bytes.fromhex("79059000")]

        def transmit_raw(self, apdu):
            return self.answers.pop(0)

        def begin_transaction(self):
            pass

        def end_transaction(self):
            pass

    slots = list_otp_slots(Channel(ShortReplies()), Profile.YUBIKEY, SiteSettings(), is_lab=False)
    short = slots.button_slot()
    assert short.configured is None
    assert any("OTP application status could not be read" in note for note in slots.notes)
    assert any("SELECT reply could not be read" in note for note in slots.notes)
