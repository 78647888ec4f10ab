"""Where a run's requests are sent from: this process, or a sending process of its own.

The coordinator (``Sender``) hands chunks to a pool and gets a ``Future[ChunkResult]`` for each. In
this process, couriers run on an event-loop thread (``aio.LoopCouriers``) or, for a client over a
transport given by the caller (tests), on threads (:class:`ThreadCouriers`): every piece of Python
shares one GIL with the coordinator's claims and records. :class:`ProcessCouriers` runs them on the
event loop of a child process (``python -m batch_sender.send.pool``, ``aio.serve``) with its own
gateway client, rate limiter and ERR 130 pause: on a large campaign the HTTP side and the database
side then use a core each. The child never touches the database, so every guarantee stays with the
coordinator: rows are claimed before their chunk is handed over and recorded when its result comes
back. If the child dies, every chunk it held fails and its rows become ``unknown`` (settled with
querymsg, never resent blindly); if the parent dies, the kernel kills the child.

The two processes speak pickle over the child's stdin and stdout:

* parent → child: ``("spec", CourierSpec)`` once, then ``("chunks", [(seq, *fields), …])``
  (every chunk of one claim in one message, each as the plain values of :func:`_chunk_fields`)
  or ``("chunk", seq, Chunk)``, and ``("stop",)``; end of input means "finish what you hold and
  exit";
* child → parent: ``("ready",)`` once the courier is built, ``("results", [(seq, result), …])``
  (the chunks that ended in one turn of its event loop; the usual result, every recipient
  accepted, as the plain values of :func:`_result_fields`, any other as its ``ChunkResult``),
  ``("error", seq, text)`` (the courier raised: a bug), ``("log", level, logger, message)``,
  ``("limit", n)`` (requests in flight now allowed: ``--concurrency auto`` moved it).

Plain values, not the objects: one message per claim (distinct texts: up to 32 chunks of one
recipient) pickles and unpickles in C, where a ``Chunk`` or a ``ChunkResult`` each took several
Python calls of their own on either side, and each message is one write and one wake-up.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import IO, Any, Protocol

from batch_sender import child_process, eventloop, redact
from batch_sender.config import MessageOptions
from batch_sender.gateway.client import ClientSpec, GatewayClient
from batch_sender.send import adaptive, aio
from batch_sender.send.adaptive import AUTO
from batch_sender.send.courier import ChunkResult, Courier
from batch_sender.store import Chunk, ChunkRecipient, SentOutcomes
from batch_sender.store.records import PackedRecipients

__all__ = ["CourierSpec", "ProcessCouriers", "ThreadCouriers", "CourierPool", "SendingProcessError"]

log = logging.getLogger(__name__)

#: seconds the sending process may take to start and build its client before the run falls
#: back to threads
STARTUP_TIMEOUT = 30.0
#: seconds a pool being shut down waits for an idle child to exit
SHUTDOWN_WAIT = 5.0
#: seconds a finishing child waits for its threads' last requests before it exits
CHILD_DRAIN_TIMEOUT = 60.0
#: how the sending process is started (its module's ``__main__``)
CHILD_COMMAND = child_process.command("batch_sender.send.pool")
#: requests in flight at first under ``--concurrency auto`` (``adaptive.AimdSettings.start``)
AUTO_START = adaptive.AimdSettings().start
_PROTOCOL = pickle.HIGHEST_PROTOCOL


#: a chunk as it crosses the pipe: campaign, client message ID, message, text, unicode, parts,
#: then its recipients' ids and numbers (two texts, as the claim packed them, or two tuples)
ChunkFields = tuple[int, str, int, str, bool, int, Any, Any]


def _chunk_fields(chunk: Chunk) -> ChunkFields:
    recipients = chunk.recipients
    if type(recipients) is PackedRecipients:
        ids: Any = recipients.ids
        numbers: Any = recipients.numbers
    else:
        ids = tuple(r.id for r in recipients)
        numbers = tuple(r.msisdn for r in recipients)
    return (
        chunk.campaign_id,
        chunk.client_message_id,
        chunk.message_id,
        chunk.wire_text,
        chunk.unicode,
        chunk.parts,
        ids,
        numbers,
    )


def _chunk_of(fields: ChunkFields) -> Chunk:
    campaign_id, client_message_id, message_id, wire_text, unicode, parts, ids, numbers = fields
    recipients: Sequence[ChunkRecipient]
    if isinstance(ids, str):
        recipients = PackedRecipients(ids, numbers)
    else:
        recipients = tuple(map(ChunkRecipient, ids, numbers))
    return Chunk(
        campaign_id=campaign_id,
        client_message_id=client_message_id,
        message_id=message_id,
        wire_text=wire_text,
        unicode=unicode,
        parts=parts,
        recipients=recipients,
    )


def _result_fields(result: ChunkResult) -> tuple[str, int, int] | ChunkResult:
    """The usual result (every recipient accepted, nothing else to say) as its JSON text, its
    length and its requests; any other result as itself."""
    outcomes = result.outcomes
    if (
        type(outcomes) is SentOutcomes
        and not result.release
        and result.stop is None
        and result.pause_until is None
    ):
        return (outcomes.packed, outcomes.length, result.requests)
    return result


def _result_of(fields: tuple[str, int, int] | ChunkResult) -> ChunkResult:
    if isinstance(fields, ChunkResult):
        return fields
    packed, length, requests = fields
    return ChunkResult(SentOutcomes(packed, length), requests=requests)


class SendingProcessError(RuntimeError):
    """The sending process failed: it could not start, or it died holding chunks."""


class CourierPool(Protocol):
    """What the coordinator needs of a pool of couriers."""

    @property
    def capacity(self) -> int:
        """Requests in flight now allowed: the coordinator claims ahead for that many."""

    def submit(self, chunk: Chunk) -> Future[ChunkResult]: ...

    def submit_all(self, chunks: Sequence[Chunk]) -> list[Future[ChunkResult]]:
        """:meth:`submit` each of ``chunks`` (handed over together, where that is cheaper)."""

    def stop(self) -> None:
        """Tell every courier to stop: no request leaves any more (idempotent)."""

    def shutdown(self) -> None:
        """End the pool once the work submitted before this is done (without waiting)."""


class ThreadCouriers:
    """``size`` daemon threads running ``courier.send``: a request stuck in a read cannot keep a
    stopping process alive (a ThreadPoolExecutor's threads are joined at interpreter exit)."""

    def __init__(self, size: int, courier: Courier) -> None:
        self._courier = courier
        self._queue: queue.SimpleQueue[tuple[Chunk, Future[ChunkResult]] | None]
        self._queue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"batch-sender-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def capacity(self) -> int:
        return len(self._threads)

    def submit(self, chunk: Chunk) -> Future[ChunkResult]:
        future: Future[ChunkResult] = Future()
        self._queue.put((chunk, future))
        return future

    def submit_all(self, chunks: Sequence[Chunk]) -> list[Future[ChunkResult]]:
        return [self.submit(chunk) for chunk in chunks]

    def stop(self) -> None:
        self._courier.stop.set()

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            chunk, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._courier.send(chunk))
            except BaseException as exc:  # handed to the coordinator, which records it
                future.set_exception(exc)


