"""The one-line summaries of the nightly RCL runs (what the timer logs), and the readable list of names they use.
Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shared.rcl.decisions import NearExpiry, Outcome, Verdict


def describe_names(names: Sequence[str], limit: int = 20) -> str:
    """A readable list for a log line: at most `limit` names, each at most 100 characters."""
    shown = ", ".join(n if len(n) <= 100 else n[:97] + "..." for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass(frozen=True)
class RenewalRunSummary:
    scheduled: tuple[str, ...]
    late: bool = False

    def line(self) -> str:
        late = " (run was late)" if self.late else ""
        if not self.scheduled:
            return f"RCL renewal{late}: nothing was due; RCL scheduled 0 certificates"
        return (
            f"RCL renewal{late}: RCL scheduled {len(self.scheduled)} certificate(s): {describe_names(self.scheduled)}"
        )


@dataclass(frozen=True)
class VerifySummary:
    renewed: tuple[str, ...]
    installed: tuple[str, ...]
    pending: tuple[str, ...]
    failed: tuple[str, ...]
    near_expiry: tuple[str, ...]
    listed: int
    warning_days: int
    not_installed: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, verdicts: Sequence[Verdict], near: Sequence[NearExpiry], listed: int, warning_days: int
    ) -> VerifySummary:
        def names(outcome: Outcome, installed: bool | None = None) -> tuple[str, ...]:
            return tuple(
                v.record.certificate_name
                for v in verdicts
                if v.outcome is outcome and (installed is None or v.installed is installed)
            )

        return cls(
            renewed=names(Outcome.RENEWED) + names(Outcome.NOT_INSTALLED),
            installed=names(Outcome.RENEWED, installed=True),
            pending=names(Outcome.PENDING),
            failed=names(Outcome.FAILED),
            near_expiry=tuple(n.certificate.name for n in near),
            listed=listed,
            warning_days=warning_days,
            not_installed=names(Outcome.NOT_INSTALLED),
        )

    def line(self) -> str:
        parts = [
            f"{len(self.renewed)} renewed ({len(self.installed)} installed)",
            f"{len(self.pending)} pending",
            f"{len(self.failed)} failed",
        ]
        text = f"RCL check of {self.listed} listed certificate(s): " + ", ".join(parts)
        labelled = (
            ("renewed", self.renewed),
            ("pending", self.pending),
            ("failed", self.failed),
        )
        for label, names in labelled:
            if names:
                text += f"; {label}: {describe_names(names)}"
        text += f"; {len(self.near_expiry)} expire within {self.warning_days} days"
        if self.near_expiry:
            text += f": {describe_names(self.near_expiry)}"
        return text
