"""The operator CLI, run in-process against the stand-ins: same settings, same functions as the host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.cli import format_table, load_settings_file, main
from tests.standins.stack import REPO_ROOT, SENTINELS, StandIns


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    for sentinel in SENTINELS:
        assert sentinel not in out and sentinel not in err
    return code, out, err


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["renew-rcl"],
        ["verify-rcl"],
        ["renew-avx"],
        ["complete-pending"],
        ["verify-endpoints"],
        ["status"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shared", *command, "--help"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "usage: python -m shared" in result.stdout


def test_night_morning_and_status(
    standins: StandIns, app_env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    standins.rcl.add_certificate("contoso.com", expires_in_days=10)
    item = standins.avx.add_certificate("portal.contoso.com")
    assert run(capsys, "renew-rcl")[0] == 0
    standins.rcl.complete_renewal("contoso.com", installed=True)
    assert run(capsys, "verify-rcl")[0] == 0

    body = tmp_path / "renew.json"
    body.write_text(json.dumps({"resourceId": item.resource_id}))
    code, out, _ = run(capsys, "renew-avx", str(body), "--idempotency-key", "cli-1")
    assert code == 0
    assert json.loads(out)["keyVault"]["name"] == "portal-contoso-com"

    standins.avx.add_certificate("later.contoso.com", resource_id="later")
    body.write_text(json.dumps({"resourceId": "later"}))
    code, out, _ = run(capsys, "renew-avx", str(body), "--auto-approval", "false")
    assert code == 0 and json.loads(out)["status"] == "pending"

    code, out, _ = run(capsys, "status")
    assert code == 0
    assert "contoso.com" in out and "renewed" in out and "installed" in out
    assert "AVX_NO_CERTIFICATE" in out.split("AppViewX renewals (accepted, pending, renewed, failed)")[1]


def test_errors_print_code_and_remediation(
    standins: StandIns, app_env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tests.standins.avx import page_error

    standins.avx.script(page_error("OPEN_WORK_ORDERS_FOUND"))
    body = tmp_path / "renew.json"
    body.write_text(json.dumps({"resourceId": "r1"}))
    code, _, err = run(capsys, "renew-avx", str(body))
    assert code == 1
    assert "[OPEN_WORK_ORDERS_FOUND]" in err and "Remediation:" in err

    from tests.standins.base import Response

    standins.rcl.script(Response.text("Unauthorized", status=401))
    code, _, err = run(capsys, "renew-rcl")
    assert code == 1 and "FAILED [" in err and "Remediation:" in err


def test_settings_file_values_apply_without_overriding_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVX_GWSOURCE", "from-env")
    monkeypatch.delenv("AVX_SYNC_TTL_SECONDS", raising=False)
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"Values": {"AVX_GWSOURCE": "from-file", "AVX_SYNC_TTL_SECONDS": "120", "EMPTY": ""}}))
    assert load_settings_file(path) == 1
    import os

    assert os.environ["AVX_GWSOURCE"] == "from-env" and os.environ["AVX_SYNC_TTL_SECONDS"] == "120"
    assert "EMPTY" not in os.environ


def test_format_table_aligns_columns() -> None:
    table: Any = format_table(("a", "bbb"), [("xxxx", None), ("y", 2)])
    assert table.splitlines() == ["a     bbb", "----  ---", "xxxx     ", "y     2  "]
