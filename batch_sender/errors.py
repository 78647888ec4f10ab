"""Every error batch-sender raises, grouped by what the caller can do about it.

::

    BatchSenderError                      exit 2 unless a subclass says otherwise
    ├── InputError                        fix your input or options; nothing was sent (exit 2)
    │   └── CampaignConflict              same campaign name, different source/text/options
    ├── StoreError                        the results database is unusable (exit 2)
    ├── Interrupted                       SIGINT/SIGTERM; the campaign is resumable (exit 130)
    └── GatewayError                      talking to the gateway went wrong
        ├── RetryableError                the request did not take effect: retry with backoff
        │   ├── TransportError            connect error / connect or pool timeout (never left)
        │   ├── ServerBusy                HTTP 429/5xx; ``retry_after`` seconds if the server said
        │   │                             (500/502/504 are not retried: send.policy.decide)
        │   ├── SoapFault                 a SOAP Fault from the server
        │   └── InternalGatewayError      ERR 901 "Please retry"
        ├── SessionExpired                ERR 003/005: authenticate again, then retry
        ├── Throttled                     ERR 130: pause every worker until ``until`` (epoch s)
        ├── OutcomeUnknown                the request may have been accepted: never resend blindly
        │   └── ProtocolError             the answer is not a SOAP response we understand
        ├── RequestRejected               request-level validation error (ERR 1xx): fail its rows
        └── RunStopped                    auth, account or credit problem: stop the run (exit 3)

Per-destination errors (ERR 105, 114, 121, ...) are not exceptions: they are results, one per
recipient, recorded as ``failed`` with their code and description.

Foreign exceptions (httpx, lxml, SQLAlchemy) are wrapped at exactly one boundary each, with
``raise ... from exc``. Messages never contain credentials.
"""

from __future__ import annotations

__all__ = [
    "EXIT_FAILURES",
    "EXIT_GATEWAY_STOP",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNKNOWN",
    "EXIT_USAGE",
    "BatchSenderError",
    "CampaignConflict",
    "GatewayError",
    "InputError",
    "InternalGatewayError",
    "Interrupted",
    "OutcomeUnknown",
    "ProtocolError",
    "RequestRejected",
    "RetryableError",
    "RunStopped",
    "ServerBusy",
    "SessionExpired",
    "SoapFault",
    "StoreError",
    "Throttled",
    "TransportError",
    "gateway_error_for_code",
]

EXIT_OK = 0  # every sendable recipient accepted
EXIT_FAILURES = 1  # finished; some recipients failed or were rejected
EXIT_USAGE = 2  # usage, configuration or input error; nothing sent
EXIT_GATEWAY_STOP = 3  # stopped by the gateway (auth, credit, account)
EXIT_UNKNOWN = 4  # finished with `unknown` outcomes
EXIT_INTERRUPTED = 130  # interrupted by a signal; resumable


class BatchSenderError(Exception):
    """Root of every batch-sender error."""

    exit_code: int = EXIT_USAGE


class InputError(BatchSenderError):
    """Bad input, option or configuration: fix it and run again. Nothing was sent."""


class CampaignConflict(InputError):
    """A campaign of this name exists with a different source, text or options."""


class StoreError(BatchSenderError):
    """The results database cannot be opened, migrated or written."""


class Interrupted(BatchSenderError):
    """The run was stopped by a signal; running it again resumes it."""

    exit_code = EXIT_INTERRUPTED


class GatewayError(BatchSenderError):
    """Something went wrong talking to the gateway.

    ``code`` is the gateway's three-digit error code when it gave one (``"301"``),
    ``description`` its text.
    """

    def __init__(self, message: str, *, code: str | None = None, description: str | None = None):
        super().__init__(message)
        self.code = code
        self.description = description

    def __reduce__(self) -> tuple[object, ...]:
        # subclasses take keyword-only arguments (``until``, ``status``) that the default
        # reduce (``cls(*args)``) would miss: rebuild without calling __init__
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[GatewayError], args: tuple[object, ...], state: dict[str, object]) -> object:
    """Unpickle a :class:`GatewayError` (it crosses to and from a sending process)."""
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


class RetryableError(GatewayError):
    """The request did not take effect; sending it again is safe."""

    #: seconds the server asked us to wait (``Retry-After``), if it said
    retry_after: float | None = None


class TransportError(RetryableError):
    """The connection failed before the request was sent (connect error or timeout)."""


class ServerBusy(RetryableError):
    """HTTP 429 or 5xx from the server; ``retry_after`` if it sent ``Retry-After``."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class SoapFault(RetryableError):
    """The server answered with a SOAP Fault."""


class InternalGatewayError(RetryableError):
    """ERR 901: the gateway's internal error, documented as "Please retry"."""


class SessionExpired(GatewayError):
    """ERR 003 or 005: the session is gone; authenticate again and retry."""


class Throttled(GatewayError):
    """ERR 130: the account's MT limit is exceeded until ``until`` (UNIX time, seconds)."""

    def __init__(self, message: str, *, until: float, code: str = "130", description: str = ""):
        super().__init__(message, code=code, description=description)
        self.until = until


class OutcomeUnknown(GatewayError):
    """The request left, but its answer was lost: the gateway may have accepted it.

    Its recipients become ``unknown`` and are never resent automatically.
    """


class ProtocolError(OutcomeUnknown):
    """The gateway answered something that is not a response we understand."""


class RequestRejected(GatewayError):
    """A request-level validation error (ERR 1xx): every recipient of the request fails."""


class RunStopped(GatewayError):
    """Authentication, account or credit error: nothing more can be sent in this run."""

    exit_code = EXIT_GATEWAY_STOP


#: Error codes that stop the whole run (DESIGN.md §3): auth, account, sender ID, credit.
STOP_CODES = frozenset({"001", "002", "004", "007", "108", "123", "301", "302"})
#: Error codes that mean "authenticate again".
SESSION_CODES = frozenset({"003", "005"})
#: Error codes that concern one destination only: fail that recipient, go on.
DESTINATION_CODES = frozenset({"105", "114", "121", "122", "128"})


def gateway_error_for_code(code: str, description: str) -> GatewayError:
    """Turn a request-level ``ERR: code, description`` into the exception of its class."""
    message = f"ERR {code}: {description}"
    if code in SESSION_CODES:
        return SessionExpired(message, code=code, description=description)
    if code in STOP_CODES:
        return RunStopped(message, code=code, description=description)
    if code == "130":
        return Throttled(message, until=_until_from(description), description=description)
    if code == "901":
        return InternalGatewayError(message, code=code, description=description)
    return RequestRejected(message, code=code, description=description)


def _until_from(description: str) -> float:
    """The epoch second in "Maximum MT limit exceeded until 1764072000" (0.0 if absent)."""
    for word in reversed(description.replace(",", " ").split()):
        if word.isdigit():
            return float(word)
    return 0.0
