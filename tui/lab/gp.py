"""The lab card manager: GlobalPlatform SELECT and GET DATA CPLC, and the reserved lab IDs.

Lab keys must never be mistaken for real tokens, nor collide with one in
Vault. So every lab CPLC carries the IC fabricator code `LAB_CPLC_FABRICATOR`
and every lab YubiKey serial lies in `LAB_SERIAL_RANGE`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tui.lab.card import SW_OK, Applet, sw_bytes, tlv

# The project's reserved IC fabricator code for lab CPLC data.
# NOTE: 0x1AB0 is not an assigned fabricator code as far as we know. If a real
# chip ever carries it, lab and real CUIDs could collide, so change it here.
LAB_CPLC_FABRICATOR = 0x1AB0

# Lab YubiKey serials: eight digits starting with 99.
# NOTE: this range is the project's reservation, not Yubico's, so a real key
# could in principle carry such a serial.
LAB_SERIAL_RANGE = range(99_000_000, 100_000_000)

# IC type and batch of every lab chip: distinct bytes, so the CoolKey CUID order
# (fabricator, type, batch, serial) and the CPLC order (fabricator, type,
# serial, batch) give different 10-byte CUIDs and tests can tell them apart.
LAB_IC_TYPE = 0x7E57
LAB_IC_BATCH = 0x5A17
LAB_IC_SERIAL_BASE = 0xC0DE0000

ISD_AID_GP = bytes.fromhex("A000000151000000")
ISD_AID_OP = bytes.fromhex("A000000003000000")

TAG_CPLC = b"\x9f\x7f"

# CPLC fields in wire order with their sizes in bytes (42 bytes in all).
CPLC_FIELDS: tuple[tuple[str, int], ...] = (
    ("ic_fabricator", 2),
    ("ic_type", 2),
    ("os_id", 2),
    ("os_release_date", 2),
    ("os_release_level", 2),
    ("ic_fabrication_date", 2),
    ("ic_serial_number", 4),
    ("ic_batch_identifier", 2),
    ("ic_module_fabricator", 2),
    ("ic_module_packaging_date", 2),
    ("icc_manufacturer", 2),
    ("ic_embedding_date", 2),
    ("ic_pre_personalizer", 2),
    ("ic_pre_personalization_date", 2),
    ("ic_pre_personalization_equipment_id", 4),
    ("ic_personalizer", 2),
    ("ic_personalization_date", 2),
    ("ic_personalization_equipment_id", 4),
)
CPLC_LENGTH = sum(size for _, size in CPLC_FIELDS)


@dataclass
class Cplc:
    """Card production life cycle data (GlobalPlatform tag 9F7F). Dates are Y DDD in BCD, e.g. 0x4100."""

    ic_fabricator: int
    ic_type: int
    ic_serial_number: int
    ic_batch_identifier: int
    os_id: int = 0x4B54
    os_release_date: int = 0x4100
    os_release_level: int = 0x0100
    ic_fabrication_date: int = 0x4100
    ic_module_fabricator: int = 0
    ic_module_packaging_date: int = 0
    icc_manufacturer: int = 0
    ic_embedding_date: int = 0
    ic_pre_personalizer: int = 0
    ic_pre_personalization_date: int = 0
    ic_pre_personalization_equipment_id: int = 0
    ic_personalizer: int = 0
    ic_personalization_date: int = 0
    ic_personalization_equipment_id: int = 0

    def to_bytes(self) -> bytes:
        """Encode the 42 bytes of CPLC data in wire order."""
        return b"".join(getattr(self, name).to_bytes(size, "big") for name, size in CPLC_FIELDS)

    def cuid_cplc_order(self) -> str:
        """Return the 10-byte CUID as fabricator, type, serial, batch (CPLC field order), upper-case hex."""
        return (self.ic_fabricator.to_bytes(2, "big") + self.ic_type.to_bytes(2, "big")
                + self.ic_serial_number.to_bytes(4, "big") + self.ic_batch_identifier.to_bytes(2, "big")).hex().upper()

    def cuid_coolkey_order(self) -> str:
        """Return the 10-byte CUID as fabricator, type, batch, serial (OpenSC CoolKey order), upper-case hex."""
        return (self.ic_fabricator.to_bytes(2, "big") + self.ic_type.to_bytes(2, "big")
                + self.ic_batch_identifier.to_bytes(2, "big") + self.ic_serial_number.to_bytes(4, "big")).hex().upper()


def lab_cplc(index: int) -> Cplc:
    """Build the CPLC of lab chip number `index`: lab fabricator, lab IC type and batch, a serial per index."""
    if not 0 <= index <= 0xFFFF:
        raise ValueError(f"lab chip index {index} is out of range 0..65535")
    return Cplc(LAB_CPLC_FABRICATOR, LAB_IC_TYPE, LAB_IC_SERIAL_BASE + index, LAB_IC_BATCH)


def lab_serial(index: int) -> int:
    """Return lab YubiKey serial number `index` (99000000 + index)."""
    serial = LAB_SERIAL_RANGE.start + index
    if serial not in LAB_SERIAL_RANGE:
        raise ValueError(f"lab serial index {index} is out of range 0..{len(LAB_SERIAL_RANGE) - 1}")
    return serial


def is_lab_cplc(cplc: bytes) -> bool:
    """Return True for CPLC data (42 bytes, no tag) from the lab fabricator."""
    return len(cplc) >= 2 and int.from_bytes(cplc[:2], "big") == LAB_CPLC_FABRICATOR


class CplcMode(str, enum.Enum):
    """When the card returns CPLC data to GET DATA 9F7F."""

    ANY_TIME = "any-time"  # the card OS returns CPLC whatever applet is selected
    AFTER_SELECT = "after-select"  # only while the card manager is selected
    ABSENT = "absent"  # never: the card manager returns `missing_sw`


class CardManager(Applet):
    """A GlobalPlatform issuer security domain that processes SELECT and GET DATA CPLC.

    Both the GlobalPlatform AID A000000151000000 and the older Open Platform
    AID A000000003000000 select it.
    """

    aid = ISD_AID_GP

    def __init__(self, cplc: Cplc | None, *, mode: CplcMode = CplcMode.ANY_TIME, missing_sw: int = 0x6A88) -> None:
        self.cplc = cplc
        self.mode = mode if cplc is not None else CplcMode.ABSENT
        self.missing_sw = missing_sw

    @property
    def aids(self) -> tuple[bytes, ...]:
        """The GlobalPlatform and the Open Platform card manager AIDs."""
        return (ISD_AID_GP, ISD_AID_OP)

    def select(self, p1: int, p2: int, data: bytes) -> bytes:
        """Return the FCI: 84 the full AID, A5 with 9F65 (maximum command length FF)."""
        full = next((aid for aid in self.aids if aid.startswith(data)), self.aid)
        return tlv(0x6F, tlv(0x84, full) + tlv(0xA5, tlv(b"\x9f\x65", b"\xff"))) + SW_OK

    def handles_unselected(self, cla: int, ins: int, p1: int, p2: int) -> bool:
        """Take GET DATA CPLC while another applet is selected, in `ANY_TIME` mode."""
        return self.mode is CplcMode.ANY_TIME and self._is_get_cplc(cla, ins, p1, p2)

    @staticmethod
    def _is_get_cplc(cla: int, ins: int, p1: int, p2: int) -> bool:
        return cla & 0xFC in (0x00, 0x80) and ins == 0xCA and bytes((p1, p2)) == TAG_CPLC

    def process(self, cla: int, ins: int, p1: int, p2: int, data: bytes, le: int | None) -> bytes:
        """Handle GET DATA: CPLC, or `missing_sw` for a card without it."""
        if ins != 0xCA:
            return sw_bytes(0x6D00)
        if bytes((p1, p2)) != TAG_CPLC:
            # NOTE: card data (0066) and key information (00E0) are not emulated.
            return sw_bytes(0x6A88)
        if self.mode is CplcMode.ABSENT or self.cplc is None:
            return sw_bytes(self.missing_sw)
        return tlv(TAG_CPLC, self.cplc.to_bytes()) + SW_OK


__all__ = [
    "CPLC_FIELDS",
    "CPLC_LENGTH",
    "CardManager",
    "Cplc",
    "CplcMode",
    "ISD_AID_GP",
    "ISD_AID_OP",
    "LAB_CPLC_FABRICATOR",
    "LAB_SERIAL_RANGE",
    "is_lab_cplc",
    "lab_cplc",
    "lab_serial",
]
