"""The local stack, end to end: `bash dev.sh local` (or `.venv/bin/python -m tests.standins.localrun`).

Starts stand-ins for RCL, AppViewX, Key Vault (HTTPS, test CA), the managed-identity endpoint and the Application
Insights ingestion endpoint, plus Azurite; then runs the app through `function_app.app` in child processes, as the
Functions host would (so the telemetry exporter flushes when each exits):

  night   `renew_timer`      RCL schedules the due certificates; the app records them in the table
  (RCL renews two of the three in the meantime: one installed on its target, one not yet)
  morning `verify_renewals`  which really renewed, which are pending, which expire soon
          `verify_endpoints` which certificate two TLS endpoints really serve: both certificates were renewed in
                             Key Vault, one endpoint picked the renewal up, the other still serves the old one
          `discover_consumers` which Azure resources use those certificates (Resource Graph stand-in): an
                             Application Gateway pinned to the old version, a versionless Front Door secret, an
                             App Service site still bound to the old thumbprint (renewed too recently to be stale)
          `renew_http`       one AppViewX webhook renewal, stored in Key Vault
  then    `renew_queued`     one with `Prefer: respond-async`: 202 + Location, queued in Azurite, delivered from the
                             queue to the queue function as the Functions host does, then `renewed` on the status route
  later   `keyvault_events`  Key Vault's near-expiry event for that certificate, delivered twice (as Event Grid may):
                             renewed once through AppViewX, as a new version of the same Key Vault certificate

and prints a short report. Everything it started is stopped at the end. No Azure account is needed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.standins import resourcegraph as rg
from tests.standins.certs import issue_certificate
from tests.standins.endpoints import TlsEndpoint
from tests.standins.ingestion import IngestionStandIn
from tests.standins.stack import REPO_ROOT, SENTINELS, Azurite, StandIns, base_environment, start_standins

DUE = ("contoso.com", "shop.contoso.com", "mail.contoso.com")
# Key Vault certificates renewed a while ago, and whether the endpoint serving each has picked the renewal up.
DEPLOYED = (("www-contoso-com", "www.contoso.com", True), ("store-contoso-com", "store.contoso.com", False))
LOCAL_SUBSCRIPTION = "00000000-0000-4000-8000-00000000c0de"  # the subscription the Resource Graph stand-in serves


def run_child(plan: list[dict[str, Any]], env: dict[str, str]) -> list[dict[str, Any]]:
    """Run the app's functions in a fresh process (the way a Functions worker runs them)."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.telemetry_child", json.dumps(plan)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-3000:])
        raise SystemExit(f"the app's process failed (exit {result.returncode})")
    for sentinel in SENTINELS:
        if sentinel in result.stdout or sentinel in result.stderr:
            raise SystemExit("a secret reached the app's output: this is a bug")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def seed(standins: StandIns) -> Any:
    for name, days in zip(DUE, (9, 12, 11), strict=True):
        standins.rcl.add_certificate(name, expires_in_days=days)
    standins.rcl.add_certificate("intranet.contoso.com", expires_in_days=75)
    return standins.avx.add_certificate("portal.contoso.com")


def start_endpoints(standins: StandIns) -> tuple[list[TlsEndpoint], str]:
    """For each DEPLOYED certificate: an old and a renewed version in Key Vault, and a TLS endpoint serving the
    renewed one or still the old one. Returns the endpoints and the ENDPOINT_CHECKS value naming them."""
    now = datetime.now(UTC)
    endpoints: list[TlsEndpoint] = []
    checks: list[dict[str, str]] = []
    for name, host, picked_up in DEPLOYED:
        old = issue_certificate(host, days=90, not_before=now - timedelta(days=70, hours=12))
        renewed = issue_certificate(host, days=90)
        for issued in (old, renewed):
            standins.key_vault.seed(name, issued.certificate, issued.private_key, chain=issued.chain)
        served = renewed if picked_up else old
        endpoint = TlsEndpoint(served.certificate, served.private_key, served.chain).start()
        endpoints.append(endpoint)
        checks.append({"certificate": name, "host": host, "address": endpoint.address})
    return endpoints, json.dumps(checks)


