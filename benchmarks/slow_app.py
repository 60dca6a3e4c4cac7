"""The keytriage app with slow work in flight, for the responsiveness benchmark (run under a pty).

Each scan runs the real read-only scan of a lab scenario through a backend
whose every APDU sleeps, so the whole scan takes about `--scan-seconds`.
With `--vault-url`, a thread worker checks the Vault status in a loop, as
the header's Vault state would, against a server that delays `sys/health`.
Both sleeps release the GIL, as a PC/SC or HTTP call does.
"""

from __future__ import annotations

import argparse
import os
import time

from tui.lab.backend import LabBackend
from tui.scan import scan_all
from tui.settings import SiteSettings
from tui.ui.app import KeytriageApp
from tui.ui.widgets import HeaderBar


class SlowTransport:
    """A lab transport whose every APDU takes `delay_s` longer."""

    def __init__(self, inner, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s

    def transmit_raw(self, apdu: bytes) -> bytes:
        time.sleep(self.delay_s)
        return self.inner.transmit_raw(apdu)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


class SlowLabBackend(LabBackend):
    """The lab backend of one scenario with `delay_s` added to every APDU."""

    def __init__(self, scenario_name: str, delay_s: float) -> None:
        super().__init__(scenario_name)
        self.delay_s = delay_s

    def open(self, reader: str):
        return SlowTransport(super().open(reader), self.delay_s)


def per_apdu_delay(scenario: str, scan_seconds: float) -> float:
    """Return the per-APDU delay that makes one scan of `scenario` take about `scan_seconds`."""
    if scan_seconds <= 0:
        return 0.0
    result = scan_all(LabBackend(scenario), SiteSettings(), usb_hid=False)
    return scan_seconds / max(1, result.apdu_count)


class SlowApp(KeytriageApp):
    """KeytriageApp plus a Vault status loop in a thread worker."""

    def __init__(self, *args, vault_url: str | None = None, vault_token: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.vault_url = vault_url
        self.vault_token = vault_token

    def feature_ready(self) -> None:
        """Start the Vault status loop when a Vault URL was given."""
        if self.vault_url:
            self.run_worker(self._vault_loop, thread=True, group="vault", exit_on_error=False)

    def _vault_loop(self) -> None:
        import hvac
        from textual.worker import get_current_worker

        from tui.escrow.status import check_status
        from tui.escrow.store import VaultStore

        store = VaultStore(hvac.Client(url=self.vault_url, token=self.vault_token, timeout=30))
        worker = get_current_worker()
        while not worker.is_cancelled:
            status = check_status(store)
            self.call_from_thread(self.main_screen.query_one(HeaderBar).set_vault, status.words())


def main() -> None:
    """Parse the options and run the app until it is terminated."""
    parser = argparse.ArgumentParser(description="keytriage with slow work in flight (benchmark helper)")
    parser.add_argument("--scenario", default="healthy", help="lab scenario to scan")
    parser.add_argument("--scan-seconds", type=float, default=2.0, help="approximate duration of one scan in seconds")
    parser.add_argument("--vault-url", help="Vault address for the status loop; no loop when absent")
    args = parser.parse_args()

    delay_s = per_apdu_delay(args.scenario, args.scan_seconds)
    app = SlowApp(lambda: SlowLabBackend(args.scenario, delay_s), SiteSettings(), lab_scenario=args.scenario,
                  scan=lambda backend, settings, observer=None: scan_all(backend, settings, observer=observer, usb_hid=False),
                  vault_url=args.vault_url, vault_token=os.environ.get("KEYTRIAGE_BENCH_VAULT_TOKEN"))
    app.freeze_heap_after_first_scan = True
    app.run()


if __name__ == "__main__":
    main()
