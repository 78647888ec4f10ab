"""Turn source rows into staged rows: normalise the number, render and encode the text.

Every row comes out, accepted (`pending`) or `rejected` with a reason; duplicates are found later,
in SQL, by the store (or by :func:`dry_run` in memory). Rows go in as ``Record`` tuples and come
out as plain tuples in the order of :class:`~batch_sender.staged.StagedRow`'s fields
(:data:`~batch_sender.staged.StagedValues`), and each distinct text is encoded once, not
once per recipient.
"""

from __future__ import annotations

import hashlib
import operator
import string
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import NamedTuple

from batch_sender import numbers, sms
from batch_sender.config import RunSettings
from batch_sender.errors import InputError
from batch_sender.sources.base import Record, Source
from batch_sender.staged import StagedRow, StagedValues
from batch_sender.states import Status

__all__ = ["DryRunReport", "Preparer", "SmartEncoding", "Tallies", "Template", "dry_run"]

TEXT_COLUMN = "text"  # the column holding each row's text when --text is not given
BINARY_PAYLOAD_BYTES = 140  # one SMS carries 140 bytes of user data, UDH included
MAX_MSISDN_CHARS = 64  # width of recipients.msisdn; longer raw values are cut when rejected
XML_UNSAFE_GSM = "\x0c"  # form feed: a GSM extension character XML 1.0 cannot hold
PAYLOAD_CACHE_SIZE = 4096  # distinct rendered texts whose encoding a Preparer remembers
_PENDING = Status.PENDING.value
_REJECTED = Status.REJECTED.value


class Template:
    """A message text with ``{column}`` placeholders (``{{`` and ``}}`` for literal braces)."""

    def __init__(self, text: str) -> None:
        self.text = text
        pieces: list[tuple[str, str | None]] = []
        try:
            for literal, name, spec, conversion in string.Formatter().parse(text):
                if name is not None and (spec or conversion or not name.isidentifier()):
                    raise InputError(
                        f"--text: placeholder {{{name}{'!' + conversion if conversion else ''}"
                        f"{':' + spec if spec else ''}}} is not a plain column name"
                    )
                pieces.append((literal, name))
        except ValueError as exc:
            raise InputError(f"--text: {exc} (write {{{{ and }}}} for literal braces)") from exc
        self._pieces = tuple(pieces)
        self.fields = tuple(dict.fromkeys(name for _, name in pieces if name is not None))
        #: the rendered text when there is no placeholder at all
        self.static: str | None = None if self.fields else "".join(lit for lit, _ in pieces)

    def check(self, columns: Iterable[str]) -> None:
        """Fail before anything is staged if a placeholder names no column."""
        known = set(columns)
        missing = [name for name in self.fields if name not in known]
        if missing:
            raise InputError(
                f"--text: unknown placeholder {{{missing[0]}}}; "
                f"the source's columns are: {', '.join(sorted(known))}"
            )

    def renderer(self, columns: Sequence[str]) -> Callable[[Sequence[str]], str]:
        """A function rendering one row given as its values in ``columns`` order.

        The template becomes a positional format string (``"Hi {name}"`` → ``"Hi {1}"``): one
        ``str.format`` call per row, in C.
        """
        at = {name: index for index, name in enumerate(columns)}
        fmt = "".join(
            lit.replace("{", "{{").replace("}", "}}") + ("" if name is None else f"{{{at[name]}}}")
            for lit, name in self._pieces
        )
        return lambda values: fmt.format(*values)


def digest(wire_text: str, unicode: bool) -> str:
    """Identify one payload: recipients with equal digests share a request."""
    return hashlib.blake2b(
        wire_text.encode(), digest_size=16, person=b"u" if unicode else b"g"
    ).hexdigest()


@dataclass(frozen=True, slots=True)
class _Payload:
    """One encoded text, as its accepted rows carry it."""

    #: the :class:`StagedRow` fields its rows share, in order: all but a row's own ``row_no``
    #: and ``msisdn`` (the first two) and ``fields`` (the last), which ``staged`` puts around them
    shared: tuple[object, ...]
    non_gsm: tuple[str, ...]  # characters that forced UCS-2
    #: --smart-encoding: the characters replaced (or, when it is off, that it would replace)
    #: and the parts that saves per recipient; () and 0 when it changes nothing
    smart: tuple[str, ...] = ()
    parts_saved: int = 0


def _payload(
    wire_text: str,
    unicode: bool,
    parts: int,
    non_gsm: tuple[str, ...],
    smart: tuple[str, ...] = (),
    parts_saved: int = 0,
) -> _Payload:
    row = StagedRow(
        0,
        "",
        _PENDING,
        parts=parts,
        digest=digest(wire_text, unicode),
        wire_text=wire_text,
        unicode=unicode,
    )
    return _Payload(row[2:-1], non_gsm, smart, parts_saved)