def seed_consumers(standins: StandIns) -> None:
    """The Azure resources that use the DEPLOYED certificates, as Resource Graph shows them."""
    www, store = (standins.key_vault.certificates[name] for name, _, _ in DEPLOYED)
    vault = rg.key_vault(LOCAL_SUBSCRIPTION, "kv-cr-local", standins.key_vault.url)
    www_secret = rg.key_vault_secret_id(LOCAL_SUBSCRIPTION, "kv-cr-local", www[-1].name)
    front_door = rg.front_door_secret(LOCAL_SUBSCRIPTION, "fd-web", "www", www_secret, version=None, use_latest=True)
    pinned_uri = f"{standins.key_vault.url}/secrets/{store[0].name}/{store[0].version}"
    standins.resource_graph.add(
        vault,
        rg.app_gateway(LOCAL_SUBSCRIPTION, "agw-store", {"store": pinned_uri}, {"store.contoso.com": "store"}),
        front_door,
        rg.front_door_domain(LOCAL_SUBSCRIPTION, "fd-web", "www", "www.contoso.com", front_door["id"]),
        rg.web_certificate(
            LOCAL_SUBSCRIPTION, "store-cert", vault["id"], store[0].name, store[-1].thumbprint, ["store.contoso.com"]
        ),
        rg.web_site(LOCAL_SUBSCRIPTION, "store-app", {"store.contoso.com": store[0].thumbprint}),
    )


def consumer_lines(ingestion: IngestionStandIn, settings: dict[str, str]) -> list[str]:
    """What discover_consumers found: its events, and each certificate's consumers as the inventory shows them."""
    from azure.data.tables import TableClient

    from shared.consumers.store import ConsumerStore

    events = ingestion.events()

    def props(name: str) -> list[dict[str, Any]]:
        return [{**e.get("properties", {}), **e.get("measurements", {})} for e in events if e.get("name") == name]

    lines = ["Consumer discovery (which Azure resources use each certificate, from Resource Graph):"]
    for p in props("ConsumerDiscoveryCompleted"):
        lines.append(
            f"  {float(p.get('consumers') or 0):g} consumer(s) in {float(p.get('rows') or 0):g} resource(s): "
            f"{float(p.get('pinned') or 0):g} pinned to an old version, {float(p.get('stale') or 0):g} stale"
        )
    table = TableClient.from_connection_string(settings["AzureWebJobsStorage"], settings["CONSUMER_TABLE"])
    with table:
        for known in sorted(ConsumerStore(table).all().values(), key=lambda k: k.certificate):
            for c in known.consumers:
                version = f" {c['version'][:8]}..." if c.get("version") else ""
                where = c["id"].split("/providers/")[-1]
                lines.append(f"  - {c['status']:<8} {known.certificate} <- {where} (follows {c['follows']}{version})")
    lines += [
        f"  PINNED: {p.get('consumerId', '').split('/providers/')[-1]} uses version {str(p.get('pinnedVersion'))[:8]}... "
        f"of {p.get('certificateName')}, not the current {str(p.get('currentVersion'))[:8]}... "
        f"({float(p.get('daysLeft') or 0):g} day(s) left on the pinned one)"
        for p in props("CertificateConsumerPinned")
    ]
    return lines


def near_expiry_event(standins: StandIns, name: str, version: str) -> dict[str, Any]:
    """Key Vault's near-expiry event for one version, as its Event Grid system topic delivers it."""
    stored = standins.key_vault.latest(name)
    expires = stored.certificate.not_valid_after_utc if stored else datetime.now(UTC) + timedelta(days=30)
    return {
        "id": str(uuid.uuid4()),
        "eventType": "Microsoft.KeyVault.CertificateNearExpiry",
        "subject": name,
        "data": {
            "Id": f"{standins.key_vault.url}/certificates/{name}/{version}",
            "VaultName": "kv-cr-local",
            "ObjectType": "Certificate",
            "ObjectName": name,
            "Version": version,
            "NBF": int((expires - timedelta(days=90)).timestamp()),
            "EXP": int(expires.timestamp()),
        },
    }


