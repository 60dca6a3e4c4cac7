"""`keytriage lab`: list the lab scenarios, serve one to pcscd, and control a served key.

    keytriage lab list
    keytriage lab serve SCENARIO [--port N] [--latency-ms MS]
    keytriage lab remove|insert|touch [--port N] [--key K]

The lab key itself is imported inside `run()`, so `keytriage` starts
without it.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_PORT = 35963  # the first slot of the stock vsmartcard-vpcd entry; tui.lab.vpcd has the same value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `list`, `serve`, `remove`, `insert` and `touch` actions."""
    actions = parser.add_subparsers(dest="lab_command", metavar="ACTION")
    actions.required = True

    actions.add_parser("list", help="print the lab scenarios with their descriptions",
                       description="Print the lab scenarios with their descriptions.")

    serve = actions.add_parser(
        "serve", help="attach a scenario's keys to a running pcscd through the vpcd driver",
        description=("Attach a lab scenario's keys to a running pcscd through the vpcd driver, so plain keytriage "
                     "and 'keytriage scan' see them like hardware. Key 1 uses --port, key 2 the next port, and so "
                     "on. vpcd listens on every network address, so this runs only with KEYTRIAGE_LAB_SERVE=1. "
                     "While it runs: r remove, i insert, t touch, q quit."))
    serve.add_argument("scenario", metavar="SCENARIO", help="the scenario to serve (see 'keytriage lab list')")
    _add_port(serve, "vpcd TCP port of the first key; further keys use the following ports")
    serve.add_argument("--latency-ms", type=float, default=0.0, metavar="MS",
                       help="delay every APDU response by MS milliseconds, to imitate a real key in benchmarks (default: 0)")

    for name, text in (("remove", "pull the served key out of its reader"),
                       ("insert", "put the served key back (a FIDO power-up)"),
                       ("touch", "touch the served key: user presence for a waiting FIDO request")):
        control = actions.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}, through the control socket of 'keytriage lab serve'.")
        _add_port(control, "vpcd port of the first key of the server to control")
        control.add_argument("--key", type=int, metavar="K", help="act on key K of the scenario only (1 is the first; default: every key)")


def _add_port(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, metavar="N", help=f"{text} (default: {DEFAULT_PORT})")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number") from None
    if not 1 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"port {value} is outside 1..65535")
    return value


def run(args: argparse.Namespace) -> int:
    """Run the chosen lab action; return 0 on success, 1 when a control failed, 2 on bad input, 3 without vpcd."""
    if args.lab_command == "list":
        return _list()
    if args.lab_command == "serve":
        from tui.lab.serve import run_server

        if args.latency_ms < 0:
            print(f"keytriage lab serve: --latency-ms {args.latency_ms:g} is negative; use 0 or more", file=sys.stderr)
            return 2
        return run_server(args.scenario, args.port, latency_s=args.latency_ms / 1000.0)
    return _control(args.lab_command, args.port, args.key)


def _list() -> int:
    from tui.lab.scenarios import SCENARIOS

    width = max((len(name) for name in SCENARIOS), default=0)
    for name in sorted(SCENARIOS):
        print(f"{name:<{width}}  {SCENARIOS[name].description}")
    return 0


def _control(command: str, port: int, key_number: int | None) -> int:
    from tui.lab.serve import LabServeError, send_control

    try:
        ok, message = send_control(command, port, key_number)
    except LabServeError as exc:
        print(f"keytriage lab {command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"keytriage lab {command}: the lab key server on port {port} did not reply ({exc}). "
              f"Check that 'keytriage lab serve' still runs.", file=sys.stderr)
        return 2
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
