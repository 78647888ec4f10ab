"""The SOAP 1.1 document/literal envelope as the simulator reads and writes it.

Requests are parsed with a hardened lxml parser (no DTDs, no entities, no network); answers are
built by string templating because that is several times faster than building a tree.
"""

from __future__ import annotations

from html import escape
from typing import Final

from lxml import etree

__all__ = [
    "ENVELOPE_NS",
    "TNS",
    "BadRequest",
    "Operation",
    "fault_body",
    "parse_request",
    "response_body",
    "xml_text",
]

ENVELOPE_NS: Final = "http://schemas.xmlsoap.org/soap/envelope/"
TNS: Final = "http://api.clickatell.com/soap/document_literal/webservice"

_ENVELOPE_TAG = f"{{{ENVELOPE_NS}}}Envelope"
_BODY_TAG = f"{{{ENVELOPE_NS}}}Body"
_TNS_PREFIX = f"{{{TNS}}}"
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=True
)
_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENVELOPE_NS}" xmlns:ns1="{TNS}"><SOAP-ENV:Body>'
)
_TAIL = "</SOAP-ENV:Body></SOAP-ENV:Envelope>"


class BadRequest(Exception):
    """The request is not a SOAP call we can dispatch: answered with a ``SOAP-ENV:Client`` fault."""


class Operation:
    """One parsed call: its name, its single-valued fields and its repeated ``to`` elements."""

    __slots__ = ("fields", "name", "to")

    def __init__(self, name: str, fields: dict[str, str], to: list[str]) -> None:
        self.name = name
        self.fields = fields
        self.to = to


def parse_request(body: bytes) -> Operation:
    """Parse a SOAP request into an :class:`Operation`; raise :class:`BadRequest` if we can't.

    Children are matched by local name only when unqualified (the schema has no
    ``elementFormDefault``), in any order; unknown children are ignored; ``callback`` is accepted as
    an alias of ``msg_callback``.
    """
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise BadRequest(f"Bad XML: {exc}") from exc
    if getattr(root.getroottree().docinfo, "doctype", ""):  # the stubs lack `doctype`
        raise BadRequest("DTDs are not allowed")
    if root.tag != _ENVELOPE_TAG:
        raise BadRequest("Not a SOAP 1.1 envelope")
    body_el = None
    for child in root:
        if child.tag == _BODY_TAG:
            body_el = child
            break
    if body_el is None or len(body_el) == 0:
        raise BadRequest("No SOAP Body or no operation in it")
    op_el = body_el[0]
    tag = op_el.tag
    if not isinstance(tag, str) or not tag.startswith(_TNS_PREFIX):
        raise BadRequest(f"Unknown operation {tag!s}")
    fields: dict[str, str] = {}
    to: list[str] = []
    for child in op_el:
        name = child.tag
        text = child.text or ""
        if name == "to":
            to.append(text.strip())
        elif isinstance(name, str) and name[0] != "{":
            fields[name] = text
    if "msg_callback" not in fields and "callback" in fields:
        fields["msg_callback"] = fields["callback"]
    return Operation(tag[len(_TNS_PREFIX) :], fields, to)


def xml_text(value: str) -> str:
    """Escape a value for an XML text node."""
    return escape(value, quote=False)


def response_body(operation: str, returns: list[str]) -> bytes:
    """``<ns1:{op}Response>`` with one ``<return>`` per (already escaped) string."""
    inner = "".join([f"<return>{r}</return>" for r in returns])
    return f"{_HEAD}<ns1:{operation}Response>{inner}</ns1:{operation}Response>{_TAIL}".encode()


def fault_body(faultcode: str, faultstring: str) -> bytes:
    """A SOAP 1.1 Fault (``faultcode`` like ``SOAP-ENV:Client``)."""
    return (
        f"{_HEAD}<SOAP-ENV:Fault><faultcode>{faultcode}</faultcode>"
        f"<faultstring>{xml_text(faultstring)}</faultstring></SOAP-ENV:Fault>{_TAIL}"
    ).encode()