def send_near_expiry(standins: StandIns, env: dict[str, str], webhook: dict[str, Any]) -> list[str]:
    """Deliver Key Vault's near-expiry event for the certificate the webhook stored, twice; report what happened."""
    vault = json.loads(webhook.get("body") or "{}").get("keyVault")
    if not vault:
        return ["Key Vault event: skipped (the webhook stored nothing)"]
    renewals_before = len(standins.avx.renew_calls())
    # Time passes: the stored version is 20 days from expiry when the event comes (the app renews only a version
    # whose own expiry, read from Key Vault, is near).
    stored = standins.key_vault.latest(vault["name"])
    if stored is not None:
        near = issue_certificate(
            stored.certificate.subject.rfc4514_string().removeprefix("CN="),
            days=90,
            not_before=datetime.now(UTC) - timedelta(days=70),
        )
        aged = standins.key_vault.seed(vault["name"], near.certificate, near.private_key, tags=dict(stored.tags or {}))
        vault = {**vault, "version": aged.version}
    event = near_expiry_event(standins, vault["name"], vault["version"])
    outcomes = run_child([{"eventgrid": event}, {"eventgrid": event}], env)
    latest = standins.key_vault.latest(vault["name"])
    renewed = len(standins.avx.renew_calls()) - renewals_before
    lines = [
        f"Key Vault event: CertificateNearExpiry for {vault['name']} version {vault['version'][:8]}..., "
        f"delivered twice ({', '.join(o.get('error') or 'handled' for o in outcomes)}):"
    ]
    if latest is not None and latest.version != vault["version"]:
        lines.append(
            f"  renewed {renewed} time(s) through AppViewX: new version {latest.version[:8]}..., thumbprint "
            f"{latest.thumbprint}, expires {latest.certificate.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
        )
    else:
        lines.append(f"  NOT renewed (AppViewX renew calls: {renewed})")
    return lines


def async_renewal(standins: StandIns, env: dict[str, str]) -> list[str]:
    """One webhook renewal with `Prefer: respond-async`: 202 and Location at once, the renewal queued in Azurite;
    the local host then delivers the queue to `renew_queued` (as the Functions host does), and the status route
    tells the outcome. Report lines of what happened."""
    item = standins.avx.add_certificate("async.contoso.com")
    plan = [
        {"webhook": {"resourceId": item.resource_id}, "prefer": "respond-async"},
        {"queues": "drain"},
        {"status": "last"},
    ]
    accepted, _, status = run_child(plan, env)
    lines = [
        f"AppViewX webhook, asynchronous (Prefer: respond-async): HTTP {accepted.get('status')}, "
        f"Location {accepted.get('location')}"
    ]
    record = json.loads(status.get("body") or "{}")
    if record.get("state") == "renewed":
        lines.append(
            f"  renew_queued took it from the queue {env.get('RENEWAL_QUEUE')}: state renewed, stored in Key Vault: "
            f"{record.get('keyVaultCertificateId')}"
        )
    else:
        lines.append(f"  renew_queued: state {record.get('state')} {record.get('reason') or ''}".rstrip())
    return lines


def report(standins: StandIns, ingestion: IngestionStandIn, webhook: dict[str, Any]) -> list[str]:
    """What happened, in the words, times and rounding of `python -m shared status` (shared.operator.words)."""
    from shared.operator.words import INSTALLED_WORDS, clip, expiry_words, when

    now = datetime.now(UTC)
    lines: list[str] = []
    events = ingestion.events()

    def props(name: str) -> list[dict[str, Any]]:
        return [{**e.get("properties", {}), **e.get("measurements", {})} for e in events if e.get("name") == name]

    scheduled = props("CertificateRenewalScheduled")
    lines.append(f"RCL scheduled {len(scheduled)} certificate(s) for renewal:")
    lines += [
        f"  - {p.get('certificateName')} (id {p.get('certificateId')}, target {p.get('target')}, "
        f"expiry {expiry_words(p.get('expiryDate'), now)})"
        for p in scheduled
    ]
    lines.append("Follow-up check:")
    for p in props("CertificateRenewed"):
        if p.get("source") == "rcl":
            installed = str(p.get("installed")).lower() == "true"
            lines.append(
                f"  - renewed   {p.get('certificateName')}: new expiry {expiry_words(p.get('expiryDate'), now)}, "
                f"{INSTALLED_WORDS[installed]}"
            )
    lines += [
        f"  - pending   {p.get('certificateName')}: scheduled {when(p.get('scheduledAt'))}, not renewed yet"
        for p in props("CertificateRenewalPending")
        if p.get("source") == "rcl"
    ]
    for p in props("CertificateRenewalFailed"):
        why = clip(f"{p.get('reason')}: {p.get('message') or ''}", 120)
        lines.append(f"  - failed    {p.get('certificateName')}: {why}")
    lines += [
        f"  - expiring  {p.get('certificateName')}: expiry {expiry_words(p.get('expiryDate'), now)}"
        for p in props("CertificateNearExpiry")
    ]

    lines.append("Endpoint check (is the certificate each endpoint serves Key Vault's current version?):")
    lines += [
        f"  - deployed      {p.get('certificateName')} on {p.get('host')}: serves the current version "
        f"{p.get('thumbprint')} ({float(p.get('daysLeft') or 0):g} day(s) left)"
        for p in props("CertificateDeployed")
    ]
    lines += [
        f"  - NOT deployed  {p.get('certificateName')} on {p.get('host')}: still serves {p.get('servedThumbprint')} "
        f"(expires {p.get('servedExpiryDate')}, in {float(p.get('daysLeft') or 0):g} day(s)); Key Vault's current "
        f"version is {p.get('expectedThumbprint')}"
        for p in props("CertificateNotDeployed")
    ]
    lines += [
        f"  - unchecked     {p.get('certificateName')} on {p.get('host')}: {p.get('reason')} {p.get('message')}"
        for p in props("EndpointCheckFailed")
    ]

    lines.append(f"AppViewX webhook: HTTP {webhook.get('status')}")
    body = json.loads(webhook.get("body") or "{}")
    vault = body.get("keyVault")
    if vault:
        stored = standins.key_vault.latest(vault["name"])
        lines.append(f"  stored in Key Vault: {vault['id']}")
        lines.append(
            f"  thumbprint {vault['thumbprint']}, expiry {expiry_words(vault['expiresOn'], now)}, "
            f"subject {vault['subject']}"
        )
        if stored is not None:
            lines.append(f"  tags: {json.dumps(stored.tags)}")
    else:
        lines.append(f"  answer: {json.dumps(body)}")

    counts = Counter(e.get("name") for e in events)
    lines.append(
        "Application Insights received (customEvents): "
        + (", ".join(f"{name} x{n}" for name, n in sorted(counts.items())) or "nothing")
    )
    deps = Counter((d.get("type") or "?") for d in ingestion.dependencies())
    lines.append(
        f"  and {sum(deps.values())} dependency call(s) ({', '.join(f'{k} x{v}' for k, v in sorted(deps.items()))})"
    )
    return lines


