"""The results store: campaigns, staging, and the recipient queue, in SQLAlchemy Core.

The database *is* the queue (DESIGN.md §2, §7): recipients are staged ``pending`` before anything
is sent, claimed in committed transactions (``pending → sending``) by any number of workers, and
written back once. PostgreSQL and MariaDB claim with ``SELECT … FOR UPDATE SKIP LOCKED``; SQLite
serialises writers with ``BEGIN IMMEDIATE``. Workers on several machines also share, through it,
a lease on their claims (``touch_claims``), one send schedule per account (``reserve_rate``) and
a lock so that one of them at a time settles the others' orphans (``exclusive``). Every
SQLAlchemy error leaves as ``StoreError``.
"""

from __future__ import annotations

from batch_sender.store.campaigns import CampaignsMixin
from batch_sender.store.outcomes import OutcomesMixin
from batch_sender.store.queue import QueueMixin
from batch_sender.store.reading import ReadingMixin
from batch_sender.store.shared import SharedMixin
from batch_sender.store.staging import StagingMixin

__all__ = ["Store"]


class Store(StagingMixin, CampaignsMixin, QueueMixin, OutcomesMixin, SharedMixin, ReadingMixin):
    """The results database: open it with ``Store.open(url)``, close it (or use ``with``).

    One facade over modules of one concern each: ``base`` (lifecycle), ``campaigns``,
    ``staging``, ``queue`` (claims, leases), ``outcomes`` (record, release), ``shared`` (the
    account's rate, named locks), ``reading``.
    """
