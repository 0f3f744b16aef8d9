"""`renew-rcl`, `verify-rcl`, `complete-pending`, `verify-endpoints`: one run of a timer function, now."""

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
