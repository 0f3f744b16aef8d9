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
    assert "AppViewX webhook: HTTP 200" in out and "stored in Key Vault: https://127.0.0.1:" in out
    assert "thumbprint " in out
    assert "CertificateRenewalScheduled x3" in out and "RclRenewalRunCompleted x1" in out
    for sentinel in SENTINELS:
        assert sentinel not in out and sentinel not in result.stderr
