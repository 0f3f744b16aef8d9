"""The local stack: every stand-in, Azurite, and the settings that point the app at them.

Used by the tests and by the local end-to-end run, so both exercise the same protocol servers.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.standins.avx import AvxStandIn
from tests.standins.identity import IdentityStandIn
from tests.standins.keyvault import KeyVaultStandIn
from tests.standins.rcl import RclStandIn
from tests.standins.resourcegraph import ResourceGraphStandIn
from tests.standins.tls import TestCA, make_test_ca

REPO_ROOT = Path(__file__).resolve().parents[2]

# Sentinel values for every secret: none of them may ever leave the process (answers, logs, telemetry).
AVX_PASSWORD = "SENTINEL-avx-password-7Qm!x"
IDENTITY_HEADER = "SENTINEL-identity-header-k2P9"
TOKEN_PREFIX = "SENTINEL-token"
RCL_CLIENT_SECRET = "SENTINEL-rcl-client-secret-Zt4"
WEBHOOK_HMAC_SECRET = "SENTINEL-hmac-secret-Lw8-0123456789"
AVX_CLIENT_SECRET = "SENTINEL-avx-client-secret-R5"
SENTINELS = (AVX_PASSWORD, IDENTITY_HEADER, TOKEN_PREFIX, RCL_CLIENT_SECRET, WEBHOOK_HMAC_SECRET, AVX_CLIENT_SECRET)

AVX_USERNAME = "certrenew-svc"
KEY_VAULT_RESOURCE = "https://vault.azure.net"
RCL_RESOURCE = "https://management.core.windows.net"


@dataclass
class StandIns:
    ca: TestCA
    identity: IdentityStandIn
    key_vault: KeyVaultStandIn
    avx: AvxStandIn
    rcl: RclStandIn
    resource_graph: ResourceGraphStandIn
    extra: list[Any] = field(default_factory=list)

    def all(self) -> list[Any]:
        return [self.identity, self.key_vault, self.avx, self.rcl, self.resource_graph, *self.extra]

    def reset(self) -> None:
        self.identity.scripted.clear()
        self.identity.lifetimes.clear()
        self.identity.reset_records()
        self.key_vault.reset_records()
        self.avx.reset()
        self.rcl.reset()
        self.resource_graph.reset()

    def stop(self) -> None:
        for standin in self.all():
            standin.stop()


def start_standins(directory: Path) -> StandIns:
    ca = make_test_ca(directory)
    identity = IdentityStandIn(IDENTITY_HEADER, TOKEN_PREFIX).start()
    key_vault = KeyVaultStandIn(ca.server_context(), expected_token=identity.token_for(KEY_VAULT_RESOURCE)).start()
    avx = AvxStandIn(AVX_USERNAME, AVX_PASSWORD, ca.server_context())
    avx.client_secret = AVX_CLIENT_SECRET
    avx.start()
    rcl = RclStandIn(
        expected_token=identity.token_for(RCL_RESOURCE),
        expected_key_vault_token=identity.token_for(KEY_VAULT_RESOURCE),
    ).start()
    resource_graph = ResourceGraphStandIn(ca.server_context(), expected_token="")
    resource_graph.start()
    # The token the managed identity issues for this Resource Manager (scope <url>/.default, resource <url>).
    resource_graph.expected_token = identity.token_for(resource_graph.url)
    return StandIns(ca=ca, identity=identity, key_vault=key_vault, avx=avx, rcl=rcl, resource_graph=resource_graph)


def base_environment(standins: StandIns) -> dict[str, str]:
    """Every setting the app reads, pointed at the stand-ins (as App Service would set them in Azure)."""
    return {
        "IDENTITY_ENDPOINT": standins.identity.endpoint,
        "IDENTITY_HEADER": IDENTITY_HEADER,
        "REQUESTS_CA_BUNDLE": str(standins.ca.bundle_path),
        "AVX_API_URL": f"{standins.avx.url}/avxapi",
        "AVX_USERNAME": AVX_USERNAME,
        "AVX_PASSWORD": AVX_PASSWORD,
        "AVX_GWSOURCE": "external",
        "AVX_SYNC_TTL_SECONDS": "300",
        "AVX_TIMEOUT_SECONDS": "20",
        "KEY_VAULT_URL": standins.key_vault.url,
        "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE": "false",
        "RCL_API_URL": f"{standins.rcl.url}/api/v2",
        "RCL_TIMEOUT_SECONDS": "10",
        # Resource Graph's stand-in; discovery stays off until a test sets CONSUMER_SUBSCRIPTIONS.
        "RESOURCE_MANAGER_URL": standins.resource_graph.url,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def unreachable_storage() -> str:
    """A storage connection string whose table endpoint nobody listens on (the host's storage account is down)."""
    dead = f"http://127.0.0.1:{free_port()}/{AZURITE_ACCOUNT}"
    return f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};TableEndpoint={dead};"


@dataclass
class Azurite:
    """Azurite's table service (npm package `azurite`), and with `queues=True` its queue service too (the local stack's
    asynchronous renewals), started on free ports for the tests or the local stack."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    queue_process: subprocess.Popen[bytes] | None = None
    queue_port: int | None = None

    @property
    def connection_string(self) -> str:
        queues = f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{AZURITE_ACCOUNT};" if self.queue_port else ""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"TableEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};{queues}"
        )

    @staticmethod
    def executable(service: str = "table") -> str:
        local = REPO_ROOT / "node_modules" / ".bin" / f"azurite-{service}"
        if local.exists():
            return str(local)
        found = shutil.which(f"azurite-{service}")
        if found:
            return found
        raise RuntimeError("Azurite is not installed: run `npm ci` in the repository root (see docs/development.md)")

    @staticmethod
    def _launch(directory: Path, service: str, timeout: float) -> tuple[subprocess.Popen[bytes], int, Path]:
        port = free_port()
        log_path = directory / f"azurite-{service}-{uuid.uuid4().hex[:6]}.log"
        process = subprocess.Popen(
            [
                Azurite.executable(service),
                f"--{service}Host",
                "127.0.0.1",
                f"--{service}Port",
                str(port),
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--disableTelemetry",
            ],
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=directory,  # Azurite writes its debug and extent files to the working folder
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"Azurite exited at start; see {log_path}: {log_path.read_text()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return process, port, log_path
            except OSError:
                time.sleep(0.1)
        process.kill()
        raise RuntimeError(f"Azurite did not start within {timeout:g} s; see {log_path}")

    @classmethod
    def start(cls, directory: Path, timeout: float = 30.0, *, queues: bool = False) -> Azurite:
        process, port, log_path = cls._launch(directory, "table", timeout)
        azurite = cls(process=process, port=port, log_path=log_path)
        if queues:
            try:
                azurite.queue_process, azurite.queue_port, _ = cls._launch(directory, "queue", timeout)
            except BaseException:
                azurite.stop()
                raise
        return azurite

    def stop(self) -> None:
        for process in (self.process, self.queue_process):
            if process is None:
                continue
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


class FakeContext:
    """What the Functions host passes as `context`: the invocation id the app correlates answers and events with."""

    def __init__(self, function_name: str) -> None:
        self.invocation_id = str(uuid.uuid4())
        self.function_name = function_name
        self.function_directory = str(REPO_ROOT)
        self.retry_context = None
        self.trace_context = None
        self.thread_local_storage = None


def app_functions() -> dict[str, Any]:
    """The registered functions by name; `get_functions()` may be called once per process (see NOTES.md), so the
    tests, the CLI and the local stack share one index."""
    from shared.operator.local_host import registered_functions

    return registered_functions()
