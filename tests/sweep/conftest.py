"""Fixtures of the sweep and the summary line it prints at the end of the session.

Each test adds the cases it tried to `STATS` under its module's category
(test_fuzz.py counts as "fuzz"); failed and expected-failing tests are
counted here from the test reports. The real-pcscd sample reuses the
session fixture of tests/integration, which holds the pcscd lock.
"""

from __future__ import annotations

import logging

import pytest

from sweep.helpers import CATEGORIES, STATS, canarify, category_of

try:
    from integration.conftest import attach, pcscd  # noqa: F401 - fixtures for test_pcscd.py
except ImportError:  # pragma: no cover - tests/integration always ships with the repository
    pass


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pcscd: needs the real pcscd with the vpcd readers of tests/pcsc-readers; run serially")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "sweep/" not in report.nodeid:
        return
    category = category_of(report.nodeid)
    if hasattr(report, "wasxfail"):
        if report.when == "call" or report.skipped:
            STATS.expected_failures[category] += 1
    elif report.failed:
        STATS.failures[category] += 1


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not STATS.cases and not STATS.failures:
        return
    parts = []
    for category in (*CATEGORIES, "other"):
        cases = STATS.cases.get(category, 0)
        failures = STATS.failures.get(category, 0)
        expected = STATS.expected_failures.get(category, 0)
        if not (cases or failures or expected):
            continue
        text = f"{category} {cases} cases, {failures} failed"
        if expected:
            text += f", {expected} known bugs (xfail)"
        parts.append(text)
    terminalreporter.write_sep("=", "keytriage sweep")
    terminalreporter.write_line("; ".join(parts))


@pytest.fixture
def traffic_log(tmp_path):
    """Send the "keytriage" logger at TRAFFIC level to a file; return the file's path."""
    from tui.cli import configure_logging

    path = tmp_path / "keytriage.log"
    configure_logging("TRAFFIC", str(path), tui=True)
    yield path
    for handler in logging.getLogger("keytriage").handlers:
        handler.close()


@pytest.fixture
def canary_scenarios(monkeypatch):
    """Rebuild every registered lab scenario with canary secrets, wherever `LabBackend(name)` is built."""
    from tui.lab import scenarios

    for name, scenario in list(scenarios.SCENARIOS.items()):
        def build(original=scenario.builder):
            keys = original()
            canarify(keys)
            return keys

        monkeypatch.setitem(scenarios.SCENARIOS, name, scenarios.Scenario(name, scenario.description, build))
