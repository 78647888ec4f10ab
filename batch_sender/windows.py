"""When a recipient may be sent: send windows in local time, ``--not-after``, and ``--at``.

**Windows.** ``--window 08:00-20:00`` holds each recipient until it is between 08:00 and 20:00
where the recipient is. The time zones come from the number through phonenumbers' time-zone
data (the longest matching prefix: ``1212…`` is New York, ``27…`` Johannesburg, ``61…`` every
Australian zone); a number with several zones is sent only while the window is open in all of
them (the safe reading), one with none in ``fallback`` (the machine's zone), and ``--tz ZONE``
puts every recipient in ZONE. Each pending row gets its zone's prefix (``recipients.tz_key``)
the first time a windowed run needs it; before each claim the :class:`ClaimGate` works out which
keys are open *now* and the claim takes only those rows. When none is open the run ends cleanly
and the rows stay ``pending`` for the next (cron) run.

**Expiry.** ``--not-after`` (a time, or a duration counted from the campaign's staging) turns
every row still ``pending`` at that moment into ``expired``, checked before each claim.

**Scheduling.** ``--at TIME`` becomes sendmsg's ``deliv_time`` (minutes from now, at most
10080): the gateway holds the messages until then.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from phonenumbers.tzdata import TIMEZONE_DATA, TIMEZONE_LONGEST_PREFIX

from batch_sender.errors import InputError
from batch_sender.store import Store
from batch_sender.store import operators as sql

__all__ = [
    "MAX_DELIV_MINUTES",
    "ClaimGate",
    "Controls",
    "Deadline",
    "Window",
    "controls",
    "deliv_minutes",
    "local_zone",
    "parse_deadline",
    "parse_time",
    "parse_zone",
    "schedule_params",
    "utcnow",
    "zone_key",
    "zones",
]

log = logging.getLogger(__name__)

MAX_DELIV_MINUTES = 10080  # sendmsg deliv_time: at most 7 days ahead
UNKNOWN_ZONE = "Etc/Unknown"  # phonenumbers' answer when it knows no zone
_HHMM = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def local_zone() -> tzinfo:
    """The machine's time zone (what a naive ``--at``/``--not-after`` time is read in)."""
    zone = datetime.now().astimezone().tzinfo
    return zone if zone is not None else UTC


def parse_zone(name: str) -> ZoneInfo:
    """An IANA zone name (``Africa/Johannesburg``), or InputError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InputError(
            f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)"
        ) from exc


@dataclass(frozen=True, slots=True)
class Window:
    """A daily window of local time, ``start`` inclusive, ``end`` exclusive; may wrap midnight."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Window:
        """``"08:00-20:00"`` (or ``"22:00-06:00"`` across midnight)."""
        first, sep, second = text.strip().partition("-")
        a, b = _HHMM.fullmatch(first.strip()), _HHMM.fullmatch(second.strip())
        if not sep or a is None or b is None:
            raise InputError(f"--window {text!r}: expected HH:MM-HH:MM, e.g. 08:00-20:00")
        start, end = time(int(a[1]), int(a[2])), time(int(b[1]), int(b[2]))
        if start == end:
            raise InputError(f"--window {text!r}: start and end are equal")
        return cls(start, end)

    def contains(self, local: time) -> bool:
        """Whether a local wall-clock time is inside the window."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def open_in(self, zones: tuple[tzinfo, ...], now: datetime) -> bool:
        """Whether the window is open right now in every one of ``zones``."""
        return all(self.contains(now.astimezone(zone).time()) for zone in zones)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def zone_key(msisdn: str) -> str:
    """The longest prefix of ``msisdn`` in phonenumbers' time-zone data ("" when none)."""
    for length in range(min(TIMEZONE_LONGEST_PREFIX, len(msisdn)), 0, -1):
        if msisdn[:length] in TIMEZONE_DATA:
            return msisdn[:length]
    return ""


def zones(key: str | None, fallback: tzinfo) -> tuple[tzinfo, ...]:
    """The time zones of a :func:`zone_key` (``fallback`` for unknown ones)."""
    names = TIMEZONE_DATA.get(key or "") or ()
    found: list[tzinfo] = []
    for name in names:
        if name == UNKNOWN_ZONE:
            continue
        try:
            found.append(ZoneInfo(name))
        except ZoneInfoNotFoundError:  # a zone the system's tzdata lacks
            continue
    return tuple(found) or (fallback,)


def parse_time(text: str, *, zone: tzinfo, option: str) -> datetime:
    """``"2026-12-01 09:00"`` (in ``zone``) or ISO 8601 with an offset, as an aware datetime."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InputError(
            f"{option} {text!r}: expected a time such as '2026-12-01 09:00' "
            "(or ISO 8601 with an offset)"
        ) from exc
    return value.replace(tzinfo=zone) if value.tzinfo is None else value


@dataclass(frozen=True, slots=True)
class Deadline:
    """``--not-after``: an absolute time, or a duration from the campaign's staging."""

    at: datetime | None = None
    after: timedelta | None = None

    def resolve(self, created_at: datetime) -> datetime:
        """The moment past which pending rows expire."""
        if self.at is not None:
            return self.at
        assert self.after is not None
        return created_at + self.after

    def __str__(self) -> str:
        return self.at.isoformat() if self.at is not None else f"{self.after} after staging"


def parse_deadline(text: str, *, zone: tzinfo) -> Deadline:
    """``--not-after``: ``"2026-12-01 20:00"`` or a duration ``"6h"``, ``"1d12h"``, ``"90m"``."""
    stripped = text.strip().lower()
    match = _DURATION.fullmatch(stripped)
    if stripped and match is not None and any(match.groups()):
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        return Deadline(after=timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds))
    return Deadline(at=parse_time(text, zone=zone, option="--not-after"))