SETTINGS_FILE = REPO_ROOT / ".localstack" / "local.settings.json"
LOCAL_KEY = "local-function-key"
CLI = f".venv/bin/python -m shared --settings {SETTINGS_FILE.relative_to(REPO_ROOT)}"
# The certificates AppViewX holds while serving (resourceId, commonName); "manual" gets a renewal awaiting approval.
SERVED_AVX = (("www", "www.contoso.com"), ("api", "api.contoso.com"), ("wild", "*.contoso.com"))
MANUAL = ("manual", "manual.contoso.com")


def stack_settings(
    standins: StandIns, azurite: Azurite, ingestion: IngestionStandIn, endpoint_checks: str = "[]"
) -> dict[str, str]:
    """The settings that point the app at this run's stack (and nothing of the user's environment)."""
    return {
        **base_environment(standins),
        "AzureWebJobsStorage": azurite.connection_string,
        "APPLICATIONINSIGHTS_CONNECTION_STRING": ingestion.connection_string,
        "RCL_VERIFY_GRACE_HOURS": "24",
        "RENEWAL_WARNING_DAYS": "14",
        "ENDPOINT_CHECKS": endpoint_checks,
        "ENDPOINT_CHECK_SCHEDULE": "0 0 */6 * * *",
        "RENEWAL_QUEUE": "certificate-renewals",  # Azurite's queue (the poison queue: certificate-renewals-poison)
        # The two identities the Bicep deploys: the app's, and the Key-Vault-certificates-only one whose token RCL gets
        # (the identity stand-in issues tokens for either client id).
        "AZURE_CLIENT_ID": "local-app-identity",
        "RCL_KEY_VAULT_CLIENT_ID": "local-rcl-key-vault-identity",
        "CONSUMER_SUBSCRIPTIONS": LOCAL_SUBSCRIPTION,
        "CONSUMER_DISCOVERY_SCHEDULE": "0 30 */6 * * *",
        "CONSUMER_TABLE": "certconsumers",
        # The endpoints' certificates were imported by hand before AppViewX renewals took them over (issue 29: a
        # renewal writes only certificates the app stored from AppViewX, or ones an operator lists here).
        "AVX_ADOPTABLE_CERTIFICATES": ",".join(name for name, _, _ in DEPLOYED),
    }


