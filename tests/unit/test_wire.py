"""The SOAP wire format: requests as the reference page writes them, answers parsed safely."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from lxml import etree

from batch_sender import errors
from batch_sender.gateway import wire
from batch_sender.gateway.client import Message, message_params
from batch_sender.gateway.wire import MessageCharge, MessageStatus, Receipt

WSDL = Path(__file__).resolve().parents[2] / "batch_sender" / "simulator" / "clickatell.wsdl"
XSD = "http://www.w3.org/2001/XMLSchema"
ENV = wire.ENVELOPE_NS
DOC_AUTH = {"api_id": "123456", "user": "MyUserName", "password": "MyPassword"}

# The five request examples of the reference page "sendmsg (SOAP)", verbatim.
_OPEN = (
    '<?xml version="1.0" encoding="UTF-8"?> <SOAP-ENV:Envelope '
    'xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:ns1="http://api.clickatell.com/soap/document_literal/webservice"> '
    "<SOAP-ENV:Body><ns1:sendmsg> <api_id>123456</api_id> <user>MyUserName</user> "
    "<password>MyPassword</password> "
)
_CLOSE = " </ns1:sendmsg> </SOAP-ENV:Body> </SOAP-ENV:Envelope>"
UNICODE_HEX = (
    "005400680069007300200069007300200061002000730061006d0070006c00650020006d0065007300730061"
    "00670065002000730065006e007400200061007300200055006e00690063006f00640065002000640061007400"
    "61002e"
)
BINARY_HEX = "040601AE02056A0045C60C037368008503656B732E636F6D0008010374657374000101"
PAGE_EXAMPLES = {
    "two numbers": (
        "<text>This is my message here!</text> <to>2799900001</to> <to>2799900002</to>",
        Message(text="This is my message here!"),
        ["2799900001", "2799900002"],
    ),
    "unicode": (
        f"<text>{UNICODE_HEX}</text> <unicode>1</unicode> <to>2799900001</to>",
        Message(text=UNICODE_HEX, unicode=True),
        ["2799900001"],
    ),
    "flash": (
        "<text>This is my flash message here!</text> <msg_type>SMS_FLASH</msg_type> "
        "<to>2799900001</to>",
        Message(text="This is my flash message here!", msg_type="SMS_FLASH"),
        ["2799900001"],
    ),
    "binary": (
        f"<udh>0605040B8423F0</udh> <text>{BINARY_HEX}</text> <to>2799900001</to>",
        Message(text=BINARY_HEX, udh="0605040B8423F0"),
        ["2799900001"],
    ),
    "callback and sender": (
        "<callback>3</callback> <from>123456789</from> <text>This is my message here!</text> "
        "<to>2799900001</to>",
        Message(text="This is my message here!", callback=3, sender="123456789"),
        ["2799900001"],
    ),
}
PAGE_OK_RESPONSE = (
    b'<?xml version="1.0" encoding="UTF-8"?> <SOAP-ENV:Envelope '
    b'xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" '
    b'xmlns:ns1="http://api.clickatell.com/soap/document_literal/webservice"> <SOAP-ENV:Body> '
    b"<ns1:sendmsgResponse> <return>ID: 918c16a73f75530da44c4f17abed80a1 To: 2799900001</return> "
    b"<return>ID: 8019f2f6e76afc7e421618a4b92e8ec2 To: 2799900002</return> "
    b"</ns1:sendmsgResponse> </SOAP-ENV:Body> </SOAP-ENV:Envelope>"
)
PAGE_ERR_RESPONSE = (
    b'<?xml version="1.0" encoding="UTF-8"?> <SOAP-ENV:Envelope '
    b'xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" '
    b'xmlns:ns1="http://api.clickatell.com/soap/document_literal/webservice"> <SOAP-ENV:Body> '
    b"<ns1:sendmsgResponse> <return>ERR: 001, Authentication failed To: 2799900001</return> "
    b"<return>ERR: 001, Authentication failed To: 2799900002</return> "
    b"</ns1:sendmsgResponse> </SOAP-ENV:Body> </SOAP-ENV:Envelope>"
)


def envelope(inner: str, *, ns1: str = wire.NS) -> bytes:
    """A SOAP 1.1 response envelope around ``inner`` (the Body's content)."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="{ENV}" '
        f'xmlns:ns1="{ns1}"><SOAP-ENV:Body>{inner}</SOAP-ENV:Body></SOAP-ENV:Envelope>'
    ).encode()


