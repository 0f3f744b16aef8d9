"""The code's shape: no function over 50 lines in the library (shared/) and the triggers (renew_http/, renew_timer/),
no module in shared/ over 400 lines, and no import that runs up (or across) the floors of the app's rooms.

A function that grows past that is split into named steps (see shared/rcl/decisions.py `classify` for a rule chain,
shared/appviewx/validation.py `parse_renew_request` for one function per field group); a module, where its parts
change for different reasons; a piece two rooms need moves down to the floor below both."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 50


def function_lengths() -> dict[tuple[str, str], int]:
    sources = [*ROOT.glob("shared/**/*.py"), *ROOT.glob("renew_http/*.py"), *ROOT.glob("renew_timer/*.py")]
    lengths: dict[tuple[str, str], int] = {}
    for path in sorted(sources):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
                key = (path.relative_to(ROOT).as_posix(), node.name)
                lengths[key] = max(lengths.get(key, 0), node.end_lineno - node.lineno + 1)
    return lengths


def test_the_collector_sees_the_triggers_and_the_library() -> None:
    lengths = function_lengths()
    assert ("renew_http/__init__.py", "renew_http") in lengths
    assert ("shared/appviewx/webhook_renewal.py", "renew_and_store") in lengths


def test_no_function_is_longer_than_50_lines() -> None:
    long = {key: n for key, n in function_lengths().items() if n > MAX_LINES}
    assert not long, f"functions over {MAX_LINES} lines (split them into named steps): {long}"


# -- rooms and floors ---------------------------------------------------------------------------------------------------
MAX_MODULE_LINES = 400
# Modules allowed over MAX_MODULE_LINES, and why.
LONG_MODULES = {
    "shared/core/settings.py": "one table of every setting, read and validated in one place",
}
# The rooms of the app from the ground up: a room imports its own modules and rooms on lower floors, never a room
# beside it or above it. `context` wires every system's long-lived clients; the operator CLI runs the app's
# registered functions (function_app) as the Functions host does, so it is the one room above the app itself.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("core",),  # settings, errors, events, telemetry, redaction, outbound HTTP rules, certificate material
    ("azure",),  # Key Vault, Table storage, the managed identity
    ("security",),  # webhook security (its stores are tables)
    ("notify", "appviewx", "rcl", "endpoints"),  # the systems the app speaks to
    ("vault", "consumers"),  # the Key Vault event path renews through AppViewX; consumer discovery probes endpoints
    ("context",),
    ("renew_http", "renew_timer"),  # the triggers
    ("function_app",),
    ("operator",),
)
FLOOR_OF = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}
APP_ROOTS = ("shared", "renew_http", "renew_timer", "function_app")


def room_of_path(relative: str) -> str:
    """`shared/rcl/runs.py` -> `rcl`; `shared/context.py` -> `context`; `renew_http/queued.py` -> `renew_http`."""
    parts = relative.removesuffix(".py").split("/")
    if parts[0] != "shared":
        return parts[0]
    if len(parts) > 2:
        return parts[1]
    return "operator" if parts[1] == "__main__" else parts[1]


def room_of_module(dotted: str) -> str | None:
    """The room an imported module belongs to (None: not the app's own code, or the bare `shared` package)."""
    parts = dotted.split(".")
    if parts[0] not in APP_ROOTS:
        return None
    if parts[0] != "shared":
        return parts[0]
    return parts[1] if len(parts) > 1 else None


def imported_modules(tree: ast.Module) -> set[str]:
    """Every module a file imports, wherever the import stands (top, inside a function, under TYPE_CHECKING);
    `from shared import context` counts as `shared.context`."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def arrows_of(relative: str, tree: ast.Module) -> set[tuple[str, str, str]]:
    """(file, its room, the room it imports) for every import of one file from another room."""
    source_room = room_of_path(relative)
    targets = {room_of_module(module) for module in imported_modules(tree)}
    return {(relative, source_room, target) for target in targets if target in FLOOR_OF and target != source_room}


def arrows() -> set[tuple[str, str, str]]:
    sources = [*ROOT.glob("shared/**/*.py"), *ROOT.glob("renew_http/*.py"), *ROOT.glob("renew_timer/*.py")]
    sources.append(ROOT / "function_app.py")
    found: set[tuple[str, str, str]] = set()
    for path in sorted(sources):
        relative = path.relative_to(ROOT).as_posix()
        if relative != "shared/__init__.py":
            found |= arrows_of(relative, ast.parse(path.read_text(encoding="utf-8")))
    return found


def runs_up_or_across(source: str, target: str) -> bool:
    return FLOOR_OF[target] >= FLOOR_OF[source]


def test_every_room_has_a_floor() -> None:
    rooms = {room_of_path(p.relative_to(ROOT).as_posix()) for p in ROOT.glob("shared/*/") if p.is_dir()}
    rooms |= {room_of_path(p.relative_to(ROOT).as_posix()) for p in ROOT.glob("shared/*.py")}
    rooms -= {"__pycache__", "__init__"}
    assert rooms <= set(FLOOR_OF), f"give these rooms a floor in FLOORS: {sorted(rooms - set(FLOOR_OF))}"


def test_the_import_scan_sees_every_kind_of_import() -> None:
    found = {(source, target) for _, source, target in arrows()}
    assert ("vault", "appviewx") in found  # a top-level `from ... import`
    assert ("operator", "function_app") in found  # an `import` inside a function
    assert ("renew_http", "context") in found  # `from shared import context`


def test_an_arrow_up_is_caught() -> None:
    """What core/notify.py -> security/callers.py (for clean_text) was, until notifications left core."""
    tree = ast.parse("from shared.security.callers import clean_text\nfrom shared.core import redaction\n")
    assert arrows_of("shared/core/notify.py", tree) == {("shared/core/notify.py", "core", "security")}
    assert runs_up_or_across("core", "security")
    assert runs_up_or_across("appviewx", "rcl")  # beside it on the same floor
    assert not runs_up_or_across("operator", "function_app")


def test_no_import_runs_up_or_across_a_floor() -> None:
    wrong = sorted(
        f"{path}: {source} (floor {FLOOR_OF[source]}) imports {target} (floor {FLOOR_OF[target]})"
        for path, source, target in arrows()
        if runs_up_or_across(source, target)
    )
    assert not wrong, "imports that run up or sideways (move the shared piece down a floor):\n" + "\n".join(wrong)


def test_no_module_in_shared_is_longer_than_400_lines() -> None:
    lengths = {
        path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in ROOT.glob("shared/**/*.py")
    }
    long = {path: n for path, n in lengths.items() if n > MAX_MODULE_LINES and path not in LONG_MODULES}
    assert not long, (
        f"modules over {MAX_MODULE_LINES} lines (split them where their parts change for different reasons): {long}"
    )
