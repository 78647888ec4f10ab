"""Secrets out of every output: one process-wide list of known secrets and the places it is applied.

A gateway may echo what it was sent into its answers (``ERR: 001, Authentication failed for
MyUserName/<password>``, a session ID in a sendmsg error). Such text is stored as a recipient's
``error_description``, logged, printed and reported. :data:`SECRETS` holds every secret this process
knows, and is applied

* at the one boundary where gateway text enters, the gateway client (``gateway.client``): every
  exception of a call (its message and ``description``) and every per-number
  ``error_description`` of a sendmsg answer is redacted before anyone sees it;
* as a safety net, by :class:`RedactingFilter` on every handler batch-sender installs on its
  ``batch_sender`` logger (stderr, and the sending process's pipe to its parent).

What is a secret: the gateway password; every session ID the process was ever given (an old
session echoed after a re-authentication is still redacted); the receiver's callback token and
basic-auth password. Not a secret: the ``api_id`` and the user name. The ``api_id`` identifies an
API connection (it is shown on the account's pages and useless without user and password) and is
logged on purpose ("authenticated ... (api_id 123456)"): redacting it would hide the one clue to
which connection a run used. Every secret is replaced by ``***`` wherever it occurs, whatever its
length (a one-letter password would make logs hard to read: choose a real one).

Known limits: a secret the gateway transforms (escaped, truncated, split) before echoing is not
recognised; tracebacks logged with ``exc_info`` are formatted after the filter ran.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

__all__ = ["REDACTED", "SECRETS", "RedactingFilter", "Redactor"]

REDACTED = "***"


class Redactor:
    """A thread-safe set of secrets and the function that blanks them out of a text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, *secrets: str | None) -> None:
        """Remember ``secrets`` (empty and None ones are ignored) for every later redaction."""
        new = {s for s in secrets if s} - self._secrets
        if not new:
            return
        with self._lock:
            self._secrets |= new
            # longest first: a secret that contains another is blanked out whole
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def __contains__(self, secret: object) -> bool:
        return secret in self._secrets

    def __call__(self, text: str) -> str:
        """``text`` with every known secret replaced by ``***``."""
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(REDACTED, text)

    def optional(self, text: str | None) -> str | None:
        """Like calling it, for a text that may be None."""
        return None if text is None else self(text)

    def exception(self, exc: BaseException) -> None:
        """Redact ``exc``'s string arguments and its ``description`` in place."""
        if self._pattern is None:
            return
        exc.args = tuple(self(a) if isinstance(a, str) else a for a in exc.args)
        description = getattr(exc, "description", None)
        if isinstance(description, str):
            exc.description = self(description)  # type: ignore[attr-defined]

    def forget_all(self, keep: Iterable[str] = ()) -> None:
        """Drop every secret but ``keep`` (for tests)."""
        with self._lock:
            self._secrets = {s for s in keep if s}
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = (
                re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None
            )


#: The secrets of this process: gateway clients and the receiver add theirs here.
SECRETS = Redactor()


class RedactingFilter(logging.Filter):
    """A handler filter that blanks every known secret out of a record's message."""

    def __init__(self, redactor: Redactor = SECRETS) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._redactor(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
