"""Small recording fakes of `Transport` and `ReaderBackend` for the scan tests.

`FakeCard` is a stateful card: it has applets by AID, SELECT switches
between them, and each applet returns fixed replies looked up by the full
command, then by CLA INS P1 P2, then by CLA INS. Every command is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tui.errors import PcscError


def h(text: str) -> bytes:
    """Bytes from hex with spaces allowed."""
    return bytes.fromhex(text.replace(" ", ""))


CPLC_BODY = h("4790 5168 0000 0000 0000 0000 A1B2C3D4 5678") + bytes(24)
CPLC_REPLY = h("9F7F2A") + CPLC_BODY + h("9000")

ACA_AID = h("A0000000791000")
PIV_AID = h("A000000308000010000100")
ISD_AID = h("A000000151000000")
ACA_SELECT_REPLY = h("6F 12 84 07 A0000000791000 A5 07 01 05 10 03000301 9000")


@dataclass
class FakeCard:
    """A card with applets by AID and replies by command; records every command it receives."""

    applets: dict[bytes, dict[bytes, bytes]]
    selected: bytes | None = None
    atr: bytes = h("3BF81300008131FE15597562696B65793446")
    sent: list[bytes] = field(default_factory=list)

    def reply(self, apdu: bytes) -> bytes:
        """Return the raw reply (data || SW) to `apdu`."""
        self.sent.append(apdu)
        if apdu[1] == 0xA4 and apdu[2] == 0x04:
            aid = apdu[5:5 + apdu[4]]
            if aid not in self.applets:
                return h("6A82")
            self.selected = aid
            return self.applets[aid].get(b"SELECT", h("9000"))

        table = self.applets.get(self.selected, {}) if self.selected is not None else self.applets.get(b"", {})
        for key in (apdu, apdu[:4], apdu[:2]):
            if key in table:
                return table[key]
        return h("6D00")


class FakeTransport:
    """A `Transport` over a `FakeCard`; `fail_on` raises a PcscError at a named step."""

    def __init__(self, reader: str, card: FakeCard | None, *, connect_error: PcscError | None = None,
                 transmit_errors: list[PcscError] | None = None) -> None:
        self.reader = reader
        self.card = card
        self.connect_error = connect_error
        self.transmit_errors = list(transmit_errors or [])
        self.events: list[str] = []

    def connect(self) -> bytes:
        self.events.append("connect")
        if self.connect_error is not None:
            raise self.connect_error
        assert self.card is not None
        return self.card.atr

    def transmit_raw(self, apdu: bytes) -> bytes:
        if self.transmit_errors:
            raise self.transmit_errors.pop(0)
        assert self.card is not None
        return self.card.reply(apdu)

    def begin_transaction(self) -> None:
        self.events.append("begin")

    def end_transaction(self) -> None:
        self.events.append("end")

    def disconnect(self) -> None:
        self.events.append("disconnect")


class FakeBackend:
    """A `ReaderBackend` over fixed transports; `list_error` makes listing fail."""

    is_lab = False

    def __init__(self, transports: list[FakeTransport], *, list_error: PcscError | None = None) -> None:
        self.transports = {t.reader: t for t in transports}
        self.list_error = list_error

    def list_readers(self) -> list[str]:
        if self.list_error is not None:
            raise self.list_error
        return list(self.transports)

    def open(self, reader: str) -> FakeTransport:
        return self.transports[reader]


def crescendo_card(pin_sw: str = "63C3", challenge: bytes = bytes(16)) -> FakeCard:
    """A Crescendo with the CPLC in its card manager, an AES admin key and PIV."""
    return FakeCard({
        ISD_AID: {h("80CA9F7F00"): CPLC_REPLY},
        ACA_AID: {
            b"SELECT": ACA_SELECT_REPLY,
            h("0056020001 3100"): h("3105 06 08 00 00 01 9000"),
            h("0084000000"): challenge + h("9000"),
            h("00200000"): h(pin_sw),
        },
        PIV_AID: {h("00200080"): h(pin_sw)},
    })


def yubikey_card(pin_total: int = 3, pin_left: int = 3, puk_left: int = 3, version: str = "050704") -> FakeCard:
    """A YubiKey 5 with GET METADATA, no CPLC and no ACA."""
    return FakeCard({
        PIV_AID: {
            h("00FD000000"): h(version + "9000"),
            h("00F8000000"): h("00BC614E 9000"),
            h("00F7008000"): h(f"0101FF 050100 0602{pin_total:02X}{pin_left:02X} 9000"),
            h("00F7008100"): h(f"0101FF 050101 0602{3:02X}{puk_left:02X} 9000"),
            h("00F7009B00"): h("010108 050101 9000"),
            h("00200080"): h(f"63C{pin_left:X}"),
        },
    })


def generic_piv_card(pin_sw: str = "63C5") -> FakeCard:
    """A PIV card without Yubico instructions, ACA or CPLC, with a CHUID."""
    chuid = h("53 14 34 10 00112233445566778899AABBCCDDEEFF FE 00")
    return FakeCard({
        PIV_AID: {
            h("00200080"): h(pin_sw),
            h("00CB3FFF055C035FC10200"): chuid + h("9000"),
        },
    })
