"""The benchmark functions run in a tiny mode and return numbers; no timing is asserted."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import REPOSITORY

if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

from benchmarks import scan_cost, startup  # noqa: E402
from benchmarks.run import child_environment  # noqa: E402
from benchmarks.terminal import printed_text  # noqa: E402


def test_lab_cost_healthy_counts():
    costs = scan_cost.lab_costs(["healthy"])

    assert len(costs) == 1
    cost = costs[0]
    assert cost.profile == "hid-crescendo"
    assert len(cost.observed) > 0
    assert len(cost.minimum) > 0
    assert cost.unmatched_minimum == []
    assert "SELECT ACA" in cost.observed


def test_lab_cost_generic_piv_has_no_ctap():
    cost = scan_cost.lab_costs(["wrong-pin"])[0]

    assert cost.profile == "piv"
    assert cost.ctap_minimum == []
    assert "VERIFY (PIV PIN status)" in cost.minimum


def test_ctap_label_names_get_pin_retries():
    from fido2 import cbor

    payload = b"\x06" + cbor.encode({1: 1, 2: 1})

    assert scan_cost.ctap_label(payload) == "authenticatorClientPIN getPINRetries"
    assert scan_cost.ctap_label(b"\x04") == "authenticatorGetInfo"


def test_printed_text_drops_escapes():
    data = b"\x1b[?2026h\x1b[1;1H\x1b[38;5;12mVerdict:\x1b[0m ok\x1b[?2026l"

    assert printed_text(data) == "Verdict: ok"


def test_minimal_app_startup_returns_numbers(tmp_path: Path):
    env = child_environment(REPOSITORY, tmp_path)
    runs = startup.StartupRuns("minimal")
    argv = [sys.executable, str(REPOSITORY / "benchmarks" / "minimal_app.py")]

    startup.measure_once(argv, startup.MINIMAL_MARKERS, env, str(REPOSITORY), runs)

    assert len(runs.painted_s) == 1
    assert runs.painted_s[0] >= runs.first_result_s[0] > 0
    assert runs.peak_rss_kib[0] > 0
    assert runs.bytes_written[0] > 0
