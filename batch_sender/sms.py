"""SMS text encoding: choose GSM 03.38 or UCS-2 and count message parts, as the gateway bills them.

Clickatell takes ``text`` as plain text (GSM 03.38, 7-bit septets) or, with ``unicode=1``, as the
UTF-16 big-endian code units of the text written in hexadecimal (clickatell-api.md §3.4). A part
holds 160 septets or 70 UCS-2 units alone, 153 or 67 once concatenated (a 6-byte UDH takes the
rest). Splitting is greedy and never cuts a character in two: neither a GSM escape pair (an
extension-table character, 2 septets) nor a UTF-16 surrogate pair (a character outside the BMP,
such as an emoji, 2 units). So a concatenated part may carry 152 septets or 66 units, and the part
count can exceed the plain ``ceil(n / 153)`` or ``ceil(n / 67)``.

Hex is written in lowercase (as in Clickatell's own unicode example) and read in either case.

Use :func:`encode` once per rendered message; the rest are its parts, exported for the simulator
(:func:`parts_for_wire`), the CLI (:func:`check_hex`) and the tests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from batch_sender.errors import InputError

__all__ = [
    "GSM_BASIC",
    "GSM_EXTENSION",
    "GSM_PART",
    "GSM_SINGLE",
    "UCS2_PART",
    "UCS2_SINGLE",
    "SMART_REPLACEMENTS",
    "Encoded",
    "check_hex",
    "encode",
    "from_ucs2_hex",
    "gsm_parts",
    "gsm_septets",
    "gsm_split",
    "parts_for_wire",
    "readable",
    "smarten",
    "to_ucs2_hex",
    "ucs2_parts",
    "ucs2_split",
    "ucs2_units",
]

GSM_SINGLE = 160  # septets in a message sent alone
GSM_PART = 153  # septets per part of a concatenated message (6-byte UDH)
UCS2_SINGLE = 70  # UTF-16 code units in a message sent alone
UCS2_PART = 67  # UTF-16 code units per part of a concatenated message

#: GSM 03.38 basic table, one septet each (the escape code 0x1B is not a character to send).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: GSM 03.38 extension table: sent as ESC + character, two septets each.
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")
_GSM_ALL = GSM_BASIC | GSM_EXTENSION

# Fast paths: plain ASCII text is checked with one bytes.translate (C speed, no per-char Python),
# other text with one regex scan; both find the rare characters that are not one plain septet.
_ASCII_BASIC = bytes(sorted(ord(c) for c in GSM_BASIC if c.isascii()))
_ASCII_EXTENSION = bytes(sorted(ord(c) for c in GSM_EXTENSION if c.isascii()))
_NOT_GSM = re.compile("[^" + re.escape("".join(sorted(_GSM_ALL))) + "]")
_EXTENSION_CHAR = re.compile("[" + re.escape("".join(sorted(GSM_EXTENSION))) + "]")
_HEX = re.compile(r"[0-9A-Fa-f]*")

#: ``--smart-encoding``: typographic characters (what word processors and phones type for
#: quotes, dashes, "..." and spaces) → the GSM characters they stand for. Letters are never
#: replaced (an "á" is not an "a" to its reader): only punctuation and spacing.
SMART_REPLACEMENTS: dict[str, str] = {
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u2039\u203a\u02bc", "'"),  # ‘ ’ ‚ ‛ ′ ‹ › ʼ
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb", '"'),  # “ ” „ ‟ ″ « »
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),  # ‐ ‑ ‒ – — ― −
    "\u2026": "...",  # …
    # no-break, en/em/thin/hair/narrow spaces, ideographic space, tab: a plain space
    **dict.fromkeys("\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008", " "),
    **dict.fromkeys("\u2009\u200a\u202f\u205f\u3000\t", " "),
    # invisible: zero-width space and non-joiner, word joiner, BOM, soft hyphen
    **dict.fromkeys("\u200b\u200c\u2060\ufeff\u00ad", ""),
}
_SMART_TABLE = str.maketrans(SMART_REPLACEMENTS)
_SMART_CHAR = re.compile("[" + re.escape("".join(sorted(SMART_REPLACEMENTS))) + "]")


@dataclass(frozen=True, slots=True)
class Encoded:
    """A message text ready for ``sendmsg``: what to put in ``<text>`` and what it will cost."""

    wire_text: str  # what goes in <text>: the text itself (GSM) or UCS-2 BE hex, 4 digits per unit
    unicode: bool  # True: send unicode=1
    units: int  # septets (GSM) or UTF-16 code units (UCS-2)
    parts: int  # message parts (credits at one per part)
    non_gsm: tuple[str, ...]  # distinct characters that forced UCS-2, first seen first; () if none


def encode(text: str, *, unicode: bool | None = None) -> Encoded:
    """Encode a rendered message for the wire, GSM when it fits, and count its parts.

    ``unicode=None`` picks GSM 03.38 when every character is in its basic or extension table,
    else UCS-2; ``True`` forces UCS-2; ``False`` forces GSM and raises :class:`InputError`
    naming the characters that do not fit. Empty text is an :class:`InputError` (ERR 107).
    """
    if not text:
        raise InputError("the message text is empty")
    if unicode is not True:
        septets = gsm_septets(text)
        if septets is not None:
            return Encoded(text, False, septets, _gsm_parts(text, septets), ())
        if unicode is False:
            raise InputError(
                "the text does not fit GSM 03.38 (--no-unicode): " + _describe(_non_gsm_chars(text))
            )
    data = _utf16(text)
    non_gsm = () if unicode else _non_gsm_chars(text)
    return Encoded(data.hex(), True, len(data) // 2, _ucs2_parts(data), non_gsm)


def smarten(text: str) -> tuple[str, tuple[str, ...]]:
    """The text with :data:`SMART_REPLACEMENTS` applied, and the distinct characters replaced.

    Only when that makes the whole text GSM: a text that needs UCS-2 anyway (an emoji, a
    Cyrillic name) costs the same either way and is returned unchanged, with ``()``.
    """
    if text.isascii() and "\t" not in text:
        return text, ()
    found = _SMART_CHAR.findall(text)
    if not found:
        return text, ()
    smart = text.translate(_SMART_TABLE)
    if gsm_septets(smart) is None:
        return text, ()
    return smart, tuple(dict.fromkeys(found))


def gsm_septets(text: str) -> int | None:
    """Septets the text takes in GSM 03.38 (extension characters: 2), None if it does not fit."""
    if text.isascii():
        rest = text.encode("ascii").translate(None, _ASCII_BASIC)
        if not rest:
            return len(text)
        if rest.translate(None, _ASCII_EXTENSION):
            return None
        return len(text) + len(rest)
    if _NOT_GSM.search(text):
        return None
    return len(text) + len(_EXTENSION_CHAR.findall(text))


def gsm_parts(text: str) -> int:
    """Parts the text takes as GSM: 1 up to 160 septets, else greedy 153-septet parts.

    An escape pair is never split, so a part may carry 152. Raises :class:`InputError` when the
    text does not fit GSM 03.38. Empty text is one (empty) part.
    """
    septets = gsm_septets(text)
    if septets is None:
        raise InputError("the text does not fit GSM 03.38: " + _describe(_non_gsm_chars(text)))
    return _gsm_parts(text, septets)


def gsm_split(text: str) -> list[str]:
    """The text cut into the GSM parts :func:`gsm_parts` counts (for tests and the simulator)."""
    if gsm_septets(text) is None:
        raise InputError("the text does not fit GSM 03.38: " + _describe(_non_gsm_chars(text)))
    return list(_split(text, _gsm_cost, GSM_SINGLE, GSM_PART))


def ucs2_units(text: str) -> int:
    """UTF-16 code units of the text: characters outside the BMP (emoji) count 2."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-be", "surrogatepass")) // 2


