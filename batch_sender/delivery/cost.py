"""What a campaign will cost, and whether the account can pay for it.

The estimate is message parts × the charge per part of each destination, asked once per number
prefix (:data:`PREFIX_DIGITS` digits) with ``routecoverage`` — the gateway's current minimum
single-part charge for that prefix; it must not be asked per message (clickatell-api.md §4).

Fallback, documented in docs/DELIVERY.md: when ``routecoverage`` cannot be asked (a gateway
error other than auth/credit), the prefix is priced at :data:`FALLBACK_CREDITS_PER_PART` (1 credit
per part, the price the rest of batch-sender assumes); a prefix the gateway says it does not
route is counted apart (``unrouted``: those messages would fail, costing nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from batch_sender.errors import GatewayError, RunStopped
from batch_sender.gateway import GatewayClient
from batch_sender.store.records import PREFIX_DIGITS, PrefixTally

__all__ = [
    "FALLBACK_CREDITS_PER_PART",
    "PREFIX_DIGITS",
    "BalanceCheck",
    "Estimate",
    "InsufficientCredit",
    "PrefixTally",
    "check_balance",
    "estimate",
]

log = logging.getLogger(__name__)

FALLBACK_CREDITS_PER_PART = 1.0  # credits per part when routecoverage cannot tell


@dataclass(frozen=True, slots=True)
class PrefixCost:
    prefix: str
    recipients: int
    parts: int
    credits_per_part: float | None  # None: not routed
    source: str  # "routecoverage", "fallback" or "unrouted"

    @property
    def credits(self) -> float:
        return 0.0 if self.credits_per_part is None else self.parts * self.credits_per_part


@dataclass(frozen=True, slots=True)
class Estimate:
    """The credits a campaign should cost, per prefix and in total."""

    prefixes: tuple[PrefixCost, ...]

    @property
    def credits(self) -> float:
        return sum(p.credits for p in self.prefixes)

    @property
    def parts(self) -> int:
        return sum(p.parts for p in self.prefixes)

    @property
    def unrouted_recipients(self) -> int:
        return sum(p.recipients for p in self.prefixes if p.source == "unrouted")

    @property
    def fallback_prefixes(self) -> tuple[str, ...]:
        return tuple(p.prefix for p in self.prefixes if p.source == "fallback")

    def as_dict(self) -> dict[str, object]:
        return {
            "credits": round(self.credits, 4),
            "parts": self.parts,
            "unrouted_recipients": self.unrouted_recipients,
            "fallback_prefixes": list(self.fallback_prefixes),
            "prefixes": [
                {
                    "prefix": p.prefix,
                    "recipients": p.recipients,
                    "parts": p.parts,
                    "credits_per_part": p.credits_per_part,
                    "credits": round(p.credits, 4),
                    "source": p.source,
                }
                for p in self.prefixes
            ],
        }


def estimate(
    client: GatewayClient,
    recipients_by_prefix: PrefixTally | Mapping[str, tuple[str, int]],
    *,
    cache: dict[str, float | None] | None = None,
) -> Estimate:
    """Price every prefix with one ``routecoverage`` call (cached in ``cache`` across calls).

    ``recipients_by_prefix`` is a :class:`PrefixTally`, or a mapping prefix → (a number of that
    prefix, parts). Auth and account errors (:class:`RunStopped`) propagate; other gateway
    errors price the prefix at the fallback rate.
    """
    if isinstance(recipients_by_prefix, PrefixTally):
        tally = recipients_by_prefix
        rows = [
            (prefix, tally.sample[prefix], tally.recipients[prefix], parts)
            for prefix, parts in sorted(tally.parts.items())
        ]
    else:
        rows = [
            (prefix, sample, 0, parts)
            for prefix, (sample, parts) in sorted(recipients_by_prefix.items())
        ]
    cache = {} if cache is None else cache
    priced = []
    for prefix, sample, count, parts in rows:
        source = "routecoverage"
        if prefix in cache:
            rate = cache[prefix]
        else:
            try:
                rate = client.routecoverage(sample)
            except RunStopped:
                raise
            except GatewayError as exc:
                log.warning(
                    "routecoverage for %s… failed (%s): 1 credit per part assumed", prefix, exc
                )
                rate, source = FALLBACK_CREDITS_PER_PART, "fallback"
            else:
                cache[prefix] = rate
        if rate is None:
            source = "unrouted"
        priced.append(PrefixCost(prefix, count, parts, rate, source))
    return Estimate(tuple(priced))


class InsufficientCredit(RunStopped):
    """The balance does not cover the estimated cost: the run does not start (exit 3)."""


@dataclass(frozen=True, slots=True)
class BalanceCheck:
    balance: float
    needed: float

    @property
    def short_by(self) -> float:
        return max(0.0, self.needed - self.balance)

    @property
    def enough(self) -> bool:
        return self.short_by == 0.0


def check_balance(
    client: GatewayClient, needed: Estimate | float, *, allow_partial: bool = False
) -> BalanceCheck:
    """Compare ``getbalance`` with the estimate; raise :class:`InsufficientCredit` when short.

    With ``allow_partial`` a short balance is only logged: the run sends until the gateway says
    ERR 301 (no credit) and stops there, leaving the rest ``pending``.
    """
    credits = needed.credits if isinstance(needed, Estimate) else float(needed)
    check = BalanceCheck(balance=client.getbalance(), needed=credits)
    if check.enough:
        return check
    message = (
        f"the account has {check.balance:g} credits, the campaign needs about {credits:g} "
        f"(short by {check.short_by:g})"
    )
    if not allow_partial:
        raise InsufficientCredit(message + "; top up, or run with --allow-partial", code="301")
    log.warning("%s: sending what the balance allows (--allow-partial)", message)
    return check
