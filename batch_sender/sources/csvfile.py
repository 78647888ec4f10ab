"""Recipients from a CSV file, streamed row by row so memory stays flat with the file's size.

The header is read and checked when the file is opened (``open_csv``), so a bad file is refused
before anything is staged; a bad row further down raises ``InputError`` naming the file and the
physical line when iteration reaches it. Every message is one line.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from batch_sender.errors import InputError
from batch_sender.sources.base import Record, StreamOnce

__all__ = [
    "DEFAULT_ENCODING",
    "DELIMITERS",
    "MAX_FIELD_CHARS",
    "SNIFF_BYTES",
    "CsvSource",
    "detect_encoding",
    "open_csv",
    "open_csv_stream",
]

DELIMITERS: Final = ",;\t|"  # the only delimiters sniffing may choose
SNIFF_BYTES: Final = 16 * 1024  # bytes read from the start of the file to guess the delimiter
MAX_FIELD_CHARS: Final = 1024 * 1024  # characters in one field; more means a broken file
_READ_CHUNK: Final = 64 * 1024  # bytes per read from disk and per decode step
_HASH_BLOCK: Final = 1024 * 1024  # bytes per step when fingerprinting the file
#: files without a byte-order mark: UTF-8, a BOM tolerated (the name is part of the campaign
#: fingerprint, so it stays what earlier versions used)
DEFAULT_ENCODING: Final = "utf-8-sig"
#: byte-order marks and the codec that reads (and drops) each; UTF-32 LE starts like UTF-16 LE,
#: so it is looked for first
_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class _NulByte(Exception):
    """Raised inside the read path when a NUL byte shows the file is not text."""


class _NulCheckingReader(io.BufferedReader):
    """A buffered file refusing NUL bytes, checked per chunk: one memchr, no per-line cost."""

    def read1(self, size: int = -1, /) -> bytes:
        data = super().read1(size)
        if b"\x00" in data:
            raise _NulByte
        return data


class CsvSource(StreamOnce):
    """A CSV file of recipients whose header has been read and checked; iterate once."""

    def __init__(
        self,
        path: Path,
        display: str,
        *,
        to_column: str,
        delimiter: str,
        encoding: str,
        allow_empty: bool,
    ) -> None:
        self.path = path
        self.description = display
        self.to_column = to_column
        self.delimiter = delimiter
        self.encoding = encoding
        super().__init__()
        self._identity: str | None = None
        self.spooled = False  # a temporary copy of a stream: removed on close
        self._file = _open_text(path, display, encoding)
        try:
            self._reader = csv.reader(self._file, delimiter=delimiter, strict=True)
            self.columns = self._read_header()
            self._to_index = self.columns.index(to_column)
            self._first = self._next_row(row_no=1)
            if self._first is None and not allow_empty:
                raise InputError(f"{display}: no recipients (the file has a header row only)")
        except BaseException:
            self._file.close()
            raise

    @property
    def identity(self) -> str:
        """The recipients' content, not where they live: sha256 and size of the bytes, and how
        they are read. A renamed or copied export is the same campaign; an edited one is not.
        """
        if self._identity is None:
            digest = hashlib.sha256()
            size = 0
            try:
                with self.path.open("rb") as raw:
                    while block := raw.read(_HASH_BLOCK):
                        digest.update(block)
                        size += len(block)
            except OSError as exc:
                raise InputError(f"{self.description}: cannot read: {exc.strerror}") from exc
            self._identity = (
                f"csv sha256={digest.hexdigest()} size={size} to={self.to_column!r}"
                f" delimiter={self.delimiter!r} encoding={self.encoding}"
            )
        return self._identity

    def close(self) -> None:
        """Release the file; safe to call twice, and in the middle of an iteration."""
        self._stop_rows()
        self._file.close()
        if self.spooled:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<CsvSource {self.description!r} columns={self.columns!r}>"

    # -- reading -----------------------------------------------------------------------------

    def _read_header(self) -> tuple[str, ...]:
        """The header's names, stripped; refuses an empty file, unnamed or repeated columns."""
        with self._converted_errors(start_line=1):
            row: list[str] = []
            while not row:  # blank lines before the header are skipped
                row = next(self._reader, None)  # type: ignore[arg-type]
                if row is None:
                    raise InputError(f"{self.description}: the file is empty (no header row)")
        names = [name.strip() for name in row]
        names[0] = names[0].lstrip("\ufeff").strip()  # a BOM left by encoding="utf-8"
        line = self._reader.line_num
        seen: dict[str, int] = {}
        for col, name in enumerate(names, start=1):
            if not name:
                raise InputError(
                    f"{self.description}: line {line}: header column {col} has no name"
                )
            if name in seen:
                raise InputError(
                    f"{self.description}: line {line}: duplicate column {name!r}"
                    f" (columns {seen[name]} and {col})"
                )
            seen[name] = col
        if self.to_column not in seen:
            found = ", ".join(names)
            raise InputError(
                f"{self.description}: no {self.to_column!r} column for the numbers;"
                f" the header has: {found}"
            )
        return tuple(names)

    def _next_row(self, *, row_no: int) -> Record | None:
        """The next non-blank row, checked, or None at the end of the file (used for the first)."""
        reader = self._reader
        width = len(self.columns)
        start = reader.line_num + 1
        with self._converted_errors(start_line=start):
            for row in reader:
                if len(row) == width:
                    return row_no, start, row[self._to_index], row
                if row:
                    raise self._ragged(start, len(row))
                start = reader.line_num + 1
        return None

    def _rows(self) -> Generator[Record, None, None]:
        """Yield every data row; the hot loop of a million-row campaign, so kept lean."""
        try:
            first = self._first
            if first is None:
                return
            self._first = None
            yield first
            reader = self._reader
            width = len(self.columns)
            index = self._to_index
            row_no = 1
            line = reader.line_num
            try:
                for row in reader:
                    if len(row) != width:
                        if row:
                            raise self._ragged(line + 1, len(row))
                        line = reader.line_num  # a blank line: not a recipient
                        continue
                    row_no += 1
                    start = line + 1
                    line = reader.line_num
                    yield row_no, start, row[index], row
            except (csv.Error, UnicodeDecodeError, _NulByte) as exc:
                raise self._input_error(exc, line + 1) from exc
        finally:
            self._file.close()

    def _ragged(self, line: int, count: int) -> InputError:
        width = len(self.columns)
        hint = (
            f"a stray {self.delimiter!r} in an unquoted field?"
            if count > width
            else "missing fields?"
        )
        return InputError(
            f"{self.description}: line {line}: {count} field{'s' * (count != 1)}"
            f" where the header has {width} ({hint})"
        )

    @contextlib.contextmanager
    def _converted_errors(self, *, start_line: int) -> Iterator[None]:
        """Convert read errors of the header and first row (the hot loop does it inline)."""
        try:
            yield
        except (csv.Error, UnicodeDecodeError, _NulByte) as exc:
            raise self._input_error(exc, start_line) from exc

    def _input_error(self, exc: BaseException, start_line: int) -> InputError:
        """Turn a decoding or CSV error into one line naming the file and the line."""
        where = f"{self.description}: line"
        if isinstance(exc, UnicodeDecodeError | _NulByte):
            bad_line, what = _find_bad_line(self.path, self.encoding)
            if what == "nul":
                return InputError(f"{where} {bad_line}: NUL byte (is this a CSV text file?)")
            return InputError(
                f"{where} {bad_line}: not valid {_encoding_name(self.encoding)} text"
                " (save the file as UTF-8, or name its encoding: --encoding cp1252 for"
                " Excel's CSV on Windows, latin-1, ...)"
            )
        message = str(exc)
        if message.startswith("field larger than field limit"):
            return InputError(
                f"{where} {start_line}: a field longer than {MAX_FIELD_CHARS} characters"
                " (an unbalanced quote?)"
            )
        if message == "unexpected end of data":
            return InputError(
                f"{where} {start_line}: a quoted field is never closed before the end of the file"
            )
        return InputError(f"{where} {self._reader.line_num}: malformed CSV: {message}")


