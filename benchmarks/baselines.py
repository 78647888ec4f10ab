"""The baselines batch-sender is measured against: plain scripts, no batch-sender code.

- ``naive``: the loop the API documentation suggests, one ``sendmsg`` per recipient, each on a new
  connection (``httpx.post``, no shared client), credentials in every request.
- ``naive_raw``: the same loop over the standard library's ``http.client``, still one new
  connection per recipient, without the cost of building an httpx client (and its TLS context)
  per call: the cheapest honest version of the documented loop.
- ``zeep``: a stock SOAP client built from the server's ``?wsdl``, sending chunks of 100 numbers
  from ``--threads`` threads (one zeep client, hence one keep-alive session, per thread).
- ``reference``: the bare pipeline, the practical ceiling of this machine and these libraries:
  stream the CSV, regex-normalise, stage in SQLite (``executemany``), send over ``--threads``
  keep-alive connections (threads sharing one ``httpx.Client``), record IDs back (``executemany``).
  No claims, retries, rate limit or crash safety.

Each prints one JSON object on stdout (recipients, requests, accepted, seconds); the harness runs it
as a subprocess to read its CPU time and peak RSS. Usage::

    python benchmarks/baselines.py naive     --csv FILE --url URL [--limit 2000]
    python benchmarks/baselines.py naive_raw --csv FILE --url URL [--limit 2000]
    python benchmarks/baselines.py zeep      --csv FILE --url URL [--limit N] [--threads 8]
    python benchmarks/baselines.py reference --csv FILE --url URL --db FILE [--threads 8]
                                             [--template "Hi {name}, ..."]

``reference --template``: every row's text rendered from the template (``str.format`` of the
row's columns), staged with the row, and sent one request per recipient (distinct texts cannot
share a request): the bare pipeline of issue 19's ``reference_unique``.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import itertools
import json
import queue
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import httpx

__all__ = ["naive", "naive_raw", "reference", "zeep_chunks"]

API_ID = "123456"  # the documentation's example credentials, which the simulator accepts
USER = "MyUserName"
PASSWORD = "MyPassword"
TEXT = "Your parcel is ready for collection. Reply STOP to opt out."
CHUNK = 100  # recipients per sendmsg request (zeep and reference)
STAGE_BATCH = 10_000  # rows per executemany when staging and per page when sending
IN_FLIGHT_PER_THREAD = 4  # queued chunks per sending thread (reference), to bound memory
NS = "http://api.clickatell.com/soap/document_literal/webservice"
SOAP_ACTION = f'"{NS}/sendmsg"'
HEADERS = {"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": SOAP_ACTION}
_DIGITS = re.compile(r"\+?(\d{8,15})")  # international digits, optionally with a leading +
_RETURN = re.compile(rb"<return>ID: ([0-9a-f]+)(?: To: (\d+))?</return>")
_ID_ALONE = re.compile(rb"<return>ID: ([0-9a-f]+)")  # a single-number answer may omit To:


def envelope(numbers: list[str], text: str) -> bytes:
    """A document/literal ``sendmsg`` envelope as in the documentation's example."""
    to = "".join(f"<to>{n}</to>" for n in numbers)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" '
        f'xmlns:ns1="{NS}"><SOAP-ENV:Body><ns1:sendmsg>'
        f"<api_id>{API_ID}</api_id><user>{USER}</user><password>{PASSWORD}</password>"
        f"<text>{escape(text)}</text>{to}</ns1:sendmsg></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


def numbers(csv_path: Path, *, limit: int | None = None, clean: bool = False) -> Iterator[str]:
    """The ``to`` column of the CSV, streamed; ``clean`` keeps only usable numbers, normalised."""
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f)
        column = next(rows).index("to")
        values = (row[column] for row in rows)
        if clean:
            values = (m[1] for m in map(_DIGITS.fullmatch, values) if m is not None)
        yield from itertools.islice(values, limit)


def naive(csv_path: Path, url: str, *, limit: int, text: str = TEXT) -> dict[str, Any]:
    """One request per recipient, each on a new connection: the documented ``sendmsg`` loop."""
    accepted = sent = 0
    for number in numbers(csv_path, limit=limit):
        response = httpx.post(url, content=envelope([number], text), headers=HEADERS)
        sent += 1
        accepted += b"<return>ID: " in response.content
    return {"recipients": sent, "requests": sent, "accepted": accepted}


