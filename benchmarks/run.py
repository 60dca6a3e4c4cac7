"""Run every keytriage benchmark and print each figure with its target and its ratio to the reference.

Usage, from the repository root (pcscd needs root, as in the integration tests):

    python -m benchmarks                 # the working tree
    python -m benchmarks --head          # a clean export of the committed HEAD
    python -m benchmarks --quick --no-pcscd

The pcscd part takes the same flock as the integration tests, so it waits
for a running test session instead of fighting over the daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]


def machine_description() -> dict[str, str]:
    """Return the CPU model, core count, Python and Textual versions of this machine."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    return {"cpu": model, "cores": str(os.cpu_count()), "python": platform.python_version(),
            "textual": version("textual"), "kernel": platform.release(), "load_at_start": load_average()}


def load_average() -> str:
    """Return the 1-minute load average, because other work on the machine skews every timing."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def export_head(target: Path) -> str:
    """Write `git archive HEAD` of the repository into `target`; return the commit."""
    commit = subprocess.run(["git", "-C", str(REPOSITORY), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(REPOSITORY), "archive", "HEAD"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return commit


def child_environment(source: Path, scratch: Path) -> dict[str, str]:
    """Return an environment with private XDG directories, no site config, TERM=xterm-256color and `source` first on the path."""
    # COLORTERM is dropped as SSH drops it by default (no SendEnv for it),
    # so Textual uses 256-colour codes as it would on a jump host.
    # PYTHONDONTWRITEBYTECODE is dropped too: pip writes the bytecode of an
    # installed package, and a run without it would time the compiler.
    dropped = ("COLORTERM", "PYTHONDONTWRITEBYTECODE")
    env = {key: value for key, value in os.environ.items() if not key.startswith("TEXTUAL") and key not in dropped}
    for name in ("config", "state", "run"):
        (scratch / name).mkdir(parents=True, exist_ok=True)
    (scratch / "run").chmod(0o700)
    # An empty config file: a named config must exist, and an empty one sets nothing.
    (scratch / "config" / "none.toml").write_text("")
    env.update({
        "TERM": "xterm-256color",
        "PYTHONPATH": str(source),
        "XDG_CONFIG_HOME": str(scratch / "config"),
        "XDG_STATE_HOME": str(scratch / "state"),
        "XDG_RUNTIME_DIR": str(scratch / "run"),
        "KEYTRIAGE_CONFIG": str(scratch / "config" / "none.toml"),
    })
    return env


def ratio(value: float | None, reference: float | None) -> float | None:
    """Return value / reference, None when either is missing or the reference is zero."""
    if value is None or not reference:
        return None
    return value / reference


# --- the four benchmarks -----------------------------------------------------------------


def bench_startup(source: Path, env: dict[str, str], runs: int) -> dict[str, Any]:
    """Start-up time and peak RSS against the minimal Textual app."""
    from benchmarks import startup

    keytriage, minimal = startup.measure(source, env, runs)
    return {
        "runs": runs,
        "keytriage": vars(keytriage),
        "minimal": vars(minimal),
        "painted_s": keytriage.painted_median,
        "reference_painted_s": minimal.painted_median,
        "time_ratio": ratio(keytriage.painted_median, minimal.painted_median),
        "time_target_ratio": startup.TIME_TARGET_RATIO,
        "peak_rss_kib": keytriage.rss_median,
        "reference_peak_rss_kib": minimal.rss_median,
        "memory_ratio": ratio(keytriage.rss_median, minimal.rss_median),
        "memory_target_ratio": startup.MEMORY_TARGET_RATIO,
    }


def bench_scan(source: Path, runs: int, use_pcscd: bool) -> dict[str, Any]:
    """APDU and CTAP counts of every lab scenario, and wall times through pcscd."""
    from benchmarks import scan_cost

    def cost_row(cost) -> dict[str, Any]:
        return {"scenario": cost.scenario, "profile": cost.profile, "apdus": len(cost.observed),
                "minimum_apdus": len(cost.minimum), "extra": cost.extra, "unmatched_minimum": cost.unmatched_minimum,
                "ctap": len(cost.ctap_observed), "minimum_ctap": len(cost.ctap_minimum),
                "extra_ctap": [c for c in cost.ctap_observed if c not in cost.ctap_minimum]
                + ["authenticatorGetInfo"] * max(0, cost.ctap_observed.count("authenticatorGetInfo")
                                                 - cost.ctap_minimum.count("authenticatorGetInfo"))}

    result: dict[str, Any] = {"lab": [cost_row(cost) for cost in scan_cost.lab_costs()]}
    if not use_pcscd:
        result["pcscd"] = {"skipped": "--no-pcscd"}
        return result
    try:
        walls, costs, opensc = scan_cost.pcscd_wall_times(source, runs)
    except scan_cost.PcscdUnavailable as exc:
        result["pcscd"] = {"skipped": str(exc)}
        return result
    result["pcscd"] = {
        "counts": [cost_row(cost) for cost in costs],
        "wall": [{"scenario": wall.scenario, "latency_ms": wall.latency_s * 1000, "apdus": wall.apdus,
                  "median_s": wall.median, "runs_s": wall.seconds, "floor_s": wall.floor,
                  "ratio": ratio(wall.median, wall.floor), "target_ratio": scan_cost.WALL_TARGET_RATIO}
                 for wall in walls],
        "opensc": opensc,
    }
    return result


def bench_responsiveness(source: Path, env: dict[str, str], rounds: int) -> dict[str, Any]:
    """Key-press-to-repaint latency, idle and with a 2 s scan and a 2 s Vault call in flight."""
    from benchmarks import responsiveness

    sys.path.insert(0, str(source / "tests"))
    try:
        from vault_server import VaultTestServer, writer_rules
    finally:
        sys.path.remove(str(source / "tests"))

    idle = responsiveness.measure(source, env, rounds=rounds, slow_seconds=0.0, condition="idle")
    with VaultTestServer() as vault:
        # The app is stopped with a Vault request in flight; its broken pipe is expected.
        vault._httpd.handle_error = lambda request, address: None
        token = vault.add_token(writer_rules())
        vault.inject("sys/health", delay=2.0, times=0)
        loaded = responsiveness.measure(source, {**env, "KEYTRIAGE_BENCH_VAULT_TOKEN": token}, rounds=rounds,
                                        slow_seconds=2.0, vault_url=vault.url, condition="2 s scan + 2 s Vault call")
        vault_requests = len(vault.requests)

    def summary(samples) -> dict[str, Any]:
        return {"p50_ms": samples.p50, "p95_ms": samples.p95, "samples": len(samples.latencies_ms),
                "unanswered": samples.unanswered, "escape_ms": samples.escape_ms,
                "by_key_median_ms": {key: sorted(values)[len(values) // 2] for key, values in samples.by_key.items()},
                "by_key_max_ms": {key: max(values) for key, values in samples.by_key.items()}}

    return {"idle": summary(idle), "loaded": summary(loaded), "vault_requests": vault_requests,
            "p95_ratio": ratio(loaded.p95, idle.p95), "target_p95_ms": responsiveness.TARGET_P95_MS}


def bench_wire(source: Path, env: dict[str, str], repeats: int) -> dict[str, Any]:
    """Terminal bytes per key, per scan and idle, with default animations and with none."""
    from benchmarks import wire

    result = {}
    for animations in (None, "none"):
        cost = wire.measure(source, env, repeats=repeats, animations=animations)
        result[cost.animations] = {
            "startup_bytes": cost.startup_bytes,
            "idle_bytes_per_s": cost.idle_bytes_per_s,
            "per_key_median": {key: cost.key_median(key) for key in cost.per_key},
            "per_scan_median": sorted(cost.per_scan)[len(cost.per_scan) // 2],
        }
    return result


# --- output ----------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def print_report(results: dict[str, Any]) -> None:
    """Print the figures with their targets and ratios."""
    machine = results["machine"]
    print(f"keytriage benchmarks, source {results['source']}, {machine['cores']} cores, {machine['cpu']}, "
          f"Python {machine['python']}, Textual {machine['textual']}, total {results['total_s']:.0f} s, "
          f"1-minute load {machine['load_at_start']} at start, {machine['load_at_end']} at end")

    if "startup" in results:
        start = results["startup"]
        print(f"\n1. Start-up ({start['runs']} runs, median)")
        print(f"   time to fully painted: {_fmt(start['painted_s'], 3, ' s')} vs minimal app {_fmt(start['reference_painted_s'], 3, ' s')}"
              f" -> ratio {_fmt(start['time_ratio'])} (target <= {start['time_target_ratio']})")
        print(f"   peak RSS: {start['peak_rss_kib'] / 1024:.1f} MiB vs {start['reference_peak_rss_kib'] / 1024:.1f} MiB"
              f" -> ratio {_fmt(start['memory_ratio'])} (target <= {start['memory_target_ratio']})")

    if "scan" in results:
        scan = results["scan"]
        print("\n2. Scan cost per token (in-process lab backend): APDUs / minimum, CTAP / minimum, extras")
        for row in scan["lab"]:
            print(f"   {row['scenario']:<18} {row['profile']:<14} APDU {row['apdus']:>3} / {row['minimum_apdus']:<3}"
                  f" CTAP {row['ctap']} / {row['minimum_ctap']}  extra {row['extra'] + row['extra_ctap'] or '-'}")
        pcscd = scan["pcscd"]
        if "skipped" in pcscd:
            print(f"   pcscd part skipped: {pcscd['skipped']}")
        else:
            print("   through pcscd + vpcd (default site settings):")
            for row in pcscd["counts"]:
                print(f"   {row['scenario']:<18} {row['profile']:<14} APDU {row['apdus']:>3} / {row['minimum_apdus']:<3}"
                      f" CTAP {row['ctap']} / {row['minimum_ctap']}  extra {row['extra'] + row['extra_ctap'] or '-'}")
            for row in pcscd["wall"]:
                target = (f" -> ratio {_fmt(row['ratio'])} to APDUs x latency {row['floor_s']:.3f} s "
                          f"(target <= {row['target_ratio']})") if row["latency_ms"] else ""
                print(f"   wall {row['scenario']:<16} {row['latency_ms']:>4.0f} ms/APDU: {row['median_s'] * 1000:7.1f} ms "
                      f"for {row['apdus']} APDUs{target}")
            for latency, entry in pcscd["opensc"].items():
                if "error" in entry:
                    print(f"   OpenSC {entry.get('version', '')} at {latency}: {entry['error'][:200]} "
                          f"({entry.get('apdus')} APDUs, {entry.get('seconds', 0) * 1000:.0f} ms)")
                else:
                    print(f"   OpenSC at {latency}: tries {entry['tries_left']}, {entry['apdus']} APDUs, "
                          f"{entry['seconds'] * 1000:.0f} ms")

    if "responsiveness" in results:
        latency = results["responsiveness"]
        print("\n3. Key-press-to-repaint latency (help open/close, r during a scan)")
        for name in ("idle", "loaded"):
            row = latency[name]
            print(f"   {name:<7} p50 {_fmt(row['p50_ms'], 1, ' ms')}, p95 {_fmt(row['p95_ms'], 1, ' ms')} over "
                  f"{row['samples']} presses, {row['unanswered']} unanswered; per key median "
                  f"{ {k: round(v, 1) for k, v in row['by_key_median_ms'].items()} }, Escape {[round(v) for v in row['escape_ms']]} ms")
        print(f"   loaded p95 / idle p95 = {_fmt(latency['p95_ratio'])}; target: loaded p95 < {latency['target_p95_ms']:.0f} ms")

    if "wire" in results:
        print("\n4. Terminal bytes at 80x24 (two-tokens scenario, median)")
        for animations, row in results["wire"].items():
            keys = ", ".join(f"{key} {value:.0f}" for key, value in row["per_key_median"].items())
            print(f"   animations {animations}: start-up {row['startup_bytes']} B, per scan {row['per_scan_median']} B, "
                  f"idle {row['idle_bytes_per_s']:.0f} B/s; per key: {keys}")


def compile_bytecode(source: Path) -> None:
    """Write the bytecode of `source`'s packages, as `pip install` does for an installed keytriage.

    Without it the first import of each module compiles it, and with
    PYTHONDONTWRITEBYTECODE set every start-up would, while the minimal
    app's Textual comes precompiled from site-packages.
    """
    for package in ("tui", "benchmarks"):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(source / package)], check=True,
                       stdout=subprocess.DEVNULL)


def run_all(source: Path, *, quick: bool = False, use_pcscd: bool = True,
            only: set[str] | None = None) -> dict[str, Any]:
    """Run the selected benchmarks against the package in `source`; return the results."""
    if str(source) not in sys.path:
        sys.path.insert(0, str(source))
    started = time.perf_counter()
    compile_bytecode(source)
    results: dict[str, Any] = {"machine": machine_description(), "source": str(source)}
    with tempfile.TemporaryDirectory(prefix="keytriage-bench-") as scratch:
        env = child_environment(source, Path(scratch))
        wanted = only or {"startup", "scan", "responsiveness", "wire"}
        if "startup" in wanted:
            results["startup"] = bench_startup(source, env, runs=1 if quick else 7)
        if "scan" in wanted:
            results["scan"] = bench_scan(source, runs=1 if quick else 3, use_pcscd=use_pcscd)
        if "responsiveness" in wanted:
            results["responsiveness"] = bench_responsiveness(source, env, rounds=1 if quick else 4)
        if "wire" in wanted:
            results["wire"] = bench_wire(source, env, repeats=1 if quick else 3)
    results["total_s"] = time.perf_counter() - started
    results["machine"]["load_at_end"] = load_average()
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the benchmarks, print the report and optionally write JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Run the keytriage benchmarks.")
    parser.add_argument("--head", action="store_true", help="benchmark a clean export of the committed HEAD, not the working tree")
    parser.add_argument("--quick", action="store_true", help="one run of everything: a smoke run, not a measurement")
    parser.add_argument("--no-pcscd", action="store_true", help="skip the scans through the real pcscd (which needs root)")
    parser.add_argument("--only", action="append", choices=("startup", "scan", "responsiveness", "wire"),
                        help="run only this benchmark (repeatable)")
    parser.add_argument("--json", metavar="PATH", help="also write the full results as JSON to PATH")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="keytriage-head-") as export:
        source = REPOSITORY
        label = "working tree"
        if args.head:
            source = Path(export)
            label = f"HEAD {export_head(source)}"
        results = run_all(source, quick=args.quick, use_pcscd=not args.no_pcscd, only=set(args.only or []) or None)
        results["source"] = label
        print_report(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
