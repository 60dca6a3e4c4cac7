"""The `keytriage` command line: the TUI by default, and the headless subcommands.

Each subcommand lives in its own module. `main` imports only the module of a
subcommand named on the command line, so that `keytriage` starts the TUI
without loading any subcommand module, the lab key, hvac or fido2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Iterable, Sequence

from tui import __version__

log = logging.getLogger("keytriage")

# subcommand -> (module, help). Each module defines `add_arguments(parser)` and
# `run(args) -> int`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "scan": ("tui.scan_cli", "run the read-only triage without the TUI and print the result"),
    "id": ("tui.identity_cli", "print the token ID and, with --explain, every ID candidate"),
    "lab": ("tui.lab.cli", "list lab scenarios, serve a lab key to pcscd, or control a served key"),
    "audit": ("tui.audit_cli", "print the audit trail, optionally for one token ID"),
}

LOG_LEVELS = ("TRAFFIC", "DEBUG", "INFO", "WARNING", "ERROR")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options every mode shares: lab scenario, logging and trace."""
    parser.add_argument("--lab", metavar="SCENARIO", help="use the built-in lab key with this scenario instead of real readers (see 'keytriage lab list')")
    parser.add_argument("--log-file", metavar="PATH", help="write the log to PATH (the TUI never logs to the terminal)")
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                        help="log level; TRAFFIC logs every APDU with secret data fields redacted (default: WARNING)")
    parser.add_argument("--trace", metavar="FILE", help="write every APDU exchange to FILE, secret data fields replaced by their length")
    # Vault settings for escrow. The token comes from VAULT_TOKEN, ~/.vault-token
    # or the login screen, never from the command line, where ps would show it.
    parser.add_argument("--vault-addr", metavar="URL", help="Vault address for escrow (overrides VAULT_ADDR and [vault] address)")
    parser.add_argument("--vault-mount", metavar="MOUNT", help="KV version 2 mount of the escrow records (default: secret)")
    parser.add_argument("--vault-base", metavar="PATH", help="folder under the mount for escrow records (default: keytriage/tokens)")
    parser.add_argument("--vault-namespace", metavar="NAMESPACE", help="Vault Enterprise namespace (overrides VAULT_NAMESPACE)")
    parser.add_argument("--lab-vault", action="store_true",
                        help="with --lab, escrow to the configured Vault under lab/<base path> instead of the in-memory lab store")


def build_parser(argv: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand registered.

    Without `argv` every subcommand module adds its arguments. With `argv`,
    only the modules of subcommands whose name appears in it are imported.
    The others are listed with their help but take no arguments, which is
    harmless because argparse parses only the chosen subcommand's options.
    """
    named = None if argv is None else set(argv)
    parser = argparse.ArgumentParser(prog="keytriage", description="Find which applet of a security key is locked, and fix it in the safest order.")
    parser.add_argument("--version", action="version", version=f"keytriage {__version__}")
    add_common_arguments(parser)
    parser.add_argument("--ticket-file", metavar="PATH", help="also write the ticket summary to PATH when the TUI exits")

    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        sub.set_defaults(module=module_name)
        if name != "lab":
            add_common_arguments(sub)
        if named is not None and name not in named:
            continue
        module = importlib.import_module(module_name)
        module.add_arguments(sub)
    return parser


def configure_logging(level_name: str, log_file: str | None, *, tui: bool) -> None:
    """Send logs to `log_file`, or to stderr for headless commands; the TUI logs nowhere else."""
    from tui.transport import TRAFFIC

    level = TRAFFIC if level_name == "TRAFFIC" else getattr(logging, level_name)
    root = logging.getLogger("keytriage")
    root.setLevel(level)
    root.propagate = False
    if log_file:
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
    elif tui:
        handler = logging.NullHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]


def main(argv: Sequence[str] | None = None) -> int:
    """Run keytriage; return the process exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)

    if args.command is None:
        configure_logging(args.log_level, args.log_file, tui=True)
        from tui.ui.run import run_tui

        return run_tui(args)

    configure_logging(getattr(args, "log_level", "WARNING"), getattr(args, "log_file", None), tui=False)
    module = importlib.import_module(args.module)
    return module.run(args)


if __name__ == "__main__":
    sys.exit(main())
