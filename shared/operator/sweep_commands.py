"""`plan` and `renew NAME [--force]`: what the daily renewal sweep will do, and one certificate renewed now by the same
path (`sweep` itself runs through `timer_runs`)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

from shared.operator.local_host import LocalContext, registered_functions
from shared.operator.outcomes import EXIT_FAILED, EXIT_OK, CliMistake


def plan() -> int:
    """Print the renewal plan (the `renewal_plan` function's answer) as a table and its checks."""
    import azure.functions as func

    request = func.HttpRequest(
        method="GET", url="http://localhost/api/certificates/plan", headers={}, params={}, route_params={}, body=b""
    )
    response = registered_functions()["renewal_plan"].get_user_function()(request, LocalContext("renewal_plan"))
    body: dict[str, Any] = json.loads(response.get_body())
    if response.status_code != 200:
        error = body.get("error") or {}
        print(f"plan failed [{error.get('code')}]: {error.get('message')}", file=sys.stderr)
        return EXIT_FAILED
    print(plan_table(body))
    return EXIT_OK if body.get("ready") else EXIT_FAILED


def plan_table(body: dict[str, Any]) -> str:
    rows = [("CERTIFICATE", "OWNER", "ACTION", "DAYS LEFT", "WHY")]
    for c in body.get("certificates") or []:
        days = "" if c.get("daysLeft") is None else str(c["daysLeft"])
        rows.append((str(c["name"]), str(c["owner"]), str(c["action"]), days, str(c["reason"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(r)).rstrip() for r in rows]
    if len(rows) == 1:
        lines.append("(no certificates in the vault)")
    if body.get("truncated"):
        lines.append("(the vault lists more certificates than one sweep plans; the rest are not shown)")
    lines.append("")
    for check in body.get("checks") or []:
        lines.append(f"{'ok    ' if check['ok'] else 'FAILED'}  {check['name']}: {check['detail']}")
    return "\n".join(lines)


def renew(name: str, force: bool) -> int:
    """Renew one certificate of the vault now through the sweep's path (AppViewX certificates only)."""
    from shared import context as app_context
    from shared.vault.renewal_plan import PlanAction
    from shared.vault.sweep import OPERATOR_CALLER, plan_vault, renew_now

    now = datetime.now(UTC)
    deps = app_context.sweep_dependencies()
    planned = {p.name.lower(): p for p in plan_vault(deps, now).certificates}
    item = planned.get(name.lower())
    if item is None:
        raise CliMistake(f"no certificate named {name!r} in {deps.events.vault_url}", "check the name with `plan`")
    if item.action in (PlanAction.LEFT_TO_RCL, PlanAction.REPORT, PlanAction.SKIP) or item.owner != "appviewx":
        raise CliMistake(f"{item.name} is not renewed through AppViewX", item.reason)
    if item.action is PlanAction.BACKOFF and not force:
        raise CliMistake(f"{item.name}: {item.reason}", "add --force to renew it now anyway")
    print(f"Renewing {item.name} through AppViewX now ...", file=sys.stderr)
    result = renew_now(deps, item, None, now, caller=OPERATOR_CALLER)
    print(f"{item.name}: {result}")
    return EXIT_OK if result == "renewed" or result.startswith("pending") else EXIT_FAILED