@dataclass(frozen=True)
class CourierSpec:
    """Everything a sending process needs to build its courier; all of it pickles."""

    client: ClientSpec
    options: MessageOptions
    concurrency: int | str  # requests in flight, or "auto" (``adaptive``)
    rate: float | None  # this process's own schedule (a shared schedule needs the database)
    max_attempts: int
    max_wait: float
    backoff_scale: float = 1.0
    #: the level of the parent's ``batch_sender`` logger: records below it are not even sent
    log_level: int = logging.INFO


class _Outbox:
    """Pickled messages onto one end of a pipe, each written whole, from any thread.

    Written with ``os.write`` until every byte is out, not through the pipe's ``BufferedWriter``:
    with a tracer attached to the writing process (``py-spy dump --pid``, gdb), the buffered
    writer was seen to drop the rest of a message cut short by the stop, and the reader then
    met a garbled stream.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._fd = stream.fileno()
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...]) -> None:
        self.write(pickle.dumps(message, _PROTOCOL))

    def write(self, pickled: bytes) -> None:
        """Write pickled messages, whole."""
        data = memoryview(pickled)
        with self._lock:
            if self._stream.closed:  # never write to a descriptor number reused since
                raise ValueError("write to a closed pipe")
            while data:
                data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        with self._lock:
            self._stream.close()


class _Behind:
    """The child's outbox: each message pickled by its sender (so that one that does not pickle
    fails there), written by a thread of its own, as many at once as are waiting. The event
    loop never blocks on a full pipe (the parent reads on a thread that shares a GIL with its
    coordinator), and the parent gets several answers per read."""

    def __init__(self, outbox: _Outbox, gone: Callable[[], None]) -> None:
        self._outbox = outbox
        self._gone = gone
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="batch-sender-outbox", daemon=True)
        self._thread.start()

    def send(self, message: tuple[Any, ...]) -> None:
        self._queue.put(pickle.dumps(message, _PROTOCOL))

    def close(self) -> None:
        """Write what is waiting, then end the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        end = False
        while not end:
            item = self._queue.get()
            if item is None:
                return
            parts = [item]
            while not self._queue.empty():
                more = self._queue.get()
                if more is None:
                    end = True
                    break
                parts.append(more)
            try:
                self._outbox.write(b"".join(parts))
            except (OSError, ValueError):
                self._gone()