def children(request: bytes) -> list[tuple[str, str]]:
    """(tag, text) of the operation element's children, in document order."""
    operation = etree.fromstring(request).find(f"{{{ENV}}}Body")[0]  # type: ignore[index]
    return [(str(child.tag), child.text or "") for child in operation]


def wsdl_sequences() -> dict[str, list[etree._Element]]:
    """Each top-level request element of the WSDL with its sequence children."""
    root = etree.parse(str(WSDL)).getroot()
    schema = root.find(f".//{{{XSD}}}schema")
    assert schema is not None
    return {
        str(el.get("name")): el.findall(f".//{{{XSD}}}sequence/{{{XSD}}}element")
        for el in schema.findall(f"{{{XSD}}}element")
        if not str(el.get("name")).endswith(("Response", "Fault"))
    }


# -- the tables are the WSDL's ----------------------------------------------------------------


def test_sequences_are_the_wsdl_sequences_of_every_operation() -> None:
    sequences = wsdl_sequences()
    assert set(wire.SEQUENCES) == set(sequences)
    for operation, elements in sequences.items():
        assert wire.SEQUENCES[operation] == tuple(e.get("name") for e in elements), operation


def test_required_int_and_repeated_elements_match_the_wsdl() -> None:
    for operation, elements in wsdl_sequences().items():
        required = {e.get("name") for e in elements if e.get("minOccurs") == "1"}
        assert wire.REQUIRED.get(operation, frozenset()) == required, operation
        for e in elements:
            assert (e.get("name") in wire.INT_FIELDS) == (e.get("type") == "xsd:int")
            assert (e.get("name") in wire.LIST_FIELDS) == (e.get("maxOccurs") == "unbounded")


def test_soap_action_is_the_binding_soap_action() -> None:
    assert wire.soap_action("sendmsg") == (
        "http://api.clickatell.com/soap/document_literal/webservice/sendmsg"
    )
    actions = etree.parse(str(WSDL)).getroot().iterfind(".//{*}operation[@soapAction]")
    for operation in actions:
        name = str(operation.getparent().get("name"))  # type: ignore[union-attr]
        assert wire.soap_action(name) == operation.get("soapAction")


# -- requests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PAGE_EXAMPLES))
def test_page_examples_come_out_element_for_element_in_wsdl_order(name: str) -> None:
    inner, message, to = PAGE_EXAMPLES[name]
    page = children((_OPEN + inner + _CLOSE).encode())
    # The page calls it <callback>; the document/literal WSDL (and the page's text) msg_callback.
    page = [("msg_callback" if tag == "callback" else tag, text) for tag, text in page]
    ours = children(
        wire.build_request("sendmsg", {**DOC_AUTH, **message_params(message), "to": to})
    )
    order = {tag: i for i, tag in enumerate(wire.SEQUENCES["sendmsg"])}
    # The page's examples put some options after <text> or before it at will; a strict
    # document/literal reader wants WSDL order, which we emit: same elements, WSDL order.
    assert ours == sorted(page, key=lambda pair: order[pair[0]])


def test_request_envelope_has_the_page_prefixes_and_unqualified_children() -> None:
    request = wire.build_request("sendmsg", {**DOC_AUTH, "text": "Hi", "to": ["2799900001"]})
    assert request.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = etree.fromstring(request)
    assert (root.prefix, root.tag) == ("SOAP-ENV", f"{{{ENV}}}Envelope")
    assert root.nsmap == {"SOAP-ENV": ENV, "ns1": wire.NS}
    body = root[0]
    assert (body.prefix, body.tag, len(root)) == ("SOAP-ENV", f"{{{ENV}}}Body", 1)
    operation = body[0]
    assert (operation.prefix, operation.tag) == ("ns1", f"{{{wire.NS}}}sendmsg")
    assert all(etree.QName(child).namespace is None for child in operation)


