"""Find the token again by its ID just before a write, so a swapped key is never written to.

A scan may be minutes old: the user may have pulled the key, plugged in a
colleague's, or moved it to another port. `open_token` lists the readers
again, reads the ID of each token with the fewest read-only APDUs the ID
needs (GET DATA CPLC, the profile detection SELECTs, GET SERIAL on a
YubiKey, GET DATA CHUID when the GUID is the ID), and connects to the one
whose ID matches. It sends no PIN status query, because on some YubiKey
firmware that query clears the verified state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from tui import gp, piv
from tui.errors import MalformedResponseError, PcscError
from tui.identity import choose_token_id, id_candidates, id_sources_for
from tui.model import PcscProblem, Profile, TokenId
from tui.profiles import detect_profile
from tui.recovery.common import RecoveryError
from tui.settings import SiteSettings
from tui.transport import Channel, ReaderBackend

log = logging.getLogger("keytriage.recovery")


class TargetError(RecoveryError):
    """The token to write to cannot be resolved."""


class TokenGoneError(TargetError):
    """No attached token has the expected ID (removed or swapped)."""


class TokenAmbiguousError(TargetError):
    """More than one attached token has the expected ID, so the write target is not certain."""


@dataclass
class TokenLite:
    """The little a re-resolution reads: reader, profile, token ID, and every reader holding a card."""

    reader: str
    profile: Profile
    token_id: TokenId | None
    atr: str = ""
    attached: list[str] = field(default_factory=list)


def read_token_id(channel: Channel, settings: SiteSettings) -> tuple[Profile, TokenId | None]:
    """Read the profile and the token ID of the connected card with read-only APDUs only."""
    cplc = None
    if any(source in ("cplc", "cplc-gp") for sources in settings.id_sources.values() for source in sources):
        try:
            cplc = gp.read_cplc(channel).cplc
        except MalformedResponseError as exc:
            log.info("CPLC not usable while re-resolving the token: %s", exc)

    detection = detect_profile(channel)
    serial = None
    if detection.profile is Profile.YUBIKEY:
        try:
            serial = piv.get_serial(channel)
        except MalformedResponseError as exc:
            log.info("serial not read while re-resolving the token: %s", exc)

    candidates = id_candidates(cplc, serial)
    sources = id_sources_for(detection.profile, settings)
    available = {candidate.source for candidate in candidates}
    guid_needed = "guid" in sources and not any(source in available for source in sources[:sources.index("guid")])
    if guid_needed:
        if detection.profile is Profile.HID_CRESCENDO or not detection.piv_present:
            # The ACA is selected after detection on a Crescendo; the CHUID lives in PIV.
            piv.select_piv(channel)
        try:
            guid, _ = piv.read_chuid_guid(channel)
            if guid is not None:
                candidates = id_candidates(cplc, serial, guid)
        except MalformedResponseError as exc:
            log.info("CHUID not usable while re-resolving the token: %s", exc)

    return detection.profile, choose_token_id(detection.profile, candidates, settings).token_id


def attached_readers(backend: ReaderBackend) -> list[str]:
    """Return the readers that contain a card (connect succeeds), in listing order."""
    attached = []
    for reader in backend.list_readers():
        transport = backend.open(reader)
        try:
            transport.connect()
        except PcscError:
            continue
        attached.append(reader)
        try:
            transport.disconnect()
        except PcscError:
            pass
    return attached


def open_token(backend: ReaderBackend, token_id: TokenId | str, settings: SiteSettings) -> tuple[TokenLite, Channel]:
    """List the readers, read each token's ID, and return the one whose ID is `token_id`, connected.

    Sends only read-only APDUs. The caller owns the returned channel and
    disconnects its transport. Raises `TokenGoneError` when no token has the
    ID, `TokenAmbiguousError` when two do, and `PcscError` when the readers
    cannot be listed.
    """
    wanted = str(token_id)
    matches: list[tuple[TokenLite, Channel]] = []
    attached: list[str] = []
    seen: list[str] = []

    for reader in backend.list_readers():
        transport = backend.open(reader)
        try:
            atr = transport.connect().hex().upper()
        except PcscError as exc:
            if exc.problem is not PcscProblem.NO_CARD:
                log.info("reader %s not usable while re-resolving %s: %s", reader, wanted, exc)
            continue
        attached.append(reader)

        channel = Channel(transport)
        try:
            with channel.transaction():
                profile, found = read_token_id(channel, settings)
        except PcscError as exc:
            log.info("reading the ID in %s failed while re-resolving %s: %s", reader, wanted, exc)
            _disconnect(channel)
            continue

        seen.append(f"{reader}: {found or 'no ID'}")
        if found is not None and str(found) == wanted:
            matches.append((TokenLite(reader, profile, found, atr), channel))
        else:
            _disconnect(channel)

    if not matches:
        listing = "; ".join(seen) if seen else "no token is attached"
        raise TokenGoneError(f"token {wanted} is no longer attached ({listing}). Nothing was sent. "
                             "Ask the user to insert the key, then rescan.")
    if len(matches) > 1:
        readers = ", ".join(lite.reader for lite, _ in matches)
        for _, channel in matches:
            _disconnect(channel)
        raise TokenAmbiguousError(f"token ID {wanted} was read in {len(matches)} readers ({readers}). Nothing was sent. "
                                  "Remove every key but the user's, then rescan.")

    lite, channel = matches[0]
    lite.attached = attached
    return lite, channel


def _disconnect(channel: Channel) -> None:
    try:
        channel.transport.disconnect()
    except PcscError:
        pass
