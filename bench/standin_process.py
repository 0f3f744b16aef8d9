"""The stand-ins (identity, Key Vault, AVX, RCL) in a process of their own, for the renewal-storm section.

In Azure the app's worker shares no interpreter with AppViewX, Key Vault or the identity endpoint. When the stand-ins
run in the app's process, their request handling (TLS, certificate issuing, PKCS#12 building and parsing) competes with
the app's threads for one GIL, and the storm measures the harness. Here they run in their own interpreter, and the
parent drives them over a small authenticated control connection (`multiprocessing.connection`, local only).

`python -m bench.standin_process DIRECTORY` prints one line `{"address": [...], "env": {...}, "pid": ...}` and then
answers control calls until `stop`. The authkey comes from the environment (BENCH_STANDIN_AUTHKEY, hex).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

AUTHKEY_VARIABLE = "BENCH_STANDIN_AUTHKEY"
REPO_ROOT = Path(__file__).resolve().parents[1]


# -- the child: stand-ins and the control loop ---------------------------------------------------------------------


def _time_handlers(standins: Any) -> dict[str, list[float]]:
    """Wall time the stand-ins spend answering an AVX renew (its delay included) and a Key Vault request, timed
    around the handlers on these instances (the answer's TLS write comes after)."""
    spent: dict[str, list[float]] = {"AVX renew": [], "Key Vault": []}

    def timed(label: str, original: Any) -> Any:
        def handler(request: Any) -> Any:
            before = time.perf_counter()
            try:
                return original(request)
            finally:
                spent[label].append(time.perf_counter() - before)

        return handler

    standins.avx._renew = timed("AVX renew", standins.avx._renew)
    standins.key_vault.handle = timed("Key Vault", standins.key_vault.handle)
    return spent


def _operations(standins: Any) -> dict[str, Any]:
    spent = _time_handlers(standins)

    def add_certificates(prefix: str, count: int) -> list[str]:
        return [standins.avx.add_certificate(f"{prefix}{i}.contoso.com").resource_id for i in range(count)]

    def storm(avx_delay: float, kv_limit: int, window: float, retry_after: int) -> None:
        """Records cleared, AVX slow and Key Vault throttled: the conditions of a storm."""
        standins.avx.reset_records()
        standins.key_vault.reset_records()  # also lifts an earlier throttle
        with standins.key_vault.lock:
            standins.key_vault.throttled_count = 0
        standins.avx.renew_delay = avx_delay
        standins.key_vault.throttle(kv_limit, window_seconds=window, retry_after=retry_after)
        # Key Vault parses imports side by side on its own servers; here in processes (as many as the cores), not
        # one after another behind this interpreter's lock (KeyVaultStandIn.parse_in_processes).
        standins.key_vault.parse_in_processes(os.cpu_count() or 1)
        for values in spent.values():
            values.clear()

    def calm() -> None:
        standins.key_vault.throttle(None)
        standins.key_vault.parse_in_processes(None)
        standins.avx.renew_delay = 0.0

    def counts(resource_ids: list[str], names: list[str]) -> dict[str, Any]:
        """What the stand-ins saw of one storm: AVX renew calls per resource id, Key Vault imports, versions."""
        wanted = set(resource_ids)
        renewed = Counter(
            body.get("resourceId") for body in (r.json() for r in standins.avx.renew_calls()) if isinstance(body, dict)
        )
        with standins.key_vault.lock:
            versions = {name: len(standins.key_vault.certificates.get(name, [])) for name in names}
            throttled = standins.key_vault.throttled_count
        imports = [r for r in standins.key_vault.received("POST", "/import") if r.body and r.headers]
        return {
            "renew_calls": sum(n for rid, n in renewed.items() if rid in wanted),
            "renewed_twice": sorted(rid for rid, n in renewed.items() if rid in wanted and n > 1),
            "versions": versions,
            "imports": len(imports),
            "throttled": throttled,
            "connections": {"AVX": standins.avx.connections, "Key Vault": standins.key_vault.connections},
            "handler_ms": {
                label: {"calls": len(v), "median": sorted(v)[len(v) // 2] * 1000 if v else 0.0}
                for label, v in spent.items()
            },
        }

    return {"add_certificates": add_certificates, "storm": storm, "calm": calm, "counts": counts}


def serve(directory: Path) -> None:
    from tests.standins.stack import base_environment, start_standins

    standins = start_standins(directory)
    operations = _operations(standins)
    authkey = bytes.fromhex(os.environ[AUTHKEY_VARIABLE])
    with Listener(("127.0.0.1", 0), authkey=authkey) as listener:
        print(json.dumps({"address": list(listener.address), "env": base_environment(standins), "pid": os.getpid()}))
        sys.stdout.flush()
        with listener.accept() as connection:
            while True:
                name, args = connection.recv()
                if name == "stop":
                    connection.send(None)
                    break
                try:
                    connection.send(("ok", operations[name](*args)))
                except Exception as exc:  # the parent reports it; the stand-ins keep serving
                    connection.send(("error", f"{type(exc).__name__}: {exc}"))
    standins.stop()


# -- the parent's handle --------------------------------------------------------------------------------------------


@dataclass
class StandInProcess:
    process: subprocess.Popen[str]
    connection: Connection
    env: dict[str, str]  # the app's settings pointed at these stand-ins (base_environment)

    @classmethod
    def start(cls, directory: Path) -> StandInProcess:
        authkey = secrets.token_bytes(32)
        env = {**os.environ, AUTHKEY_VARIABLE: authkey.hex(), "PYTHONPATH": str(REPO_ROOT)}
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.standin_process", str(directory)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            process.wait(timeout=10)
            raise RuntimeError(f"the stand-in process exited at start (exit {process.returncode})")
        started = json.loads(line)
        connection = Client(tuple(started["address"]), authkey=authkey)
        return cls(process, connection, started["env"])

    @property
    def pid(self) -> int:
        return self.process.pid

    def call(self, name: str, *args: Any) -> Any:
        self.connection.send((name, args))
        status, result = self.connection.recv()
        if status != "ok":
            raise RuntimeError(f"stand-in process: {name} failed: {result}")
        return result

    def stop(self) -> None:
        try:
            self.connection.send(("stop", ()))
            self.connection.recv()
            self.connection.close()
            self.process.wait(timeout=15)
        except (OSError, EOFError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=5)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