def naive_raw(csv_path: Path, url: str, *, limit: int, text: str = TEXT) -> dict[str, Any]:
    """The documented loop over ``http.client``: one new connection per recipient."""
    parts = urlsplit(url)
    accepted = sent = 0
    for number in numbers(csv_path, limit=limit):
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port)
        connection.request("POST", parts.path, body=envelope([number], text), headers=HEADERS)
        accepted += b"<return>ID: " in connection.getresponse().read()
        connection.close()
        sent += 1
    return {"recipients": sent, "requests": sent, "accepted": accepted}


def zeep_chunks(
    csv_path: Path, url: str, *, limit: int | None, threads: int, text: str = TEXT
) -> dict[str, Any]:
    """Chunks of ``CHUNK`` usable numbers sent with zeep, one client per thread."""
    import zeep  # imported here: only this baseline needs it

    chunks: queue.Queue[list[str] | None] = queue.Queue(maxsize=threads * IN_FLIGHT_PER_THREAD)
    totals: dict[str, Any] = {"recipients": 0, "requests": 0, "accepted": 0}
    lock = threading.Lock()
    first_sent: list[float] = []  # when the first request left
    last_answer = [0.0]

    def work() -> None:
        client = zeep.Client(f"{url}?wsdl")  # type: ignore[no-untyped-call]
        while (chunk := chunks.get()) is not None:
            if not first_sent:
                first_sent.append(time.perf_counter())
            returns = client.service.sendmsg(
                api_id=int(API_ID), user=USER, password=PASSWORD, to=chunk, text=text
            )
            with lock:
                totals["recipients"] += len(chunk)
                totals["requests"] += 1
                totals["accepted"] += sum(r.startswith("ID: ") for r in returns)
                last_answer[0] = time.perf_counter()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    source = numbers(csv_path, limit=limit, clean=True)
    while chunk := list(itertools.islice(source, CHUNK)):
        chunks.put(chunk)
    for _ in workers:
        chunks.put(None)
    for worker in workers:
        worker.join()
    # the sending alone, first request to last answer (no imports, WSDL or thread start-up)
    totals["send_seconds"] = last_answer[0] - first_sent[0] if first_sent else None
    return totals


def reference(
    csv_path: Path,
    url: str,
    db_path: Path,
    *,
    threads: int,
    text: str = TEXT,
    template: str | None = None,
) -> dict[str, Any]:
    """CSV → regex → SQLite (executemany) → threads over one keep-alive client → IDs back.

    With ``template``, each row's own text (staged with it), one request per recipient.
    """
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE recipients (id INTEGER PRIMARY KEY, msisdn TEXT, status TEXT, api_id TEXT,"
        " text TEXT)"
    )
    staged = stage(db, csv_path, template)
    if template is not None:
        return reference_unique(db, url, threads=threads, staged=staged)
    totals = {"recipients": 0, "requests": 0, "accepted": 0, "staged": staged}
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    with (
        httpx.Client(limits=limits, headers=HEADERS, timeout=60.0) as client,
        ThreadPoolExecutor(threads) as pool,
    ):

        def send(chunk: list[tuple[int, str]]) -> list[tuple[str, int]]:
            body = envelope([n for _, n in chunk], text)
            answer = client.post(url, content=body).content
            ids = {to.decode(): i.decode() for i, to in _RETURN.findall(answer)}
            return [(ids[n], row_id) for row_id, n in chunk if n in ids]

        def record(future: Future[list[tuple[str, int]]], size: int) -> None:
            done = future.result()
            db.execute("BEGIN")
            db.executemany("UPDATE recipients SET status='sent', api_id=? WHERE id=?", done)
            db.execute("COMMIT")
            totals["recipients"] += size
            totals["requests"] += 1
            totals["accepted"] += len(done)

        in_flight: list[tuple[Future[list[tuple[str, int]]], int]] = []
        for page in pending_pages(db):
            for start in range(0, len(page), CHUNK):
                chunk = page[start : start + CHUNK]
                in_flight.append((pool.submit(send, chunk), len(chunk)))
                if len(in_flight) >= threads * IN_FLIGHT_PER_THREAD:
                    record(*in_flight.pop(0))
        for future, size in in_flight:
            record(future, size)
    db.close()
    return totals


