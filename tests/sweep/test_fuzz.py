"""Malformed replies: every decoder of card and authenticator replies, fed random and truncated data.

Each decoder gets `CASES` inputs from a seeded generator: random bytes,
recorded lab replies cut short, recorded replies with bytes flipped, and
recorded replies with junk appended. A decoder may return or raise a
`KeytriageError` subclass; any other exception, or a case that runs past
`CASE_LIMIT_S`, fails with the input in hex so it can be replayed. The FIDO
state reader is documented never to raise for device trouble, so there any
exception fails.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from sweep.helpers import CANARY_AES_ADMIN_KEY, STATS, CaseTimeout, time_limit
from tui.errors import KeytriageError

SEED = 20261204
CASES = 2000
CASE_LIMIT_S = 2.0
SHOWN_FAILURES = 5


# --- input generation -------------------------------------------------------------------


def recorded_replies() -> list[bytes]:
    """Return the response data of every APDU of a scan and OTP listing of each lab scenario."""
    from tui.lab.backend import LabBackend
    from tui.lab.scenarios import SCENARIOS
    from tui.oath import list_otp_slots
    from tui.scan import scan_all
    from tui.settings import SiteSettings
    from tui.transport import Channel

    replies: set[bytes] = set()
    for name in sorted(SCENARIOS):
        backend = LabBackend(name)
        recordings = [key.card.start_recording() for key in backend.keys if key.card is not None]
        result = scan_all(backend, SiteSettings(), explain=True)
        for token in result.tokens:
            if token.problem is None:
                transport = backend.open(token.reader)
                transport.connect()
                list_otp_slots(Channel(transport), token.profile, SiteSettings(), True)
                transport.disconnect()
        for recording in recordings:
            replies.update(response[:-2] for _, response in recording if len(response) > 2)
    return sorted(replies)


REPLIES = recorded_replies()


def fuzz_inputs(rng: random.Random, samples: list[bytes], count: int = CASES) -> list[bytes]:
    """Return `count` inputs: random, truncated, bit-flipped and extended versions of `samples`."""
    inputs = []
    for _ in range(count):
        choice = rng.random()
        sample = rng.choice(samples) if samples else b""
        if choice < 0.25 or not samples:
            length = rng.choice((0, 1, 2, 3, rng.randrange(64), rng.randrange(300)))
            inputs.append(rng.randbytes(length))
        elif choice < 0.55:
            inputs.append(sample[:rng.randrange(len(sample) + 1)])
        elif choice < 0.85:
            data = bytearray(sample or b"\x00")
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            inputs.append(bytes(data))
        else:
            inputs.append(sample + rng.randbytes(rng.randint(1, 40)))
    return inputs


def run_cases(name: str, decode: Callable[[bytes], object], inputs: list[bytes],
              allowed: tuple[type[BaseException], ...] = (KeytriageError,)) -> list[str]:
    """Run `decode` on every input; return a line per input that crashed or hung."""
    failures = []
    for data in inputs:
        try:
            with time_limit(CASE_LIMIT_S, f"{name}({data.hex().upper()})"):
                decode(data)
        except allowed:
            pass
        except CaseTimeout as exc:
            failures.append(str(exc))
        except Exception as exc:  # the sweep reports every other exception as a crash
            failures.append(f"{name}({data.hex().upper()}) raised {type(exc).__name__}: {exc}")
    STATS.add("fuzz", len(inputs))
    return failures


def assert_no_failures(failures: list[str]) -> None:
    """Fail with the first few crashing inputs and the count of the rest."""
    shown = "\n".join(failures[:SHOWN_FAILURES])
    assert not failures, f"{len(failures)} inputs crashed or hung, for example:\n{shown}"


# --- pure decoders ------------------------------------------------------------------------


def _decoders() -> dict[str, Callable[[bytes], object]]:
    from tui import aca, gp, oath, piv
    from tui.apdu import ResponseApdu
    from tui.identity import id_candidates

    def cplc_and_ids(data: bytes) -> None:
        cplc = gp.parse_cplc(data)
        id_candidates(cplc)

    def hid_select(data: bytes) -> None:
        oath.parse_hid_oath_select(data, oath.OtpSlot(oath.OtpApplet.HID_OATH, "1", "A0"))

    return {
        "ResponseApdu.from_bytes": ResponseApdu.from_bytes,
        "piv.parse_ber_tlv": piv.parse_ber_tlv,
        "piv.find_tlv": lambda data: piv.find_tlv(data, 0x53),
        "piv.parse_metadata": piv.parse_metadata,
        "piv.parse_chuid_guid": piv.parse_chuid_guid,
        "gp.parse_cplc": cplc_and_ids,
        "aca.parse_aca_version": aca.parse_aca_version,
        "aca.parse_pin_properties": aca.parse_pin_properties,
        "oath.parse_simple_tlv": oath.parse_simple_tlv,
        "oath.parse_otp_status": oath.parse_otp_status,
        "oath.parse_oath_list": oath.parse_oath_list,
        "oath.parse_hid_oath_select": hid_select,
        "oath.decode_code": oath._decode_code,
    }


@pytest.mark.parametrize("name", sorted(_decoders()))
def test_decoder_survives_malformed_data(name):
    decode = _decoders()[name]
    rng = random.Random(f"{SEED}-{name}")
    assert_no_failures(run_cases(name, decode, fuzz_inputs(rng, REPLIES)))


def test_decode_sw_every_status_word():
    from tui.apdu import Status, StatusKind, decode_sw

    cases = 0
    for sw in range(0x10000):
        for status_query in (False, True):
            for counter_in_630x in (False, True):
                status = decode_sw(sw, status_query=status_query, counter_in_630x=counter_in_630x)
                cases += 1
                assert isinstance(status, Status), f"{sw:04X}"
                assert status.sw == sw, f"{sw:04X}"
                assert isinstance(status.words(), str), f"{sw:04X}"
                if status.kind is StatusKind.VERIFY_FAILED:
                    assert status.tries is not None and 0 <= status.tries <= 15, f"{sw:04X}: tries {status.tries}"
                else:
                    assert status.tries is None, f"{sw:04X}: tries {status.tries} without a verify failure"
    STATS.add("fuzz", cases)


def test_decode_sw_rejects_out_of_range():
    from tui.apdu import decode_sw

    for sw in (-1, 0x10000, 0x1_0000_0000):
        with pytest.raises(ValueError):
            decode_sw(sw)
    STATS.add("fuzz", 3)


# --- whole readers over a card that replies with garbage -----------------------------------------

# Status words a reply is built from: the ones readers branch on, and any.
INTERESTING_SW = (0x9000, 0x9000, 0x9000, 0x6100, 0x6110, 0x6C08, 0x63C0, 0x63C3, 0x6303, 0x6300, 0x6983,
                  0x6A82, 0x6A88, 0x6982, 0x6985, 0x6D00, 0x6700)


class GarbageTransport:
    """A transport whose card replies to each APDU with random or damaged replies, from a seeded generator."""

    reader = "Sweep Garbage Reader 00 00"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.sent = 0

    def connect(self) -> bytes:
        return bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")

    def transmit_raw(self, apdu: bytes) -> bytes:
        self.sent += 1
        if self.sent > 2000:
            raise AssertionError("the reader sent more than 2000 APDUs to one card: it loops on garbage")
        rng = self.rng
        data = fuzz_inputs(rng, REPLIES, 1)[0] if rng.random() < 0.8 else b""
        sw = rng.choice(INTERESTING_SW) if rng.random() < 0.85 else rng.randrange(0x10000)
        if rng.random() < 0.03:
            return rng.randbytes(rng.randrange(2))  # a reply too short to hold a status word
        return data[:256] + sw.to_bytes(2, "big")

    def begin_transaction(self) -> None:
        pass

    def end_transaction(self) -> None:
        pass

    def disconnect(self) -> None:
        pass


class GarbageBackend:
    """One reader with a `GarbageTransport` card."""

    is_lab = False

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def list_readers(self) -> list[str]:
        return [GarbageTransport.reader]

    def open(self, reader: str) -> GarbageTransport:
        return GarbageTransport(self.rng)


def _reader_cases() -> dict[str, Callable[[random.Random], object]]:
    from tui.model import Profile
    from tui.oath import list_otp_slots
    from tui.scan import scan_all
    from tui.secret import Secret
    from tui.settings import SiteSettings
    from tui.transport import Channel
    from tui.xauth import test_admin_key

    permissive = SiteSettings(allow_unverified_commands=True)

    def scan(rng: random.Random) -> None:
        scan_all(GarbageBackend(rng), permissive, explain=True)

    def otp(rng: random.Random) -> None:
        list_otp_slots(Channel(GarbageTransport(rng)), rng.choice(list(Profile)), permissive, True)

    def xauth(rng: random.Random) -> None:
        test_admin_key(Channel(GarbageTransport(rng)), Secret(CANARY_AES_ADMIN_KEY, "admin key"))

    return {"scan_all": scan, "list_otp_slots": otp, "xauth.test_admin_key": xauth}


@pytest.mark.parametrize("name", sorted(_reader_cases()))
def test_reader_survives_garbage_card(name):
    run = _reader_cases()[name]
    failures = []
    for case in range(CASES):
        rng = random.Random(f"{SEED}-{name}-{case}")
        try:
            with time_limit(CASE_LIMIT_S, f"{name} case {case}"):
                run(rng)
        except KeytriageError:
            pass
        except CaseTimeout as exc:
            failures.append(str(exc))
        except Exception as exc:  # the sweep reports every other exception as a crash
            failures.append(f"{name} case {case} (random.Random('{SEED}-{name}-{case}')) raised {type(exc).__name__}: {exc}")
    STATS.add("fuzz", CASES)
    assert_no_failures(failures)


# --- CTAP replies -------------------------------------------------------------------------------


def ctap_device(rng: random.Random):
    """Return a fido2 `CtapDevice` answering CBOR requests from a healthy lab authenticator, damaged by `rng`."""
    from fido2.ctap import CtapDevice, CtapError
    from fido2.hid import CAPABILITY, CTAPHID

    from tui.lab.soft_fido import SoftAuthenticator

    authenticator = SoftAuthenticator(pin="246813")

    class Device(CtapDevice):
        def __repr__(self) -> str:
            return "GarbageCtapDevice()"

        @property
        def capabilities(self) -> int:
            return CAPABILITY.CBOR

        def call(self, cmd, data=b"", event=None, on_keepalive=None) -> bytes:
            if cmd != CTAPHID.CBOR:
                return b""
            choice = rng.random()
            if choice < 0.1:
                raise CtapError(rng.randrange(256))
            if choice < 0.15:
                raise OSError("the device went away")
            reply = authenticator.process(bytes(data), None, None)
            if choice < 0.35:
                return reply
            if choice < 0.6:
                return reply[:rng.randrange(len(reply) + 1)]
            if choice < 0.85:
                damaged = bytearray(reply or b"\x00")
                for _ in range(rng.randint(1, 3)):
                    damaged[rng.randrange(len(damaged))] = rng.randrange(256)
                return bytes(damaged)
            return rng.randbytes(rng.randrange(80))

        @classmethod
        def list_devices(cls):
            return iter(())

    return Device()


def test_fido_state_survives_damaged_ctap():
    from tui.fido.state import FidoState, read_fido_state

    failures = []
    for case in range(CASES):
        rng = random.Random(f"{SEED}-ctap-{case}")
        try:
            with time_limit(CASE_LIMIT_S, f"read_fido_state case {case}"):
                state = read_fido_state(ctap_device(rng), transport="usb-hid")
            assert isinstance(state, FidoState)
            if state.pin.retries is not None:
                assert 0 <= state.pin.retries <= 255, f"case {case}: retries {state.pin.retries}"
        except CaseTimeout as exc:
            failures.append(str(exc))
        except Exception as exc:  # read_fido_state is documented never to raise for device trouble
            failures.append(f"read_fido_state case {case} (random.Random('{SEED}-ctap-{case}')) raised {type(exc).__name__}: {exc}")
    STATS.add("fuzz", CASES)
    assert_no_failures(failures)
