"""What runs in a fresh process: one cold start, one night, or one follow-up check at scale.

`python -m bench.child MODE [ARGS]`; the environment (settings pointed at the parent's stand-ins) comes from the
parent. The last line of stdout is `BENCH-RESULT {json}`.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()
STARTED_WALL = time.time()

import cProfile  # noqa: E402 - the clock starts before anything else is imported
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

MARKER = "BENCH-RESULT "


def _rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB: VmHWM, the high-water mark of this process's own
    address space. (ru_maxrss is not used on Linux: a child spawned with vfork inherits the parent's high-water
    mark through exec, so it would report the benchmark parent's memory.)"""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Context:
    """What the Functions host passes as `context` (like tests.standins.stack.FakeContext, without importing the
    test stack into the measured process)."""

    def __init__(self, function_name: str) -> None:
        self.invocation_id = str(uuid.uuid4())
        self.function_name = function_name
        self.function_directory = "."
        self.retry_context = None
        self.trace_context = None
        self.thread_local_storage = None


def _request(body: dict[str, Any], url: str) -> Any:
    import azure.functions as func

    return func.HttpRequest(
        method="POST",
        url=url,
        headers={"Content-Type": "application/json"},
        params={},
        route_params={},
        body=json.dumps(body).encode(),
    )


def _functions(module_name: str) -> tuple[dict[str, Any], float, float]:
    """Import the app module; its functions by name (get_functions once), import ms, and functions ms."""
    before = time.perf_counter()
    module = importlib.import_module(module_name)
    imported = time.perf_counter()
    functions = {f.get_function_name(): f for f in module.app.get_functions()}
    return functions, (imported - before) * 1000, (time.perf_counter() - imported) * 1000


def cold(module_name: str, resource_ids: list[str]) -> dict[str, Any]:
    """Import the app, then the first call and a few more; the app's webhook when resource ids are given."""
    functions, import_ms, functions_ms = _functions(module_name)
    rss_import = _rss_mb()
    calls: list[float] = []
    statuses: list[int] = []
    if resource_ids:
        function = functions["renew_http"].get_user_function()
        bodies = [{"resourceId": rid} for rid in resource_ids]
        url = "http://localhost:7071/api/certificates/renew"
    else:
        function = functions["ping"].get_user_function()
        bodies = [{}]
        url = "http://localhost:7071/api/ping"
    first_done_wall = 0.0
    for body in bodies:
        before = time.perf_counter()
        response = function(_request(body, url), _Context("renew_http"))
        calls.append((time.perf_counter() - before) * 1000)
        statuses.append(response.status_code)
        if not first_done_wall:
            first_done_wall = time.time()
    return {
        "import_ms": import_ms,
        "functions_ms": functions_ms,
        "first_call_ms": calls[0],
        "later_calls_ms": calls[1:],
        "statuses": statuses,
        "first_answer_wall": first_done_wall,
        "child_started_wall": STARTED_WALL,
        "rss_after_import_mb": rss_import,
        "rss_peak_mb": _rss_mb(),
        "modules": len(sys.modules),
    }


def timers(names: list[str]) -> dict[str, Any]:
    """Run the named timer functions in order in this one process (a night: renew_timer, then verify_renewals)."""
    import azure.functions as func

    functions, import_ms, _ = _functions("function_app")
    missing = [n for n in names if n not in functions]
    if missing:
        return {"missing": missing}
    rss_before = _rss_mb()
    runs: dict[str, float] = {}
    profile_to = os.environ.get("BENCH_PROFILE")  # a path: cProfile the runs there (for a closer look by hand)
    profiler = cProfile.Profile() if profile_to else None
    for name in names:
        before = time.perf_counter()
        if profiler:
            profiler.enable()
        functions[name].get_user_function()(func.timer.TimerRequest(past_due=False), _Context(name))
        if profiler:
            profiler.disable()
        runs[name] = (time.perf_counter() - before) * 1000
    if profiler and profile_to:
        profiler.dump_stats(profile_to)
    return {"import_ms": import_ms, "runs_ms": runs, "rss_before_mb": rss_before, "rss_peak_mb": _rss_mb()}


def main(argv: list[str]) -> int:
    mode, args = argv[0], argv[1:]
    if mode == "cold-app":
        result = cold("function_app", args)
    elif mode == "cold-baseline":
        result = cold("bench.baseline_app", [])
    elif mode == "timers":
        result = timers(args)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
