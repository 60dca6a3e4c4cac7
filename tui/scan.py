"""The read-only scan (runbook Steps 1 to 3, 5, 7 and 8): readers, tokens, IDs and every applet's state.

`scan_all` lists the readers, connects to each card and reads its profile,
ID candidates and PIN, PUK and admin key state without spending a try, then
the PIV certificates, the OTP slots and the FIDO PIN state. No VERIFY,
CHANGE REFERENCE DATA, RESET RETRY COUNTER, UNLOCK PIN, EXTERNAL
AUTHENTICATE with a data field, HOTP AUTHENTICATE or FIDO PIN is ever sent
here. It blocks, so callers run it on the device thread
(`tui.device.DeviceOwner`). A number that was not read stays None with a
state that says why; it is never reported as 0.

APDUs per token beyond the smart-card list in `tui.profiles`:
- Certificates (4, only when SELECT PIV returned 9000): GET DATA of 5FC105,
  5FC10A, 5FC10B and 5FC101 (slots 9A, 9C, 9D, 9E). About 120 ms on a card
  that takes 30 ms per APDU, spent because the runbook needs the dates: an
  expired certificate fails a smart-card login with a healthy PIN, and that
  is not a lockout.
- OTP slots: HID Crescendo 3 (SELECT of each OATH instance); YubiKey 2 or 3
  (SELECT OTP, SELECT OATH, OATH LIST when OATH is present); a generic or
  unknown card 5 or 6 (both sets). No code is ever calculated.
- FIDO: none over PC/SC when the token's authenticator is reached over USB
  HID (getInfo and getPINRetries go over HID). Otherwise SELECT of the FIDO
  AID (1), and when it answers 9000, getInfo and getPINRetries in
  NFCCTAP_MSG commands (plus NFCCTAP_GETRESPONSE polls while the
  authenticator works).
The FIDO read comes last because it leaves the FIDO AID selected; a caller
that sends PIV commands afterwards must SELECT PIV again.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from tui import aca, certs, gp, piv
from tui.apdu import CommandApdu, Exchange, ResponseApdu, StatusKind, decode_sw
from tui.errors import CardRemovedError, KeytriageError, MalformedResponseError, PcscError
from tui.identity import choose_token_id, id_candidates, id_sources_for
from tui.model import (AdminKey, Counter, PcscProblem, PinState, Profile, ScanResult, SmartCardState, Source,
                       TokenScan)
from tui.profiles import Detection, detect_profile
from tui.settings import SiteSettings
from tui.transport import Channel, ExchangeObserver, ReaderBackend

log = logging.getLogger("keytriage.scan")

PUK_NOT_READABLE = "PUK tries cannot be read with public commands on this key; a wrong PUK spends a try"


Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """Return the current time in UTC, the scan's default clock."""
    return dt.datetime.now(dt.timezone.utc)


def scan_all(backend: ReaderBackend, settings: SiteSettings, *, observer: ExchangeObserver | None = None,
             explain: bool = False, clock: Clock | None = None, usb_hid: bool | None = None) -> ScanResult:
    """List every reader and scan the card in each; blocking, run it on the device thread.

    A failure to list readers becomes `ScanResult.problem`; a failure on one
    card becomes that token's `problem`. Readers without a card are listed
    in `readers` but are not tokens. `explain` also reads the ID sources the
    site does not use (GET DATA CHUID) for `keytriage id --explain`.
    `clock` returns the (timezone-aware) time certificates are checked
    against. `usb_hid` False skips the FIDO USB HID search; None searches
    except when `backend` replays a trace, which holds PC/SC traffic only.
    """
    result = ScanResult(lab_scenario=_lab_scenario(backend))
    now = (clock or utc_now)()
    if usb_hid is None:
        usb_hid = _usb_hid_allowed(backend)

    def count(exchange: Exchange) -> None:
        result.apdu_count += 1
        if observer is not None:
            observer(exchange)

    try:
        result.readers = list(backend.list_readers())
    except PcscError as exc:
        result.problem = exc.problem
        result.problem_detail = str(exc)
        log.warning("listing readers failed: %s", exc)
        return result

    if not result.readers:
        result.problem = PcscProblem.NO_READERS
        result.problem_detail = PcscProblem.NO_READERS.message
        return result

    empty_readers = 0
    for reader in result.readers:
        token = scan_reader(backend, reader, len(result.tokens), settings, observer=count, explain=explain,
                            now=now, usb_hid=usb_hid)
        if token.problem is PcscProblem.NO_CARD:
            empty_readers += 1
            continue
        result.tokens.append(token)

    if not result.tokens and empty_readers:
        result.problem = PcscProblem.NO_CARD
        result.problem_detail = PcscProblem.NO_CARD.message
    return result