class ProcessCouriers:
    """Couriers on the event loop of a child process (see the module docstring), at most
    ``spec.concurrency`` requests in flight (``auto``: as many as ``adaptive.Aimd`` allows).

    Raises :class:`SendingProcessError` if the child does not start and answer ``ready``. With
    ``wait=False`` the constructor returns as soon as the child is launched, and
    :meth:`wait_ready` does the waiting (and raising): the child's start-up (imports, its
    client) then overlaps whatever the parent does meanwhile.
    """

    def __init__(self, spec: CourierSpec, *, wait: bool = True) -> None:
        self._futures: dict[int, Future[ChunkResult]] = {}
        self._lock = threading.Lock()  # guards _futures
        self._seq = itertools.count()
        self._stopped = False
        self._process = subprocess.Popen(
            CHILD_COMMAND,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_process.environment(),
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._to_child = _Outbox(self._process.stdin)
        self._from_child: IO[bytes] = self._process.stdout
        self._ready = threading.Event()
        self._concurrency = spec.concurrency
        self._capacity = AUTO_START if spec.concurrency == AUTO else int(spec.concurrency)
        self._reader = threading.Thread(
            target=self._read, args=(self._ready,), name="batch-sender-courier-results", daemon=True
        )
        try:
            self._to_child.send(("spec", spec))
        except OSError as exc:
            self._process.kill()
            raise SendingProcessError(f"the sending process did not start: {exc}") from exc
        self._reader.start()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait for the child to answer ``ready``; kill it and raise if it does not."""
        if not self._ready.wait(STARTUP_TIMEOUT) or self._process.poll() is not None:
            self._process.kill()
            raise SendingProcessError("the sending process did not start; see its errors above")
        log.info("sending from process %d (concurrency %s)", self.pid, self._concurrency)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def capacity(self) -> int:
        return self._capacity

    def submit(self, chunk: Chunk) -> Future[ChunkResult]:
        return self.submit_all((chunk,))[0]

    def submit_all(self, chunks: Sequence[Chunk]) -> list[Future[ChunkResult]]:
        """Hand ``chunks`` to the child in one message (see the module docstring)."""
        futures: list[Future[ChunkResult]] = []
        items: list[tuple[Any, ...]] = []
        with self._lock:
            for chunk in chunks:
                future: Future[ChunkResult] = Future()
                future.set_running_or_notify_cancel()
                seq = next(self._seq)
                self._futures[seq] = future
                futures.append(future)
                items.append((seq, *_chunk_fields(chunk)))
        try:
            self._to_child.send(("chunks", items))
        except (OSError, ValueError) as exc:  # the child is gone (or its pipe closed)
            for item in items:
                self._fail(item[0], SendingProcessError(f"the sending process is gone: {exc}"))
        return futures

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            with contextlib.suppress(OSError, ValueError):
                self._to_child.send(("stop",))

    def shutdown(self) -> None:
        """Close the child's input; when it holds no chunk, wait (briefly) for it to exit, so
        that its CPU time is counted as this process's and no zombie is left behind."""
        with self._lock:
            idle = not self._futures
        with contextlib.suppress(OSError):  # a dead child's pipe cannot take the flush
            self._to_child.close()
        if idle:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(SHUTDOWN_WAIT)

    def discard(self) -> None:
        """End a child that was never given a chunk, without waiting for its start-up."""
        with contextlib.suppress(OSError):
            self._to_child.close()
        self._process.kill()
        self._process.wait()

    def _fail(self, seq: int, exc: BaseException) -> None:
        with self._lock:
            future = self._futures.pop(seq, None)
        if future is not None and not future.done():
            future.set_exception(exc)

    def _read(self, ready: threading.Event) -> None:
        """Resolve futures from the child's answers; when it ends, fail whatever it still held."""
        try:
            while True:
                message = pickle.load(self._from_child)
                kind = message[0]
                if kind == "results":
                    answers = [(seq, _result_of(fields)) for seq, fields in message[1]]
                    with self._lock:
                        found = [(self._futures.pop(seq, None), result) for seq, result in answers]
                    for future, result in found:
                        if future is not None:
                            future.set_result(result)
                elif kind == "error":
                    self._fail(message[1], SendingProcessError(message[2]))
                elif kind == "log":
                    logging.getLogger(message[2]).log(message[1], "%s", message[3])
                elif kind == "limit":
                    self._capacity = message[1]
                elif kind == "ready":
                    ready.set()
        except EOFError:
            pass  # the child closed its end: it is exiting
        except Exception as exc:  # a garbled message (or a broken pipe): nothing after it can
            # be trusted, and a child left blocked on a full pipe would never exit
            log.error("cannot read the sending process's answers (%r): stopping it", exc)
            self._process.kill()
        finally:
            code = self._process.wait()
            ready.set()  # a child that died starting wakes the constructor at once
            with self._lock:
                held = list(self._futures.items())
                self._futures.clear()
            if held:  # the coordinator says it once, for the run
                log.debug(
                    "the sending process ended (exit status %s) holding %d requests",
                    code,
                    len(held),
                )
            for _, future in held:
                if not future.done():
                    future.set_exception(
                        SendingProcessError(f"the sending process ended (exit status {code})")
                    )


# --- the child --------------------------------------------------------------------------------


class _PipeLogHandler(logging.Handler):
    """Hand the child's log records to the parent, which logs them in its own format."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self._send(("log", record.levelno, record.name, record.getMessage()))


def child_main() -> int:
    """The sending process: read chunks from stdin, send them, write results to stdout."""
    if not child_process.adopt():
        return 1
    inbox = sys.stdin.buffer

    def gone() -> None:
        # the parent is gone (killed, or its pipe closed): nobody is left to answer, and a
        # traceback per thread would only fill the cron mail
        os._exit(0)

    outbox = _Behind(_Outbox(sys.stdout.buffer), gone)
    send = outbox.send

    sys.stdout = sys.stderr  # nothing but our messages may reach the parent's pipe

    # the parent logs only its own package's records (httpx's line per request is not one of
    # them): so does the child, at the parent's level, through the pipe
    ours = logging.getLogger("batch_sender")
    pipe = _PipeLogHandler(send)
    pipe.addFilter(redact.RedactingFilter())  # this process's sessions: the parent knows none
    ours.handlers[:] = [pipe]
    ours.propagate = False
    kind, spec = pickle.load(inbox)
    if kind != "spec" or not isinstance(spec, CourierSpec):
        log.error("the sending process expected its spec first, got %r", kind)
        outbox.close()
        return 2
    ours.setLevel(spec.log_level)

    def read() -> tuple[Any, ...] | None:
        try:
            message: tuple[Any, ...] = pickle.load(inbox)
        except EOFError:
            return None
        if message[0] == "chunks":  # made into chunks here, on the reader's thread
            return ("chunks", [(item[0], _chunk_of(item[1:])) for item in message[1]])
        if message[0] == "chunk":  # one chunk, as itself
            return ("chunks", [(message[1], message[2])])
        return message

    def send_results(answers: list[tuple[int, ChunkResult]]) -> None:
        send(("results", [(seq, _result_fields(result)) for seq, result in answers]))

    with GatewayClient.from_spec(spec.client) as client:
        eventloop.run(
            aio.serve(
                client=client,
                limit=adaptive.limit_for(spec.concurrency),
                options=spec.options,
                rate=spec.rate,
                max_attempts=spec.max_attempts,
                max_wait=spec.max_wait,
                backoff_scale=spec.backoff_scale,
                max_connections=adaptive.MAX_CONCURRENCY,
                read=read,
                send=send,
                send_results=send_results,
                drain_timeout=CHILD_DRAIN_TIMEOUT,
            )
        )
    outbox.close()
    return 0


if __name__ == "__main__":
    # run the module's own copy, not __main__'s: the pickled classes name batch_sender.send.pool
    from batch_sender.send.pool import child_main as main

    raise SystemExit(main())