def renew_in_process(body: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    """One webhook call through the registered function, in this process (as the served route runs it)."""
    import azure.functions as func

    from shared.operator.local_host import LocalContext, registered_functions

    request = func.HttpRequest(
        method="POST",
        url="http://127.0.0.1/api/certificates/renew",
        headers={"Content-Type": "application/json"},
        params=params,
        route_params={},
        body=json.dumps(body).encode(),
    )
    response = registered_functions()["renew_http"].get_user_function()(request, LocalContext("renew_http"))
    answer: dict[str, Any] = json.loads(response.get_body())
    return answer


def banner(base: str, standins: StandIns, serial: str, pending_id: str) -> str:
    """Ready-to-paste commands, one per line, in an order that works from top to bottom."""
    renew = f'curl -sS -X POST "{base}/api/certificates/renew?code={LOCAL_KEY}" -H "Content-Type: application/json"'
    status_url = f'"{base}/api/certificates/renew/{pending_id}?code={LOCAL_KEY}"'
    approve = f'curl -sS --cacert {standins.ca.bundle_path} -X POST "{standins.avx.url}/_standin/approve/{MANUAL[0]}"'
    held = ", ".join(f"{cn} ({rid})" for rid, cn in (*SERVED_AVX, MANUAL))
    return f"""
Serving the app's HTTP functions on {base}/api/ (function key: {LOCAL_KEY}); Ctrl+C stops everything.
AppViewX (local stand-in) holds, by commonName (resourceId): {held}.
A renewal of {MANUAL[1]} was sent with autoApproval=false and waits for approval (pendingId {pending_id}).
Try, in another terminal (each line is one command):

# renew by resourceId, then by commonName + serialNumber (200, stored in Key Vault)
{renew} -d '{{"resourceId": "www"}}'
{renew} -d '{{"commonName": "api.contoso.com", "serialNumber": "{serial}"}}'
# a renewal that waits for manual approval in AppViewX (202 with a pendingId)
{renew.replace("?code=", "?autoApproval=false&code=")} -d '{{"resourceId": "wild"}}'
# the waiting renewal of {MANUAL[1]}: its state, approve it in AppViewX, store it now, its state again
curl -sS {status_url}
{approve}
{CLI} complete-pending --now
curl -sS {status_url}
# asynchronous (Prefer: respond-async): 202 + Location at once, renew_queued takes it from the queue, then its state
loc=$({renew.replace("curl -sS ", "curl -sSi ")} -H 'Prefer: respond-async' -d '{{"resourceId": "api"}}' | tr -d '\\r' | sed -n 's/^Location: //p'); echo "Location: $loc"; sleep 3; curl -sS "{base}$loc?code={LOCAL_KEY}"
# the vault's certificates with their source and last outcome (paged)
curl -sS "{base}/api/certificates?code={LOCAL_KEY}&maxResults=10"
# the recorded RCL renewals and the AppViewX renewals kept pending
{CLI} status
"""


def serve(standins: StandIns, settings: dict[str, str], port: int, seconds: float | None) -> None:
    """Keep the stack up and serve the app's HTTP functions, as `python -m shared serve` does, for curl."""
    from shared.operator.serve import bind_server, serve_until_stopped, start_queue_host

    for resource_id, common_name in (*SERVED_AVX, MANUAL):
        standins.avx.add_certificate(common_name, resource_id=resource_id)
    serial = standins.avx.inventory["api"].serial_number  # the serial the stand-in knows for api.contoso.com
    # Served in this process, without the run's ingestion stand-in (it only counts the report's events).
    served = {k: v for k, v in settings.items() if k != "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    for key in [k for k in os.environ if k.startswith(("AVX_", "RCL_", "KEY_VAULT_"))]:
        del os.environ[key]  # the shell's own app settings must not mix with the stack's
    os.environ.pop("APPLICATIONINSIGHTS_CONNECTION_STRING", None)
    SETTINGS_FILE.parent.mkdir(exist_ok=True)
    # Only the stack's settings (their "secrets" are local sentinels), so the CLI reaches the same stack.
    SETTINGS_FILE.write_text(json.dumps({"IsEncrypted": False, "Values": served}, indent=2))
    os.environ.update(served)
    queues = start_queue_host()  # renew_queued and renew_queued_poison, fed from Azurite's queues
    server = bind_server("127.0.0.1", port, LOCAL_KEY, f"bash dev.sh local --serve --port {port + 1}", queues=queues)
    waiting = renew_in_process({"resourceId": MANUAL[0]}, {"autoApproval": "false"})
    served_log = logging.getLogger("certrenew.serve")  # one line per served request
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  served: %(message)s"))
    served_log.addHandler(handler)
    served_log.setLevel(logging.INFO)
    served_log.propagate = False
    base = f"http://127.0.0.1:{server.server_address[1]}"
    print(banner(base, standins, serial, str(waiting.get("pendingId"))), flush=True)
    # Returns on Ctrl+C or SIGTERM too, so Azurite and the stand-ins (stopped by the caller) never outlive the run.
    try:
        serve_until_stopped(server, seconds)
    finally:
        if queues is not None:
            queues.stop()


def main(argv: list[str] | None = None) -> int:
    from shared.operator.outcomes import CliMistake
    from shared.operator.serve import check_port_free

    parser = argparse.ArgumentParser(prog="bash dev.sh local", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="also print the raw events as JSON")
    parser.add_argument(
        "--serve",
        action="store_true",
        help="afterwards keep the stack up and serve the app's HTTP functions (python -m shared serve) for curl",
    )
    parser.add_argument("--port", type=int, default=7071, help="port of --serve (default 7071)")
    parser.add_argument("--serve-seconds", type=float, default=None, help=argparse.SUPPRESS)  # tests: stop by itself
    args = parser.parse_args(argv)
    if args.serve:
        try:  # before the minute-long run, not after it
            check_port_free("127.0.0.1", args.port, f"bash dev.sh local --serve --port {args.port + 1}")
        except CliMistake as exc:
            print(f"bash dev.sh local: {exc}", file=sys.stderr)
            return 2

    with tempfile.TemporaryDirectory(prefix="certrenew-local-") as work:
        workdir = Path(work)
        print(
            "Starting the local stack (RCL, AppViewX, Key Vault, Resource Graph, identity, App Insights ingestion, "
            "Azurite) ..."
        )
        standins = start_standins(workdir)
        ingestion = IngestionStandIn().start()
        azurite: Azurite | None = None
        endpoints: list[TlsEndpoint] = []
        try:
            azurite = Azurite.start(workdir, queues=True)  # tables, and the queues of asynchronous renewals
            item = seed(standins)
            endpoints, endpoint_checks = start_endpoints(standins)
            seed_consumers(standins)
            settings = stack_settings(standins, azurite, ingestion, endpoint_checks)
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("AVX_", "RCL_", "KEY_VAULT_"))},
                **settings,
            }
            print("Night: renew_timer asks RCL to renew what is due ...")
            run_child([{"function": "renew_timer"}], env)
            # RCL works asynchronously; by morning it has renewed two of the three.
            standins.rcl.complete_renewal(DUE[0], installed=True)
            standins.rcl.complete_renewal(DUE[1], installed=False)
            print(
                "Morning: verify_renewals checks what really renewed; verify_endpoints which certificate the "
                "endpoints serve; discover_consumers which Azure resources use them; a webhook renews through "
                "AppViewX ..."
            )
            plan = [
                {"function": "verify_renewals"},
                {"function": "verify_endpoints"},
                # After the endpoint check: the discovered host names (contoso.com) must not be probed from here.
                {"function": "discover_consumers"},
                {"webhook": {"resourceId": item.resource_id}},
            ]
            outcomes = run_child(plan, env)
            print("Then: a webhook renewal with Prefer: respond-async, delivered from the queue to renew_queued ...")
            async_lines = async_renewal(standins, env)
            print("Later: Key Vault's near-expiry event for the certificate the webhook stored (delivered twice) ...")
            event_lines = send_near_expiry(standins, env, outcomes[-1])
            deadline = time.monotonic() + 5
            while not ingestion.events() and time.monotonic() < deadline:
                time.sleep(0.1)
            print()
            lines = report(standins, ingestion, outcomes[-1]) + async_lines + event_lines
            print("\n".join(lines + consumer_lines(ingestion, settings)))
            if args.json:
                print(json.dumps(ingestion.events(), indent=2))
            webhook_ok = outcomes[-1].get("status") == 200
            if args.serve:
                serve(standins, settings, args.port, args.serve_seconds)
            event_ok = any("renewed 1 time(s)" in line for line in event_lines)
            async_ok = any("state renewed" in line for line in async_lines)
            return 0 if webhook_ok and event_ok and async_ok and ingestion.events() else 1
        except CliMistake as exc:  # the port was taken while the run ran
            print(f"bash dev.sh local: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130
        finally:
            for endpoint in endpoints:
                endpoint.stop()
            if azurite is not None:
                azurite.stop()
            ingestion.stop()
            standins.stop()
            print("Stopped everything this run started (the stand-ins and Azurite).", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
