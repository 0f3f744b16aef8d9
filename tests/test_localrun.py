"""The README's first command works: the local stack runs a night, the morning check and a webhook renewal end to
end and reports what happened, including what Application Insights received."""

from __future__ import annotations

import subprocess
import sys

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
    assert "AppViewX webhook: HTTP 200" in out and "stored in Key Vault: https://127.0.0.1:" in out
    assert "thumbprint " in out
    assert "CertificateRenewalScheduled x3" in out and "RclRenewalRunCompleted x1" in out
    # Issue 14: Key Vault's near-expiry event for the certificate the webhook stored, delivered twice, renews once.
    assert "Key Vault event: CertificateNearExpiry for portal-contoso-com" in out and "delivered twice" in out
    assert "renewed 1 time(s) through AppViewX: new version " in out
    for sentinel in SENTINELS:
        assert sentinel not in out and sentinel not in result.stderr


def test_serve_mode_takes_curl_and_the_status_table_sees_it() -> None:
    """The README's new-user path: the local stack serves the app; a POST renews; `status` shows the records."""
    import requests

    from tests.standins.stack import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.standins.localrun", "--serve", "--port", str(port), "--serve-seconds", "60"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("Serving the app's HTTP functions"):
                break
        else:
            raise AssertionError("the local stack did not start serving")
        base = f"http://127.0.0.1:{port}/api/certificates/renew?code=local-function-key"
        renewed = requests.post(base, json={"resourceId": "www"}, timeout=60)
        assert renewed.status_code == 200, renewed.text
        assert renewed.json()["keyVault"]["name"] == "www-contoso-com"
        pending = requests.post(f"{base}&autoApproval=false", json={"resourceId": "api"}, timeout=60)
        assert pending.status_code == 202 and pending.json()["status"] == "pending"
        assert requests.post(base.split("?")[0], json={"resourceId": "www"}, timeout=10).status_code == 401
        inventory = requests.get(f"http://127.0.0.1:{port}/api/certificates?code=local-function-key", timeout=60)
        assert inventory.status_code == 200, inventory.text
        listed = {c["name"]: c for c in inventory.json()["certificates"]}
        assert listed["www-contoso-com"]["source"] == "appviewx" and listed["www-contoso-com"]["lastOutcome"]

        status = subprocess.run(
            [sys.executable, "-m", "shared", "--settings", ".localstack/local.settings.json", "status"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        assert "mail.contoso.com" in status.stdout and "scheduled" in status.stdout
        assert "AVX_NO_CERTIFICATE" in status.stdout
    finally:
        process.terminate()
        process.wait(timeout=30)
