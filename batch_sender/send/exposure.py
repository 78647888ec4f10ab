"""How many recipients one request risks: the chunk size, shrunk after a lost answer.

A request whose answer is lost (the connection dropped after it was sent, a 502/504 after
acceptance, a short or malformed answer) leaves its recipients ``unknown``. ``querymsg`` by the
request's client message ID settles a one-number request exactly (found: ``sent``; ERR 104:
never accepted, back to pending), but of a many-number request it learns about one message only,
so those rows stay ``unknown`` until an operator checks them. The ambiguity is therefore the size
of the requests that lose their answers.

Answers tend to be lost in bursts (a proxy restarting, a network path flapping), so after the
first lost answer of a many-number request the coordinator claims one recipient per request
(each one settles exactly) and grows back by doubling after :data:`CLEAN_TO_GROW` clean answers
in a row, up to ``--chunk-size``; the many-number chunks still queued behind the requests in
flight are handed back unsent (``aio.Dispatcher``) and claimed again at the new size. On a
healthy gateway nothing changes (no loss, no shrink). Measured (``benchmarks/ambiguity.py``,
docs/RELIABILITY.md): a burst of 25 lost answers in a 5,000-row run at ``--chunk-size 50`` left
1,250 rows unknown after ``reconcile`` at a fixed size, 200 with this: the requests that were
in flight when it began.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence

from batch_sender.states import Status
from batch_sender.store import Outcome, SentOutcomes

__all__ = ["CLEAN_TO_GROW", "Exposure", "Verdict", "verdict"]

log = logging.getLogger(__name__)

#: clean answers in a row before the request size doubles again: from 1 back to 50 in six
#: doublings, 24 requests, so a passing fault costs a few dozen small requests
CLEAN_TO_GROW = 4


class Verdict(enum.Enum):
    """What one finished request says about the gateway's answers."""

    LOST = "lost"  # some of its rows are unknown: the answer was lost or unreadable
    CLEAN = "clean"  # a full answer: every row sent or failed by the gateway's word
    NEUTRAL = "neutral"  # nothing learned (rows handed back: throttled, retried, stopped)


def verdict(outcomes: Sequence[Outcome]) -> Verdict:
    """The verdict of one chunk's outcomes (``ChunkResult.outcomes``)."""
    if isinstance(outcomes, SentOutcomes):
        return Verdict.CLEAN  # every number accepted, each with its own ID
    if any(o.status is Status.UNKNOWN for o in outcomes):
        return Verdict.LOST
    return Verdict.CLEAN if outcomes else Verdict.NEUTRAL


class Exposure:
    """The request size to claim next (at most ``limit``), adapted to lost answers.

    Not thread-safe: the coordinator thread alone claims and observes.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"chunk size must be at least 1, not {limit}")
        self.limit = limit
        self.size = limit
        self.lost_requests = 0  # requests whose answer was lost (any size)
        self.shrinks = 0  # times the size fell back to one
        self._clean = 0  # clean answers since the last loss or growth

    def observe(self, what: Verdict, recipients: int) -> None:
        """Take one finished request of ``recipients`` numbers into account."""
        if what is Verdict.LOST:
            self.lost_requests += 1
            self._clean = 0
            if recipients > 1 and self.size > 1:
                self.size = 1
                self.shrinks += 1
                # said once as a warning (cron mails it); later shrinks of the run are details
                log.log(
                    logging.WARNING if self.shrinks == 1 else logging.INFO,
                    "the answer to a request of %d numbers was lost: sending one number per "
                    "request until answers come back whole (each lost one then settles exactly)",
                    recipients,
                )
        elif what is Verdict.CLEAN and self.size < self.limit:
            self._clean += 1
            if self._clean >= CLEAN_TO_GROW:
                self._clean = 0
                self.size = min(self.limit, self.size * 2)
