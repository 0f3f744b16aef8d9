"""The Functions host's storage-queue work, for the local serve loop (`certrenew serve`, `bash dev.sh local --serve`)
and the local stack, so `Prefer: respond-async` runs end to end without the Functions Core Tools:

- a queue output binding (`queue_output`) gets an `Out[str]`; what the function set is written to its queue when the
  invocation ends without an exception, as the host writes output bindings;
- each queue trigger (`queue_trigger`) is polled and its messages delivered as `func.QueueMessage` (id, body, dequeue
  count, pop receipt, times). A message is deleted after a successful run; after a failure it becomes visible again
  after host.json's `visibilityTimeout`, and when the delivery that failed was its `maxDequeueCount`th it is copied to
  `<queue>-poison` and deleted (where the poison function, a queue trigger like any other, gets it).

host.json `extensions.queues` is read with the host's defaults (batchSize 16, maxDequeueCount 5, visibilityTimeout 0,
maxPollingInterval 1 min, messageEncoding base64: the host expects and writes base64 text unless it is `none`); a queue
name may name app settings as `%NAME%`. The storage account is the binding's `connection` setting (Azurite locally).
The Azure Storage Queues SDK is a development dependency: without it, or without a queue endpoint in the connection
string, queue functions are not run and the served HTTP functions get no queue output (their synchronous path).
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage

log = logging.getLogger("certrenew.queues")
HOST_JSON = Path(__file__).resolve().parents[2] / "host.json"
LEASE_SECONDS = 600  # how long a delivered message stays invisible to other deliveries (the host's lease)
FIRST_POLL_SECONDS = 0.1  # the host polls again at once after messages, then backs off to maxPollingInterval


class QueueHostError(Exception):
    """The queue bindings cannot work as configured (a setting missing, no queue endpoint, no SDK)."""


@dataclass(frozen=True)
class QueueOptions:
    """host.json `extensions.queues`, with the Functions host's defaults."""

    batch_size: int = 16
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0  # seconds before a message whose delivery failed is delivered again
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"


def timespan_seconds(text: str) -> float:
    """A host.json timespan (`00:05:00`, `1.02:00:00`, `00:00:00.500`) in seconds."""
    found = re.fullmatch(r"(?:(\d+)\.)?(\d+):(\d+):(\d+(?:\.\d+)?)", text.strip())
    if not found:
        raise QueueHostError(f"host.json: {text!r} is not a timespan like 00:05:00")
    days, hours, minutes, seconds = found.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def queue_options(host_json: Mapping[str, Any]) -> QueueOptions:
    queues = (host_json.get("extensions") or {}).get("queues") or {}
    defaults = QueueOptions()
    encoding = str(queues.get("messageEncoding", defaults.message_encoding)).lower()
    if encoding not in ("base64", "none"):
        raise QueueHostError(f"host.json: messageEncoding {encoding!r} is neither base64 nor none")
    return QueueOptions(
        batch_size=int(queues.get("batchSize", defaults.batch_size)),
        max_dequeue_count=int(queues.get("maxDequeueCount", defaults.max_dequeue_count)),
        visibility_timeout=timespan_seconds(queues.get("visibilityTimeout", "00:00:00")),
        max_polling_interval=timespan_seconds(queues.get("maxPollingInterval", "00:01:00")),
        message_encoding=encoding,
    )


def load_queue_options(path: Path = HOST_JSON) -> QueueOptions:
    return queue_options(json.loads(path.read_text(encoding="utf-8")))


def resolve_name(name: str, environ: Mapping[str, str]) -> str:
    """`%RENEWAL_QUEUE%-poison` with the app setting filled in, as the host resolves binding expressions."""

    def setting(found: re.Match[str]) -> str:
        value = environ.get(found.group(1), "")
        if not value:
            raise QueueHostError(f"the queue binding names the setting {found.group(1)}, which is not set")
        return value

    return re.sub(r"%(\w+)%", setting, name)