def deliv_minutes(at: datetime, now: datetime) -> int:
    """sendmsg ``deliv_time`` for ``--at``: whole minutes from ``now``, 1 to 10080."""
    minutes = math.ceil((at - now).total_seconds() / 60)
    if minutes < 1:
        raise InputError(f"--at {at.isoformat()} is not in the future")
    if minutes > MAX_DELIV_MINUTES:
        raise InputError(
            f"--at {at.isoformat()} is more than 7 days ahead (the gateway's deliv_time limit)"
        )
    return minutes


def utcnow() -> datetime:
    """The current time (UTC); tests replace it to freeze the clock."""
    return datetime.now(UTC)


class ClaimGate:
    """Called by the store before each claim: expire past ``--not-after``, keep to the window.

    Returns the extra condition on the rows a claim may take, built by ``store.operators``:
    None (any pending row), nothing now, or the rows whose time-zone key is open. ``now`` is
    injectable (tests freeze the clock). Install it with
    ``store.before_claim = ClaimGate(store, ...)``.
    """

    def __init__(
        self,
        store: Store,
        *,
        window: Window | None = None,
        zone: tzinfo | None = None,
        not_after: Deadline | None = None,
        fallback: tzinfo | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._window = window
        self._zone = zone
        self._not_after = not_after
        self._fallback = fallback or local_zone()
        self._now = now or utcnow
        self._deadlines: dict[int, datetime] = {}
        self._keys: dict[int, set[str | None]] = {}
        self._expired: set[int] = set()
        self.waiting_logged = False

    def __call__(self, campaign_id: int) -> sql.ClaimCondition | None:
        now = self._now()
        if self._not_after is not None and self._past_deadline(campaign_id, now):
            return sql.claims_nothing()
        if self._window is None:
            return None
        if self._zone is not None:
            is_open = self._window.contains(now.astimezone(self._zone).time())
            return None if is_open else self._closed(campaign_id)
        keys = self._keys_of(campaign_id)
        open_keys = [k for k in keys if self._window.open_in(zones(k, self._fallback), now)]
        if len(open_keys) == len(keys):
            return None
        if not open_keys:
            return self._closed(campaign_id)
        return sql.tz_keys_among(open_keys)

    def is_open(self, msisdn: str, now: datetime | None = None) -> bool:
        """Whether one number's window is open (for reports and tests)."""
        if self._window is None:
            return True
        when = now or self._now()
        if self._zone is not None:
            return self._window.contains(when.astimezone(self._zone).time())
        return self._window.open_in(zones(zone_key(msisdn), self._fallback), when)

    def _past_deadline(self, campaign_id: int, now: datetime) -> bool:
        assert self._not_after is not None
        deadline = self._deadlines.get(campaign_id)
        if deadline is None:
            created = sql.campaign_created_at(self._store, campaign_id)
            deadline = self._deadlines[campaign_id] = self._not_after.resolve(created)
        if now < deadline:
            return False
        expired = sql.expire_pending(self._store, campaign_id)
        if expired or campaign_id not in self._expired:
            log.warning(
                "past --not-after (%s): %d pending recipients expired, nothing more is sent",
                deadline.isoformat(),
                expired,
            )
            self._expired.add(campaign_id)
        return True

    def _keys_of(self, campaign_id: int) -> set[str | None]:
        keys = self._keys.get(campaign_id)
        if keys is None:
            filled = sql.fill_tz_keys(self._store, campaign_id, zone_key)
            if filled:
                log.info("send window %s: time zones found for %d recipients", self._window, filled)
            keys = self._keys[campaign_id] = sql.pending_tz_keys(self._store, campaign_id)
        return keys

    def _closed(self, campaign_id: int) -> sql.ClaimCondition:
        if not self.waiting_logged:
            self.waiting_logged = True
            log.info(
                "send window %s is closed for every pending recipient now: they wait for a "
                "later run",
                self._window,
            )
        return sql.claims_nothing()


@dataclass(frozen=True, slots=True)
class Controls:
    """Send windows and --not-after, parsed; ``gate`` installs them on a store."""

    window: Window | None = None
    zone: tzinfo | None = None  # --tz
    not_after: Deadline | None = None

    def gate(self, store: Store) -> ClaimGate | None:
        if self.window is None and self.not_after is None:
            return None
        return ClaimGate(store, window=self.window, zone=self.zone, not_after=self.not_after)


def controls(*, window: str | None, tz: str | None, not_after: str | None) -> Controls:
    zone = parse_zone(tz) if tz else None
    return Controls(
        window=Window.parse(window) if window else None,
        zone=zone,
        not_after=(parse_deadline(not_after, zone=zone or local_zone()) if not_after else None),
    )


def schedule_params(
    at_time: str | None, validity: int | None, params: tuple[str, ...], zone: tzinfo | None
) -> tuple[tuple[str, str], ...]:
    """--at and --validity as sendmsg parameters (deliv_time in minutes from now, validity)."""
    given = {item.partition("=")[0] for item in params}
    out: list[tuple[str, str]] = []
    if at_time is not None:
        if "deliv_time" in given:
            raise InputError("--at and --param deliv_time=… do not go together")
        at = parse_time(at_time, zone=zone or local_zone(), option="--at")
        out.append(("deliv_time", str(deliv_minutes(at, utcnow()))))
    if validity is not None:
        if "validity" in given:
            raise InputError("--validity and --param validity=… do not go together")
        out.append(("validity", str(validity)))
    return tuple(out)