def _usb_hid_allowed(backend: ReaderBackend) -> bool:
    # NOTE: a trace contains only PC/SC exchanges. A recording that read FIDO over
    # USB HID replays without it, so its FIDO state comes back "not supported".
    from tui.trace import ReplayBackend

    return not isinstance(backend, ReplayBackend)


def _lab_scenario(backend: ReaderBackend) -> str | None:
    if not getattr(backend, "is_lab", False):
        return None
    for name in ("scenario_name", "scenario"):
        value = getattr(backend, name, None)
        if isinstance(value, str):
            return value
        if value is not None and isinstance(getattr(value, "name", None), str):
            return value.name
    return None


def scan_reader(backend: ReaderBackend, reader: str, index: int, settings: SiteSettings, *,
                observer: ExchangeObserver | None = None, explain: bool = False,
                now: dt.datetime | None = None, usb_hid: bool = True) -> TokenScan:
    """Connect to the card in `reader` and read it: smart card and certificates, OTP slots, FIDO.

    The smart-card part runs inside one PC/SC transaction. PC/SC failures
    there end up in `TokenScan.problem` (NO_CARD when the reader is empty).
    A reset by another connection restarts that part once; a second reset
    is reported. The OTP and FIDO reads follow only when it succeeded, and
    their failures stay in their own state (`TokenScan.otp`, `.fido`). The
    card is left powered on disconnect.
    """
    now = now or utc_now()
    token = TokenScan(index=index, reader=reader, is_lab=bool(getattr(backend, "is_lab", False)))
    transport = backend.open(reader)
    try:
        token.atr = transport.connect().hex().upper()
    except PcscError as exc:
        token.problem = exc.problem
        token.error = str(exc)
        return token

    channel = Channel(transport, [observer] if observer else [])
    try:
        for attempt in (1, 2):
            try:
                with channel.transaction():
                    _read_token(channel, token, settings, backend, explain, now)
                break
            except CardRemovedError as exc:
                if exc.problem is PcscProblem.CARD_RESET and attempt == 1:
                    log.info("card in %s was reset by another connection; reading it again", reader)
                    _clear_readout(token)
                    continue
                _record_problem(token, exc)
                break
            except PcscError as exc:
                _record_problem(token, exc)
                break
        if token.problem is None:
            _read_otp(channel, token, settings)
            _read_fido(backend, token, transport, observer, usb_hid)
        _mark_lab_identity(token)
    finally:
        try:
            transport.disconnect()
        except PcscError as exc:
            log.info("disconnect from %s failed: %s", reader, exc)
    return token


def _mark_lab_identity(token: TokenScan) -> None:
    """Flag a lab key served through pcscd by its reserved ID, so it never passes for hardware.

    Runs after every read, so it changes what is shown and recorded, not what
    is sent to the key.
    """
    if token.is_lab or token.token_id is None:
        return
    from tui.lab.gp import LAB_CPLC_FABRICATOR, LAB_SERIAL_RANGE

    source, value = token.token_id.source, token.token_id.value
    lab_cplc = source in ("cplc", "cplc-gp") and value.upper().startswith(f"{LAB_CPLC_FABRICATOR:04X}")
    lab_serial = source == "serial" and value.isdigit() and int(value) in LAB_SERIAL_RANGE
    if lab_cplc or lab_serial:
        token.is_lab = True
        token.smartcard.notes.append("LAB KEY: its ID lies in the lab's reserved range, so this is an emulated key, not hardware.")