def ucs2_parts(units: int) -> int:
    """Parts for ``units`` UCS-2 units: 1 up to 70, else ``ceil(units / 67)``.

    This is exact when no surrogate pair straddles a part boundary; :func:`encode` and
    :func:`parts_for_wire` count from the text and move such a pair to the next part
    (see :func:`ucs2_split`), which can add one part.
    """
    if units <= UCS2_SINGLE:
        return 1
    return math.ceil(units / UCS2_PART)


def ucs2_split(text: str) -> list[str]:
    """The text cut into UCS-2 parts of at most 70 (alone) or 67 units, never inside a pair."""
    return list(_split(text, _ucs2_cost, UCS2_SINGLE, UCS2_PART))


def to_ucs2_hex(text: str) -> str:
    """The text as UTF-16 big-endian code units in lowercase hex: ``"Hi"`` → ``"00480069"``."""
    return _utf16(text).hex()


def from_ucs2_hex(hexstr: str) -> str:
    """Decode UCS-2/UTF-16BE hex (either case) back to text; :class:`InputError` if malformed."""
    if len(hexstr) % 4 or not _HEX.fullmatch(hexstr):
        raise InputError(
            f"invalid unicode hex ({len(hexstr)} characters): "
            "expected hex digits only, 4 per UTF-16 code unit"
        )
    try:
        return bytes.fromhex(hexstr).decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise InputError(f"invalid unicode hex: lone surrogate at unit {exc.start // 2}") from exc