def encode_message(text: str, encoding: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii") if encoding == "base64" else text


def decode_message(content: str, encoding: str) -> bytes:
    """The body the function gets; text that is not base64 under base64 encoding fails the delivery, as in Azure."""
    if encoding != "base64":
        return content.encode("utf-8")
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise QueueHostError("the message is not base64 text (host.json messageEncoding is base64)") from exc


def queue_endpoint_problem(connection_string: str) -> str | None:
    """Why the connection string cannot reach a queue service, or None when it can."""
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    if not connection_string.strip():
        return "the storage connection setting is empty"
    if parts.get("UseDevelopmentStorage", "").lower() == "true" or "QueueEndpoint" in parts:
        return None
    if any(key.endswith("Endpoint") for key in parts):
        return "the storage connection string names other endpoints but no QueueEndpoint"
    return None if parts.get("AccountName") else "the storage connection string names no account"


def bindings(function: Any) -> list[dict[str, Any]]:
    return list(json.loads(function.get_function_json())["bindings"])


class QueueOutput(func.Out[str]):
    """The `Out[str]` a queue output binding passes; its value is written when the invocation succeeds."""

    def __init__(self) -> None:
        self.value: str | None = None

    def set(self, val: str) -> None:
        self.value = val

    def get(self) -> str | None:
        return self.value


@dataclass
class _Trigger:
    name: str  # the function's name
    function: Any  # the registered function
    argument: str  # the binding's parameter name
    queue: str  # the resolved queue name
    connection: str  # the resolved connection string


class QueueHost:
    """Queue output bindings and queue triggers of the registered functions, against the storage account of each
    binding's `connection` setting. `QueueHost.start` returns None (after logging why) when queues cannot work."""

    def __init__(
        self,
        functions: Mapping[str, Any],
        context_factory: Callable[[str], Any],
        options: QueueOptions | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.functions = dict(functions)
        self.context_factory = context_factory
        self.options = options or load_queue_options()
        self.environ = os.environ if environ is None else environ
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.triggers = [t for t in (self._trigger(n, f) for n, f in self.functions.items()) if t is not None]

    @classmethod
    def start(cls, functions: Mapping[str, Any], context_factory: Callable[[str], Any]) -> QueueHost | None:
        try:
            host = cls(functions, context_factory)
            host.check()
        except QueueHostError as exc:
            log.warning("Queue functions are not run here and Prefer: respond-async is answered synchronously: %s", exc)
            return None
        host.run_in_background()
        return host

    def check(self) -> None:
        """Raise QueueHostError when the bindings cannot reach their queues."""
        try:
            import azure.storage.queue  # noqa: F401 - a development dependency (requirements-dev.in)
        except ImportError as exc:
            raise QueueHostError("the azure-storage-queue package is not installed (bash dev.sh setup)") from exc
        for name, function in self.functions.items():
            for binding in bindings(function):
                if binding.get("type") in ("queue", "queueTrigger"):
                    problem = queue_endpoint_problem(self._connection(binding))
                    if problem:
                        raise QueueHostError(f"{name}: {problem}")

    def _connection(self, binding: Mapping[str, Any]) -> str:
        setting = str(binding.get("connection") or "AzureWebJobsStorage")
        return self.environ.get(setting, "")

    def _trigger(self, name: str, function: Any) -> _Trigger | None:
        for binding in bindings(function):
            if binding.get("type") == "queueTrigger":
                queue = resolve_name(str(binding["queueName"]), self.environ)
                return _Trigger(name, function, str(binding["name"]), queue, self._connection(binding))
        return None

    def client(self, connection: str, queue: str) -> Any:
        """The queue's client, the queue created on first use (as the host creates queues it binds to)."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import QueueClient

        with self._lock:
            key = (connection, queue)
            if key not in self._clients:
                client = QueueClient.from_connection_string(connection, queue)
                try:
                    client.create_queue()
                except ResourceExistsError:
                    pass
                self._clients[key] = client
            return self._clients[key]

    # -- output bindings ---------------------------------------------------------------------------

    def outputs(self, name: str) -> dict[str, QueueOutput]:
        """The `Out[str]` arguments of a function's queue output bindings, by parameter name."""
        return {
            str(b["name"]): QueueOutput()
            for b in bindings(self.functions[name])
            if b.get("type") == "queue" and str(b.get("direction", "")).upper() == "OUT"
        }

    def write_outputs(self, name: str, outputs: Mapping[str, QueueOutput]) -> None:
        """After a successful invocation: each value set goes to its binding's queue (encoded per host.json)."""
        for binding in bindings(self.functions[name]):
            output = outputs.get(str(binding.get("name")))
            if binding.get("type") != "queue" or output is None or output.value is None:
                continue
            queue = resolve_name(str(binding["queueName"]), self.environ)
            self.client(self._connection(binding), queue).send_message(
                encode_message(output.value, self.options.message_encoding)
            )

    # -- triggers ----------------------------------------------------------------------------------

    def run_in_background(self) -> None:
        for trigger in self.triggers:
            thread = threading.Thread(target=self._poll, args=(trigger,), name=f"queue-{trigger.name}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _poll(self, trigger: _Trigger) -> None:
        """Deliver batches while there are messages; when the queue is empty wait, doubling up to
        maxPollingInterval (the host's backoff)."""
        wait_seconds = FIRST_POLL_SECONDS
        with ThreadPoolExecutor(max_workers=self.options.batch_size, thread_name_prefix=trigger.name) as pool:
            while not self.stopping.is_set():
                try:
                    delivered = self.deliver_batch(trigger, pool)
                except Exception as exc:  # storage unreachable for a while: keep polling, as the host does
                    log.warning("Polling queue %s failed: %s", trigger.queue, type(exc).__name__)
                    delivered = 0
                wait_seconds = (
                    FIRST_POLL_SECONDS if delivered else min(wait_seconds * 2, self.options.max_polling_interval)
                )
                self.stopping.wait(0 if delivered else wait_seconds)

    def deliver_batch(self, trigger: _Trigger, pool: ThreadPoolExecutor | None = None) -> int:
        """Receive up to batchSize messages and deliver each (in parallel on `pool`); the number delivered."""
        client = self.client(trigger.connection, trigger.queue)
        batch = list(
            client.receive_messages(
                messages_per_page=self.options.batch_size,
                max_messages=self.options.batch_size,
                visibility_timeout=LEASE_SECONDS,
            )
        )
        if pool is None:
            for message in batch:
                self.deliver(trigger, message)
        else:
            wait([pool.submit(self.deliver, trigger, message) for message in batch])
        return len(batch)

    def drain(self, timeout: float = 60.0) -> None:
        """Deliver until every trigger's queue is empty (messages waiting out a visibility timeout stay)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not sum(self.deliver_batch(trigger) for trigger in self.triggers):
                return

    def deliver(self, trigger: _Trigger, message: Any) -> bool:
        """One delivery, settled as the host settles it; True when the function succeeded."""
        client = self.client(trigger.connection, trigger.queue)
        try:
            body = decode_message(message.content, self.options.message_encoding)
            self._invoke(trigger, message, body)
        except Exception as exc:  # the host records a failed invocation and retries the message
            log.warning(
                "%s: delivery %d of message %s failed (%s)", trigger.name, message.dequeue_count, message.id, exc
            )
            self._settle_failed(trigger, client, message)
            return False
        client.delete_message(message)
        return True

    def _invoke(self, trigger: _Trigger, message: Any, body: bytes) -> None:
        queued = QueueMessage(
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            expiration_time=message.expires_on,
            insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )
        user_function = trigger.function.get_user_function()
        arguments: dict[str, Any] = {trigger.argument: queued}
        if "context" in inspect.signature(user_function).parameters:
            arguments["context"] = self.context_factory(trigger.name)
        user_function(**arguments)

    def _settle_failed(self, trigger: _Trigger, client: Any, message: Any) -> None:
        if (message.dequeue_count or 0) >= self.options.max_dequeue_count:
            poison = f"{trigger.queue}-poison"
            log.warning(
                "%s: message %s moved to %s after %d tries", trigger.name, message.id, poison, message.dequeue_count
            )
            self.client(trigger.connection, poison).send_message(message.content)  # the text as it was queued
            client.delete_message(message)
        else:
            client.update_message(message, visibility_timeout=int(self.options.visibility_timeout))
