"""Issue 27, the operator CLI: `renew-avx` reads its request once (so a process substitution or a pipe works) and
takes `-` for stdin; `status` exits 2 on a mistake like every other command; `complete-pending --now` tries the
renewals waiting out their retry delay and the run's summary counts those not due. Against the stand-ins, in a
subprocess where the way the request arrives matters (a pipe can be read only once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.operator.test_cli import assert_one_line_mistake, cli, run
from tests.standins.stack import REPO_ROOT, SENTINELS, StandIns


def settings_file(tmp_path: Path, app_env: dict[str, str]) -> Path:
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": app_env}))
    return path


def shell(command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-c", command], cwd=REPO_ROOT, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    for sentinel in SENTINELS:
        assert sentinel not in done.stdout and sentinel not in done.stderr
    return done


def test_renew_avx_reads_a_process_substitution_once(
    standins: StandIns, app_env: dict[str, str], tmp_path: Path
) -> None:
    item = standins.avx.add_certificate("substituted.contoso.com")
    settings = settings_file(tmp_path, app_env)
    body = json.dumps({"resourceId": item.resource_id})
    done = shell(f"{sys.executable} -m shared renew-avx --settings {settings} <(echo '{body}')")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["keyVault"]["name"] == "substituted-contoso-com"


def test_renew_avx_takes_a_dash_for_stdin(standins: StandIns, app_env: dict[str, str], tmp_path: Path) -> None:
    item = standins.avx.add_certificate("piped.contoso.com")
    settings = settings_file(tmp_path, app_env)
    done = shell(
        f"{sys.executable} -m shared renew-avx --settings {settings} -",
        stdin=json.dumps({"resourceId": item.resource_id}),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["keyVault"]["name"] == "piped-contoso-com"
    empty = shell(f"{sys.executable} -m shared renew-avx --settings {settings} -", stdin="")
    assert empty.returncode == 2
    assert_one_line_mistake(empty, "standard input", "not valid JSON")


def test_status_without_settings_is_a_mistake_exit_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AzureWebJobsStorage")}
    result = subprocess.run(
        [sys.executable, "-m", "shared", "status"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert_one_line_mistake(result, "Likely cause: no settings were given")


def test_status_with_a_setting_wrong_is_a_mistake_exit_2(tmp_path: Path) -> None:
    settings = tmp_path / "local.settings.json"
    settings.write_text(
        json.dumps({"Values": {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "PENDING_TABLE": "x"}})
    )
    result = cli("status", "--settings", str(settings))
    assert result.returncode == 2, result.stderr
    assert_one_line_mistake(result, "PENDING_TABLE", f"fix the named setting in {settings}")


def test_status_with_storage_unreachable_is_a_failure_exit_1(tmp_path: Path) -> None:
    from tests.standins.stack import unreachable_storage

    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {"AzureWebJobsStorage": unreachable_storage()}}))
    result = cli("status", "--settings", str(settings))
    assert result.returncode == 1
    assert_one_line_mistake(result, "STATE_STORE_UNAVAILABLE")


def test_complete_pending_now_stores_an_approved_renewal_at_once_and_counts_what_was_not_due(
    standins: StandIns, app_env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The printed demo: approve in AppViewX, then complete. A record already tried once waits 15 minutes; `--now`
    does not, and the plain run says how many records it left for later."""
    item = standins.avx.add_certificate("demo-now.contoso.com")
    body = tmp_path / "renew.json"
    body.write_text(json.dumps({"resourceId": item.resource_id}))
    code, out, _ = run(capsys, "renew-avx", str(body), "--auto-approval", "false")
    assert code == 0 and json.loads(out)["status"] == "pending"
    assert run(capsys, "complete-pending")[0] == 0  # tried before the approval: next try in 15 minutes
    standins.avx.approve(item.resource_id)

    code, _, err = run(capsys, "complete-pending")
    assert code == 0 and "0 completed" in err and "1 not yet due" in err, err
    assert "--now" in err  # the summary says how to try them now
    assert standins.key_vault.latest("demo-now-contoso-com") is None

    code, _, err = run(capsys, "complete-pending", "--now")
    assert code == 0 and "1 completed" in err and "0 not yet due" in err, err
    assert standins.key_vault.latest("demo-now-contoso-com") is not None


def test_complete_pending_help_names_now() -> None:
    result = cli("complete-pending", "--help")
    assert result.returncode == 0 and "--now" in result.stdout