def _record_problem(token: TokenScan, exc: PcscError) -> None:
    token.problem = exc.problem
    token.error = str(exc)
    log.warning("scan of %s stopped: %s", token.reader, exc)


def _clear_readout(token: TokenScan) -> None:
    token.profile = Profile.UNKNOWN
    token.smartcard = SmartCardState()
    token.certificates = []
    token.id_candidates = []
    token.token_id = token.cuid = token.cuid_source = None


def _wants_cplc(settings: SiteSettings, explain: bool) -> bool:
    return explain or any(s in ("cplc", "cplc-gp") for sources in settings.id_sources.values() for s in sources)


def _read_token(channel: Channel, token: TokenScan, settings: SiteSettings, backend: ReaderBackend, explain: bool,
                now: dt.datetime) -> None:
    """Read one token: CPLC, profile, smart-card state, the token ID, then the PIV certificates."""
    sc = token.smartcard

    # CPLC first: before any SELECT, the applet selected at power-up (often the
    # card manager) may return it in one APDU.
    cplc = None
    if _wants_cplc(settings, explain):
        try:
            read = gp.read_cplc(channel)
            cplc = read.cplc
            if cplc is None:
                sc.notes.append(f"no CPLC: {read.reason}")
        except MalformedResponseError as exc:
            sc.notes.append(f"CPLC not usable: {exc}")

    detection = detect_profile(channel)
    token.profile = detection.profile
    sc.notes.extend(detection.notes)
    sc.aca_present = detection.aca_present
    sc.aca_version = detection.aca_version
    sc.piv_present = detection.piv_present
    if detection.firmware is not None:
        sc.firmware = ".".join(str(part) for part in detection.firmware)

    allow_unverified = bool(getattr(backend, "is_lab", False)) or settings.allow_unverified_commands
    if detection.profile is Profile.HID_CRESCENDO:
        _read_crescendo(channel, sc, allow_unverified)
    elif detection.profile is Profile.YUBIKEY:
        _read_yubikey(channel, sc, detection)
    elif detection.profile is Profile.GENERIC_PIV:
        _read_generic_piv(channel, sc)
    else:
        sc.pin = Counter(PinState.NOT_SUPPORTED, detail="neither the ACA nor the PIV applet answered SELECT")
        sc.puk = Counter(PinState.NOT_SUPPORTED)

    _choose_id(channel, token, cplc, settings, explain)

    # Every profile with PIV present ends its state read with PIV selected, so
    # the certificates need no SELECT of their own.
    if sc.piv_present:
        token.certificates = certs.read_certificates(channel, now)


def _read_otp(channel: Channel, token: TokenScan, settings: SiteSettings) -> None:
    """List the OTP slots (never generating a code); a failure is recorded in the listing's notes."""
    from tui.oath import OtpSlots, list_otp_slots

    try:
        token.otp = list_otp_slots(channel, token.profile, settings, token.is_lab)
    except KeytriageError as exc:
        log.warning("OTP listing on %s failed: %s", token.reader, exc)
        token.otp = OtpSlots(token.profile, notes=[f"The OTP slots could not be read: {exc}. Rescan to try again."])


