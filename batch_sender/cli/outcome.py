"""What a run says at its end besides the report: one line when there was nothing to do, one
warning when a person should look (so that ``-q`` still says why the exit status is not 0)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from batch_sender.states import CampaignControl

if TYPE_CHECKING:
    from batch_sender.campaign import RunResult

__all__ = ["nothing_to_do", "warn_if_needed"]

log = logging.getLogger("batch_sender")


def nothing_to_do(result: RunResult) -> str:
    """The one line of a run that found its campaign with nothing left to send."""
    counts = ", ".join(f"{n:,} {s}" for s, n in result.counts.items())
    cancelled = result.halted == CampaignControl.CANCELLED
    what = "was cancelled" if cancelled else "has nothing left to send"
    return f"campaign {result.campaign} {what} ({counts or 'no recipients'}): nothing sent"


def warn_if_needed(result: RunResult) -> None:
    """One warning when a person should look (exit 1 or 4), so that -q still says why."""
    failed = result.counts.get("failed", 0)
    unknown = result.counts.get("unknown", 0) + result.counts.get("sending", 0)
    if result.exit_code == 4:
        log.warning(
            "campaign %s: %d recipients with an unknown outcome: `batch-sender reconcile %s`",
            result.campaign,
            unknown,
            result.campaign,
        )
    elif result.exit_code == 1:
        log.warning(
            "campaign %s: the gateway refused %d recipients: `batch-sender report %s`",
            result.campaign,
            failed,
            result.campaign,
        )
