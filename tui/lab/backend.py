"""The lab key as a `ReaderBackend`: readers and transports served in process, no pcscd.

`LabBackend` builds a scenario's keys and serves each in its reader. Its
transports behave like pyscard connections opened with SCARD_LEAVE_CARD.
Connecting to an empty reader fails with "no card". A handle whose card was
removed fails with "card removed" until it connects again, even after the
card is back. A transaction blocks other threads' APDUs to that card.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from tui.errors import CardRemovedError, LabError, PcscError
from tui.lab.scenarios import LabKey, Scenario, get_scenario
from tui.model import PcscProblem


@dataclass
class _Slot:
    key: LabKey
    present: bool
    # Bumped on every removal and insertion, so a handle can tell that its card left.
    generation: int = 0
    transaction_lock: threading.RLock = field(default_factory=threading.RLock)


class LabBackend:
    """Serves the keys of one lab scenario; implements `tui.transport.ReaderBackend`."""

    is_lab = True

    def __init__(self, scenario_name: str) -> None:
        self.scenario: Scenario = get_scenario(scenario_name)
        self.keys: list[LabKey] = self.scenario.build()
        self._slots = {key.reader: _Slot(key, present=key.card is not None) for key in self.keys}
        self._lock = threading.Lock()

    @property
    def scenario_name(self) -> str:
        """The name of the scenario being served."""
        return self.scenario.name

    def list_readers(self) -> list[str]:
        """Return the reader names, in scenario order."""
        return [key.reader for key in self.keys]

    def open(self, reader: str) -> LabTransport:
        """Return an unconnected transport for `reader`; raise PcscError for an unknown reader."""
        return LabTransport(self, reader, self._slot(reader))

    def key(self, reader: str) -> LabKey:
        """Return the lab key of `reader` (its `card` is None for an empty reader)."""
        return self._slot(reader).key

    def is_present(self, reader: str) -> bool:
        """True while a card sits in `reader`."""
        return self._slot(reader).present

    @property
    def apdu_count(self) -> int:
        """APDUs received by every card of the scenario so far."""
        return sum(key.card.apdu_count for key in self.keys if key.card is not None)

    # --- lab controls ---

    def remove(self, reader: str) -> None:
        """Pull the card out of `reader`; raise LabError when there is none."""
        slot = self._slot(reader)
        with self._lock:
            if slot.key.card is None or not slot.present:
                raise LabError(f"lab reader {reader!r} has no card to remove")
            slot.present = False
            slot.generation += 1
        slot.key.card.removed()

    def insert(self, reader: str) -> None:
        """Put the card back into `reader`; raise LabError when it is already in or the reader never had one."""
        slot = self._slot(reader)
        with self._lock:
            if slot.key.card is None:
                raise LabError(f"lab reader {reader!r} has no lab card; this scenario leaves it empty")
            if slot.present:
                raise LabError(f"the lab card is already in reader {reader!r}; remove it first")
            slot.present = True
            slot.generation += 1
        slot.key.card.inserted()

    def _slot(self, reader: str) -> _Slot:
        try:
            return self._slots[reader]
        except KeyError:
            readers = ", ".join(repr(name) for name in self._slots)
            raise PcscError(PcscProblem.UNKNOWN,
                            f"reader {reader!r} not found; the lab scenario {self.scenario.name!r} has {readers}. Rescan.") from None


class LabTransport:
    """One connection to a lab card; implements `tui.transport.Transport`."""

    def __init__(self, backend: LabBackend, reader: str, slot: _Slot) -> None:
        self.backend = backend
        self.reader = reader
        self._slot = slot
        self._generation: int | None = None
        self._transaction_depth = 0

    @property
    def connected(self) -> bool:
        """True between `connect` and `disconnect`."""
        return self._generation is not None

    @property
    def transaction_depth(self) -> int:
        """How many `begin_transaction` calls are still open."""
        return self._transaction_depth

    def connect(self) -> bytes:
        """Connect to the card and return its ATR; raise PcscError(NO_CARD) for an empty reader."""
        slot = self._slot
        if slot.key.card is None or not slot.present:
            raise PcscError(PcscProblem.NO_CARD)
        self._generation = slot.generation
        return slot.key.card.atr

    def transmit_raw(self, apdu: bytes) -> bytes:
        """Send one command APDU; raise CardRemovedError when the card left since `connect`."""
        card = self._checked_card("transmit an APDU")
        with self._slot.transaction_lock:
            self._check_present()
            try:
                return card.transmit(apdu)
            except LabError:
                # The card lost power between the check and the APDU: a removal.
                raise CardRemovedError(PcscProblem.CARD_REMOVED) from None

    def begin_transaction(self) -> None:
        """Start an exclusive transaction; nested calls must be matched by as many ends."""
        self._checked_card("begin a transaction")
        self._slot.transaction_lock.acquire()
        self._transaction_depth += 1

    def end_transaction(self) -> None:
        """End the innermost transaction; raise LabError when none is open."""
        if self._transaction_depth == 0:
            raise LabError(f"end_transaction on lab reader {self.reader!r} without a matching begin_transaction")
        self._transaction_depth -= 1
        self._slot.transaction_lock.release()

    def disconnect(self) -> None:
        """Disconnect, leaving the card powered (SCARD_LEAVE_CARD); open transactions end."""
        while self._transaction_depth:
            self.end_transaction()
        self._generation = None

    def _checked_card(self, action: str):
        if self._generation is None:
            raise LabError(f"cannot {action} on lab reader {self.reader!r}: the transport is not connected; call connect() first")
        self._check_present()
        return self._slot.key.card

    def _check_present(self) -> None:
        if not self._slot.present or self._slot.generation != self._generation:
            raise CardRemovedError(PcscProblem.CARD_REMOVED)


__all__ = ["LabBackend", "LabTransport"]
