"""Typed names: every event the app emits is an `Event` member, every `source` a `Source` member, and docs/telemetry.md's
events table lists exactly the `Event` members.

The scan reads the code (so a branch no test reaches is covered too); `tests/conftest.py` checks the same at run time
for every event any test makes the app emit."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from shared.core.events import Event, Source
from shared.core.telemetry import event_record_attributes
from shared.vault.event_decisions import HANDLED_TYPES

ROOT = Path(__file__).resolve().parents[2]
EVENT_NAMES = {e.value for e in Event}
# Producers that pass an expression typed `Event` rather than a member: where, and what (checked below).
TYPED_EXPRESSIONS = {
    ("shared/vault/events.py", "event.app_event"),  # CertificateEvent.app_event: a value of HANDLED_TYPES
    ("shared/endpoints/run.py", "name"),  # from EndpointResult.event(), typed tuple[Event, ...]
    ("shared/vault/ladder.py", "Event.EXPIRED if step == EXPIRED_STEP else Event.NEAR_EXPIRY"),  # both members
    ("shared/consumers/run.py", "name"),  # from shared.consumers.decisions, typed tuple[Event, ...]
}


def app_sources() -> dict[str, ast.Module]:
    paths = [*ROOT.glob("shared/**/*.py"), *ROOT.glob("renew_http/*.py"), *ROOT.glob("renew_timer/*.py")]
    paths.append(ROOT / "function_app.py")
    return {p.relative_to(ROOT).as_posix(): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(paths)}


def emitted_names() -> list[tuple[str, str]]:
    """(file, first argument as source text) of every emit_event call in the app."""
    found = []
    for path, tree in app_sources().items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "emit_event"
            ):
                found.append((path, ast.unparse(node.args[0])))
    return found


def test_every_emit_event_call_names_an_event_member() -> None:
    calls = emitted_names()
    assert len(calls) >= 15, calls  # the scan sees the producers (rcl, appviewx, vault, endpoints)
    untyped = []
    for path, argument in calls:
        member = re.fullmatch(r"Event\.([A-Z_]+)", argument)
        if member and member.group(1) in Event.__members__:
            continue
        if (path, argument) not in TYPED_EXPRESSIONS:
            untyped.append((path, argument))
    assert not untyped, f"emit_event with a name that is not an Event member: {untyped}"
    assert {path for path, _ in calls} >= {
        "shared/rcl/runs.py",
        "shared/appviewx/storing.py",
        "shared/appviewx/webhook_renewal.py",
        "shared/vault/events.py",
        "shared/endpoints/run.py",
    }


def test_the_typed_expressions_yield_event_members() -> None:
    assert all(isinstance(name, Event) for name in HANDLED_TYPES.values())
    assert set(HANDLED_TYPES.values()) == {Event.NEAR_EXPIRY, Event.EXPIRED}
    import shared.endpoints.decisions as decisions

    returned = {
        node.value.elts[0]
        for node in ast.walk(ast.parse(Path(decisions.__file__).read_text(encoding="utf-8")))
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple)
    }
    assert {ast.unparse(v) for v in returned} == {"Event.DEPLOYED", "Event.NOT_DEPLOYED", "Event.ENDPOINT_CHECK_FAILED"}


def test_no_event_name_or_source_is_spelt_as_a_bare_string() -> None:
    bare = []
    for path, tree in app_sources().items():
        if path == "shared/core/events.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in EVENT_NAMES:
                bare.append((path, node.lineno, node.value))
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "source" and isinstance(value, ast.Constant):
                        bare.append((path, value.lineno, f"source={value.value!r}"))
    assert not bare, f"spell these as Event / Source members: {bare}"


def test_the_docs_events_table_lists_every_event() -> None:
    readme = (ROOT / "docs" / "telemetry.md").read_text(encoding="utf-8")
    section = readme.split("\n## Events\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([A-Za-z]+)` \|", section, flags=re.MULTILINE)
    assert len(listed) == len(set(listed)), "an event is listed twice"
    assert set(listed) == EVENT_NAMES
    sources = re.search(r"Every event has `source` \((.*?)\)", section, flags=re.DOTALL)
    assert sources is not None
    assert set(re.findall(r"`([a-z]+)`", sources.group(1))) == {s.value for s in Source}


def test_members_leave_as_their_plain_strings() -> None:
    """The stored and exported strings do not change: JSON, str() and the Application Insights record."""
    assert json.dumps({"source": Source.APPVIEWX}) == '{"source": "appviewx"}'
    assert [str(e) for e in Event] == [e.value for e in Event]
    record = event_record_attributes(Event.RENEWAL_FAILED, {"source": Source.RCL})
    assert record["microsoft.custom_event.name"] == "CertificateRenewalFailed"
    assert type(record["microsoft.custom_event.name"]) is str and type(record["source"]) is str
    assert record["source"] == "rcl"
