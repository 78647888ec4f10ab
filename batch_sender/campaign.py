"""One campaign run, start to end: source → prepare → stage → settle → send → summary.

This is the library function behind ``batch-sender run``; the CLI only parses options into
:class:`~batch_sender.config.RunSettings` and calls :func:`run`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

from batch_sender import prepare, settle
from batch_sender.config import GatewaySettings, RunSettings
from batch_sender.errors import (
    EXIT_FAILURES,
    EXIT_GATEWAY_STOP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNKNOWN,
    CampaignConflict,
    GatewayError,
    InputError,
    RunStopped,
)
from batch_sender.gateway import Credentials, GatewayClient
from batch_sender.ratelimit import RateLimiter
from batch_sender.sender import Sender, SendProgress
from batch_sender.sources import Source
from batch_sender.states import Status
from batch_sender.store import Campaign, Store

__all__ = ["RunResult", "dry_run", "fingerprint", "open_client", "run"]

log = logging.getLogger(__name__)

#: campaign.status values
STATUS_FINISHED = "finished"
STATUS_STOPPED = "stopped"
STATUS_INTERRUPTED = "interrupted"
STATUS_RUNNING = "running"


@dataclass(slots=True)
class RunResult:
    """The end of a run: the campaign's counts (all its rows, not only this run's), why it ended."""

    campaign: str
    counts: dict[str, int]
    parts: int
    staged: bool  # this run staged the campaign (False: it resumed an existing one)
    progress: SendProgress
    stop_reason: str | None = None
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.stop_reason is not None:
            return EXIT_GATEWAY_STOP
        if self.counts.get(Status.UNKNOWN, 0) or self.counts.get(Status.SENDING, 0):
            return EXIT_UNKNOWN
        if any(self.counts.get(s, 0) for s in (Status.FAILED, Status.REJECTED)):
            return EXIT_FAILURES
        return EXIT_OK

    def as_dict(self) -> dict[str, object]:
        return {
            "campaign": self.campaign,
            "counts": dict(self.counts),
            "parts": self.parts,
            "staged": self.staged,
            "requests": self.progress.requests,
            "retries": self.progress.retries,
            "stop_reason": self.stop_reason,
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
        }


def fingerprint(source: Source, settings: RunSettings) -> str:
    """What makes a campaign the same campaign: its source, its text and its message options."""
    identity = {
        "source": source.identity,
        "text": settings.text,
        "country": settings.country,
        "strict": settings.strict_numbers,
        "message": asdict(settings.message),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def open_client(gateway: GatewaySettings, *, max_connections: int) -> GatewayClient:
    """The gateway client for a run; credentials must be set (InputError otherwise)."""
    missing = [
        env
        for env, value in (
            ("CLICKATELL_API_ID", gateway.api_id),
            ("CLICKATELL_USER", gateway.user),
            ("CLICKATELL_PASSWORD", gateway.password),
        )
        if not value
    ]
    if missing:
        raise InputError(f"gateway credentials missing: set {', '.join(missing)}")
    import httpx

    return GatewayClient(
        url=gateway.url,
        credentials=Credentials(gateway.api_id, gateway.user, gateway.password),
        max_connections=max_connections,
        timeout=httpx.Timeout(
            gateway.read_timeout, connect=gateway.connect_timeout, pool=gateway.read_timeout
        ),
    )


def dry_run(source: Source, settings: RunSettings) -> prepare.DryRunReport:
    """Count what :func:`run` would stage and send; nothing is written, nothing is sent."""
    preparer = prepare.Preparer(settings, source.columns)
    return prepare.dry_run(source, preparer, chunk_size=settings.chunk_size)


def stage(
    store: Store, source: Source, settings: RunSettings, preparer: prepare.Preparer | None = None
) -> tuple[Campaign, bool]:
    """Stage the campaign if it is new; refuse a same-named campaign with other content."""
    digest = fingerprint(source, settings)
    existing = store.campaign(settings.name)
    if existing is None:
        preparer = preparer or prepare.Preparer(settings, source.columns)
        existing, staged = store.stage_campaign(
            name=settings.name,
            source=source.description,
            fingerprint=digest,
            options=_options_record(settings),
            rows=(preparer(row) for row in source),
        )
    else:
        staged = False
    if existing.fingerprint != digest:
        raise CampaignConflict(
            f"campaign {settings.name!r} already exists with a different source, text or options "
            f"(source was {existing.source}); choose another --name"
        )
    return existing, staged


def _options_record(settings: RunSettings) -> dict[str, object]:
    record = asdict(settings.message)
    record["text"] = settings.text
    record["country"] = settings.country
    return record


def run(
    settings: RunSettings,
    *,
    source: Source,
    store: Store,
    client: GatewayClient,
    stop: threading.Event | None = None,
    progress: Callable[[SendProgress], None] | None = None,
    on_staged: Callable[[Campaign, dict[str, int]], None] | None = None,
    preparer: prepare.Preparer | None = None,
    lease: float = 300.0,
) -> RunResult:
    """Run one campaign to its end (or until stopped) and return its counts.

    Staging happens once; a second run of the same campaign settles what an earlier run left in
    flight, then sends only what is still ``pending``.
    """
    stop = stop or threading.Event()
    campaign, staged = stage(store, source, settings, preparer)
    source.close()
    if on_staged is not None:
        on_staged(campaign, _counts(store, campaign.id))
    try:
        client.auth()  # fail fast on credentials or a wrong URL, before claiming anything
    except RunStopped as exc:
        store.set_status(campaign.id, STATUS_STOPPED)
        return _result(store, campaign, staged, SendProgress(), stop_reason=str(exc))
    except GatewayError as exc:
        raise InputError(f"cannot reach the gateway at {client.url}: {exc}") from exc
    settle.settle(store, client, campaign.id, lease=lease)
    if settings.resend_unknown:
        requeued = store.requeue_unknown(campaign.id)
        log.info("--resend-unknown: %d unknown recipients back to pending", requeued)
    store.set_status(campaign.id, STATUS_RUNNING)
    stats = Sender(
        store=store,
        client=client,
        campaign_id=campaign.id,
        options=settings.message,
        chunk_size=settings.chunk_size,
        concurrency=settings.concurrency,
        limiter=RateLimiter(settings.rate),
        max_attempts=settings.max_attempts,
        max_wait=settings.max_wait,
        stop=stop,
        progress=progress,
    ).run()
    if stats.stop is not None:
        status = STATUS_STOPPED
    elif stats.interrupted:
        status = STATUS_INTERRUPTED
    else:
        status = STATUS_FINISHED
    store.set_status(campaign.id, status)
    return _result(
        store,
        campaign,
        staged,
        stats.progress,
        stop_reason=str(stats.stop) if stats.stop is not None else None,
        interrupted=stats.interrupted,
    )


def _counts(store: Store, campaign_id: int) -> dict[str, int]:
    return {str(k): v for k, v in store.counts(campaign_id).items() if v}


def _result(
    store: Store,
    campaign: Campaign,
    staged: bool,
    progress: SendProgress,
    *,
    stop_reason: str | None = None,
    interrupted: bool = False,
) -> RunResult:
    return RunResult(
        campaign=campaign.name,
        counts=_counts(store, campaign.id),
        parts=store.parts_total(campaign.id),
        staged=staged,
        progress=progress,
        stop_reason=stop_reason,
        interrupted=interrupted,
    )
