"""The operator CLI, run in-process against the stand-ins: same settings, same functions as the host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared.operator.cli import main
from shared.operator.files import load_settings_file
from shared.operator.status import format_table
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
        ["discover-consumers"],
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


def test_settings_file_values_win_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AVX_GWSOURCE", "from-env")
    monkeypatch.setenv("AVX_SYNC_TTL_SECONDS", "60")
    monkeypatch.delenv("EMPTY", raising=False)
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"Values": {"AVX_GWSOURCE": "from-file", "EMPTY": ""}}))
    assert load_settings_file(path) == 1
    import os

    # The file's names win; names it does not set (or sets empty) keep the environment's value.
    assert os.environ["AVX_GWSOURCE"] == "from-file" and os.environ["AVX_SYNC_TTL_SECONDS"] == "60"
    assert "EMPTY" not in os.environ


def test_settings_after_the_command_win_over_a_shell_ca_bundle(
    standins: StandIns,
    app_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's case: REQUESTS_CA_BUNDLE already set in the shell (a public bundle that does not know the local
    test CA) must not beat the settings file's; and --settings may follow the command."""
    import certifi

    item = standins.avx.add_certificate("shell.contoso.com")
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": app_env}))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    body = tmp_path / "renew.json"
    body.write_text(json.dumps({"resourceId": item.resource_id}))
    code, out, err = run(capsys, "renew-avx", str(body), "--settings", str(settings))
    assert code == 0, err
    assert json.loads(out)["keyVault"]["name"] == "shell-contoso-com"


def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "shared", *argv],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line_mistake(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "folder": tmp_path,
        "missing": tmp_path / "missing.json",
        "not-json": tmp_path / "not-json.json",
        "no-values": tmp_path / "no-values.json",
        "array": tmp_path / "array.json",
    }
    paths["not-json"].write_text('{"Values": {"AVX_API_URL": "x",}}')
    paths["no-values"].write_text('{"Values": ["AVX_API_URL"]}')
    paths["array"].write_text('[{"resourceId": "www"}]')
    return paths


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--settings", "{missing}", "status"], ["settings file", "does not exist", "local.settings.json"]),
        (["status", "--settings", "{missing}"], ["settings file", "does not exist"]),
        (["status", "--settings", "{folder}"], ["is a folder"]),
        (["status", "--settings", "{not-json}"], ["is not valid JSON", "line 1, column"]),
        (["status", "--settings", "{no-values}"], ['no "Values" object']),
        (["renew-avx", "{missing}"], ["request file", "does not exist", '{"resourceId": "..."}']),
        (["renew-avx", "{not-json}"], ["request file", "is not valid JSON"]),
        (["renew-avx", "{array}"], ["does not hold a JSON object"]),
    ],
)
def test_each_cli_mistake_is_one_line_without_a_traceback(
    argv: list[str], fragments: list[str], files: dict[str, Path]
) -> None:
    result = cli(*(a.format(**{k: str(v) for k, v in files.items()}) for a in argv))
    assert result.returncode == 2
    assert_one_line_mistake(result, *fragments)


def test_status_without_settings_names_the_likely_cause() -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AzureWebJobsStorage")}
    result = subprocess.run(
        [sys.executable, "-m", "shared", "status"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    line = assert_one_line_mistake(result, "AzureWebJobsStorage", "Likely cause: no settings were given")
    assert "--settings .localstack/local.settings.json" in line


def test_status_with_the_stack_stopped_says_start_it(tmp_path: Path) -> None:
    from tests.standins.stack import unreachable_storage

    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {"AzureWebJobsStorage": unreachable_storage()}}))
    line = assert_one_line_mistake(cli("status", "--settings", str(settings)), "STATE_STORE_UNAVAILABLE")
    assert "the local stack (its Azurite) is not running" in line and "bash dev.sh local --serve" in line


def test_serve_on_a_busy_port_suggests_another() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = assert_one_line_mistake(cli("serve", "--port", str(port), "--key", "k"), f"port {port}", "is busy")
    assert f"--port {port + 1}" in line


def test_status_words_times_and_rounding_are_the_reports() -> None:
    from datetime import UTC, datetime, timedelta

    from shared.operator.words import clip, expiry_words, state_word, when

    now = datetime(2026, 11, 27, 22, 36, 2, 500000, tzinfo=UTC)
    assert when(now) == "2026-11-27T22:36:02Z" and when("2026-11-27T22:36:02.306938Z") == "2026-11-27T22:36:02Z"
    # A certificate seeded "11 days out" a moment ago has 10.99 days left: that is "in 11 days".
    assert expiry_words(now + timedelta(days=11, seconds=-3), now).endswith("(in 11 days)")
    assert expiry_words(now + timedelta(hours=20), now).endswith("(in 1 day)")
    assert expiry_words(now - timedelta(days=2), now).endswith("(2 days ago)")
    assert state_word("scheduled") == "pending" and state_word("accepted") == "accepted"
    text = "AVX_NO_CERTIFICATE: AppViewX accepted the renewal but returned no certificate (for example, manual)"
    clipped = clip(text, 60)
    assert clipped.endswith(" …") and len(clipped) <= 62
    assert all(word in text.split() for word in clipped[:-2].split())  # only whole words


def test_console_command_is_declared_and_packaged(tmp_path: Path) -> None:
    """`certrenew` is the [project.scripts] entry, and pyproject.toml packages the app's code (not the tests, the
    benchmark or node_modules). Built as an sdist from a copy, offline, with the venv's setuptools."""
    import shutil
    import tarfile
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == {"certrenew": "shared.operator.cli:main"}
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("shared", "renew_http", "renew_timer", "tests", "bench"):
        shutil.copytree(REPO_ROOT / name, tree / name, ignore=ignore)
    for name in ("pyproject.toml", "function_app.py", "README.md"):
        shutil.copy(REPO_ROOT / name, tree / name)
    built = subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.build_sdist({str(tmp_path)!r}))"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    with tarfile.open(tmp_path / built.stdout.strip().splitlines()[-1]) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
        entry_points = sdist.extractfile(next(m for m in sdist.getmembers() if m.name.endswith("entry_points.txt")))
        assert entry_points is not None
        assert "certrenew = shared.operator.cli:main" in entry_points.read().decode()
    sources = [n for n in names if n.endswith(".py")]
    for module in ("function_app.py", "shared/operator/cli.py", "shared/__main__.py", "renew_http/__init__.py"):
        assert module in names
    assert "renew_timer/complete_pending.py" in names and "renew_http/openapi.yaml" in names
    assert not [n for n in sources if n.startswith(("tests/", "bench/"))]


def test_console_command_name_shows_in_usage() -> None:
    from shared.operator.cli import build_parser
    from shared.operator.outcomes import program_name

    assert program_name("/work/.venv/bin/certrenew") == "certrenew"
    assert program_name("/work/shared/__main__.py") == "python -m shared"
    assert build_parser("certrenew").format_usage().startswith("usage: certrenew")


def test_format_table_aligns_columns() -> None:
    table: Any = format_table(("a", "bbb"), [("xxxx", None), ("y", 2)])
    assert table.splitlines() == ["a     bbb", "----  ---", "xxxx     ", "y     2  "]
