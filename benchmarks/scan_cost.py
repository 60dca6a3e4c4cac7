"""Scan cost: APDUs and CTAP commands per read-only scan against the protocol minimum, and wall time through pcscd.

The counts come from the in-process lab backend (every scenario) and from
the real pcscd with the lab cards on vpcd (one scenario per profile). The
minimum of each token is built from what the scan reported about it, by
`minimum_commands`; BENCHMARKS.md explains each entry.
"""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.pcscd import PcscdUnavailable, pcscd_session, wait_reader

# One scenario per profile for the pcscd runs, the FIDO-over-PC/SC case included.
PCSCD_SCENARIOS = ("healthy", "wrong-pin", "yubikey-healthy", "fido-healthy")
INJECTED_LATENCY_S = 0.030
WALL_TARGET_RATIO = 1.2

SMART_CARD_MINIMUM = {
    "hid-crescendo": ["SELECT ACA", "GET PIN PROPERTIES", "GET CHALLENGE", "SELECT PIV", "VERIFY (PIV PIN status)"],
    "yubikey": ["SELECT ACA", "SELECT PIV", "GET VERSION", "GET SERIAL", "GET METADATA (PIN)", "GET METADATA (PUK)",
                "GET METADATA (management key)"],
    "yubikey-before-5.3": ["SELECT ACA", "SELECT PIV", "GET VERSION", "GET SERIAL", "VERIFY (PIV PIN status)"],
    "piv": ["SELECT ACA", "SELECT PIV", "GET VERSION", "VERIFY (PIV PIN status)"],
    "unknown": ["SELECT ACA", "SELECT PIV"],
}
CERTIFICATE_COMMANDS = [f"GET DATA certificate {slot}" for slot in ("9A", "9C", "9D", "9E")]
HID_OTP_COMMANDS = [f"SELECT OATH slot {number}" for number in (1, 2, 3)]
YUBICO_OTP_COMMANDS = ["SELECT OTP", "SELECT OATH"]


@dataclass
class TokenCost:
    """The commands one token's scan sent and the minimum for what it reported."""

    scenario: str
    reader: str
    profile: str
    observed: list[str]
    minimum: list[str]
    ctap_observed: list[str]
    ctap_minimum: list[str]

    @property
    def extra(self) -> list[str]:
        """Commands sent beyond the minimum, with repeats."""
        return list((collections.Counter(self.observed) - collections.Counter(self.minimum)).elements())

    @property
    def unmatched_minimum(self) -> list[str]:
        """Minimum commands the scan did not send under that name (a renamed command or a smaller scan)."""
        return list((collections.Counter(self.minimum) - collections.Counter(self.observed)).elements())