def lxml_request(operation: str, params: dict[str, object]) -> bytes:
    """The same request serialised by lxml: the reference the templating must equal."""
    root = etree.Element(f"{{{ENV}}}Envelope", nsmap={"SOAP-ENV": ENV, "ns1": wire.NS})
    body = etree.SubElement(root, f"{{{ENV}}}Body")
    element = etree.SubElement(body, f"{{{wire.NS}}}{operation}")
    for name in wire.SEQUENCES[operation]:
        value = params.get(name)
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            etree.SubElement(element, name).text = str(item)
    declaration = b'<?xml version="1.0" encoding="UTF-8"?>\n'
    return declaration + etree.tostring(root, encoding="UTF-8", xml_declaration=False)


def _xml_char(c: str) -> bool:
    return c in "\t\n\r" or ("\x20" <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd") or c > "\uffff"


@given(
    text=st.text(),
    to=st.lists(st.text(alphabet=string.digits + "+&<>\r x", min_size=1), min_size=1, max_size=5),
    sender=st.none() | st.text(max_size=12),
    callback=st.none() | st.integers(0, 7),
    climsgid=st.none() | st.text(max_size=32),
)
@example(text="a\rb&c<d>e]]>\x85\u2028", to=["1"], sender=None, callback=None, climsgid=None)
@example(text="\x00", to=["1"], sender=None, callback=None, climsgid=None)
@example(text="\x0c form feed", to=["1"], sender=None, callback=None, climsgid=None)
@example(text="\ufffe", to=["1"], sender=None, callback=None, climsgid=None)
def test_templated_request_is_byte_identical_to_lxml_or_refused_like_it(
    text: str, to: list[str], sender: str | None, callback: int | None, climsgid: str | None
) -> None:
    params: dict[str, object] = {
        "session_id": "0123456789abcdef0123456789abcdef",
        "text": text,
        "to": to,
        "from": sender,
        "msg_callback": callback,
        "climsgid": climsgid,
    }
    values = [text, *to, sender or "", climsgid or ""]
    if all(_xml_char(c) for value in values for c in value):
        assert wire.build_request("sendmsg", params) == lxml_request("sendmsg", params)
    else:
        with pytest.raises(errors.InputError, match="XML 1.0 cannot carry"):
            wire.build_request("sendmsg", params)


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(errors.InputError):
        wire.build_request("sendmsg", {"text": "\ud800", "to": ["1"]})


def test_to_may_be_a_single_string_and_none_values_are_omitted() -> None:
    request = wire.build_request("sendmsg", {"text": "Hi", "to": "27991", "from": None})
    assert children(request) == [("text", "Hi"), ("to", "27991")]


def test_ints_and_bools_are_written_as_xsd_int() -> None:
    params = {"to": ["1"], "text": "x", "unicode": True, "concat": 3, "deliv_ack": False}
    assert children(wire.build_request("sendmsg", params)) == [
        ("text", "x"), ("to", "1"), ("concat", "3"), ("deliv_ack", "0"), ("unicode", "1"),
    ]  # fmt: skip


def test_three_hundred_destinations_fit_in_one_request() -> None:
    to = [f"2799{i:07d}" for i in range(300)]
    tags = [tag for tag, _ in children(wire.build_request("sendmsg", {"text": "x", "to": to}))]
    assert tags.count("to") == 300


@pytest.mark.parametrize(
    ("operation", "params", "complaint"),
    [
        ("sendmsg", {"text": "x", "to": [f"{i}" for i in range(301)]}, "at most 300"),
        ("sendmsg", {"text": "x", "to": []}, "at least one"),
        ("sendmsg", {"text": "x"}, "needs to"),
        ("sendmsg", {"text": "x", "to": ["1"], "callback": 3}, "no parameter 'callback'"),
        ("sendmsg", {"text": "x", "to": [1]}, "sequence of strings"),
        ("sendmsg", {"text": "x", "to": ["1"], "concat": "3x"}, "must be an integer"),
        ("sendmsg", {"text": 1.5, "to": ["1"]}, "must be a string"),
        ("auth", {"api_id": "abc", "user": "u", "password": "p"}, "must be an integer"),
        ("auth", {"api_id": "1", "user": "u"}, "needs password"),
        ("ping", {}, "needs session_id"),
        ("sendsms", {}, "unknown SOAP operation"),
    ],
)
def test_bad_parameters_are_input_errors(
    operation: str, params: dict[str, object], complaint: str
) -> None:
    with pytest.raises(errors.InputError, match=complaint):
        wire.build_request(operation, params)


def test_max_credits_accepts_the_documented_fractional_values() -> None:
    params = {"text": "x", "to": ["1"], "max_credits": 1.5}
    assert ("max_credits", "1.5") in children(wire.build_request("sendmsg", params))


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("auth", DOC_AUTH),
        ("ping", {"session_id": "s"}),
        ("getbalance", {"session_id": "s"}),
        ("querymsg", {"session_id": "s", "climsgid": "c1", "apimsgid": "a1"}),
        ("routecoverage", {"session_id": "s", "msisdn": "2799900001"}),
        ("delmsg", {"session_id": "s", "apimsgid": "a1"}),
        ("getmsgcharge", {"session_id": "s", "apimsgid": "a1"}),
    ],
)
def test_every_operation_builds_in_wsdl_order(operation: str, params: dict[str, object]) -> None:
    tags = [tag for tag, _ in children(wire.build_request(operation, params))]
    assert tags == [name for name in wire.SEQUENCES[operation] if name in params]