def reference_unique(
    db: sqlite3.Connection, url: str, *, threads: int, staged: int
) -> dict[str, Any]:
    """Send each pending row's own text, one request per recipient, record each ID back."""
    totals = {"recipients": 0, "requests": 0, "accepted": 0, "staged": staged}
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    with (
        httpx.Client(limits=limits, headers=HEADERS, timeout=60.0) as client,
        ThreadPoolExecutor(threads) as pool,
    ):

        def send(row: tuple[int, str, str]) -> list[tuple[str, int]]:
            row_id, number, text = row
            answer = client.post(url, content=envelope([number], text)).content
            match = _ID_ALONE.search(answer)
            return [(match[1].decode(), row_id)] if match else []

        def record(future: Future[list[tuple[str, int]]]) -> None:
            done = future.result()
            db.execute("BEGIN")
            db.executemany("UPDATE recipients SET status='sent', api_id=? WHERE id=?", done)
            db.execute("COMMIT")
            totals["recipients"] += 1
            totals["requests"] += 1
            totals["accepted"] += len(done)

        in_flight: list[Future[list[tuple[str, int]]]] = []
        for page in pending_pages(db, with_text=True):
            for row in page:
                in_flight.append(pool.submit(send, row))
                if len(in_flight) >= threads * IN_FLIGHT_PER_THREAD:
                    record(in_flight.pop(0))
        for future in in_flight:
            record(future)
    db.close()
    return totals


def stage(db: sqlite3.Connection, csv_path: Path, template: str | None = None) -> int:
    """Write every row, usable or not, as pending or rejected; the number of rows.

    With ``template``, each usable row's text too, rendered from its columns.
    """
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f)
        header = next(rows)
        column = header.index("to")
        count = 0
        while batch := list(itertools.islice(rows, STAGE_BATCH)):
            values = []
            for row in batch:
                match = _DIGITS.fullmatch(row[column])
                if match is None:
                    values.append((row[column], "rejected", None))
                elif template is None:
                    values.append((match[1], "pending"))
                else:
                    fields = dict(zip(header, row, strict=False))
                    values.append((match[1], "pending", template.format(**fields)))
            db.execute("BEGIN")
            if template is None:  # the same-text baseline as it always was: two values a row
                values = [v[:2] for v in values]
                db.executemany("INSERT INTO recipients (msisdn, status) VALUES (?, ?)", values)
            else:
                db.executemany(
                    "INSERT INTO recipients (msisdn, status, text) VALUES (?, ?, ?)", values
                )
            db.execute("COMMIT")
            count += len(values)
    return count


def pending_pages(db: sqlite3.Connection, *, with_text: bool = False) -> Iterator[list[Any]]:
    """Pending rows in pages of ``STAGE_BATCH`` (keyset pagination: updates do not disturb it):
    (id, msisdn), or (id, msisdn, text) ``with_text``."""
    last = 0
    columns = "id, msisdn, text" if with_text else "id, msisdn"
    while page := db.execute(
        f"SELECT {columns} FROM recipients WHERE status='pending' AND id > ? ORDER BY id LIMIT ?",
        (last, STAGE_BATCH),
    ).fetchall():
        last = page[-1][0]
        yield page


def main(argv: list[str] | None = None) -> int:
    """Run one baseline and print its figures as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", choices=["naive", "naive_raw", "zeep", "reference"])
    parser.add_argument("--csv", type=Path, required=True, help="campaign CSV with a 'to' column")
    parser.add_argument("--url", required=True, help="sendmsg endpoint (the simulator)")
    parser.add_argument("--limit", type=int, help="first N rows only (naive default 2000)")
    parser.add_argument("--threads", type=int, default=8, help="sending threads (zeep, reference)")
    parser.add_argument("--db", type=Path, help="SQLite file to create (reference)")
    parser.add_argument("--text", default=TEXT, help="message text")
    parser.add_argument(
        "--template", help="reference: each row's text from this template, one request each"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.baseline == "naive":
        result = naive(args.csv, args.url, limit=args.limit or 2000, text=args.text)
    elif args.baseline == "naive_raw":
        result = naive_raw(args.csv, args.url, limit=args.limit or 2000, text=args.text)
    elif args.baseline == "zeep":
        result = zeep_chunks(
            args.csv, args.url, limit=args.limit, threads=args.threads, text=args.text
        )
    else:
        if args.db is None:
            parser.error("reference needs --db FILE")
        result = reference(
            args.csv,
            args.url,
            args.db,
            threads=args.threads,
            text=args.text,
            template=args.template,
        )
    result["seconds"] = time.perf_counter() - start
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
