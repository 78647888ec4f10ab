"""The suppression (opt-out) list: numbers that no campaign sends to.

Numbers are normalised exactly like recipients (:class:`~batch_sender.numbers.Normaliser`, with
the same ``--country`` for national formats), so ``082 100 2000`` with ``ZA`` and
``+27 82 100 2000`` are one entry. A campaign's rows whose number is on the list are staged
``suppressed`` and never sent; adding a number also suppresses it in campaigns still pending.

Inbound replies (MO messages) whose first word is a stop keyword add their sender by
:func:`handle_mo`: the callback receiver calls it for every MO it gets.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from batch_sender import config, numbers
from batch_sender.errors import InputError, StoreError
from batch_sender.store import Store
from batch_sender.store import operators as sql

__all__ = [
    "DEFAULT_STOP_KEYWORDS",
    "Normalised",
    "add",
    "handle_mo",
    "import_file",
    "normalise",
    "numbers_for_dry_run",
    "read_numbers",
    "remove",
    "stop_keyword",
]

log = logging.getLogger(__name__)

#: First words of a reply that mean "stop sending to me" (compared case-insensitively);
#: defined in config so that the CLI's help can name them without importing the store.
DEFAULT_STOP_KEYWORDS = config.DEFAULT_STOP_KEYWORDS
NUMBER_COLUMNS = ("to", "msisdn", "number", "phone")  # header names import_file recognises
_FIRST_WORD = re.compile(r"[\w-]+")


@dataclass(slots=True)
class Normalised:
    """Numbers ready for the list, and the raw values that are not numbers."""

    msisdns: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (raw, reason)


def normalise(raw_numbers: Iterable[str], *, country: str | None = None) -> Normalised:
    """Normalise numbers as recipients are (``country`` for national formats)."""
    normaliser = numbers.Normaliser(country=country)
    out = Normalised()
    for raw in raw_numbers:
        result = normaliser(raw)
        if result.msisdn is None:
            out.rejected.append((raw, result.reason or "bad number"))
        else:
            out.msisdns.append(result.msisdn)
    return out


def add(
    store: Store,
    raw_numbers: Iterable[str],
    *,
    country: str | None = None,
    source: str = "cli",
    note: str | None = None,
) -> tuple[int, Normalised]:
    """Normalise and add numbers; (how many were new, the normalisation outcome)."""
    normalised = normalise(raw_numbers, country=country)
    added = sql.add_suppressions(store, normalised.msisdns, source=source, note=note)
    return added, normalised


def remove(
    store: Store, raw_numbers: Iterable[str], *, country: str | None = None
) -> tuple[int, Normalised]:
    """Normalise and remove numbers; (how many were on the list, the normalisation outcome)."""
    normalised = normalise(raw_numbers, country=country)
    return sql.remove_suppressions(store, normalised.msisdns), normalised


def read_numbers(path: Path) -> Iterator[str]:
    """The numbers of a file: a CSV with a to/msisdn/number/phone column, or one per line.

    A first line that is such a header picks its column; otherwise every non-empty line's
    first field is a number (``#`` starts a comment line).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        return
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(lines[0], ",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(io.StringIO("\n".join(lines)), dialect)
    first = next(rows)
    header = [cell.strip().lower() for cell in first]
    column = next((header.index(name) for name in NUMBER_COLUMNS if name in header), None)
    if column is None:
        column = 0
        yield first[0].strip()
    for row in rows:
        if len(row) > column and row[column].strip():
            yield row[column].strip()


def import_file(store: Store, path: Path, *, country: str | None = None) -> tuple[int, Normalised]:
    """Add every number of a file (see :func:`read_numbers`); (new, normalisation outcome)."""
    return add(store, read_numbers(path), country=country, source="import", note=path.name)


def stop_keyword(text: str, keywords: Iterable[str] = DEFAULT_STOP_KEYWORDS) -> str | None:
    """The stop keyword a reply starts with ("stop", "Stop please", "STOP." …), or None."""
    match = _FIRST_WORD.search(text.strip())
    if match is None or match.start() != 0:
        return None
    word = match.group().upper()
    return word if word in {k.upper() for k in keywords} else None


def handle_mo(
    store: Store,
    from_number: str,
    text: str,
    *,
    keywords: Iterable[str] = DEFAULT_STOP_KEYWORDS,
    country: str | None = None,
) -> bool:
    """Add the sender of an inbound reply to the list if it asks to stop; True if it did.

    ``from_number`` is the MO's ``from`` (international digits, a leading + allowed);
    ``keywords`` are compared with the reply's first word, case-insensitively. A number already
    on the list answers True too (the reply was a stop request); anything else, False.
    """
    keyword = stop_keyword(text, keywords)
    if keyword is None:
        return False
    normalised = normalise([from_number], country=country)
    if not normalised.msisdns:
        log.warning("stop reply from an unusable number %r ignored", from_number)
        return False
    added = sql.add_suppressions(store, normalised.msisdns, source="mo", note=text[:255])
    log.info(
        "stop reply (%s): %s %s the suppression list",
        keyword,
        normalised.msisdns[0],
        "added to" if added else "already on",
    )
    return True


def numbers_for_dry_run(db_url: str) -> frozenset[str]:
    """The suppression list for a dry run, which must not create or migrate anything.

    A SQLite file that does not exist has no list; an unreadable list counts as empty, with a
    warning (a dry run only counts).
    """
    from sqlalchemy.engine import make_url

    from batch_sender.store import operators as store_operators

    try:
        url = make_url(db_url)
        if url.get_backend_name() == "sqlite" and (
            not url.database or not Path(url.database).exists()
        ):
            return frozenset()
        with Store.open(db_url, upgrade=False) as store:
            return store_operators.suppressed_numbers(store)
    except (StoreError, ValueError) as exc:
        log.warning("suppression list not read (counted as empty): %s", exc)
        return frozenset()
