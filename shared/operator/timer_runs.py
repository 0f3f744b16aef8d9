"""`renew-rcl`, `verify-rcl`, `complete-pending`, `verify-endpoints`, `discover-consumers`: one run of a timer function,
now."""

from __future__ import annotations

import sys

from shared.operator.local_host import LocalContext, registered_functions
from shared.operator.outcomes import EXIT_FAILED, EXIT_OK, failure_line


def run_timer(name: str) -> int:
    """Run the timer function `name` once, as the host would on schedule."""
    import azure.functions as func

    from shared.core.errors import CertRenewError

    print(f"Running {name} now ...", file=sys.stderr)
    try:
        registered_functions()[name].get_user_function()(func.timer.TimerRequest(past_due=False), LocalContext(name))
    except CertRenewError as exc:
        print(failure_line(exc.code, exc.message, exc.remediation), file=sys.stderr)
        return EXIT_FAILED
    print(f"{name} finished.", file=sys.stderr)
    return EXIT_OK


def run_complete_pending(now: bool) -> int:
    """`complete-pending [--now]`: the timer's run in the same invocation scope, then its summary on one line;
    `now` also tries the records waiting out their retry delay."""
    from renew_timer.complete_pending import complete_for_operator
    from shared.core.errors import CertRenewError

    name = "complete_pending"
    print(f"Running {name} now{' (--now: retry delays ignored)' if now else ''} ...", file=sys.stderr)
    registered_functions()  # the app as the host loads it (telemetry, notifications)
    try:
        summary = complete_for_operator(LocalContext(name), ignore_retry_delay=now)
    except CertRenewError as exc:
        print(failure_line(exc.code, exc.message, exc.remediation), file=sys.stderr)
        return EXIT_FAILED
    waiting = f"{len(summary.not_due)} not yet due"
    if summary.not_due and not now:
        waiting += " (waiting out a retry delay, or on the renewal queue; --now tries those waiting out a delay)"
    print(
        f"{name} finished: {len(summary.completed)} completed, {len(summary.retried)} to retry, "
        f"{len(summary.failed)} given up, {len(summary.skipped)} held by another run, {waiting}.",
        file=sys.stderr,
    )
    return EXIT_OK