@dataclass(slots=True)
class SmartEncoding:
    """What ``--smart-encoding`` changed in a campaign's accepted rows (or would, when off).

    Counted as rows are prepared, before duplicates and suppressed numbers are set aside.
    """

    enabled: bool = False
    characters: Counter[str] = field(default_factory=Counter)  # character → rows that had it
    rows: int = 0  # rows whose text it changes
    parts_saved: int = 0  # message parts (credits at one per part) saved over those rows

    def add_all(self, other: SmartEncoding) -> None:
        """Count ``other``'s rows too (rows prepared elsewhere)."""
        self.characters.update(other.characters)
        self.rows += other.rows
        self.parts_saved += other.parts_saved

    def as_dict(self) -> dict[str, object]:
        return {
            "enabled": self.enabled,
            "characters": {
                c: {"rows": n, "becomes": sms.SMART_REPLACEMENTS[c]}
                for c, n in self.characters.most_common()
            },
            "rows": self.rows,
            "parts_saved": self.parts_saved,
        }


@dataclass(slots=True)
class Tallies:
    """What a :class:`Preparer` counted besides its rows: how a preparer in another process
    hands its counts back (:meth:`Preparer.tallies`, :meth:`Preparer.add_tallies`)."""

    interpretations: numbers.Interpretations
    smart: SmartEncoding
    non_gsm_rows: Counter[tuple[str, ...]]


class _CountryColumn(NamedTuple):
    """--country-column: the column's index in each row's values, and the countries it names."""

    at: int
    countries: numbers.PerRowCountry