# -- responses --------------------------------------------------------------------------------


def test_page_success_response_parses_to_two_receipts() -> None:
    lines = wire.parse_response(PAGE_OK_RESPONSE, "sendmsg")
    assert [wire.parse_return(line) for line in lines] == [
        Receipt("2799900001", "918c16a73f75530da44c4f17abed80a1", None, None),
        Receipt("2799900002", "8019f2f6e76afc7e421618a4b92e8ec2", None, None),
    ]


def test_page_error_response_parses_to_two_error_receipts() -> None:
    receipts = [wire.parse_return(x) for x in wire.parse_response(PAGE_ERR_RESPONSE, "sendmsg")]
    assert receipts == [
        Receipt("2799900001", None, "001", "Authentication failed"),
        Receipt("2799900002", None, "001", "Authentication failed"),
    ]
    assert not any(r.ok for r in receipts)


def test_soap_fault_raises_soap_fault_with_its_faultstring() -> None:
    body = envelope(
        "<SOAP-ENV:Fault><faultcode>SOAP-ENV:Server</faultcode>"
        "<faultstring>Database unavailable</faultstring></SOAP-ENV:Fault>"
    )
    with pytest.raises(errors.SoapFault, match="Database unavailable") as caught:
        wire.parse_response(body, "sendmsg")
    assert caught.value.description == "Database unavailable"


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"", "malformed XML"),
        (b"<html><body>502 Bad Gateway</body></html>", "not a SOAP 1.1 envelope"),
        (b"ID: 918c16a73f75530da44c4f17abed80a1", "malformed XML"),
        (envelope("<ns1:authResponse><return>OK: x</return></ns1:authResponse>"), "no sendmsgR"),
        (envelope("<ns1:sendmsgResponse></ns1:sendmsgResponse>"), "without <return>"),
        (envelope("<ns1:sendmsgResponse><return>x</return></ns1:sendmsgResponse>", ns1="urn:x"),
         "no sendmsgResponse"),
        (f'<e:Envelope xmlns:e="{ENV}"/>'.encode(), "without a Body"),
    ],
)  # fmt: skip
def test_a_body_that_is_not_our_response_is_a_protocol_error(body: bytes, complaint: str) -> None:
    with pytest.raises(errors.ProtocolError, match=complaint):
        wire.parse_response(body, "sendmsg")


def test_protocol_error_quotes_a_short_escaped_excerpt() -> None:
    body = b"<html>\x1b[31m" + b"A" * 10_000
    with pytest.raises(errors.ProtocolError) as caught:
        wire.parse_response(body, "sendmsg")
    message = str(caught.value)
    assert len(message) < 200
    assert "\x1b" not in message and "\\x1b" in message