def readable(wire_text: str, unicode: bool) -> str:
    """The text a person reads from what travels in ``<text>``: UCS-2 hex decoded, GSM text
    (and a binary payload's hex) as it is. What ``results.text`` shows."""
    if not unicode:
        return wire_text
    try:
        return from_ucs2_hex(wire_text)
    except InputError:
        return wire_text


def parts_for_wire(wire_text: str, unicode: bool) -> int:
    """Parts a received ``<text>`` costs, as the gateway (our simulator) counts them.

    With ``unicode`` the text is hex and an :class:`InputError` means ERR 116; without it, a
    character outside GSM 03.38 is counted as one septet (the gateway substitutes it).
    """
    if unicode:
        from_ucs2_hex(wire_text)  # validates: InputError means ERR 116
        return _ucs2_parts(bytes.fromhex(wire_text))
    return _gsm_parts(wire_text, len(wire_text) + len(_EXTENSION_CHAR.findall(wire_text)))


def check_hex(value: str, what: str) -> str:
    """Validate hex for ``--udh`` or binary data; return it uppercased, else :class:`InputError`."""
    stripped = value.strip()
    if not stripped:
        raise InputError(f"{what} is empty: expected hex digits")
    if not _HEX.fullmatch(stripped):
        raise InputError(f"{what} is not hex: {value!r}")
    if len(stripped) % 2:
        raise InputError(f"{what} has an odd number of hex digits ({len(stripped)})")
    return stripped.upper()


def _gsm_parts(text: str, septets: int) -> int:
    """Parts for GSM text of ``septets``: walks part boundaries, moving one back off an ESC."""
    if septets <= GSM_SINGLE:
        return 1
    if septets == len(text):  # no escape pairs: every boundary is free
        return math.ceil(septets / GSM_PART)
    # septet offset of each ESC: the k-th extension character at index i has its ESC at i + k
    escapes = {match.start() + k for k, match in enumerate(_EXTENSION_CHAR.finditer(text))}
    parts = start = 0
    while start < septets:
        end = start + GSM_PART
        if end < septets and end - 1 in escapes:  # the pair would be cut: move it to the next part
            end -= 1
        parts, start = parts + 1, end
    return parts


def _ucs2_parts(data: bytes) -> int:
    """Parts for UTF-16BE ``data``: walks part boundaries, moving one back off a high surrogate."""
    units = len(data) // 2
    if units <= UCS2_SINGLE:
        return 1
    parts = start = 0
    while start < units:
        end = start + UCS2_PART
        if end < units and 0xD8 <= data[2 * end - 2] <= 0xDB:  # a pair would be cut
            end -= 1
        parts, start = parts + 1, end
    return parts


def _utf16(text: str) -> bytes:
    """The text as UTF-16BE bytes; :class:`InputError` for a lone surrogate (cannot be sent)."""
    try:
        return text.encode("utf-16-be")
    except UnicodeEncodeError as exc:
        raise InputError(f"the text holds a lone surrogate at position {exc.start}") from exc


def _gsm_cost(char: str) -> int:
    """Septets of one character: 2 for an escape pair, else 1 (non-GSM counts 1, substituted)."""
    return 2 if char in GSM_EXTENSION else 1


def _ucs2_cost(char: str) -> int:
    """UTF-16 units of one character: 2 outside the BMP (a surrogate pair), else 1."""
    return 2 if char > "\uffff" else 1


def _split(text: str, cost: Callable[[str], int], single: int, part: int) -> Iterator[str]:
    """Greedy split, character by character: all in one part if it fits ``single``, else ≤ ``part``.

    Greedy filling is optimal for a contiguous split, so this is also the fewest parts. It is the
    plain statement of the rule; the counting functions above take a faster walk to the same
    answer (the property tests hold them to it).
    """
    costs = [cost(char) for char in text]
    if sum(costs) <= single:
        yield text
        return
    start = used = 0
    for index, char_cost in enumerate(costs):
        if used + char_cost > part:
            yield text[start:index]
            start, used = index, 0
        used += char_cost
    yield text[start:]


def _non_gsm_chars(text: str) -> tuple[str, ...]:
    """Distinct characters outside GSM 03.38, in the order they first appear."""
    return tuple(char for char in dict.fromkeys(text) if char not in _GSM_ALL)


def _describe(chars: tuple[str, ...]) -> str:
    """Characters for an error message, with code points (many are invisible or look-alike)."""
    shown = ", ".join(f"{char!r} (U+{ord(char):04X})" for char in chars[:10])
    more = f" and {len(chars) - 10} more" if len(chars) > 10 else ""
    return shown + more
