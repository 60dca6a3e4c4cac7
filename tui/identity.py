"""Token ID candidates (CPLC CUID in two byte orders, YubiKey serial, CHUID GUID) and the choice among them.

The CUID is 10 bytes built from the CPLC, and two orders are in use:
- "cplc": IC fabricator, IC type, IC batch identifier, IC serial number, as
  OpenSC's CoolKey driver builds it. This is the default.
- "cplc-gp": IC fabricator, IC type, IC serial number, IC batch identifier,
  the order of the fields in the CPLC itself, as Dogtag TPS reads it.
`keytriage id --explain` prints both so a site can match the vendor's
token CUID once and then pin the order in `[site.id_sources]`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tui.gp import Cplc
from tui.model import IdCandidate, Profile, TokenId
from tui.settings import SiteSettings

SOURCE_DESCRIPTIONS = {
    "cplc": "CPLC CUID: IC fabricator, IC type, IC batch identifier, IC serial number",
    "cplc-gp": "CPLC CUID: IC fabricator, IC type, IC serial number, IC batch identifier",
    "serial": "YubiKey serial number (GET SERIAL), decimal",
    "guid": "PIV CHUID GUID (card UUID)",
}


def cuid_from_cplc(cplc: Cplc) -> str:
    """Return the 20-hex-digit CUID in the default order: fabricator, type, batch, serial."""
    return (cplc.ic_fabricator + cplc.ic_type + cplc.ic_batch_identifier + cplc.ic_serial_number).hex().upper()


def cuid_from_cplc_gp_order(cplc: Cplc) -> str:
    """Return the 20-hex-digit CUID in CPLC field order: fabricator, type, serial, batch."""
    return (cplc.ic_fabricator + cplc.ic_type + cplc.ic_serial_number + cplc.ic_batch_identifier).hex().upper()


def id_candidates(cplc: Cplc | None = None, serial: int | None = None, guid: str | None = None) -> list[IdCandidate]:
    """List every ID the scan could read, in the order cplc, cplc-gp, serial, guid."""
    candidates = []
    if cplc is not None:
        candidates.append(IdCandidate("cplc", cuid_from_cplc(cplc), SOURCE_DESCRIPTIONS["cplc"]))
        candidates.append(IdCandidate("cplc-gp", cuid_from_cplc_gp_order(cplc), SOURCE_DESCRIPTIONS["cplc-gp"]))
    if serial is not None:
        candidates.append(IdCandidate("serial", str(serial), SOURCE_DESCRIPTIONS["serial"]))
    if guid is not None:
        candidates.append(IdCandidate("guid", guid, SOURCE_DESCRIPTIONS["guid"]))
    return candidates


@dataclass
class IdChoice:
    """The chosen token ID, the CUID shown beside it, and why no ID was chosen."""

    token_id: TokenId | None
    cuid: str | None
    cuid_source: str | None
    reason: str = ""


def id_sources_for(profile: Profile, settings: SiteSettings) -> list[str]:
    """Return the ID sources to try for `profile`, in order of preference."""
    return list(settings.id_sources.get(profile.value, settings.id_sources.get("unknown", ["cplc"])))


def choose_token_id(profile: Profile, candidates: list[IdCandidate], settings: SiteSettings) -> IdChoice:
    """Choose the token ID by the profile's ID sources; the reason names what was tried when none fits."""
    sources = id_sources_for(profile, settings)
    by_source = {c.source: c for c in candidates}

    # The CUID column shows the CPLC order the site prefers, even when the ID comes from elsewhere.
    cplc_order = next((s for s in sources if s in ("cplc", "cplc-gp")), "cplc")
    cuid_candidate = by_source.get(cplc_order)
    cuid = cuid_candidate.value if cuid_candidate else None
    cuid_source = cplc_order if cuid_candidate else None

    for source in sources:
        if source in by_source:
            return IdChoice(TokenId(source, by_source[source].value), cuid, cuid_source)

    return IdChoice(None, cuid, cuid_source, missing_id_reason(profile, candidates, settings))


def missing_id_reason(profile: Profile, candidates: list[IdCandidate], settings: SiteSettings) -> str:
    """Explain, for escrow and the ticket, why a token has no ID."""
    sources = id_sources_for(profile, settings)
    found = ", ".join(c.source for c in candidates) or "none"
    return (f"no token ID: this {profile.label} returned none of the ID sources the site allows "
            f"({', '.join(sources)}); sources read: {found}. Record the token by its reader and ATR, "
            f"and set [site.id_sources] if another source is acceptable.")