@dataclass
class WallTime:
    """Scan wall times through pcscd for one scenario at one injected latency."""

    scenario: str
    latency_s: float
    apdus: int
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median wall time in seconds."""
        return statistics.median(self.seconds)

    @property
    def floor(self) -> float:
        """APDU count times the injected latency: the time the card alone needs."""
        return self.apdus * self.latency_s


# --- counting -----------------------------------------------------------------------------


CTAP2_COMMANDS = {0x01: "authenticatorMakeCredential", 0x02: "authenticatorGetAssertion", 0x04: "authenticatorGetInfo",
                  0x06: "authenticatorClientPIN", 0x07: "authenticatorReset"}
CLIENT_PIN_SUBCOMMANDS = {0x01: "getPINRetries", 0x02: "getKeyAgreement"}


def ctap_label(data: bytes) -> str:
    """Name one CTAPHID_CBOR payload: the CTAP2 command, and the clientPin subcommand when present."""
    if not data:
        return "CTAP (empty)"
    label = CTAP2_COMMANDS.get(data[0], f"CTAP 0x{data[0]:02X}")
    if data[0] == 0x06:
        try:
            from fido2 import cbor

            request = cbor.decode(data[1:])
            label += " " + CLIENT_PIN_SUBCOMMANDS.get(request.get(2), str(request.get(2)))
        except Exception:  # noqa: BLE001 - only the label suffers
            pass
    return label


@contextlib.contextmanager
def count_ctap() -> Iterator[list[str]]:
    """Record every CTAP call python-fido2 devices make (CBOR messages), over USB HID, PC/SC or the lab device.

    Counting at the device's `call` includes the getInfo probe that fido2's
    `CtapPcscDevice` sends when it opens, which bypasses `Ctap2`.
    """
    import threading

    from fido2.hid import CTAPHID, CtapHidDevice
    from fido2.pcsc import CtapPcscDevice

    classes = [CtapHidDevice, CtapPcscDevice]
    with contextlib.suppress(ImportError):
        from tui.lab.ctap_device import SoftCtapDevice

        classes.append(SoftCtapDevice)

    sent: list[str] = []
    depth = threading.local()
    originals = {cls: cls.__dict__["call"] for cls in classes if "call" in cls.__dict__}

    def wrap(original):
        def call(self, cmd, data=b"", *args, **kwargs):
            outer = getattr(depth, "value", 0) == 0
            if outer and cmd == CTAPHID.CBOR:
                sent.append(ctap_label(bytes(data)))
            depth.value = getattr(depth, "value", 0) + 1
            try:
                return original(self, cmd, data, *args, **kwargs)
            finally:
                depth.value -= 1
        return call

    for cls, original in originals.items():
        setattr(cls, "call", wrap(original))
    try:
        yield sent
    finally:
        for cls, original in originals.items():
            setattr(cls, "call", original)


def minimum_commands(token, exchanges, allow_unverified: bool) -> tuple[list[str], list[str]]:
    """Return (APDU names, CTAP command names) that the facts this token's scan reported need at least.

    `exchanges` are the token's own APDU exchanges; they decide only the
    conditional entries (the CPLC fallback, OATH LIST, GET DATA CHUID). The
    getInfo probe python-fido2 2.2.1 sends when it opens a PC/SC device is
    not in the minimum, so it shows up as an extra CTAP call and APDU.
    """
    from tui.model import Profile

    names = [exchange.command.name for exchange in exchanges]
    sc = token.smartcard
    profile = token.profile.value if hasattr(token.profile, "value") else str(token.profile)
    minimum = ["GET DATA CPLC"]

    # A card whose selected applet does not return the CPLC needs the fallback
    # (SELECT card manager, GET DATA CPLC again), at most 4 APDUs.
    first_cplc = next((exchange for exchange in exchanges if exchange.command.name == "GET DATA CPLC"), None)
    if first_cplc is not None and (first_cplc.response is None or first_cplc.response.sw != 0x9000):
        fallback = [name for name in names if name == "SELECT card manager"]
        fallback += ["GET DATA CPLC"] * max(0, names.count("GET DATA CPLC") - 1)
        minimum += fallback[:4]

    key = profile
    if token.profile is Profile.YUBIKEY and "GET METADATA (PIN)" not in names:
        key = "yubikey-before-5.3"
    smart_card = list(SMART_CARD_MINIMUM.get(key, SMART_CARD_MINIMUM["unknown"]))
    if token.profile is Profile.HID_CRESCENDO and allow_unverified:
        smart_card.insert(3, "VERIFY (ACA PIN status)")
    minimum += smart_card
    if "GET DATA CHUID" in names:
        minimum.append("GET DATA CHUID")  # only when the site's ID sources need the GUID
    if sc.piv_present:
        minimum += CERTIFICATE_COMMANDS

    if token.profile in (Profile.HID_CRESCENDO, Profile.GENERIC_PIV, Profile.UNKNOWN):
        minimum += HID_OTP_COMMANDS
    if token.profile in (Profile.YUBIKEY, Profile.GENERIC_PIV, Profile.UNKNOWN):
        minimum += YUBICO_OTP_COMMANDS
        if "OATH LIST" in names:
            minimum.append("OATH LIST")

    ctap: list[str] = []
    fido = token.fido
    if fido is not None and fido.found and fido.versions:
        ctap.append("authenticatorGetInfo")
        if fido.client_pin_option:
            ctap.append("authenticatorClientPIN getPINRetries")
    if fido is None or fido.transport != "usb-hid":
        # Over PC/SC: SELECT of the FIDO AID, then one NFCCTAP_MSG per CTAP command.
        minimum.append("SELECT FIDO")
        minimum += ["NFCCTAP_MSG"] * len(ctap)
    return minimum, ctap


def _split_by_token(result, exchanges) -> list:
    """Pair each token with its exchanges; the scan reads the readers one after another."""
    pairs = []
    position = 0
    sizes = [token.apdu_count if hasattr(token, "apdu_count") else None for token in result.tokens]
    if all(size is not None for size in sizes):
        for token, size in zip(result.tokens, sizes):
            pairs.append((token, exchanges[position:position + size]))
            position += size
        return pairs
    # Without per-token counts, split at each token's first GET DATA CPLC.
    starts = [index for index, exchange in enumerate(exchanges) if exchange.command.name == "GET DATA CPLC"
              and (index == 0 or exchanges[index - 1].command.name != "SELECT card manager")]
    starts = starts[:len(result.tokens)] or [0]
    bounds = starts + [len(exchanges)]
    for number, token in enumerate(result.tokens):
        begin, end = (bounds[number], bounds[number + 1]) if number + 1 < len(bounds) else (len(exchanges), len(exchanges))
        pairs.append((token, exchanges[begin:end]))
    return pairs


def costs_of(scenario: str, result, exchanges, ctap_sent: list[str], allow_unverified: bool) -> list[TokenCost]:
    """Build the per-token costs of one scan; CTAP commands are charged to a single-token scenario's token."""
    costs = []
    for token, own in _split_by_token(result, exchanges):
        minimum, ctap_minimum = minimum_commands(token, own, allow_unverified)
        profile = token.profile.value if hasattr(token.profile, "value") else str(token.profile)
        ctap = ctap_sent if len(result.tokens) == 1 else []
        costs.append(TokenCost(scenario, token.reader, profile, [e.command.name for e in own], minimum, ctap, ctap_minimum))
    return costs