def open_csv(
    path: str | Path,
    *,
    to_column: str = "to",
    delimiter: str | None = None,
    encoding: str | None = None,
    allow_empty: bool = False,
    display: str | None = None,
) -> CsvSource:
    """Open a CSV file of recipients, sniffing its delimiter and checking its header now.

    ``encoding=None`` reads the byte-order mark: UTF-16 and UTF-32 (Excel's "Unicode text") and
    UTF-8 with or without one; a file without a BOM is UTF-8. Any other encoding (``cp1252``
    for Excel's "CSV" on Windows) must be named. Raises ``InputError`` for a missing or
    unreadable file, an empty one, a header without ``to_column`` or with unnamed or repeated
    columns, and (unless ``allow_empty``) a file with no data rows.
    """
    display = display or str(path)
    path = Path(path)
    if delimiter is not None and len(delimiter) != 1:
        raise InputError(f"{display}: the delimiter must be one character, not {delimiter!r}")
    if encoding is None:
        encoding = detect_encoding(path, display)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"{display}: unknown encoding {encoding!r}") from None
    if codecs.lookup(encoding).name == "utf-8":
        encoding = DEFAULT_ENCODING  # a BOM is dropped, and the fingerprint is as before
    if delimiter is None:
        delimiter = _sniff_delimiter(path, display, encoding)
    _set_field_limit()
    return CsvSource(
        path,
        display,
        to_column=to_column,
        delimiter=delimiter,
        encoding=encoding,
        allow_empty=allow_empty,
    )


