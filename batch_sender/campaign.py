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

import contextlib
import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import TypeVar

from batch_sender import control, prepare, prepare_process, windows
from batch_sender.config import (
    AUTO_THREADS,
    SEND_PROCESS_MIN_ROWS,
    GatewaySettings,
    RunSettings,
)
from batch_sender.delivery import cost
from batch_sender.errors import (
    EXIT_FAILURES,
    EXIT_GATEWAY_STOP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNKNOWN,
    CampaignConflict,
    DatabaseLost,
    GatewayError,
    InputError,
    Interrupted,
    OutcomeUnknown,
    ProtocolError,
    RetryableError,
    RunStopped,
    StoreError,
)
from batch_sender.gateway import Credentials, GatewayClient
from batch_sender.send import policy
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
from batch_sender.states import CampaignControl, CampaignStatus, Status
from batch_sender.store import Campaign, Census, Store
from batch_sender.store import control as store_control
from batch_sender.store import operators as store_operators
from batch_sender.store.delivery import DeliveryStore
from batch_sender.store.records import STAGED_STATUS, StagedValues

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
    halted: CampaignControl | None = None  # an operator's pause or cancel ended (or prevented) it
    nothing_to_do: bool = False  # the campaign had nothing left to send: the gateway not asked

    @property
    def outcome(self) -> CampaignStatus:
        """How the run ended, as the campaign's status says it: a pause stops it (exit 3, as a
        gateway's stop: resumable once resumed), a signal interrupts it (exit 130)."""
        if self.interrupted:
            return CampaignStatus.INTERRUPTED
        if self.stop_reason is not None or self.halted == CampaignControl.PAUSED:
            return CampaignStatus.STOPPED
        return CampaignStatus.FINISHED

    @property
    def exit_code(self) -> int:
        """The run's exit status (README "Exit codes"): rows rejected, duplicate, suppressed,
        expired or cancelled are facts about the file and the campaign, not failures."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.stop_reason is not None or self.halted == CampaignControl.PAUSED:
            return EXIT_GATEWAY_STOP
        # rows in flight when an operator cancelled are other workers' to record
        in_flight = (
            0 if self.halted == CampaignControl.CANCELLED else self.counts.get(Status.SENDING, 0)
        )
        if self.counts.get(Status.UNKNOWN, 0) or in_flight:
            return EXIT_UNKNOWN
        if self.counts.get(Status.FAILED, 0):
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
            "halted": self.halted,
            "nothing_to_do": self.nothing_to_do,
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
    if not message["smart_encoding"]:  # absent when off: earlier campaigns still match
        del message["smart_encoding"]
    return message


def threads_for(settings: RunSettings) -> int:
    """Connections of the run's blocking client: its threads' requests in flight when couriers
    cannot go on an event loop (``--concurrency auto``: ``AUTO_THREADS``)."""
    if isinstance(settings.concurrency, int):
        return settings.concurrency
    return AUTO_THREADS


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


def dry_run(
    source: Source, settings: RunSettings, *, suppressed: frozenset[str] = frozenset()
) -> prepare.DryRunReport:
    """Count what :func:`run` would stage and send; nothing is written, nothing is sent.

    ``suppressed``: the opt-out list to count against (``suppression.numbers_for_dry_run``).
    """
    preparer = prepare.Preparer(settings, source.columns)
    return prepare.dry_run(source, preparer, chunk_size=settings.chunk_size, suppressed=suppressed)


def stage(
    store: Store, source: Source, settings: RunSettings, preparer: prepare.Preparer | None = None
) -> tuple[Campaign, bool]:
    """Stage the campaign if it is new; refuse a same-named campaign with other content."""
    digest = fingerprint(source, settings)
    existing = store.campaign(settings.name)
    if existing is None:
        preparer = preparer or prepare.Preparer(settings, source.columns)
        prepared = prepare_process.staged_rows(source, settings, preparer)
        rows: Iterator[StagedValues] = prepared
        if settings.max_rejected is not None:
            rows = _refusing_unusable(rows, settings.max_rejected)
        with contextlib.closing(prepared):  # a preparing process ends with staging
            existing, staged = store.stage_campaign(
                name=settings.name,
                source=source.description,
                fingerprint=digest,
                options=_options_record(settings),
                rows=rows,
            )
    else:
        staged = False
    _same_campaign(existing, digest, settings)
    if not staged and settings.max_rejected is not None:
        counts = store.counts(existing.id)
        check_unusable(counts.get(Status.REJECTED, 0), existing.total, settings.max_rejected)
    # opt-outs: staged rows on the suppression list, and numbers added since staging
    store_operators.suppress_pending(store, existing.id)
    return existing, staged


def _same_campaign(existing: Campaign, digest: str, settings: RunSettings) -> None:
    if existing.fingerprint != digest:
        raise CampaignConflict(
            f"campaign {settings.name!r} already exists with a different source, text or options "
            f"(source was {existing.source}); choose another --name"
        )


def check_unusable(rejected: int, total: int, max_rejected: float) -> None:
    """Refuse (InputError: exit 2, nothing sent) a file whose unusable share is over the limit:
    more rows rejected than ``--max-rejected`` percent is the wrong file, not bad luck."""
    if total and rejected * 100 > max_rejected * total:
        raise InputError(
            f"{rejected} of {total} rows ({rejected * 100 / total:.1f}%) are unusable, more than "
            f"--max-rejected {max_rejected:g}%: nothing sent (is it the right file?)"
        )


def _refusing_unusable(rows: Iterator[StagedValues], max_rejected: float) -> Iterator[StagedValues]:
    """``rows``, counted; past the last, over the limit, raise: staging rolls back whole."""
    total = rejected = 0
    for row in rows:
        total += 1
        if row[STAGED_STATUS] == _REJECTED:
            rejected += 1
        yield row
    check_unusable(rejected, total, max_rejected)


_REJECTED = Status.REJECTED.value


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
    controls: windows.Controls | None = None,
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
    if controls is not None:  # send windows, --not-after: a condition on every claim
        store.before_claim = controls.gate(store)
    stop = stop or threading.Event()
    early = _without_sending(store, source, settings)
    if early is not None:
        source.close()
        return early
    # fail fast on credentials or a wrong URL, before staging a million rows
    _first_contact(client, settings, stop)
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
        halt=control.ControlCheck(store, campaign.id),
        db_retry=settings.db_retry,
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
        try:
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
            if stats.database is not None:
                raise stats.database  # what it held is journaled: exit 3, resumable
            if CampaignControl.CANCELLED in (stats.halted, campaign.control):
                cancelled = store_control.cancel_pending(store, campaign.id)  # rows handed back
                log.info("campaign cancelled: %d more recipients cancelled", cancelled)
            if stats.stop is not None or stats.halted == CampaignControl.PAUSED:
                status = CampaignStatus.STOPPED  # exit 3 either way: resumable
            elif stats.interrupted:
                status = CampaignStatus.INTERRUPTED
            else:
                status = CampaignStatus.FINISHED
            store.set_status(campaign.id, status)
            result = _result(
                store,
                campaign,
                staged,
                stats.progress,
                stop_reason=str(stats.stop) if stats.stop is not None else None,
                interrupted=stats.interrupted,
                census=census,
                halted=None if stats.halted is None else CampaignControl(stats.halted),
            )
        except DatabaseLost:
            raise
        except StoreError as exc:  # past the sender (settling, the census): nothing is held
            raise DatabaseLost(
                f"{exc}; sending had begun, so the run stopped with nothing left to record: "
                "run the same command again once the database is back"
            ) from exc
        return result
    finally:
        sender.close()


def _without_sending(store: Store, source: Source, settings: RunSettings) -> RunResult | None:
    """The run's result when the campaign exists and there is nothing to send, or it is paused:
    then the gateway is not even asked (a cron tick after the end, or a pause, needs no network).
    None: go on and send."""
    existing = store.campaign(settings.name)
    if existing is None:
        return None
    _same_campaign(existing, fingerprint(source, settings), settings)
    if existing.control == CampaignControl.PAUSED:
        log.warning(
            "campaign %s is paused (since %s): nothing sent; `batch-sender resume %s` lets the "
            "next run continue",
            existing.name,
            existing.control_at.isoformat(timespec="seconds") if existing.control_at else "?",
            existing.name,
        )
        return _result(store, existing, False, SendProgress(), halted=CampaignControl.PAUSED)
    if existing.control == CampaignControl.CANCELLED:
        store_control.cancel_pending(store, existing.id)
    census = store.census(existing.id)
    left = census.counts[Status.PENDING] + census.counts[Status.SENDING]
    if settings.resend_unknown:
        left += census.counts[Status.UNKNOWN]
    if left:
        return None
    result = _result(store, existing, False, SendProgress(), census=census)
    result.nothing_to_do = True
    result.halted = existing.control
    return result


def _first_contact(client: GatewayClient, settings: RunSettings, stop: threading.Event) -> None:
    """Authenticate, retrying a gateway that cannot be reached as any request would be.

    ``auth`` changes nothing at the gateway, so every network failure is worth another try
    (bounded by ``--max-attempts``, with the usual backoff); after the last the run stops
    (exit 3, nothing staged: run it again later). Wrong credentials stop it at once (exit 3); an
    answer that is not the gateway's (a wrong URL) is a configuration error (exit 2).
    """
    try:
        for attempt in policy.policy(
            max_attempts=settings.max_attempts,
            stop_event=stop,
            scale=settings.backoff_scale,
            retryable=_unreached,
        ):
            with attempt:
                number = attempt.retry_state.attempt_number
                if number > 1:
                    log.warning(
                        "gateway at %s not reached; trying again (attempt %d of %d)",
                        client.url,
                        number,
                        settings.max_attempts,
                    )
                client.auth()
    except RunStopped:
        raise
    except GatewayError as exc:
        if not _unreached(exc):
            raise InputError(f"cannot talk to the gateway at {client.url}: {exc}") from exc
        if stop.is_set():
            raise Interrupted("interrupted while trying to reach the gateway") from exc
        raise RunStopped(
            f"cannot reach the gateway at {client.url} after {settings.max_attempts} attempts "
            f"({exc}); nothing sent: run again later"
        ) from exc


def _unreached(exc: BaseException) -> bool:
    """A failure of the network or of the gateway's servers, not an answer about our request."""
    if isinstance(exc, ProtocolError):  # an answer, but not the gateway's: a wrong URL
        return False
    return isinstance(exc, RetryableError | OutcomeUnknown)


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
    halted: CampaignControl | None = None,
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
        halted=halted,
    )
