"""One campaign run, start to end: source → prepare → stage → settle → send → summary.

This is the library function behind ``batch-sender run``; the CLI only parses options into
:class:`~batch_sender.config.RunSettings` and calls :func:`run`.

Any number of runs of one campaign, in processes on any machines sharing a PostgreSQL or
MariaDB store, share its work (DESIGN.md §7): the first stages it and the others join; each
renews a lease on its claims (a heartbeat) and settles the rows of workers whose lease lapsed;
they keep to one account-wide ``--rate`` through the database; and none finishes while another
live worker still has rows in flight, so every process ends with the same counts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import TypeVar

from batch_sender import prepare
from batch_sender.config import SEND_PROCESS_MIN_ROWS, GatewaySettings, RunSettings
from batch_sender.delivery import cost
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
from batch_sender.send.coordinator import Sender, SendProgress
from batch_sender.send.leases import worker_id
from batch_sender.send.pool import CourierSpec
from batch_sender.send.ratelimit import RateLimiter, SharedRateLimiter
from batch_sender.send.scaleout import (
    DEFAULT_LEASE,
    FINISH_MARGIN,
    Heartbeat,
    finish,
    settle_orphans,
)
from batch_sender.send.settle import DEFAULT_MAX_PROCESSING
from batch_sender.sources import Source
from batch_sender.states import CampaignStatus, Status
from batch_sender.store import Campaign, Census, Store
from batch_sender.store import operators as store_operators
from batch_sender.store.delivery import DeliveryStore

__all__ = ["RunResult", "choose_name", "dry_run", "fingerprint", "open_client", "run"]

log = logging.getLogger(__name__)


T = TypeVar("T")


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
        "message": _message_identity(settings),
    }
    if settings.country_column is not None:  # absent otherwise: earlier campaigns still match
        identity["country_column"] = settings.country_column
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def choose_name(store: Store, source: Source, settings: RunSettings, *, new: bool) -> str:
    """The campaign a run without ``--name`` belongs to (``settings.name`` is its dated default).

    The default name follows the local date, so the same command under another time zone, or a
    crashed run resumed after midnight, would make a second campaign and send everything again.
    So the campaign is found by what it sends (:func:`fingerprint`): an existing campaign with
    this source, text and options is resumed, whatever its name (finished: nothing is sent
    again). ``new`` (``--new-campaign``) is the operator's explicit "send it again": a fresh
    dated name, with a suffix if that is taken.
    """
    taken = {c.name: c for c in store.campaigns()}
    if new:
        name, n = settings.name, 1
        while name in taken:
            n += 1
            name = f"{settings.name}-{n}"
        log.info("--new-campaign: sending as a new campaign %r", name)
        return name
    digest = fingerprint(source, settings)
    same = [c for c in taken.values() if c.fingerprint == digest]
    if not same:
        return settings.name
    latest = max(same, key=lambda c: (c.created_at, c.id))
    if latest.name != settings.name:
        log.warning(
            "campaign %r (%s, created %s) already has this source, text and options: resuming "
            "it instead of starting %r (it sends only what is still pending); to send again on "
            "purpose, use --new-campaign or --name",
            latest.name,
            latest.status,
            latest.created_at.strftime("%Y-%m-%d %H:%M UTC"),
            settings.name,
        )
    return latest.name


def _message_identity(settings: RunSettings) -> dict[str, object]:
    """The message options, less ``deliv_time``: ``--at`` recomputes it each run (minutes)."""
    message = asdict(settings.message)
    message["params"] = [p for p in settings.message.params if p[0] != "deliv_time"]
    return message


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
            rows=preparer.staged(source.records()),
        )
    else:
        staged = False
    if existing.fingerprint != digest:
        raise CampaignConflict(
            f"campaign {settings.name!r} already exists with a different source, text or options "
            f"(source was {existing.source}); choose another --name"
        )
    # opt-outs: staged rows on the suppression list, and numbers added since staging
    store_operators.suppress_pending(store, existing.id)
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
    lease: float = DEFAULT_LEASE,
    shared_rate: bool | None = None,
    finish_wait: float | None = None,
    max_processing: float = DEFAULT_MAX_PROCESSING,
) -> RunResult:
    """Run one campaign to its end (or until stopped) and return its counts.

    Staging happens once; a second run of the same campaign settles what an earlier run left in
    flight, then sends only what is still ``pending``. Runs of the same campaign at the same
    time share it: see the module docstring. ``lease`` is how long (s) this worker's claims stay
    its own without a heartbeat (it renews them every ``lease / 3``); ``shared_rate`` keeps
    ``settings.rate`` through the database (default: when the store is PostgreSQL or MariaDB);
    ``finish_wait`` bounds (s, default ``2 × lease + 30``) how long the end of the run waits for
    other workers' in-flight rows when nothing changes. ``max_processing`` (s) is how long the
    gateway may hold a request before accepting it: ERR 104 is trusted only that long after a
    request can have left (``settle``).
    """
    stop = stop or threading.Event()
    try:
        # fail fast on credentials or a wrong URL, before staging a million rows
        client.auth()
    except RunStopped:
        raise
    except GatewayError as exc:
        raise InputError(f"cannot reach the gateway at {client.url}: {exc}") from exc
    campaign, staged = stage(store, source, settings, preparer)
    source.close()
    worker = worker_id()
    if shared_rate is None:
        shared_rate = store.shared
    limiter = _limiter(store, client, settings.rate, shared=shared_rate)
    sender = Sender(
        store=store,
        client=client,
        campaign_id=campaign.id,
        options=settings.message,
        chunk_size=settings.chunk_size,
        concurrency=settings.concurrency,
        limiter=limiter,
        max_attempts=settings.max_attempts,
        max_wait=settings.max_wait,
        stop=stop,
        worker=worker,
        progress=progress,
        backoff_scale=settings.backoff_scale,
        process=_courier_spec(settings, client, limiter, rows=campaign.total),
        lease=lease,
    )
    # the sending process (if any) starts up while the run counts, settles and checks credit
    sender.start_early()
    try:
        # A campaign this run has just staged has nothing to settle or requeue: its pending
        # rows can be tallied for the credit check now, on another core, while they are
        # counted here (two scans of the campaign at once; 1M rows: 0.4 and 0.6 s).
        tally = _in_background(DeliveryStore(store).pending_tally, campaign.id) if staged else None
        if on_staged is not None:
            on_staged(campaign, _counts(store, campaign.id))
        settle_orphans(
            store, client, campaign.id, lease, max_processing=max_processing, sleep=stop.wait
        )
        if settings.resend_unknown:
            # ask first: an unknown row the gateway did accept must not be sent again
            settle_orphans(
                store,
                client,
                campaign.id,
                lease,
                statuses=(Status.UNKNOWN,),
                max_processing=max_processing,
                sleep=stop.wait,
            )
            if not stop.is_set():  # stopped while waiting for answers that may still land
                requeued = store.requeue_unknown(campaign.id)
                log.info("--resend-unknown: %d unknown recipients back to pending", requeued)
        try:
            _check_balance(
                store,
                client,
                campaign.id,
                allow_partial=settings.allow_partial,
                tally=tally.result() if tally is not None else None,
            )
        except cost.InsufficientCredit as exc:
            store.set_status(campaign.id, CampaignStatus.STOPPED)
            return _result(store, campaign, staged, SendProgress(), stop_reason=str(exc))
        store.set_status(campaign.id, CampaignStatus.RUNNING)
        with Heartbeat(
            store, client, campaign.id, worker, lease=lease, max_processing=max_processing
        ):
            stats = sender.run()
            stats, census = finish(
                store,
                client,
                sender,
                stats,
                campaign.id,
                stop=stop,
                lease=lease,
                finish_wait=(
                    2 * lease + FINISH_MARGIN + max_processing
                    if finish_wait is None
                    else finish_wait
                ),
                max_processing=max_processing,
            )
        if stats.stop is not None:
            status = CampaignStatus.STOPPED
        elif stats.interrupted:
            status = CampaignStatus.INTERRUPTED
        else:
            status = CampaignStatus.FINISHED
        store.set_status(campaign.id, status)
        return _result(
            store,
            campaign,
            staged,
            stats.progress,
            stop_reason=str(stats.stop) if stats.stop is not None else None,
            interrupted=stats.interrupted,
            census=census,
        )
    finally:
        sender.close()


def _check_balance(
    store: Store,
    client: GatewayClient,
    campaign_id: int,
    *,
    allow_partial: bool,
    tally: cost.PrefixTally | None = None,
) -> None:
    """Refuse to start when ``getbalance`` is short of the pending rows' estimated cost.

    The estimate prices each number prefix once with ``routecoverage`` (1 credit per part where
    it cannot tell); ``allow_partial`` only logs the shortfall. ``tally``: the pending rows'
    parts per prefix, if already taken.
    """
    if tally is None:
        tally = DeliveryStore(store).pending_tally(campaign_id)
    if not tally.parts:
        return
    needed = cost.estimate(client, tally)
    check = cost.check_balance(client, needed, allow_partial=allow_partial)
    log.info(
        "estimated cost %g credits for %d parts; balance %g",
        needed.credits,
        needed.parts,
        check.balance,
    )


def account_key(client: GatewayClient) -> str:
    """The gateway account a shared rate belongs to: ``api_id:user@host`` (never the password)."""
    import httpx

    credentials = client._credentials  # noqa: SLF001 (GatewayClient has no public accessor yet)
    host = httpx.URL(client.url).host
    return f"{credentials.api_id}:{credentials.user}@{host}"


def _limiter(
    store: Store, client: GatewayClient, rate: float | None, *, shared: bool
) -> RateLimiter:
    """This process's rate limiter: its own schedule, or the account's through the store."""
    if rate is None or not shared:
        return RateLimiter(rate)
    reserve = functools.partial(store.reserve_rate, account_key(client), rate=rate)
    return SharedRateLimiter(rate, reserve)


def _courier_spec(
    settings: RunSettings, client: GatewayClient, limiter: RateLimiter, *, rows: int
) -> CourierSpec | None:
    """How to start a sending process for this run, or None to send from threads of this one.

    A process of its own gives the HTTP side a core, away from the coordinator's GIL: worth its
    start-up (about half a second) on a large campaign. It needs a client it can rebuild (not
    one over a test transport) and a rate schedule of its own (a shared one needs the database).
    """
    mode = settings.send_process
    if mode == "never" or (mode == "auto" and rows < SEND_PROCESS_MIN_ROWS):
        return None
    spec = client.spec()
    if spec is None or isinstance(limiter, SharedRateLimiter):
        log.info("sending from threads of this process: the client or the rate is not its own")
        return None
    return CourierSpec(
        client=spec,
        options=settings.message,
        concurrency=settings.concurrency,
        rate=settings.rate,
        max_attempts=settings.max_attempts,
        max_wait=settings.max_wait,
        backoff_scale=settings.backoff_scale,
        log_level=logging.getLogger("batch_sender").getEffectiveLevel(),
    )


def _in_background(call: Callable[[int], T], argument: int) -> Future[T]:
    """``call(argument)`` on a thread of its own; its result (or exception) in the future."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(call(argument))
        except BaseException as exc:  # handed to whoever asks for the result
            future.set_exception(exc)

    threading.Thread(target=run, name="batch-sender-tally", daemon=True).start()
    return future


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
    census: Census | None = None,
) -> RunResult:
    census = census or store.census(campaign.id)
    return RunResult(
        campaign=campaign.name,
        counts={str(k): v for k, v in census.counts.items() if v},
        parts=census.parts,
        staged=staged,
        progress=progress,
        stop_reason=stop_reason,
        interrupted=interrupted,
    )