def open_csv_stream(
    stream: IO[bytes],
    *,
    display: str = "<stdin>",
    to_column: str = "to",
    delimiter: str | None = None,
    encoding: str | None = None,
    allow_empty: bool = False,
) -> CsvSource:
    """A CSV read from a stream (standard input), as :func:`open_csv` reads a file.

    The stream is copied to a temporary file first, so it can be fingerprinted, sniffed and
    re-read for error messages like a file, with memory flat; the copy goes when the source
    is closed. Its ``identity`` is its content: piping the same export again resumes the
    campaign.
    """
    fd, name = tempfile.mkstemp(prefix="batch-sender-", suffix=".csv")
    spool_path = Path(name)
    try:
        with os.fdopen(fd, "wb") as spool:
            shutil.copyfileobj(stream, spool, _READ_CHUNK)
        source = open_csv(
            spool_path,
            to_column=to_column,
            delimiter=delimiter,
            encoding=encoding,
            allow_empty=allow_empty,
            display=display,
        )
    except BaseException:
        spool_path.unlink(missing_ok=True)
        raise
    source.spooled = True
    return source


def detect_encoding(path: Path, display: str) -> str:
    """The codec a byte-order mark at the start of ``path`` names, else UTF-8."""
    try:
        with path.open("rb") as raw:
            head = raw.read(4)
    except FileNotFoundError:
        raise InputError(f"{display}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{display}: is a directory, not a CSV file") from None
    except OSError as exc:
        raise InputError(f"{display}: cannot open: {exc.strerror}") from None
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec
    return DEFAULT_ENCODING


def _set_field_limit() -> None:
    """csv's limit is process-wide; ours is the only CSV reading in the process."""
    csv.field_size_limit(MAX_FIELD_CHARS)


def _open_text(path: Path, display: str, encoding: str) -> IO[str]:
    """Open for streaming: big reads, strict decoding, newlines left for csv to handle."""
    try:
        raw = io.FileIO(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{display}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{display}: is a directory, not a CSV file") from None
    except OSError as exc:
        raise InputError(f"{display}: cannot open: {exc.strerror}") from None
    buffered: io.BufferedReader
    if _ascii_compatible(encoding):
        buffered = _NulCheckingReader(raw, buffer_size=_READ_CHUNK)
    else:  # NUL is part of every UTF-16/32 character: nothing to check at the byte level
        buffered = io.BufferedReader(raw, buffer_size=_READ_CHUNK)
    text = io.TextIOWrapper(buffered, encoding=encoding, errors="strict", newline="")
    text._CHUNK_SIZE = _READ_CHUNK  # type: ignore[attr-defined]
    return text


def _encoding_name(encoding: str) -> str:
    name = codecs.lookup(encoding).name
    return "UTF-8" if name.startswith("utf-8") else name


def _ascii_compatible(encoding: str) -> bool:
    return b"\x00" not in "a\n".encode(encoding)


def _sniff_delimiter(path: Path, display: str, encoding: str) -> str:
    """Guess the delimiter from the first lines (complete ones only); ',' when unsure."""
    try:
        with path.open("rb") as raw:
            head = raw.read(SNIFF_BYTES)
    except FileNotFoundError:
        raise InputError(f"{display}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{display}: is a directory, not a CSV file") from None
    except OSError as exc:
        raise InputError(f"{display}: cannot open: {exc.strerror}") from None
    sample = head.decode(encoding, errors="replace")  # decoding errors are reported by line later
    if len(head) == SNIFF_BYTES:
        cut = max(sample.rfind("\n"), sample.rfind("\r"))
        if cut > 0:
            sample = sample[:cut]
    sample = sample.lstrip("\ufeff")
    header = sample.splitlines()[0] if sample else ""
    counts = {d: header.count(d) for d in DELIMITERS}
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        sniffed = None
    if sniffed is not None and (counts[sniffed] or not any(counts.values())):
        return sniffed
    # Unsure, or the guess is missing from the header (commas in unquoted names of a ';' file):
    # the header, which holds no free text, decides.
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _find_bad_line(path: Path, encoding: str) -> tuple[int, str]:
    """Re-read the file from the start to name the first line that is not text (error path only).

    The streaming read decodes 64 KiB at a time, so the error's own position says little; this
    slow pass decodes line by line. Returns (line number, "nul" | "decode").
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    check_nul = _ascii_compatible(encoding)
    line = 1
    pending_cr = False
    with path.open("rb") as raw:
        for piece in raw:  # split at b"\n": safe for every ASCII-compatible encoding
            try:
                text = decoder.decode(piece)
            except UnicodeDecodeError as exc:
                return line + _count_newlines(piece[: exc.start].decode("latin-1"), False), "decode"
            if check_nul and "\x00" in text:
                return line + _count_newlines(text[: text.index("\x00")], pending_cr), "nul"
            line += _count_newlines(text, pending_cr)
            pending_cr = text.endswith("\r")
    return line, "decode"  # the end of the file holds a truncated character


def _count_newlines(text: str, after_cr: bool) -> int:
    """Line breaks in text as csv counts them: \\r\\n, \\r and \\n are one each."""
    count = text.count("\n") + text.count("\r") - text.count("\r\n")
    if after_cr and text.startswith("\n"):
        count -= 1  # the \n of a \r\n split across two pieces
    return count
