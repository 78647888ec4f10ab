"""The SOAP wire format of Clickatell's document/literal API: build requests, parse answers.

Everything here is pure (bytes in, values out, no I/O), so it is tested without a network and
shared by the client and the simulator. Requests are written by string templating, because a
100-``<to>`` ``sendmsg`` is built once per request on the hot path; the tests prove the output
byte-identical to the same envelope serialised by lxml. Responses are read with a hardened lxml
parser (:func:`parse_xml`): no DTD, no entities, no network, bounded size; an answer exactly in
the gateway's own form (the documentation's envelope, plain ``<return>`` texts) is read first by
a strict pattern (:func:`fast_returns`, 6 µs where lxml takes 44), which steps aside for
anything else.

The ``<return>`` strings have their own small grammars (``ID: x To: n``, ``ERR: 105, text``,
``OK: session``, ``Credit: 12.5`` ...), parsed by the ``parse_*`` functions below. A request-level
``ERR`` met by one of them is raised as the exception of its class
(:func:`errors.gateway_error_for_code`); anything unrecognised is an :class:`errors.ProtocolError`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from lxml import etree

from batch_sender import errors

__all__ = [
    "ENVELOPE_NS",
    "INT_FIELDS",
    "LIST_FIELDS",
    "MAX_BODY_BYTES",
    "MAX_DESTINATIONS",
    "NS",
    "REQUIRED",
    "SEQUENCES",
    "MessageCharge",
    "Receipt",
    "MessageStatus",
    "build_request",
    "fast_returns",
    "parse_balance",
    "parse_charge",
    "parse_coverage",
    "parse_ok",
    "parse_response",
    "parse_return",
    "parse_status",
    "parse_xml",
    "safe_parser",
    "soap_action",
]

#: Target namespace of the document/literal WSDL; the operation elements live in it.
NS = "http://api.clickatell.com/soap/document_literal/webservice"
#: SOAP 1.1 envelope namespace.
ENVELOPE_NS = "http://schemas.xmlsoap.org/soap/envelope/"
#: Largest XML body we agree to parse, in bytes (a 300-``<return>`` answer is about 20 KiB).
MAX_BODY_BYTES = 16 * 1024 * 1024
#: Most ``<to>`` elements one SOAP request may carry (Clickatell's documented limit).
MAX_DESTINATIONS = 300
#: Bytes of an unparseable body quoted in a ProtocolError message.
EXCERPT_BYTES = 80

_AUTH = ("session_id", "api_id", "user", "password")
_SEND_OPTIONS = ("from", "concat")
_DELIVERY = ("deliv_time", "max_credits", "req_feat", "queue", "escalate", "mo", "climsgid")

#: Child elements of each operation, in WSDL ``xsd:sequence`` order (generated from the WSDL;
#: ``tests/test_wire.py`` checks them against ``simulator/clickatell.wsdl``).
SEQUENCES: dict[str, tuple[str, ...]] = {
    "auth": ("api_id", "user", "password"),
    "ping": ("session_id",),
    "sendmsg": (
        *_AUTH, "text", "to", *_SEND_OPTIONS, "msg_callback", "deliv_ack", *_DELIVERY,
        "unicode", "msg_type", "udh", "data", "validity",
    ),
    "querymsg": (*_AUTH, "apimsgid", "climsgid"),
    "delmsg": (*_AUTH, "apimsgid", "climsgid"),
    "getbalance": _AUTH,
    "routecoverage": (*_AUTH, "msisdn"),
    "getmsgcharge": (*_AUTH, "apimsgid"),
    "token_pay": (*_AUTH, "token"),
    "si_push": (
        *_AUTH, "to", "si_id", "si_url", "si_text", "si_created", "si_expires", "si_action",
        *_SEND_OPTIONS, "deliv_ack", "msg_callback", *_DELIVERY, "unicode", "validity",
    ),
    "ind_push": (
        *_AUTH, "to", "mms_subject", "mms_class", "mms_expire", "mms_from", "mms_url",
        *_SEND_OPTIONS, "deliv_ack", "msg_callback", *_DELIVERY, "validity",
    ),
    "startbatch": (
        *_AUTH, *_SEND_OPTIONS, "template", "deliv_ack", "msg_callback", *_DELIVERY,
        "unicode", "msg_type", "udh", "validity",
    ),
    "senditem": (*_AUTH, "batch_id", "to", *(f"field{i}" for i in range(1, 11))),
    "quicksend": (*_AUTH, "batch_id", "to"),
    "endbatch": (*_AUTH, "batch_id"),
}  # fmt: skip
#: Elements with ``minOccurs="1"`` per operation.
REQUIRED: dict[str, frozenset[str]] = {
    "auth": frozenset({"api_id", "user", "password"}),
    "ping": frozenset({"session_id"}),
    "sendmsg": frozenset({"to"}),
    "routecoverage": frozenset({"msisdn"}),
    "token_pay": frozenset({"token"}),
    "si_push": frozenset({"to", "si_id", "si_url", "si_text"}),
    "ind_push": frozenset({"to", "mms_subject", "mms_class", "mms_expire", "mms_from", "mms_url"}),
    "startbatch": frozenset({"template"}),
    "senditem": frozenset({"batch_id", "to"}),
    "quicksend": frozenset({"batch_id", "to"}),
    "endbatch": frozenset({"batch_id"}),
}
#: Elements typed ``xsd:int`` (the same in every operation that has them).
INT_FIELDS = frozenset(
    {"api_id", "concat", "msg_callback", "deliv_ack", "deliv_time", "max_credits", "req_feat",
     "queue", "escalate", "mo", "unicode", "validity"}
)  # fmt: skip
#: Elements with ``maxOccurs="unbounded"``: given as a sequence, emitted once per item.
LIST_FIELDS = frozenset({"to"})
#: ``max_credits`` is ``xsd:int`` in the WSDL, but documented with values such as 1.5.
_DECIMAL_FIELDS = frozenset({"max_credits"})

_INDEX = {op: {name: i for i, name in enumerate(seq)} for op, seq in SEQUENCES.items()}
_INTEGER = re.compile(r"-?[0-9]+\Z")
_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?\Z")
# Characters that need escaping (& < > and CR, which XML would otherwise normalise to LF) or that
# XML 1.0 cannot carry at all (C0 controls but TAB/LF/CR, lone surrogates, U+FFFE/U+FFFF).
_SPECIAL = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENVELOPE_NS}" xmlns:ns1="{NS}">'
    "<SOAP-ENV:Body>"
)
_TAIL = "</SOAP-ENV:Body></SOAP-ENV:Envelope>"


def soap_action(operation: str) -> str:
    """The SOAPAction URI of ``operation`` as the WSDL binding declares it (send it quoted)."""
    return f"{NS}/{operation}"


# -- requests ---------------------------------------------------------------------------------


def build_request(operation: str, params: Mapping[str, object]) -> bytes:
    """Serialise one SOAP 1.1 request for ``operation``, children in WSDL sequence order.

    ``params`` maps element names to values (``str``, ``int``, ``bool`` as 0/1; ``to`` may be a
    sequence of strings, emitted as repeated elements); ``None`` values are left out. Unknown
    names, wrong types, missing required elements, more than :data:`MAX_DESTINATIONS` ``to``
    and characters XML cannot carry raise :class:`errors.InputError`.
    """
    index = _INDEX.get(operation)
    if index is None:
        raise errors.InputError(f"unknown SOAP operation {operation!r}")
    present: list[tuple[int, str, object]] = []
    for name, value in params.items():
        if value is None:
            continue
        position = index.get(name)
        if position is None:
            raise errors.InputError(f"{operation} has no parameter {name!r}")
        present.append((position, name, value))
    missing = REQUIRED.get(operation, frozenset()) - {name for _, name, _ in present}
    if missing:
        raise errors.InputError(f"{operation} needs {', '.join(sorted(missing))}")
    present.sort()
    parts = [_HEAD, "<ns1:", operation, ">"]
    for _, name, value in present:
        if name in LIST_FIELDS:
            _append_list(parts, name, value)
        else:
            parts += ("<", name, ">", _text(name, value), "</", name, ">")
    parts += ("</ns1:", operation, ">", _TAIL)
    return "".join(parts).encode("utf-8")


def _append_list(parts: list[str], name: str, value: object) -> None:
    """Append one ``<name>`` element per item of ``value`` (a non-empty sequence of strings)."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Sequence) or not all(isinstance(item, str) for item in value):
        raise errors.InputError(f"{name} must be a string or a sequence of strings")
    if not value:
        raise errors.InputError(f"{name} needs at least one value")
    if len(value) > MAX_DESTINATIONS:
        raise errors.InputError(
            f"{len(value)} {name} values in one request; the gateway takes at most "
            f"{MAX_DESTINATIONS}"
        )
    items: Sequence[str] = value
    if _SPECIAL.search("".join(items)) is not None:
        items = [_escape(name, item) for item in items]
    open_tag, close_tag = f"<{name}>", f"</{name}>"
    parts.append(open_tag + (close_tag + open_tag).join(items) + close_tag)