def _read_fido(backend: ReaderBackend, token: TokenScan, transport: Any, observer: ExchangeObserver | None,
               usb_hid: bool) -> None:
    """Read the FIDO PIN state: USB HID first, PC/SC over the scan's own connection only when HID has no device."""
    from tui.fido.discovery import FidoDiscovery, find_fido_devices
    from tui.fido.state import FidoPin, FidoPinState, FidoState, PinReason, read_discovered_state

    discovery = FidoDiscovery()
    try:
        if usb_hid:
            discovery = find_fido_devices(token.reader, backend, include_pcsc=False)
        if not any(endpoint.device is not None for endpoint in discovery.endpoints):
            shared = _SharedTransport(transport, token, observer)
            over_pcsc = find_fido_devices(token.reader, backend, transport=shared, include_hid=False)
            discovery.endpoints.extend(over_pcsc.endpoints)
            discovery.notes.extend(over_pcsc.notes)
        token.fido = read_discovered_state(discovery)
    except Exception as exc:  # noqa: BLE001 - fido2 and HID raise assorted errors; the smart-card result must stand
        log.warning("FIDO state of %s not read: %s: %s", token.reader, type(exc).__name__, exc)
        text = f"The FIDO state could not be read: {type(exc).__name__}: {exc}. Rescan to try again."
        token.fido = FidoState(FidoPin(FidoPinState.UNKNOWN, reason=PinReason.READ_FAILED, explanation=text),
                               error_text=text)
    finally:
        discovery.close()


class _SharedTransport:
    """The scan's connected transport as fido2 sees it: no second connect or disconnect, every APDU observed.

    fido2's `CtapPcscDevice` connects and disconnects its connection; sharing
    the scan's connection avoids a second PC/SC handle. Each APDU is reported
    to the scan's observer, so it is counted, traced and shown like the rest.
    """

    def __init__(self, inner: Any, token: TokenScan, observer: ExchangeObserver | None) -> None:
        self.inner = inner
        self.reader = token.reader
        self.atr = bytes.fromhex(token.atr)
        self.observer = observer

    def connect(self) -> bytes:
        return self.atr

    def transmit_raw(self, apdu: bytes) -> bytes:
        command = _command_from_bytes(apdu)
        started = time.perf_counter()
        try:
            raw = self.inner.transmit_raw(apdu)
            response = ResponseApdu.from_bytes(raw)
        except Exception as exc:
            self._observe(Exchange(command, None, error=str(exc), elapsed_ms=(time.perf_counter() - started) * 1000))
            raise
        self._observe(Exchange(command, response, decode_sw(response.sw), elapsed_ms=(time.perf_counter() - started) * 1000))
        return raw

    def begin_transaction(self) -> None:
        self.inner.begin_transaction()

    def end_transaction(self) -> None:
        self.inner.end_transaction()

    def disconnect(self) -> None:
        """Leave the connection open: the scan disconnects it."""

    def _observe(self, exchange: Exchange) -> None:
        if self.observer is not None:
            self.observer(exchange)


# Names of the commands fido2 sends over PC/SC, for the activity log and traces.
_FIDO_COMMAND_NAMES = {0xA4: "SELECT FIDO", 0x10: "NFCCTAP_MSG", 0x11: "NFCCTAP_GETRESPONSE", 0xC0: "GET RESPONSE"}


def _command_from_bytes(apdu: bytes) -> CommandApdu:
    from tui.trace import parse_command

    name = _FIDO_COMMAND_NAMES.get(apdu[1], "FIDO APDU") if len(apdu) >= 2 else "FIDO APDU"
    try:
        _, data, le = parse_command(apdu)
        return CommandApdu(apdu[0], apdu[1], apdu[2], apdu[3], data, le, name=name)
    except (MalformedResponseError, ValueError, IndexError):
        # An extended-length or malformed APDU: record the header, the data cannot be shown.
        header = (apdu + bytes(4))[:4]
        return CommandApdu(header[0], header[1], header[2], header[3], name=f"{name} (not a short APDU)")


