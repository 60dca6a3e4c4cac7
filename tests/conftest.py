"""Shared test fixtures: fake tokens, a fake scan, a fixed clock, and the snapshot location.

Snapshot baselines live in snapshots/ at the repository root rather than in
syrupy's default tests/__snapshots__ folder. pytest-textual-snapshot's
`snap_compare` switches the `snapshot` fixture to its SVG extension with
`use_extension`, so the `snapshot` fixture below returns an assertion that
swaps that extension for a subclass whose `dirname` points at snapshots/.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import pytest
from syrupy.assertion import SnapshotAssertion

from tui.apdu import CommandApdu, Exchange, ResponseApdu, decode_sw
from tui.model import (
    AdminKey,
    Counter,
    PcscProblem,
    PinPolicy,
    PinState,
    Profile,
    ScanResult,
    SmartCardState,
    Source,
    TokenId,
    TokenScan,
)
from tui.settings import SiteSettings

REPOSITORY = Path(__file__).resolve().parents[1]
SNAPSHOT_DIR = REPOSITORY / "snapshots"

FIXED_TIME = datetime(2025, 3, 14, 20, 1, 2)


def fixed_clock() -> datetime:
    """Return the same instant every time, so activity-log time stamps are deterministic."""
    return FIXED_TIME


# --- snapshot location ---------------------------------------------------------------------

try:
    from pytest_textual_snapshot import SVGImageExtension
except ImportError:  # pragma: no cover - the plugin is a dev dependency
    SVGImageExtension = None


if SVGImageExtension is not None:
    class RepositorySVGExtension(SVGImageExtension):
        """The SVG snapshot extension, storing files in snapshots/<test module>/."""

        @classmethod
        def dirname(cls, *, test_location) -> str:
            return str(SNAPSHOT_DIR / test_location.basename)

    class RepositorySnapshotAssertion(SnapshotAssertion):
        """A snapshot assertion that stores SVG snapshots under snapshots/."""

        def use_extension(self, extension_class=None):
            if extension_class is SVGImageExtension:
                extension_class = RepositorySVGExtension
            return super().use_extension(extension_class)

    @pytest.fixture
    def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
        """Override syrupy's fixture so SVG snapshots go to snapshots/ at the repository root."""
        return RepositorySnapshotAssertion(
            update_snapshots=snapshot.update_snapshots,
            extension_class=snapshot.extension_class,
            test_location=snapshot.test_location,
            session=snapshot.session,
        )


# --- fake tokens ---------------------------------------------------------------------------

def make_token(index: int = 0, *, reader: str = "Lab Reader 0", profile: Profile = Profile.GENERIC_PIV,
               token_id: str | None = "cplc:4790516856781A2B3C4D", pin: Counter | None = None,
               puk: Counter | None = None, problem: PcscProblem | None = None,
               atr: str = "3B8F8001804F0CA000000306030001000000006A") -> TokenScan:
    """Build a `TokenScan` as the read-only scan would report it."""
    smartcard = SmartCardState(
        pin=pin or Counter(PinState.OK, 8, 8, Source.METADATA),
        puk=puk or Counter(PinState.OK, 10, 10, Source.METADATA),
        pin_policy=PinPolicy(6, 8, True),
        admin_key=AdminKey(True, "AES-128", Source.METADATA),
        piv_present=True,
    )
    return TokenScan(
        index=index,
        reader=reader,
        atr=atr,
        profile=profile,
        token_id=TokenId.parse(token_id) if token_id else None,
        smartcard=smartcard,
        problem=problem,
    )


def make_scan(*tokens: TokenScan, problem: PcscProblem | None = None) -> ScanResult:
    """Build a `ScanResult` with `tokens`, one reader per token (or one empty reader)."""
    readers = [token.reader for token in tokens] or ["Lab Reader 0"]
    return ScanResult(tokens=list(tokens), problem=problem,
                      problem_detail=problem.message if problem else "", readers=readers)


def sample_exchanges() -> list[Exchange]:
    """Return two exchanges a scan might observe: a SELECT and a PIN status query."""
    select = CommandApdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex("A000000308"), name="SELECT PIV")
    verify = CommandApdu(0x00, 0x20, 0x00, 0x80, name="VERIFY (status)")
    return [
        Exchange(select, ResponseApdu(b"", 0x9000), decode_sw(0x9000)),
        Exchange(verify, ResponseApdu(b"", 0x6983), decode_sw(0x6983, status_query=True)),
    ]


class FakeBackend:
    """A reader backend that is never opened: the fake scan does not use it."""

    def __init__(self, is_lab: bool = False) -> None:
        self.is_lab = is_lab

    def list_readers(self) -> list[str]:
        return []

    def open(self, reader: str):
        raise AssertionError("the fake scan never opens a reader")


class FakeScanner:
    """A stand-in for `tui.scan.scan_all` that returns prepared results and counts calls.

    `results` are returned in turn, the last one repeatedly. With `gate` set,
    each call blocks on the device thread until the test sets the event, so a
    test can look at the busy state of a slow scan.
    """

    def __init__(self, results: Sequence[ScanResult], *, exchanges: Sequence[Exchange] = (),
                 gate: threading.Event | None = None) -> None:
        self.results = list(results)
        self.exchanges = list(exchanges)
        self.gate = gate
        self.calls = 0
        self.started = threading.Event()
        self.threads: list[str] = []

    def __call__(self, backend, settings, *, observer: Callable[[Exchange], None] | None = None) -> ScanResult:
        self.calls += 1
        self.threads.append(threading.current_thread().name)
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=30), "test never released the fake scan"
        for exchange in self.exchanges:
            if observer is not None:
                observer(exchange)
        result = self.results[min(self.calls, len(self.results)) - 1]
        result.apdu_count = len(self.exchanges)
        return result


@pytest.fixture
def settings() -> SiteSettings:
    """Default site settings, independent of the user's config file."""
    return SiteSettings()


@pytest.fixture
def make_app(settings):
    """Return a factory for a `KeytriageApp` over a fake scan and the fixed clock."""
    from tui.ui.app import KeytriageApp

    def factory(scanner: FakeScanner, *, lab_scenario: str | None = None, **kwargs) -> KeytriageApp:
        return KeytriageApp(lambda: FakeBackend(is_lab=lab_scenario is not None), settings,
                            lab_scenario=lab_scenario, scan=scanner, clock=fixed_clock, **kwargs)

    return factory


# --- isolation ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Point the XDG config and state directories at a temporary folder for every test.

    The audit trail and config file would otherwise land in the developer's
    home directory, and one test's audit records would count as another's
    attempts.
    """
    base = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(base / "state"))
    monkeypatch.delenv("KEYTRIAGE_CONFIG", raising=False)


@pytest.fixture(autouse=True)
def restore_keytriage_logger():
    """Undo what `tui.cli.main` does to the "keytriage" logger (level, propagation, handlers)."""
    import logging

    logger = logging.getLogger("keytriage")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    yield
    logger.setLevel(saved[0])
    logger.propagate = saved[1]
    logger.handlers[:] = saved[2]
