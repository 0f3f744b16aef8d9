"""Operator CLI: `certrenew COMMAND` or `python -m shared COMMAND` (each command has --help).

It runs the app's registered functions exactly as the Functions host would (same settings, bindings, routes and
auth levels), for operators without the Functions Core Tools:

  serve             the HTTP functions on a local port (for curl and Postman)
  renew-rcl         one nightly RCL renewal run, now
  verify-rcl        one follow-up check of RCL renewals, now
  renew-avx FILE    one AppViewX webhook renewal from a JSON file
  complete-pending  one run of the pending AppViewX completion
  status            recorded RCL renewals and AppViewX renewal records, as tables
  verify-endpoints  one endpoint check: does each endpoint in ENDPOINT_CHECKS serve Key Vault's current version?
  sweep             one run of the daily renewal sweep
  plan              what the next sweep will do with each certificate, and why
  renew NAME        renew one AppViewX certificate of the vault now (--force: even in backoff)
  discover-consumers  one consumer discovery: which Azure resources use the vault's certificates (Resource Graph)?

This module is the argument parsing and `main`; what each command does lives beside it, one module per command
group: `serve.py`, `timer_runs.py` (renew-rcl, verify-rcl, complete-pending, verify-endpoints, discover-consumers,
sweep), `avx_renewal.py` (renew-avx), `sweep_commands.py` (plan, renew) and `status.py`.

Settings come from the environment, or from a local.settings.json file (--settings, before or after the command)
whose "Values" win over the environment for the names it sets (so a shell's REQUESTS_CA_BUNDLE cannot hide the
file's). Installed with `bash dev.sh setup`, the same CLI is the console command `certrenew`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.operator.avx_renewal import REQUEST_EXAMPLE, renew_avx
from shared.operator.files import load_settings_file
from shared.operator.outcomes import EXIT_FAILED, EXIT_MISTAKE, CliMistake, failure_line, program_name
from shared.operator.serve import serve as run_serve
from shared.operator.status import status as show_status
from shared.operator.sweep_commands import plan as show_plan
from shared.operator.sweep_commands import renew as renew_certificate
from shared.operator.timer_runs import run_timer


def _add_common_options(parser: argparse.ArgumentParser, *, on_command: bool) -> None:
    """--settings and -v, accepted before or after the command. On a command they default to SUPPRESS, so a value
    given before the command is not overwritten when it is not repeated after it."""
    parser.add_argument(
        "--settings",
        type=Path,
        default=argparse.SUPPRESS if on_command else None,
        help="a local.settings.json whose Values win over the environment for the names it sets",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS if on_command else False, help="log at DEBUG"
    )


def _add_timer_commands(command: Any) -> None:
    for name, function, text in (
        ("renew-rcl", "renew_timer", "run the nightly RCL renewal once, now"),
        ("verify-rcl", "verify_renewals", "run the follow-up check of RCL renewals once, now"),
        ("complete-pending", "complete_pending", "try the pending AppViewX renewals once, now"),
        ("verify-endpoints", "verify_endpoints", "check once, now, which certificate each endpoint serves"),
        ("discover-consumers", "discover_consumers", "find once, now, the Azure resources using each certificate"),
        ("sweep", "plan_renewals", "run the daily renewal sweep once, now"),
    ):
        sub = command(name, help=text, description=text[0].upper() + text[1:] + ".")
        sub.set_defaults(run=lambda _args, f=function: run_timer(f))


def _add_sweep_commands(command: Any) -> None:
    plan = command(
        "plan",
        help="show what the next renewal sweep will do with each certificate, and why",
        description="Show the renewal plan (GET /api/certificates/plan): per certificate what the next sweep does, "
        "by which path and why, and the checks that would stop it. Exits 1 when a check fails.",
    )
    plan.set_defaults(run=lambda _args: show_plan())

    renew_one = command(
        "renew",
        help="renew one Key Vault certificate through AppViewX now",
        description="Renew one certificate the app stored from AppViewX now, through the sweep's path (one renewal "
        "per version whichever path asks). A certificate in renewal backoff needs --force.",
    )
    renew_one.add_argument("name", help="the Key Vault certificate's name")
    renew_one.add_argument("--force", action="store_true", help="renew even while the certificate is in backoff")
    renew_one.set_defaults(run=lambda args: renew_certificate(args.name, args.force))


def build_parser(prog: str = "python -m shared") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=None)
    _add_common_options(parser, on_command=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, **kwargs)
        _add_common_options(sub, on_command=True)
        return sub

    serve = command(
        "serve",
        help="serve the HTTP functions locally",
        description="Serve the app's HTTP functions on a local port through their registered routes and auth levels.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7071)
    serve.add_argument(
        "--key",
        help="the function key callers must send (default: CERTRENEW_FUNCTION_KEY, else a random one printed at start)",
    )
    serve.set_defaults(run=lambda args: run_serve(args.host, args.port, args.key))

    _add_timer_commands(command)

    renew = command(
        "renew-avx",
        help="renew one certificate through AppViewX from a JSON file",
        description="Send one webhook renewal (the JSON body the webhook takes) through the app.",
    )
    renew.add_argument("file", help=f"JSON file with the request body, e.g. {REQUEST_EXAMPLE}")
    renew.add_argument("--idempotency-key")
    renew.add_argument("--auto-approval", choices=("true", "false"))
    renew.set_defaults(run=lambda args: renew_avx(args.file, args.idempotency_key, args.auto_approval))

    _add_sweep_commands(command)

    status = command(
        "status",
        help="show recorded RCL renewals and pending AVX renewals",
        description="Show the recorded RCL renewals and the pending AppViewX renewals as tables.",
    )
    status.set_defaults(run=lambda args: show_status(args.settings))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    prog = program_name()
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("azure", "urllib3", "msal"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    from shared.core.errors import CertRenewError

    try:
        if args.settings:
            load_settings_file(args.settings)
        return int(args.run(args))
    except CliMistake as exc:
        print(f"{prog} {args.command}: {exc}", file=sys.stderr)
        return EXIT_MISTAKE
    except CertRenewError as exc:
        print(failure_line(exc.code, exc.message, exc.remediation), file=sys.stderr)
        return EXIT_FAILED