def _read_crescendo(channel: Channel, sc: SmartCardState, allow_unverified: bool) -> None:
    """ACA policy, admin key and PIN counter; the ACA is selected on entry."""
    try:
        sc.pin_policy, status = aca.get_pin_properties(channel)
        if sc.pin_policy is None:
            sc.notes.append(f"GET PIN PROPERTIES returned {status}")
    except MalformedResponseError as exc:
        sc.notes.append(f"PIN policy not read: {exc}")

    sc.admin_key, status = aca.get_challenge(channel)
    if sc.admin_key.present is None:
        sc.notes.append(f"admin key state not read: GET CHALLENGE returned {status}")

    aca_counter = None
    if allow_unverified:
        aca_counter = aca.query_aca_pin_status(channel, allowed=True)

    piv_counter = None
    piv_status = piv.select_piv(channel)
    sc.piv_present = piv_status.kind is StatusKind.OK
    if sc.piv_present:
        piv_counter = piv.query_pin_status(channel)

    sc.pin = _prefer_counter(piv_counter, aca_counter, sc, allow_unverified)
    sc.puk = Counter(PinState.NOT_READABLE, detail=PUK_NOT_READABLE)


def _prefer_counter(piv_counter: Counter | None, aca_counter: Counter | None, sc: SmartCardState,
                    allow_unverified: bool) -> Counter:
    """Pick the PIN counter: one with a number beats one without; on a tie the PIV status query wins."""
    if piv_counter is None and aca_counter is None:
        detail = "the PIV applet is absent and the ACA status query is unconfirmed"
        if not allow_unverified:
            detail += "; set [site] allow_unverified_commands = true to send it"
        return Counter(PinState.UNKNOWN, detail=detail)
    if piv_counter is None:
        return aca_counter
    if aca_counter is None:
        return piv_counter

    if (piv_counter.state, piv_counter.remaining) != (aca_counter.state, aca_counter.remaining):
        sc.notes.append(f"PIV status query returned {piv_counter.text()}, ACA status query {aca_counter.text()}")
    if piv_counter.remaining is None and aca_counter.remaining is not None:
        return aca_counter
    return piv_counter


def _read_yubikey(channel: Channel, sc: SmartCardState, detection: Detection) -> None:
    """Serial, then PIN, PUK and management key from GET METADATA (5.3+), else the status query."""
    try:
        sc.serial = piv.get_serial(channel)
    except MalformedResponseError as exc:
        sc.notes.append(f"serial not read: {exc}")

    if detection.firmware is not None and detection.firmware < piv.METADATA_MIN_FIRMWARE:
        sc.notes.append(f"firmware {sc.firmware} has no GET METADATA (5.3+); PIN tries from the PIV status query")
        sc.pin = piv.query_pin_status(channel)
        sc.puk = Counter(PinState.NOT_READABLE, detail=PUK_NOT_READABLE)
        return

    metadata, status = None, None
    try:
        metadata, status = piv.get_metadata(channel, piv.PIN_REFERENCE)
    except MalformedResponseError as exc:
        sc.notes.append(f"GET METADATA (PIN) reply not understood: {exc}")
    if metadata is None:
        if status is not None:
            sc.notes.append(f"GET METADATA (PIN) returned {status}; PIN tries from the PIV status query")
        sc.pin = piv.query_pin_status(channel)
        sc.puk = Counter(PinState.NOT_READABLE, detail=PUK_NOT_READABLE)
        return
    sc.pin = piv.counter_from_metadata(metadata, "PIN")

    try:
        puk_metadata, status = piv.get_metadata(channel, piv.PUK_REFERENCE)
        if puk_metadata is None:
            sc.puk = Counter(PinState.UNKNOWN, detail=f"GET METADATA (PUK) returned {status}")
        else:
            sc.puk = piv.counter_from_metadata(puk_metadata, "PUK")
    except MalformedResponseError as exc:
        sc.puk = Counter(PinState.UNKNOWN, detail=f"GET METADATA (PUK) reply not understood: {exc}")

    try:
        key_metadata, status = piv.get_metadata(channel, piv.MANAGEMENT_KEY_REFERENCE)
        if key_metadata is not None:
            key_type = piv.MANAGEMENT_KEY_ALGORITHMS.get(key_metadata.algorithm) if key_metadata.algorithm is not None else None
            sc.admin_key = AdminKey(True, key_type, Source.METADATA)
            if key_metadata.is_default:
                sc.notes.append("the PIV management key is the factory default")
        else:
            sc.notes.append(f"GET METADATA (management key) returned {status}")
    except MalformedResponseError as exc:
        sc.notes.append(f"management key metadata not understood: {exc}")


