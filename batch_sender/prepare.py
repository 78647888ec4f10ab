"""Turn source rows into staged rows: normalise the number, render and encode the text.

Every row comes out, accepted (`pending`) or `rejected` with a reason; duplicates are found later,
in SQL, by the store (or by :func:`dry_run` in memory).
"""

from __future__ import annotations

import hashlib
import string
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from batch_sender import numbers, sms
from batch_sender.config import RunSettings
from batch_sender.errors import InputError
from batch_sender.sources import SourceRow
from batch_sender.states import Status
from batch_sender.store import StagedRow

__all__ = ["DryRunReport", "Preparer", "Template", "dry_run"]

TEXT_COLUMN = "text"  # the column holding each row's text when --text is not given
BINARY_PAYLOAD_BYTES = 140  # one SMS carries 140 bytes of user data, UDH included
MAX_MSISDN_CHARS = 64  # width of recipients.msisdn; longer raw values are cut when rejected
XML_UNSAFE_GSM = "\x0c"  # form feed: a GSM extension character XML 1.0 cannot hold


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

    def render(self, fields: Mapping[str, str]) -> str:
        if self.static is not None:
            return self.static
        return "".join(
            lit + (fields[name] if name is not None else "") for lit, name in self._pieces
        )


def digest(wire_text: str, unicode: bool) -> str:
    """Identify one payload: recipients with equal digests share a request."""
    return hashlib.blake2b(
        wire_text.encode(), digest_size=16, person=b"u" if unicode else b"g"
    ).hexdigest()


@dataclass(frozen=True, slots=True)
class _Payload:
    wire_text: str
    unicode: bool
    parts: int
    digest: str
    non_gsm: tuple[str, ...]


class Preparer:
    """Prepare each :class:`SourceRow` of one campaign into a :class:`StagedRow`."""

    def __init__(self, settings: RunSettings, columns: Iterable[str]) -> None:
        columns = tuple(columns)
        self._options = settings.message
        self._normalise = numbers.Normaliser(
            country=settings.country, strict=settings.strict_numbers
        )
        if settings.text is not None:
            self._template: Template | None = Template(settings.text)
            self._template.check(columns)
        elif TEXT_COLUMN in columns:
            self._template = None
        else:
            raise InputError(
                f"no message text: give --text or a '{TEXT_COLUMN}' column "
                f"(the source's columns are: {', '.join(columns)})"
            )
        if self._options.udh is not None:
            sms.check_hex(self._options.udh, "--udh")
        self._static: _Payload | str | None = None
        if self._template is not None and self._template.static is not None:
            self._static = self._payload_or_reason(self._template.static)
        #: characters that forced UCS-2, with how many recipients' texts had them
        self.non_gsm: Counter[str] = Counter()

    def __call__(self, row: SourceRow) -> StagedRow:
        number = self._normalise(row.number)
        if number.msisdn is None:
            return _rejected(row, number.reason or "bad number")
        if self._static is not None:
            payload = self._static
        else:
            text = self._template.render(row.fields) if self._template else row.fields[TEXT_COLUMN]
            payload = self._payload_or_reason(text)
        if isinstance(payload, str):
            return _rejected(row, payload, msisdn=number.msisdn)
        if payload.non_gsm:
            self.non_gsm.update(payload.non_gsm)
        return StagedRow(
            row_no=row.row_no,
            msisdn=number.msisdn,
            status=Status.PENDING,
            parts=payload.parts,
            digest=payload.digest,
            wire_text=payload.wire_text,
            unicode=payload.unicode,
        )

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
            return _Payload(wire, False, 1, digest(wire, False), ())
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
        return _Payload(
            encoded.wire_text,
            encoded.unicode,
            encoded.parts,
            digest(encoded.wire_text, encoded.unicode),
            encoded.non_gsm,
        )


def _rejected(row: SourceRow, reason: str, *, msisdn: str | None = None) -> StagedRow:
    return StagedRow(
        row_no=row.row_no,
        msisdn=(msisdn if msisdn is not None else row.number)[:MAX_MSISDN_CHARS],
        status=Status.REJECTED,
        error_description=reason,
    )


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
        }


def dry_run(
    rows: Iterable[SourceRow],
    preparer: Preparer,
    *,
    chunk_size: int,
    suppressed: frozenset[str] = frozenset(),
) -> DryRunReport:
    """Count what a run would do, holding only the set of numbers seen in memory."""
    report = DryRunReport()
    seen: set[int] = set()
    per_payload: Counter[str] = Counter()
    for row in rows:
        staged = preparer(row)
        if staged.status is Status.REJECTED:
            report.rejected += 1
            report.reasons[staged.error_description or ""] += 1
            continue
        key = int(staged.msisdn)
        if key in seen:
            report.duplicates += 1
            continue
        seen.add(key)
        if staged.msisdn in suppressed:
            report.suppressed += 1
            continue
        report.recipients += 1
        report.parts += staged.parts
        report.unicode_recipients += staged.unicode
        per_payload[staged.digest or ""] += 1
    report.requests = sum(-(-n // chunk_size) for n in per_payload.values())
    report.non_gsm_characters = dict(preparer.non_gsm.most_common())
    return report
