"""Cold start (issue 28): importing the app loads what registering its functions needs, nothing a call needs. Each
function imports the modules it runs (and the Azure SDK, requests and cryptography behind them) on its first call."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Loaded by a call, never by the import: (module prefix, why it is heavy).
CALL_TIME_ONLY = (
    "azure.core",  # the Azure SDK's pipeline, policies and transports
    "azure.identity",
    "azure.keyvault",
    "azure.data.tables",
    "requests",
    "cryptography",
    "shared.appviewx",
    "shared.azure",
    "shared.rcl",
    "shared.vault",
    "shared.endpoints",
    "shared.consumers",
)


def test_importing_the_app_loads_no_call_time_module() -> None:
    probe = "import json, sys, function_app; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stdout.splitlines()[-1])
    early = [m for m in loaded if any(m == p or m.startswith(p + ".") for p in CALL_TIME_ONLY)]
    assert early == []
