"""The README's first command works: the local stack runs a night, the morning check and a webhook renewal end to
end and reports what happened, including what Application Insights received."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import requests

from tests.standins.stack import REPO_ROOT, SENTINELS


def test_local_run_reports_the_whole_story() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tests.standins.localrun"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "RCL scheduled 3 certificate(s) for renewal" in out
    assert "renewed   contoso.com" in out and "installed on its target" in out
    assert "renewed   shop.contoso.com" in out and "not installed on its target yet" in out
    assert "pending   mail.contoso.com" in out and "expiring  mail.contoso.com" in out
    # Issue 16: one endpoint serves the renewed certificate, the other still the old one (19 days left).
    assert "deployed      www-contoso-com on www.contoso.com: serves the current version " in out
    assert "NOT deployed  store-contoso-com on store.contoso.com: still serves " in out and "in 19 day(s)" in out
    assert "CertificateDeployed x1" in out and "CertificateNotDeployed x1" in out
    assert "unchecked" not in out
    assert "pending   mail.contoso.com" in out
    # mail.contoso.com was seeded 11 days from expiry: the same rounding as `status` says so.
    assert re.search(r"expiring  mail\.contoso\.com: expiry \S+Z \(in 11 days\)", out), out
    assert "AppViewX webhook: HTTP 200" in out and "stored in Key Vault: https://127.0.0.1:" in out
    assert "thumbprint " in out
    assert "CertificateRenewalScheduled x3" in out and "RclRenewalRunCompleted x1" in out
    assert not re.search(r"T\d\d:\d\d:\d\d\.\d", out), "times are shown to the second"
    assert out.rstrip().endswith("Stopped everything this run started (the stand-ins and Azurite).")
    # Issue 27: an asynchronous renewal, 202 + Location, delivered from Azurite's queue to renew_queued, renewed.
    assert re.search(
        r"asynchronous \(Prefer: respond-async\): HTTP 202, Location /api/certificates/renew/[0-9a-f]{32}", out
    )
    assert (
        "renew_queued took it from the queue certificate-renewals: state renewed, stored in Key Vault: https://" in out
    )
    # Issue 14: Key Vault's near-expiry event for the certificate the webhook stored, delivered twice, renews once.
    assert "Key Vault event: CertificateNearExpiry for portal-contoso-com" in out and "delivered twice" in out
    assert "renewed 1 time(s) through AppViewX: new version " in out
    # Issue 26: the Azure resources using the certificates, from the Resource Graph stand-in.
    assert "4 consumer(s) in 6 resource(s): 1 pinned to an old version, 0 stale" in out
    assert "pinned   store-contoso-com <- Microsoft.Network/applicationGateways/agw-store/sslCertificates/store" in out
    assert "current  www-contoso-com <- Microsoft.Cdn/profiles/fd-web/secrets/www (follows latest)" in out
    assert "waiting  store-contoso-com <- Microsoft.Web/sites/store-app (follows latest)" in out
    assert "CertificateConsumerPinned x1" in out and "ConsumerDiscoveryCompleted x1" in out
    for sentinel in SENTINELS:
        assert sentinel not in out and sentinel not in result.stderr


def run_banner_command(command: str) -> str:
    """Run one pasted line as a user would, in a shell at the repository root."""
    done = subprocess.run(command, shell=True, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_serve_banner_commands_work_when_pasted_in_order() -> None:
    """The README's new-user path: `--serve` prints ready-to-paste commands; each works against the running stack,
    from renewing by resourceId and by commonName + serialNumber to approving a manual renewal and completing it."""
    from tests.standins.stack import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.standins.localrun", "--serve", "--port", str(port), "--serve-seconds", "120"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if line.startswith("Serving the app's HTTP functions"):
                break
        else:
            raise AssertionError("the local stack did not start serving:\n" + "".join(output))
        for line in process.stdout:
            output.append(line)
            if line.startswith(".venv/bin/python -m shared") and line.rstrip().endswith(" status"):
                break  # the banner's last command
        commands = [line.strip() for line in output if line.startswith(("curl ", ".venv/bin/python "))]
        assert len(commands) == 9, "".join(output)
        renew_by_id, renew_by_serial, manual, state_before, approve, complete, state_after, inventory, status = commands
        assert '"resourceId": "www"' in renew_by_id and '"commonName": "api.contoso.com"' in renew_by_serial

        answer = json.loads(run_banner_command(renew_by_id))
        assert answer["status"] == "renewed" and answer["keyVault"]["name"] == "www-contoso-com"
        answer = json.loads(run_banner_command(renew_by_serial))
        assert answer["status"] == "renewed" and answer["keyVault"]["name"] == "api-contoso-com", answer
        answer = json.loads(run_banner_command(manual))
        assert answer["status"] == "pending" and re.fullmatch(r"[0-9a-f]{32}", answer["pendingId"])

        before = json.loads(run_banner_command(state_before))
        assert before["requestedResourceId"] == "manual" and not before.get("keyVaultCertificateId"), before
        assert "Approved" in run_banner_command(approve)
        run_banner_command(complete)
        after = json.loads(run_banner_command(state_after))
        assert after["state"] != before["state"] and after["keyVaultCertificateId"].startswith("https://127.0.0.1:")
        assert after["keyVaultName"] == "manual-contoso-com"

        (queued,) = [line.strip() for line in output if line.startswith("loc=$(")]
        async_lines = run_banner_command(queued).splitlines()
        assert re.fullmatch(r"Location: /api/certificates/renew/[0-9a-f]{32}", async_lines[0]), async_lines
        assert json.loads(async_lines[1])["state"] in ("accepted", "renewed")  # renewed within seconds (queue polling)

        listed = {c["name"]: c for c in json.loads(run_banner_command(inventory))["certificates"]}
        assert listed["www-contoso-com"]["source"] == "appviewx" and listed["www-contoso-com"]["lastOutcome"], listed
        table = run_banner_command(status)
        # mail.contoso.com is "pending" with "(in 11 days)", as the report says it
        assert re.search(r"mail\.contoso\.com .* pending .*\(in 11 days\)", table.split("AppViewX")[0]), table
        pending_table = table.split("AppViewX renewals (")[1]
        assert "*.contoso.com" in pending_table and "manual-contoso-com" in pending_table
        assert "resourceId" not in pending_table  # certificate names, not resourceIds
        assert requests.post(renew_by_id.split('"')[1].split("?")[0], timeout=10).status_code == 401
        # The stack has the two identities Azure has (the app's, and RCL_KEY_VAULT_CLIENT_ID's for the Key Vault
        # token RCL gets): an RCL command against it logs no warning about a shared identity.
        rcl = subprocess.run(
            status.replace(" status", " verify-rcl"),
            shell=True,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert rcl.returncode == 0, rcl.stderr
        assert "RCL_KEY_VAULT_CLIENT_ID" not in rcl.stderr and "WARNING" not in rcl.stderr, rcl.stderr
    finally:
        process.terminate()
        rest, _ = process.communicate(timeout=60)
        output.append(rest)
    log = "".join(output)
    # One log line per served request, without the function key.
    assert "served: POST /api/certificates/renew -> 200" in log and "served: GET /api/certificates/renew/" in log
    assert "served: POST /api/certificates/renew -> 401" in log
    assert not [line for line in log.splitlines() if "served:" in line and "code=" in line]
    assert "Stopped everything this run started" in log
    for sentinel in SENTINELS:
        assert sentinel not in log


def documented_async_example() -> str:
    """The README's (or docs/') asynchronous example: POST with `Prefer: respond-async`, then poll `Location` (an
    indented or fenced block: from its `loc=$(curl ...` line to the block's end)."""
    for page in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        lines = page.read_text().splitlines() if page.exists() else []
        for start, line in enumerate(lines):
            if "loc=$(curl" in line and "Prefer: respond-async" in line:
                indent = len(line) - len(line.lstrip())
                block = []
                for following in lines[start:]:
                    if not following.strip() or following.strip().startswith("```"):
                        break
                    block.append(following[indent:])
                return "\n".join(block) + "\n"
    raise AssertionError("no asynchronous example (curl with Prefer: respond-async, then a polling loop) in the docs")


def start_serving(port: int, seconds: int = 150) -> tuple[subprocess.Popen[str], list[str]]:
    """`bash dev.sh local --serve` on `port`, read up to the banner's last line."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.standins.localrun",
            "--serve",
            "--port",
            str(port),
            "--serve-seconds",
            str(seconds),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line)
        if line.rstrip().endswith(" status") and "-m shared" in line:
            return process, output
    raise AssertionError("the local stack did not start serving:\n" + "".join(output))


def test_documented_async_example_answers_202_and_polling_reaches_renewed_under_serve() -> None:
    """Issue 27: under `--serve`, the documented async example gets 202 with Location, and its polling loop ends at
    `renewed`: the local host delivers the renewal queue to `renew_queued` as the Functions host does."""
    from tests.standins.localrun import LOCAL_KEY
    from tests.standins.stack import free_port

    port = free_port()
    process, output = start_serving(port)
    try:
        example = documented_async_example()
        base = f"http://127.0.0.1:{port}"
        script = f"APP=127.0.0.1:{port}; KEY={LOCAL_KEY}\n" + example.replace("https://$APP", base).replace(
            '"resourceId":"abc123"', '"resourceId":"www"'
        )
        headers = subprocess.run(
            [
                "bash",
                "-c",
                f"curl -si -X POST '{base}/api/certificates/renew?code={LOCAL_KEY}' "
                "-H 'Prefer: respond-async' -H 'Content-Type: application/json' -d '{\"resourceId\":\"api\"}'",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
        assert headers.startswith("HTTP/1.1 202"), headers
        assert re.search(r"^Location: /api/certificates/renew/[0-9a-f]{32}\r?$", headers, re.M), headers
        polled = subprocess.run(
            ["bash", "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        states = polled.stdout.split()
        assert polled.returncode == 0 and states and states[-1] == "renewed", polled.stdout + polled.stderr
        assert "Traceback" not in polled.stderr
    finally:
        process.terminate()
        rest, _ = process.communicate(timeout=60)
        output.append(rest)
    log = "".join(output)
    assert "served: POST /api/certificates/renew -> 202" in log, log[-3000:]
    for sentinel in SENTINELS:
        assert sentinel not in log


def test_serve_on_a_busy_port_says_so_before_the_run() -> None:
    import socket
    import time

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "tests.standins.localrun", "--serve", "--port", str(port)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2 and time.monotonic() - started < 20
    assert "Starting the local stack" not in result.stdout and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and f"--port {port + 1}" in lines[0], result.stderr
