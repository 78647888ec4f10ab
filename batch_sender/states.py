"""The state machines of a recipient and of a campaign: the values are the strings stored.

::

    pending ──► sending ──► sent | failed | unknown
       │
       ├──► expired                       (past --not-after)
       └──► cancelled                     (batch-sender cancel)
    rejected | duplicate | suppressed     (set at staging, never sent)

A recipient is claimed (``pending → sending``) in a committed transaction before its request
leaves; a ``sending`` row whose answer was never read is settled later (``querymsg``) or becomes
``unknown``, which is never resent unless the operator asks (``--resend-unknown``).
"""

from __future__ import annotations

import enum

__all__ = ["ENDED", "FINAL_STATES", "STAGED_ONLY", "CampaignControl", "CampaignStatus", "Status"]


class Status(enum.StrEnum):
    PENDING = "pending"  # staged, waiting to be sent
    SENDING = "sending"  # claimed by a worker; its request may be in flight
    SENT = "sent"  # the gateway accepted it and gave an API message ID
    FAILED = "failed"  # the gateway refused it (error code and description recorded)
    UNKNOWN = "unknown"  # the request left but its answer was lost; not resent automatically
    EXPIRED = "expired"  # still pending after --not-after; never sent
    CANCELLED = "cancelled"  # still pending when an operator cancelled the campaign; never sent
    REJECTED = "rejected"  # unusable number or text, found at staging
    DUPLICATE = "duplicate"  # the same normalised number appears earlier in the campaign
    SUPPRESSED = "suppressed"  # on the suppression (opt-out) list


#: States that will not change again by themselves.
FINAL_STATES = frozenset(
    {
        Status.SENT,
        Status.FAILED,
        Status.EXPIRED,
        Status.CANCELLED,
        Status.REJECTED,
        Status.DUPLICATE,
        Status.SUPPRESSED,
    }
)
#: States set at staging for rows that are never sent.
STAGED_ONLY = frozenset({Status.REJECTED, Status.DUPLICATE, Status.SUPPRESSED})


class CampaignStatus(enum.StrEnum):
    """A campaign's lifecycle: ``staging → ready → running → finished | stopped | interrupted``.

    ``stopped`` (the gateway stopped the run: credit, auth; or an operator paused it: exit 3)
    and ``interrupted`` (a signal: exit 130) are resumable: the next run of the campaign goes
    on from where it was.
    """

    STAGING = "staging"  # its rows are being written
    READY = "ready"  # every row staged, nothing sent yet
    RUNNING = "running"  # a run is sending
    FINISHED = "finished"  # every row final (or waiting for a later window)
    STOPPED = "stopped"  # the gateway (credit, auth) or an operator's pause stopped it: resumable
    INTERRUPTED = "interrupted"  # SIGINT/SIGTERM: resumable


#: Campaign statuses a run ends in.
ENDED = frozenset({CampaignStatus.FINISHED, CampaignStatus.STOPPED, CampaignStatus.INTERRUPTED})


class CampaignControl(enum.StrEnum):
    """An operator's control of a campaign (``campaigns.control``; NULL: none), apart from the
    status runs write: a pause outlives the run it stopped; a cancel is final."""

    PAUSED = "paused"  # workers stop claiming; its rows stay pending until `batch-sender resume`
    CANCELLED = "cancelled"  # its pending rows became cancelled; never sent