def test_returns_keep_document_order_and_empty_returns_are_empty_strings() -> None:
    inner = (
        "<ns1:sendmsgResponse><return>b</return><return/><return>a</return></ns1:sendmsgResponse>"
    )
    assert wire.parse_response(envelope(inner), "sendmsg") == ["b", "", "a"]


# -- hostile XML ------------------------------------------------------------------------------

XXE = (
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" '
    b'xmlns:ns1="http://api.clickatell.com/soap/document_literal/webservice"><SOAP-ENV:Body>'
    b"<ns1:sendmsgResponse><return>&e;</return></ns1:sendmsgResponse>"
    b"</SOAP-ENV:Body></SOAP-ENV:Envelope>"
)
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode()
        for i in range(1, 10)
    )
    + b"]>"
    + XXE[XXE.index(b"<SOAP-ENV:Envelope") :].replace(b"&e;", b"&lol9;")
)


@pytest.mark.parametrize(
    "body",
    [XXE, XXE.decode().encode("utf-16"), LAUGHS, LAUGHS.decode().encode("utf-16")],
    ids=["xxe", "xxe-utf16", "billion-laughs", "billion-laughs-utf16"],
)
def test_doctypes_and_entities_are_refused(body: bytes) -> None:
    with pytest.raises(errors.ProtocolError, match="DOCTYPE|malformed") as caught:
        wire.parse_response(body, "sendmsg")
    assert "root:" not in str(caught.value)