def _text(name: str, value: object) -> str:
    """The escaped text of a scalar element, checked against its XSD type."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if name in INT_FIELDS:
        if isinstance(value, int):
            return str(value)
        if name in _DECIMAL_FIELDS and isinstance(value, float):
            return repr(value)
        pattern = _DECIMAL if name in _DECIMAL_FIELDS else _INTEGER
        if isinstance(value, str) and pattern.match(value):
            return value
        raise errors.InputError(f"{name} must be an integer, not {value!r}")
    if isinstance(value, str):
        return _escape(name, value)
    if isinstance(value, int):
        return str(value)
    raise errors.InputError(f"{name} must be a string, not {type(value).__name__}")


def _escape(name: str, value: str) -> str:
    """``value`` escaped for XML character data, exactly as lxml/libxml2 escape it."""
    if _SPECIAL.search(value) is None:
        return value
    bad = _NOT_XML.search(value)
    if bad is not None:
        raise errors.InputError(
            f"{name} contains {bad.group()!r}, a character XML 1.0 cannot carry "
            "(send such text as unicode hex)"
        )
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


# -- safe XML ---------------------------------------------------------------------------------

_local = threading.local()


def safe_parser() -> etree.XMLParser:
    """A new lxml parser that loads no DTD, expands no entity and never touches the network.

    The encoding is forced to UTF-8, so a UTF-16 (or UTF-7...) body cannot hide a DOCTYPE from
    :func:`parse_xml`'s byte scan. Do not add ``collect_ids=False``: with lxml 6 it makes the
    parser load external DTD subsets (``file://`` included). lxml parsers are not thread-safe:
    make one per thread (or call :func:`parse_xml`).
    """
    return etree.XMLParser(
        encoding="utf-8",
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        attribute_defaults=False,
        huge_tree=False,
        remove_pis=True,
        remove_comments=True,
    )


def parse_xml(body: bytes) -> etree._Element:
    """Parse untrusted XML: refuse bodies over :data:`MAX_BODY_BYTES` and any DOCTYPE.

    Raises :class:`errors.ProtocolError` (with a short, escaped excerpt) for anything refused
    or malformed. Safe to call from any thread.
    """
    if len(body) > MAX_BODY_BYTES:
        raise errors.ProtocolError(
            f"XML body of {len(body)} bytes refused (limit {MAX_BODY_BYTES} bytes)"
        )
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise errors.ProtocolError(f"XML with a DOCTYPE refused: {_excerpt(body)}")
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = safe_parser()
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        raise errors.ProtocolError(f"malformed XML: {_excerpt(body)}") from exc
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.system_url or docinfo.public_id:  # in depth
        raise errors.ProtocolError(f"XML with a DOCTYPE refused: {_excerpt(body)}")
    return root


def _excerpt(body: bytes) -> str:
    """A short, printable, escaped quote of the start of ``body`` for error messages."""
    text = body[:EXCERPT_BYTES].decode("utf-8", "replace")
    more = "..." if len(body) > EXCERPT_BYTES else ""
    return f"{ascii(text)}{more}"


# -- responses --------------------------------------------------------------------------------

_BODY = f"{{{ENVELOPE_NS}}}Body"
_FAULT = f"{{{ENVELOPE_NS}}}Fault"


def parse_response(body: bytes, operation: str) -> list[str]:
    """The ``<return>`` strings of ``<ns1:{operation}Response>``, in document order.

    A SOAP Fault raises :class:`errors.SoapFault` carrying its ``faultstring``; a body that is
    not such an envelope raises :class:`errors.ProtocolError`.

    The answer as the gateway writes it (the documentation's envelope, plain ``<return>``
    texts) is read by :func:`fast_returns`; anything else by the hardened lxml parser, which
    alone decides what a body it cannot read means.
    """
    returns = fast_returns(body, operation)
    if returns is not None:
        return returns
    return _parse_response_xml(body, operation)


_XML_SPACE = rb"[ \t\r\n]*"  # XML's white space, and nothing else (no \f, no \v)
_FAST: dict[str, re.Pattern[bytes]] = {}
#: what a <return> text may hold for the fast reading: no markup, no reference (&amp;), no CR
#: (XML reads CR LF as LF), no character XML 1.0 forbids; the lxml reading handles the rest
_PLAIN_RETURN = rb"[^<&\r\x00-\x08\x0b\x0c\x0e-\x1f]*"


def _fast_pattern(operation: str) -> re.Pattern[bytes]:
    pattern = _FAST.get(operation)
    if pattern is None:
        s = _XML_SPACE
        pattern = _FAST[operation] = re.compile(
            rb'<\?xml version="1\.0" encoding="UTF-8"\?>' + s
            + re.escape(
                f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENVELOPE_NS}" xmlns:ns1="{NS}">'.encode()
            )
            + s + rb"<SOAP-ENV:Body>" + s
            + re.escape(f"<ns1:{operation}Response>".encode()) + s
            + rb"((?:<return>" + _PLAIN_RETURN + rb"</return>" + s + rb")+)"
            + re.escape(f"</ns1:{operation}Response>".encode()) + s
            + rb"</SOAP-ENV:Body>" + s + rb"</SOAP-ENV:Envelope>" + s + rb"\Z"
        )  # fmt: skip
    return pattern


_FAST_RETURN = re.compile(rb"<return>(" + _PLAIN_RETURN + rb")</return>")


def fast_returns(body: bytes, operation: str) -> list[str] | None:
    """The ``<return>`` strings of a well-formed answer in the gateway's own form, or None.

    Strict: the documentation's declaration, envelope and namespaces exactly, white space only
    between elements, plain texts (see ``_PLAIN_RETURN``) in valid UTF-8 without U+FFFE/U+FFFF.
    Where it answers, it answers what the lxml reading answers (``tests/test_fast_path.py``
    checks both on a corpus of good and malformed bodies); where it says None, that reading
    decides (a fault, a DOCTYPE, an entity, a comment, a truncated body, ...).
    """
    if len(body) > MAX_BODY_BYTES or b"]]>" in body:
        return None
    match = _fast_pattern(operation).match(body)
    if match is None:
        return None
    try:
        returns = [r.decode("utf-8") for r in _FAST_RETURN.findall(match[1])]
    except UnicodeDecodeError:
        return None
    if any("\ufffe" in r or "\uffff" in r for r in returns):
        return None
    return returns


def _parse_response_xml(body: bytes, operation: str) -> list[str]:
    """:func:`parse_response` with the hardened lxml parser."""
    root = parse_xml(body)
    if root.tag != f"{{{ENVELOPE_NS}}}Envelope":
        raise errors.ProtocolError(f"not a SOAP 1.1 envelope: {_excerpt(body)}")
    soap_body = root.find(_BODY)
    if soap_body is None:
        raise errors.ProtocolError(f"SOAP envelope without a Body: {_excerpt(body)}")
    fault = soap_body.find(_FAULT)
    if fault is not None:
        code = _child_text(fault, "faultcode")
        reason = _child_text(fault, "faultstring")
        raise errors.SoapFault(f"SOAP Fault {code}: {reason[:200]}", description=reason)
    response = soap_body.find(f"{{{NS}}}{operation}Response")
    if response is None:
        raise errors.ProtocolError(f"no {operation}Response in the answer: {_excerpt(body)}")
    returns = [child.text or "" for child in response.iterchildren("return", f"{{{NS}}}return")]
    if not returns:
        raise errors.ProtocolError(f"{operation}Response without <return>: {_excerpt(body)}")
    return returns


def _local_name(element: etree._Element) -> str:
    """The tag of ``element`` without its namespace ("" for comments and the like)."""
    tag = element.tag
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _child_text(element: etree._Element, name: str) -> str:
    """Text of the first child called ``name`` in any namespace, or ""."""
    for child in element:
        if _local_name(child) == name:
            return "".join(t for t in child.itertext() if isinstance(t, str)).strip()
    return ""


# -- <return> strings -------------------------------------------------------------------------


class Receipt(NamedTuple):
    """What the gateway said about one destination of a ``sendmsg``: an ID or an error.

    A named tuple: a request of 300 numbers makes 300 of them, and a tuple is cheaper to build.
    """

    to: str | None
    api_message_id: str | None
    error_code: str | None  # three digits, "105"
    error_description: str | None

    @property
    def ok(self) -> bool:
        """True when the gateway accepted the message (it gave an API message ID)."""
        return self.api_message_id is not None and self.error_code is None


@dataclass(frozen=True, slots=True)
class MessageStatus:
    """A message's status from ``querymsg``/``delmsg``: its API ID and a 3-digit status code."""

    api_message_id: str | None
    status: str


@dataclass(frozen=True, slots=True)
class MessageCharge:
    """``getmsgcharge``'s answer: credits charged and the status code, if given."""

    api_message_id: str | None
    charge: float
    status: str | None


_API_MESSAGE_ID = re.compile(r"[0-9a-fA-F]{32}\Z")  # the protocol's message IDs: 32 hex digits
_ID_LINE = re.compile(r"ID:\s*(\S+)(?:\s+To:\s*(\S+))?\Z")
_ERR_LINE = re.compile(r"ERR:\s*([0-9]{1,3})(?![0-9])\s*,?\s*(.*)\Z", re.S)
_OK_LINE = re.compile(r"OK:\s*(.*?)\Z", re.S)
_BALANCE_LINE = re.compile(r"Credits?:\s*([-+]?[0-9]+(?:\.[0-9]+)?)\Z")
_PAIR = re.compile(r"([A-Za-z_]+):\s*([^\s:]*)(?=\s|\Z)")
_CHARGE = re.compile(r"\bCharge:\s*([0-9]+(?:\.[0-9]+)?)\s*\Z", re.I)


def is_message_id(value: str | None) -> bool:
    """Whether ``value`` is a message ID as the protocol defines one (32 hex digits).

    Anything else in an ``ID:`` answer ("42", 40 hex) is a protocol error for that number, never
    proof that it was accepted.
    """
    return value is not None and _API_MESSAGE_ID.match(value) is not None


def parse_return(line: str) -> Receipt:
    """Parse a ``sendmsg`` return: ``ID: x [To: n]`` or ``ERR: ddd, text [To: n]``."""
    words = line.split()
    # the usual answer, one per accepted number, read without a regular expression
    if len(words) == 4 and words[0] == "ID:" and words[2] == "To:":
        return Receipt(words[3], words[1], None, None)
    text = line.strip()
    match = _ID_LINE.match(text)
    if match is not None:
        return Receipt(match[2], match[1], None, None)
    text, to = _split_to(text)
    if text.startswith("ERR:"):
        match = _ERR_LINE.match(text)
        if match is not None:
            return Receipt(to, None, match[1].zfill(3), match[2].strip())
    raise errors.ProtocolError(f"unrecognised sendmsg return {ascii(line[:EXCERPT_BYTES])}")


def _split_to(text: str) -> tuple[str, str | None]:
    """Split a trailing ``To: <number>`` off a return string (lenient about spaces)."""
    head, label, tail = text.rpartition("To:")
    number = tail.strip()
    if not label or not number or any(c.isspace() for c in number):
        return text, None
    return head.rstrip(), number


def _raise_if_err(text: str) -> None:
    """Raise the exception for a coded ``ERR: ddd, text`` line; return for anything else."""
    match = _ERR_LINE.match(text)
    if match is not None:
        raise errors.gateway_error_for_code(match[1].zfill(3), match[2].strip())


def _unrecognised(kind: str, text: str) -> errors.ProtocolError:
    """The ProtocolError for a ``<return>`` of ``kind`` we cannot read."""
    return errors.ProtocolError(f"unrecognised {kind} return {ascii(text[:EXCERPT_BYTES])}")


def parse_ok(line: str) -> str:
    """Parse ``OK: <value>`` (``auth``'s session ID; ``ping`` may answer a bare ``OK:``)."""
    text = line.strip()
    _raise_if_err(text)
    match = _OK_LINE.match(text)
    if match is None:
        raise _unrecognised("OK", text)
    return match[1].strip()


def parse_balance(line: str) -> float:
    """Parse ``getbalance``'s ``Credit: 12.5`` (or the later ``Credits: 12.50``)."""
    text = line.strip()
    _raise_if_err(text)
    match = _BALANCE_LINE.match(text)
    if match is None:
        raise _unrecognised("getbalance", text)
    return float(match[1])


def _pairs(text: str) -> dict[str, str]:
    """``Key: value`` pairs of a return string, keys lower-cased."""
    return {key.lower(): value for key, value in _PAIR.findall(text)}


def parse_status(line: str) -> MessageStatus:
    """Parse ``querymsg``/``delmsg``'s ``ID: <apimsgid> Status: <nnn>``."""
    text = line.strip()
    _raise_if_err(text)
    pairs = _pairs(text)
    status = pairs.get("status", "")
    if not status.isdigit() or len(status) > 3:
        raise _unrecognised("status", text)
    return MessageStatus(pairs.get("id") or pairs.get("apimsgid") or None, status.zfill(3))


def parse_charge(line: str) -> MessageCharge:
    """Parse ``getmsgcharge``'s key/value answer, keys in any order and case.

    Both ``apiMsgId: x charge: 1 status: 004`` and ``ID: x Charge: 1 Status: 004`` are seen.
    """
    text = line.strip()
    _raise_if_err(text)
    pairs = _pairs(text)
    try:
        charge = float(pairs["charge"])
    except (KeyError, ValueError):
        raise _unrecognised("getmsgcharge", text) from None
    status = pairs.get("status") or None
    if status is not None:
        if not status.isdigit() or len(status) > 3:
            raise _unrecognised("getmsgcharge", text)
        status = status.zfill(3)
    return MessageCharge(pairs.get("id") or pairs.get("apimsgid") or None, charge, status)


def parse_coverage(line: str) -> float | None:
    """Parse ``routecoverage``: the charge when the prefix is routed, ``None`` when it is not.

    ``OK: This prefix is currently supported. ... Charge: 0.8`` gives 0.8; the uncoded
    ``ERR: This prefix is not currently supported. ...`` gives ``None``.
    """
    text = line.strip()
    _raise_if_err(text)
    if text.startswith("ERR:"):
        return None
    if text.startswith("OK:"):
        match = _CHARGE.search(text)
        if match is not None:
            return float(match[1])
    raise _unrecognised("routecoverage", text)