def _read_generic_piv(channel: Channel, sc: SmartCardState) -> None:
    """PIN tries from the PIV status query; the PUK is not readable (PIV is selected on entry)."""
    sc.pin = piv.query_pin_status(channel)
    sc.puk = Counter(PinState.NOT_READABLE, detail=PUK_NOT_READABLE)


def _choose_id(channel: Channel, token: TokenScan, cplc: gp.Cplc | None, settings: SiteSettings, explain: bool) -> None:
    """Collect the ID candidates, reading the CHUID only when it may be needed, and choose the ID."""
    sc = token.smartcard
    candidates = id_candidates(cplc, sc.serial)

    # GET DATA CHUID costs an APDU (and a SELECT PIV on a Crescendo, whose ACA
    # is selected): send it only when the GUID would be chosen or is asked for.
    available = {c.source for c in candidates}
    sources = id_sources_for(token.profile, settings)
    guid_needed = explain or ("guid" in sources and not any(s in available for s in sources[:sources.index("guid")]))
    if guid_needed and sc.piv_present:
        # Every profile with PIV present ends its state read with PIV selected.
        try:
            guid, status = piv.read_chuid_guid(channel)
            if guid is not None:
                candidates = id_candidates(cplc, sc.serial, guid)
            elif status.kind is not StatusKind.OK:
                sc.notes.append(f"no CHUID GUID: GET DATA CHUID returned {status}")
        except MalformedResponseError as exc:
            sc.notes.append(f"CHUID not usable: {exc}")

    token.id_candidates = candidates
    choice = choose_token_id(token.profile, candidates, settings)
    token.token_id, token.cuid, token.cuid_source = choice.token_id, choice.cuid, choice.cuid_source
    if choice.token_id is None:
        sc.notes.append(choice.reason)


def next_step_for(token: TokenScan | None, problem: PcscProblem | None = None) -> str:
    """Return the runbook step that follows the read-only scan of `token`.

    A stand-in until the runbook engine decides: no token -> Step 1 stop with
    the failed check; PIN blocked -> Step 6; PIN tries > 0 -> Step 4; no PIN
    set -> check the token ID against the records.
    """
    if token is None:
        failed = problem or PcscProblem.NO_CARD
        return f"Step 1: stop, the check '{failed.check}' failed. {failed.message}"
    if token.problem is not None:
        return f"Step 1: stop, the check '{token.problem.check}' failed. {token.problem.message}"
    if token.profile is Profile.UNKNOWN:
        return "Step 1: stop, this card has neither a PIV nor an ACA applet; it is not a supported smart card."

    pin = token.smartcard.pin
    if pin.state is PinState.BLOCKED:
        return "Step 6: the smart-card PIN is blocked; reset it with the PUK."
    if pin.state is PinState.NOT_SET:
        return "Step 4 (6A88): no PIN is set; check the token ID against the user's records, it may be another token."
    if pin.state is PinState.OK and pin.remaining:
        return "Step 4: test the PIN the user claims, once."
    if pin.state is PinState.VERIFIED_COUNT_UNKNOWN:
        return "Step 4: the PIN was verified in this session and is not blocked; test the user's PIN once if needed."
    return "Step 3: the PIN tries could not be read; rescan before any verify, and do not guess."