class Preparer:
    """Prepare the rows of one campaign into staged rows (see :meth:`staged`)."""

    def __init__(self, settings: RunSettings, columns: Iterable[str]) -> None:
        columns = tuple(columns)
        self._options = settings.message
        #: what the numbers needed (national → international, trunk 0 dropped, …), for a dry run
        self.interpretations = numbers.Interpretations()
        self._normalise = numbers.Normaliser(
            country=settings.country,
            strict=settings.strict_numbers,
            interpretations=self.interpretations,
        )
        #: with --country-column: where the column is, and each row's own country from it
        self._per_row: _CountryColumn | None = None
        if settings.country_column is not None:
            if settings.country_column not in columns:
                raise InputError(
                    f"--country-column: no column {settings.country_column!r}; "
                    f"the source's columns are: {', '.join(columns)}"
                )
            self._per_row = _CountryColumn(
                columns.index(settings.country_column),
                numbers.PerRowCountry(
                    settings.country_column,
                    default=settings.country,
                    strict=settings.strict_numbers,
                    interpretations=self.interpretations,
                ),
            )
        #: the message text of one row, from its values
        self._text_of: Callable[[Sequence[str]], str]
        template = None
        if settings.text is not None:
            template = Template(settings.text)
            template.check(columns)
            self._text_of = template.renderer(columns)
        elif TEXT_COLUMN in columns:
            self._text_of = operator.itemgetter(columns.index(TEXT_COLUMN))
        else:
            raise InputError(
                f"no message text: give --text or a '{TEXT_COLUMN}' column "
                f"(the source's columns are: {', '.join(columns)})"
            )
        if self._options.udh is not None:
            sms.check_hex(self._options.udh, "--udh")
        #: rendered text → its payload, or why it cannot be sent (bounded)
        self._payloads: dict[str, _Payload | str] = {}
        #: one row's payload, from its values: the same for every row without placeholders
        self._payload_of: Callable[[Sequence[str]], _Payload | str] = self._encoded
        #: whether each row's text is its own to render and encode (placeholders, or a text
        #: column), not one text for every row: five times the work of a row, or more
        self.renders_each_row = True
        if template is not None and template.static is not None:
            static = self._payload_or_reason(template.static)
            self._payload_of = lambda _values: static
            self.renders_each_row = False
        #: how many accepted rows had each payload's non-GSM characters
        self._non_gsm_rows: Counter[tuple[str, ...]] = Counter()
        #: what --smart-encoding changed (or would change)
        self.smart = SmartEncoding(enabled=self._options.smart_encoding)
        #: a row's JSON object as the pieces around its values, quoted as they are: the values
        #: go into every second place and the list is joined (``{"to":"``, value,
        #: ``","name":"``, value, …, ``"}``); values that need escaping are encoded into a
        #: %-format instead
        keys = [encode_basestring(column) for column in columns]
        self._fields_pieces: list[str] = []
        for n, key in enumerate(keys):
            self._fields_pieces += [("{" if n == 0 else '",') + key + ':"', ""]
        self._fields_pieces.append('"}')
        self._fields_escaped = "{" + ",".join(f"{k.replace('%', '%%')}:%s" for k in keys) + "}"

    @property
    def non_gsm(self) -> Counter[str]:
        """Characters that forced UCS-2, with how many recipients' texts had them."""
        counts: Counter[str] = Counter()
        for chars, rows in self._non_gsm_rows.items():
            for char in chars:
                counts[char] += rows
        return counts

    def tallies(self) -> Tallies:
        """What this preparer counted so far, besides its rows."""
        return Tallies(self.interpretations, self.smart, self._non_gsm_rows)

    def add_tallies(self, tallies: Tallies) -> None:
        """Count what another preparer (of the same campaign) counted, as if done here."""
        self.interpretations.add_all(tallies.interpretations)
        self.smart.add_all(tallies.smart)
        self._non_gsm_rows.update(tallies.non_gsm_rows)

    def staged(
        self, records: Iterable[Record], *, fields: bool = True
    ) -> Generator[StagedValues, None, None]:
        """Each record as a staged row (:data:`StagedValues`: a :class:`StagedRow`'s fields in
        order), accepted (``pending``) or ``rejected`` with a reason, with the source row as a
        JSON object (``fields``; None when ``fields`` is False).

        The hot loop of staging: a number that is already international digits costs a few
        string checks, a text seen before (every row, when the template has no placeholder)
        one dict lookup, and the row's JSON one join of its values when none needs escaping.
        """
        number = self._normalise.pair
        payload_of = self._payload_of
        non_gsm = self._non_gsm_rows
        per_row = self._per_row
        pieces = list(self._fields_pieces)
        escaped = self._fields_escaped
        row_json: str | None = None
        for row_no, _, raw, values in records:
            if fields:
                # JSON escapes only '"', '\\' and control characters (not printable): a row
                # without any is its values in quotes; one with any goes through the encoder.
                # (Checking ASCII rows as bytes, one translate, cost 1,800 instructions a row
                # more than these three checks.)
                joined = "".join(values)
                if '"' in joined or "\\" in joined or not joined.isprintable():
                    row_json = escaped % tuple(map(encode_basestring, values))
                else:
                    pieces[1::2] = values
                    row_json = "".join(pieces)
            if per_row is None:
                msisdn, reason = number(raw)
            else:
                msisdn, reason = per_row.countries.pair(raw, values[per_row.at])
            if msisdn is None:
                yield _rejected(row_no, raw, reason or "bad number", row_json)
                continue
            payload = payload_of(values)
            if isinstance(payload, str):
                yield _rejected(row_no, msisdn, payload, row_json)
                continue
            if payload.non_gsm:
                non_gsm[payload.non_gsm] += 1
            if payload.smart:
                self._count_smart(payload)
            yield (row_no, msisdn, *payload.shared, row_json)  # type: ignore[misc]

    def _count_smart(self, payload: _Payload) -> None:
        smart = self.smart
        smart.rows += 1
        smart.parts_saved += payload.parts_saved
        for char in payload.smart:
            smart.characters[char] += 1

    def _encoded(self, values: Sequence[str]) -> _Payload | str:
        """The payload of one row's text, encoded once per distinct text."""
        text = self._text_of(values)
        payload = self._payloads.get(text)
        if payload is None:
            payload = self._payload_or_reason(text)
            if len(self._payloads) >= PAYLOAD_CACHE_SIZE:
                self._payloads.clear()
            self._payloads[text] = payload
        return payload

    def _payload_or_reason(self, text: str) -> _Payload | str:
        """Encode one rendered text, or say why it cannot be sent."""
        options = self._options
        if not text:
            return "empty message text"
        if options.binary:
            try:
                wire = sms.check_hex(text, "binary payload")
            except InputError as exc:
                return str(exc)
            size = len(wire) // 2 + (len(options.udh) // 2 if options.udh else 0)
            if size > BINARY_PAYLOAD_BYTES:
                return f"binary payload of {size} bytes exceeds {BINARY_PAYLOAD_BYTES}"
            return _payload(wire, False, 1, ())
        smart: tuple[str, ...] = ()
        saved = 0  # parts per recipient that --smart-encoding saves (or would, when off)
        if options.unicode is not True:
            smarter, smart = sms.smarten(text)
            if smart:
                as_written = sms.encode(text).parts  # UCS-2: smarten changes only such texts
                saved = max(as_written - sms.encode(smarter).parts, 0)
                if options.smart_encoding:
                    text = smarter
        try:
            encoded = sms.encode(text, unicode=options.unicode)
            if not encoded.unicode and XML_UNSAFE_GSM in encoded.wire_text:
                # GSM's form feed cannot travel in XML text: only UCS-2 hex can carry it.
                if options.unicode is False:
                    return "the text holds a form feed, which only --unicode can carry"
                encoded = sms.encode(text, unicode=True)
        except InputError as exc:
            return str(exc)
        if encoded.parts > options.max_parts:
            return f"text needs {encoded.parts} message parts, over --max-parts {options.max_parts}"
        return _payload(
            encoded.wire_text, encoded.unicode, encoded.parts, encoded.non_gsm, smart, saved
        )