def lab_costs(scenarios: list[str] | None = None) -> list[TokenCost]:
    """Scan every lab scenario in process (no pcscd) and return each token's cost."""
    from tui.lab.backend import LabBackend
    from tui.lab.scenarios import SCENARIOS
    from tui.scan import scan_all
    from tui.settings import SiteSettings

    costs = []
    for name in scenarios or sorted(SCENARIOS):
        exchanges = []
        with count_ctap() as ctap_sent:
            result = scan_all(LabBackend(name), SiteSettings(), observer=exchanges.append)
        # The lab backend always allows the unconfirmed ACA status query.
        costs += costs_of(name, result, exchanges, ctap_sent, allow_unverified=True)
    return costs


# --- through pcscd ------------------------------------------------------------------------------


def pcscd_wall_times(source: Path, runs: int, scenarios=PCSCD_SCENARIOS,
                     latencies=(0.0, INJECTED_LATENCY_S)) -> tuple[list[WallTime], list[TokenCost], dict]:
    """Scan each scenario through the real pcscd at each latency; also run OpenSC on the generic PIV card.

    Returns the wall times, the costs of the first scan of each scenario
    (native speed) and the OpenSC comparison.
    """
    from tui.lab.scenarios import get_scenario
    from tui.lab.vpcd import VpcdLink
    from tui.pcsc import PcscBackend
    from tui.scan import scan_all
    from tui.settings import SiteSettings

    settings = SiteSettings()
    walls: list[WallTime] = []
    costs: list[TokenCost] = []
    opensc: dict = {}
    with pcscd_session(source / "tests" / "pcsc-readers") as slots:
        for scenario in scenarios:
            for latency in latencies:
                keys = [key for key in get_scenario(scenario).build()]
                links = []
                try:
                    for (port, reader), key in zip(slots, keys):
                        if key.card is None:
                            continue
                        wait_reader(reader, present=False)
                        link = VpcdLink(key.card, port, latency_s=latency)
                        link.insert()
                        wait_reader(reader, present=True)
                        links.append(link)

                    backend = PcscBackend()
                    try:
                        wall = None
                        for run in range(runs):
                            exchanges = []
                            with count_ctap() as ctap_sent:
                                started = time.perf_counter()
                                result = scan_all(backend, settings, observer=exchanges.append, usb_hid=False)
                                elapsed = time.perf_counter() - started
                            if wall is None:
                                wall = WallTime(scenario, latency, len(exchanges))
                                walls.append(wall)
                                if latency == 0.0:
                                    costs += costs_of(scenario, result, exchanges, ctap_sent,
                                                      allow_unverified=settings.allow_unverified_commands)
                            wall.seconds.append(elapsed)
                    finally:
                        backend.release()

                    if scenario == "wrong-pin" and links:
                        opensc[f"{latency * 1000:g} ms"] = run_opensc(links[0], latency)
                finally:
                    for link in links:
                        link.remove()
                    for (port, reader), link in zip(slots, links):
                        wait_reader(reader, present=False)
    return walls, costs, opensc


def run_opensc(link, latency_s: float) -> dict:
    """Time `pkcs15-tool --list-pins` on the card behind `link` and count the APDUs it sent."""
    tool = shutil.which("pkcs15-tool")
    if tool is None:
        return {"error": "pkcs15-tool not found: apt-get install opensc"}
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "opensc"], capture_output=True, text=True).stdout.strip()
    before = link.apdu_count
    started = time.perf_counter()
    completed = subprocess.run([tool, "--list-pins", "--reader", "0"], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    apdus = link.apdu_count - before
    output = completed.stdout + completed.stderr
    tries = re.findall(r"Tries left\s*:\s*(-?\d+)", output)
    entry = {"version": version or "unknown", "seconds": elapsed, "apdus": apdus, "exit": completed.returncode,
             "tries_left": tries, "latency_s": latency_s}
    if completed.returncode != 0:
        entry["error"] = "pkcs15-tool failed: " + " ".join(output.split())[:300]
    elif not tries:
        listed = "PIV PUK" in output
        entry["error"] = ("the PIV driver binds to the lab card and lists the PIN objects, but prints no 'Tries left': "
                          "it sends no VERIFY, so it does not read the PIV PIN tries" if listed else
                          "no PIN listed: " + " ".join(output.split())[:200])
    return entry


def main_quick() -> None:
    """Print the in-process counts (a quick manual check)."""
    for cost in lab_costs():
        print(cost.scenario, cost.profile, len(cost.observed), len(cost.minimum), cost.extra, cost.unmatched_minimum,
              cost.ctap_observed, cost.ctap_minimum)


if __name__ == "__main__":
    main_quick()