def test_oversized_body_is_refused_before_parsing() -> None:
    filler = b"<return>" + b"x" * 1024 + b"</return>"
    body = envelope("<ns1:sendmsgResponse>%s</ns1:sendmsgResponse>")
    big = body.replace(b"%s", filler * (wire.MAX_BODY_BYTES // len(filler) + 1))
    with pytest.raises(errors.ProtocolError, match="refused"):
        wire.parse_xml(big)


def test_safe_parser_reads_no_external_dtd_and_expands_no_entity(tmp_path: Path) -> None:
    dtd = tmp_path / "evil.dtd"
    dtd.write_text('<!ENTITY e "EXTERNAL-SECRET">')
    for document in (
        f'<!DOCTYPE x SYSTEM "{dtd.as_uri()}"><x>&e;</x>'.encode(),
        b'<!DOCTYPE x [<!ENTITY e "INTERNAL-SECRET">]><x>&e;</x>',
    ):
        root = etree.fromstring(document, wire.safe_parser())
        assert b"SECRET" not in etree.tostring(root)


def test_safe_parser_reads_utf8_only_so_no_encoding_hides_a_doctype() -> None:
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring("<x>é</x>".encode("utf-16"), wire.safe_parser())
    assert etree.fromstring(b"\xef\xbb\xbf<x>\xc3\xa9</x>", wire.safe_parser()).text == "é"


# -- return strings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "receipt"),
    [
        ("ID: 918c16a73f75530da44c4f17abed80a1",
         Receipt(None, "918c16a73f75530da44c4f17abed80a1", None, None)),
        ("ID: abc To: 2799900001", Receipt("2799900001", "abc", None, None)),
        ("ID:abc To:123", Receipt("123", "abc", None, None)),
        ("  ID:  abc   To:  123 \n", Receipt("123", "abc", None, None)),
        ("ERR: 105, Invalid destination address To: 2799x",
         Receipt("2799x", None, "105", "Invalid destination address")),
        ("ERR: 001, Authentication failed", Receipt(None, None, "001", "Authentication failed")),
        ("ERR: 1, Authentication failed", Receipt(None, None, "001", "Authentication failed")),
        ("ERR:123 Invalid Sender ID", Receipt(None, None, "123", "Invalid Sender ID")),
        ("ERR: 130, Maximum MT limit exceeded until 1764072000 To: 27991",
         Receipt("27991", None, "130", "Maximum MT limit exceeded until 1764072000")),
        ("ERR: 301, No Credit Left To:27992", Receipt("27992", None, "301", "No Credit Left")),
    ],
)  # fmt: skip
def test_sendmsg_returns_parse_leniently(line: str, receipt: Receipt) -> None:
    assert wire.parse_return(line) == receipt


@pytest.mark.parametrize(
    "line", ["", "OK", "ID:", "ID: a b", "ERR: x, y", "ERR: 1234, y", "To: 1", "ID: x Status: 004"]
)
def test_unrecognised_sendmsg_returns_are_protocol_errors(line: str) -> None:
    with pytest.raises(errors.ProtocolError):
        wire.parse_return(line)


@given(
    api_id=st.text(alphabet="0123456789abcdef", min_size=1, max_size=32),
    number=st.text(alphabet=string.digits, min_size=1, max_size=15),
    gap=st.sampled_from(["", " ", "  ", "\t"]),
)
def test_any_spacing_of_id_and_to_parses_to_the_same_receipt(
    api_id: str, number: str, gap: str
) -> None:
    line = f"ID:{gap}{api_id} To:{gap}{number}"
    assert wire.parse_return(line) == Receipt(number, api_id, None, None)


def test_receipt_ok_means_an_id_and_no_error() -> None:
    assert Receipt("1", "abc", None, None).ok
    assert not Receipt("1", None, "105", "Invalid destination address").ok


def test_ok_returns_give_the_session_or_empty() -> None:
    assert (
        wire.parse_ok("OK: af25bd2a8e1c4b6f9a0d3e7c5b2f1a09") == "af25bd2a8e1c4b6f9a0d3e7c5b2f1a09"
    )
    assert wire.parse_ok("OK:") == ""


def test_a_coded_err_in_a_single_return_raises_by_class() -> None:
    with pytest.raises(errors.RunStopped, match="001"):
        wire.parse_ok("ERR: 001, Authentication failed")
    with pytest.raises(errors.SessionExpired):
        wire.parse_balance("ERR: 003, Session ID expired")
    with pytest.raises(errors.RequestRejected) as caught:
        wire.parse_status("ERR: 104, Unknown client message ID")
    assert caught.value.code == "104"


@pytest.mark.parametrize(
    ("line", "credit"),
    [("Credit: 12.5", 12.5), ("Credits: 12.50", 12.5), ("Credit:0", 0.0), ("Credit: -3.25", -3.25)],
)
def test_balance_parses_credit_and_credits(line: str, credit: float) -> None:
    assert wire.parse_balance(line) == credit


def test_status_parses_querymsg_and_delmsg_answers() -> None:
    assert wire.parse_status("ID: 5780e7f3 Status: 006") == MessageStatus("5780e7f3", "006")
    assert wire.parse_status("ID:abc Status:4") == MessageStatus("abc", "004")
    with pytest.raises(errors.ProtocolError):
        wire.parse_status("ID: abc")


def test_coverage_gives_the_charge_or_none_when_not_routed() -> None:
    ok = (
        "OK: This prefix is currently supported. Messages sent to this prefix will be routed. "
        "Charge: 0.8"
    )
    err = (
        "ERR: This prefix is not currently supported. Messages sent to this prefix will fail. "
        "Please contact support for assistance."
    )
    assert wire.parse_coverage(ok) == 0.8
    assert wire.parse_coverage(err) is None
    with pytest.raises(errors.RunStopped):
        wire.parse_coverage("ERR: 001, Authentication failed")


@pytest.mark.parametrize(
    "line",
    [
        "apiMsgId: abc charge: 1.5 status: 004",
        "ID: abc Charge: 1.5 Status: 004",
        "status: 004 CHARGE: 1.5 apimsgid: abc",
    ],
)
def test_message_charge_reads_keys_in_any_order_and_case(line: str) -> None:
    assert wire.parse_charge(line) == MessageCharge("abc", 1.5, "004")


@pytest.mark.parametrize(
    ("parse", "line"),
    [
        (wire.parse_ok, "ID: x"),
        (wire.parse_balance, "Balance: 3"),
        (wire.parse_coverage, "OK: supported"),
        (wire.parse_charge, "ID: abc status: 004"),
    ],
)
def test_other_unrecognised_returns_are_protocol_errors(parse: object, line: str) -> None:
    with pytest.raises(errors.ProtocolError):
        parse(line)  # type: ignore[operator]