def _rejected(row_no: int, msisdn: str, reason: str, fields: str | None) -> StagedValues:
    """A rejected row: its number (the raw value, cut to the column, for a bad number) and why."""
    # built by name (rejected rows are few), handed on as the plain tuple every row is
    return tuple(
        StagedRow(
            row_no, msisdn[:MAX_MSISDN_CHARS], _REJECTED, error_description=reason, fields=fields
        )
    )  # type: ignore[return-value]


@dataclass(slots=True)
class DryRunReport:
    """What a run would stage and send; nothing is written anywhere."""

    recipients: int = 0  # accepted, unique: what would be sent
    rejected: int = 0
    duplicates: int = 0
    suppressed: int = 0
    parts: int = 0  # message parts, i.e. credits at one credit per part
    unicode_recipients: int = 0
    requests: int = 0  # sendmsg requests at the chosen chunk size
    reasons: Counter[str] = field(default_factory=Counter)
    non_gsm_characters: dict[str, int] = field(default_factory=dict)
    #: rows per interpretation rule, with examples (see ``numbers.Interpretations.as_dict``)
    numbers_interpreted: dict[str, dict[str, object]] = field(default_factory=dict)
    countries: Counter[str] = field(default_factory=Counter)  # region → recipients
    smart_encoding: SmartEncoding = field(default_factory=SmartEncoding)

    def as_dict(self) -> dict[str, object]:
        return {
            "recipients": self.recipients,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "suppressed": self.suppressed,
            "parts": self.parts,
            "unicode_recipients": self.unicode_recipients,
            "requests": self.requests,
            "rejection_reasons": dict(self.reasons.most_common()),
            "non_gsm_characters": self.non_gsm_characters,
            "numbers_interpreted": self.numbers_interpreted,
            "countries": dict(self.countries.most_common()),
            "smart_encoding": self.smart_encoding.as_dict(),
        }


def dry_run(
    source: Source,
    preparer: Preparer,
    *,
    chunk_size: int,
    suppressed: frozenset[str] = frozenset(),
) -> DryRunReport:
    """Count what a run would do, holding only the set of numbers seen in memory."""
    report = DryRunReport()
    seen: set[int] = set()
    per_payload: Counter[str] = Counter()
    starts: Counter[str] = Counter()  # recipients per first 3 digits (the region, mostly)
    #: recipients whose calling code several regions share (+1, +44, …), by their first 7
    #: digits (enough to tell the region apart), with one number of each to ask phonenumbers
    shared: Counter[str] = Counter()
    sample: dict[str, str] = {}
    shared_start = numbers.shared_calling_code_start
    for row in preparer.staged(source.records(), fields=False):
        _, msisdn, status, parts, digest, _, unicode, _, reason, _ = row  # StagedRow's order
        if status == _REJECTED:
            report.rejected += 1
            report.reasons[reason or ""] += 1
            continue
        key = int(msisdn)
        if key in seen:
            report.duplicates += 1
            continue
        seen.add(key)
        if msisdn in suppressed:
            report.suppressed += 1
            continue
        report.recipients += 1
        start = msisdn[:3]
        if start in shared_start:
            shared[msisdn[:7]] += 1
            sample.setdefault(msisdn[:7], msisdn)
        else:
            starts[start] += 1
        report.parts += parts
        report.unicode_recipients += unicode
        per_payload[digest or ""] += 1
    report.requests = sum(-(-n // chunk_size) for n in per_payload.values())
    report.non_gsm_characters = dict(preparer.non_gsm.most_common())
    report.numbers_interpreted = preparer.interpretations.as_dict()
    report.smart_encoding = preparer.smart
    for start, count in starts.items():
        report.countries[numbers.region_of(start)] += count
    for first7, count in shared.items():
        report.countries[numbers.region_of(sample[first7])] += count
    return report
