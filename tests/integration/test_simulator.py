"""The gateway simulator, over real HTTP: protocol shape, auth, validation, credit, limits, faults,
records and callbacks, checked against clickatell-api.md and the reference sendmsg page."""

from __future__ import annotations

import gzip
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from lxml import etree

from batch_sender.simulator import FAULT_KINDS, Simulator, SimulatorConfig

ENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
TNS = "http://api.clickatell.com/soap/document_literal/webservice"
ID_RE = re.compile(r"ID: [0-9a-f]{32}")

# The five request envelopes of the reference page (clickatell-soap-sendmsg.txt), verbatim.
REFERENCE_ENVELOPES = {
    "two_numbers": '<?xml version="1.0" encoding="UTF-8"?> <SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns1="http://api.clickatell.com/soap/document_literal/webservice"> <SOAP-ENV:Body><ns1:sendmsg> <api_id>123456</api_id> <user>MyUserName</user> <password>MyPassword</password> <text>This is my message here!</text> <to>2799900001</to> <to>2799900002</to> </ns1:sendmsg> </SOAP-ENV:Body> </SOAP-ENV:Envelope>',  # noqa: E501
    "unicode": '<?xml version="1.0" encoding="UTF-8"?> <SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns1="http://api.clickatell.com/soap/document_literal/webservice"> <SOAP-ENV:Body><ns1:sendmsg> <api_id>123456</api_id> <user>MyUserName</user> <password>MyPassword</password> <text>005400680069007300200069007300200061002000730061006d0070006c00650020006d006500730073006100670065002000730065006e007400200061007300200055006e00690063006f0064006500200064006100740061002e</text> <unicode>1</unicode> <to>2799900001</to> </ns1:sendmsg> </SOAP-ENV:Body> </SOAP-ENV:Envelope>',  # noqa: E501
    "flash": '<?xml version="1.0" encoding="UTF-8"?> <SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns1="http://api.clickatell.com/soap/document_literal/webservice"> <SOAP-ENV:Body><ns1:sendmsg> <api_id>123456</api_id> <user>MyUserName</user> <password>MyPassword</password> <text>This is my flash message here!</text> <msg_type>SMS_FLASH</msg_type> <to>2799900001</to> </ns1:sendmsg> </SOAP-ENV:Body> </SOAP-ENV:Envelope>',  # noqa: E501
    "binary": '<?xml version="1.0" encoding="UTF-8"?> <SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns1="http://api.clickatell.com/soap/document_literal/webservice"> <SOAP-ENV:Body><ns1:sendmsg> <api_id>123456</api_id> <user>MyUserName</user> <password>MyPassword</password> <udh>0605040B8423F0</udh> <text>040601AE02056A0045C60C037368008503656B732E636F6D0008010374657374000101</text> <to>2799900001</to> </ns1:sendmsg> </SOAP-ENV:Body> </SOAP-ENV:Envelope>',  # noqa: E501
    "callback_and_sender": '<?xml version="1.0" encoding="UTF-8"?> <SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns1="http://api.clickatell.com/soap/document_literal/webservice"> <SOAP-ENV:Body><ns1:sendmsg> <api_id>123456</api_id> <user>MyUserName</user> <password>MyPassword</password> <callback>3</callback> <from>123456789</from> <text>This is my message here!</text> <to>2799900001</to> </ns1:sendmsg> </SOAP-ENV:Body> </SOAP-ENV:Envelope>',  # noqa: E501
}
CREDENTIALS = {"api_id": "123456", "user": "MyUserName", "password": "MyPassword"}
#: One keep-alive client for every test (a client per request spends most of its time on TLS setup).
HTTP = httpx.Client(timeout=10)


# -- helpers -------------------------------------------------------------------------------------


def envelope(operation: str, fields: dict[str, Any] | None = None, to: Sequence[str] = ()) -> bytes:
    """A document/literal request: unqualified children, ``to`` repeated."""
    op = etree.Element(f"{{{TNS}}}{operation}", nsmap={"ns1": TNS})
    for name, value in (fields or {}).items():
        etree.SubElement(op, name).text = str(value)
    for number in to:
        etree.SubElement(op, "to").text = number
    env = etree.Element(f"{{{ENV_NS}}}Envelope", nsmap={"SOAP-ENV": ENV_NS})
    etree.SubElement(env, f"{{{ENV_NS}}}Body").append(op)
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


def returns_of(response: httpx.Response) -> list[str]:
    """The ``<return>`` strings of a SOAP response, checking its shape on the way."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/xml; charset=UTF-8"
    root = etree.fromstring(response.content)
    (body,) = root.findall(f"{{{ENV_NS}}}Body")
    (wrapper,) = list(body)
    assert wrapper.tag.startswith(f"{{{TNS}}}") and wrapper.tag.endswith("Response")
    return [r.text or "" for r in wrapper.findall("return")]


def call(
    sim: Simulator,
    operation: str,
    fields: dict[str, Any] | None = None,
    to: Sequence[str] = (),
    **kw: Any,
) -> list[str]:
    """POST one operation to ``sim`` and return its ``<return>`` strings."""
    return returns_of(HTTP.post(sim.url, content=envelope(operation, fields, to), **kw))


def send(sim: Simulator, to: Sequence[str], **fields: Any) -> list[str]:
    """sendmsg with the documentation's credentials and ``text="Hello"`` unless overridden."""
    return call(sim, "sendmsg", {**CREDENTIALS, "text": "Hello", **fields}, to)


def fault_of(response: httpx.Response) -> tuple[str, str]:
    assert response.status_code == 500
    root = etree.fromstring(response.content)
    fault = root.find(f"{{{ENV_NS}}}Body/{{{ENV_NS}}}Fault")
    assert fault is not None
    return fault.findtext("faultcode") or "", fault.findtext("faultstring") or ""


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until ``predicate()`` holds (waiting is not asserting a duration)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# -- protocol shape ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REFERENCE_ENVELOPES))
def test_reference_envelopes_are_answered_with_ids(simulator: Simulator, name: str) -> None:
    response = HTTP.post(simulator.url, content=REFERENCE_ENVELOPES[name].encode())
    returns = returns_of(response)
    if name == "two_numbers":
        assert len(returns) == 2
        assert re.fullmatch(r"ID: [0-9a-f]{32} To: 2799900001", returns[0])
        assert re.fullmatch(r"ID: [0-9a-f]{32} To: 2799900002", returns[1])
    else:
        assert len(returns) == 1 and re.fullmatch(r"ID: [0-9a-f]{32}", returns[0])
    assert [m.api_message_id for m in simulator.accepted] == [r[4:36] for r in returns]


def test_reference_examples_keep_their_options(simulator: Simulator) -> None:
    for body in REFERENCE_ENVELOPES.values():
        HTTP.post(simulator.url, content=body.encode())
    by_type = {m.msg_type: m for m in simulator.accepted}
    assert by_type["SMS_FLASH"].text == "This is my flash message here!"
    unicode_msg = next(m for m in simulator.accepted if m.unicode)
    assert unicode_msg.parts == 1
    binary = next(m for m in simulator.accepted if m.udh)
    assert binary.udh == "0605040B8423F0"
    with_sender = next(m for m in simulator.accepted if m.sender)
    assert (with_sender.sender, with_sender.msg_callback) == ("123456789", 3)


def test_wsdl_address_is_rewritten_to_the_simulator(simulator: Simulator) -> None:
    response = HTTP.get(simulator.wsdl_url)
    assert response.status_code == 200
    root = etree.fromstring(response.content)
    (address,) = root.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert address.get("location") == simulator.url


def test_children_in_any_order_unknown_children_ignored_no_soapaction(simulator: Simulator) -> None:
    body = envelope("sendmsg", {"to": "2799900001", "bogus": "x", **CREDENTIALS, "text": "Hi"})
    response = HTTP.post(simulator.url, content=body, headers={"SOAPAction": ""})
    assert re.fullmatch(r"ID: [0-9a-f]{32}", returns_of(response)[0])


def test_qualified_children_are_not_the_unqualified_parameters(simulator: Simulator) -> None:
    body = (
        f'<e:Envelope xmlns:e="{ENV_NS}"><e:Body><sendmsg xmlns="{TNS}"><api_id>123456</api_id>'
        "<user>MyUserName</user><password>MyPassword</password><text>Hi</text><to>2799900001</to>"
        "</sendmsg></e:Body></e:Envelope>"
    ).encode()
    assert returns_of(HTTP.post(simulator.url, content=body)) == ["ERR: 005, Missing session ID"]


def test_unparsable_xml_is_a_client_fault(simulator: Simulator) -> None:
    code, _ = fault_of(HTTP.post(simulator.url, content=b"<not-xml"))
    assert code == "SOAP-ENV:Client"


def test_unknown_operation_is_a_client_fault(simulator: Simulator) -> None:
    code, text = fault_of(HTTP.post(simulator.url, content=envelope("frobnicate", CREDENTIALS)))
    assert code == "SOAP-ENV:Client" and "frobnicate" in text


def test_doctype_is_refused_without_expanding_entities(simulator: Simulator) -> None:
    body = (
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        + envelope("getbalance", CREDENTIALS).decode().split("?>", 1)[1]
    ).encode()
    code, _ = fault_of(HTTP.post(simulator.url, content=body))
    assert code == "SOAP-ENV:Client"


def test_gzip_request_body_is_accepted(simulator: Simulator) -> None:
    body = gzip.compress(envelope("sendmsg", {**CREDENTIALS, "text": "Hi"}, ["2799900001"]))
    response = HTTP.post(simulator.url, content=body, headers={"Content-Encoding": "gzip"})
    assert ID_RE.fullmatch(returns_of(response)[0])


def test_pipelined_requests_are_answered_in_order(simulator: Simulator) -> None:
    host, port = "127.0.0.1", simulator.port
    path = "/soap/document_literal/webservice"
    bodies = [
        envelope("sendmsg", {**CREDENTIALS, "text": "Hi"}, [n]) for n in ("2711", "27999000001")
    ]
    raw = b"".join(
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), len(b), b)
        for b in bodies
    )
    with socket.create_connection((host, port)) as sock:
        sock.sendall(raw)
        data = b""
        while data.count(b"</SOAP-ENV:Envelope>") < 2:
            data += sock.recv(65536)
    first, second = data.split(b"HTTP/1.1 200 OK")[1:]
    assert b"ERR: 105" in first and b"ID: " in second


def test_keep_alive_connection_serves_many_requests(simulator: Simulator) -> None:
    with httpx.Client() as client:
        for _ in range(20):
            response = client.post(
                simulator.url,
                content=envelope("sendmsg", {**CREDENTIALS, "text": "x"}, ["2799900001"]),
            )
            assert ID_RE.fullmatch(returns_of(response)[0])
    assert simulator.requests == 20 and len(simulator.accepted) == 20


# -- authentication and sessions -----------------------------------------------------------------


def test_wrong_password_is_err_001(simulator: Simulator) -> None:
    assert send(simulator, ["2799900001"], password="nope") == ["ERR: 001, Authentication failed"]


def test_request_error_is_repeated_per_destination_like_the_reference(simulator: Simulator) -> None:
    returns = send(simulator, ["2799900001", "2799900002"], password="nope")
    assert returns == [
        "ERR: 001, Authentication failed To: 2799900001",
        "ERR: 001, Authentication failed To: 2799900002",
    ]


def test_request_error_can_be_a_single_return(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(request_errors_per_destination=False)
    assert send(sim, ["2799900001", "2799900002"], user="x") == ["ERR: 001, Authentication failed"]


def test_missing_api_id_is_err_108(simulator: Simulator) -> None:
    fields = {"user": "MyUserName", "password": "MyPassword", "text": "Hi"}
    assert call(simulator, "sendmsg", fields, ["2799900001"]) == [
        "ERR: 108, Invalid or missing API ID"
    ]


def test_neither_credentials_nor_session_is_err_005(simulator: Simulator) -> None:
    assert call(simulator, "sendmsg", {"text": "Hi"}, ["2799900001"]) == [
        "ERR: 005, Missing session ID"
    ]


def test_auth_session_sends_and_ping_echoes_it(simulator: Simulator) -> None:
    (ok,) = call(simulator, "auth", CREDENTIALS)
    assert re.fullmatch(r"OK: [0-9a-f]{32}", ok)
    session = ok[4:]
    assert call(simulator, "ping", {"session_id": session}) == [f"OK: {session}"]
    (sent,) = call(simulator, "sendmsg", {"session_id": session, "text": "Hi"}, ["2799900001"])
    assert ID_RE.fullmatch(sent)


def test_auth_with_wrong_credentials_is_err_001(simulator: Simulator) -> None:
    assert call(simulator, "auth", {**CREDENTIALS, "password": "x"}) == [
        "ERR: 001, Authentication failed"
    ]


def test_idle_session_expires_with_err_003(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(session_ttl=0.2)
    session = call(sim, "auth", CREDENTIALS)[0][4:]
    time.sleep(0.3)
    assert call(sim, "sendmsg", {"session_id": session, "text": "Hi"}, ["2799900001"]) == [
        "ERR: 003, Session ID expired"
    ]
    assert call(sim, "ping", {"session_id": session}) == ["ERR: 003, Session ID expired"]


def test_any_call_refreshes_the_session(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(session_ttl=0.4)
    session = call(sim, "auth", CREDENTIALS)[0][4:]
    for _ in range(3):
        time.sleep(0.25)
        assert call(sim, "getbalance", {"session_id": session})[0].startswith("Credit: ")


def test_unknown_session_is_err_003(simulator: Simulator) -> None:
    assert call(simulator, "ping", {"session_id": "0" * 32}) == ["ERR: 003, Session ID expired"]
    assert call(simulator, "ping", {}) == ["ERR: 005, Missing session ID"]


# -- sendmsg validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"text": ""}, "ERR: 107, Empty message"),
        ({"text": "00480069zz", "unicode": 1}, "ERR: 116, Invalid Unicode data"),
        ({"text": "004800690", "unicode": 1}, "ERR: 116, Invalid Unicode data"),
        ({"text": "x" * 460}, "ERR: 113, Maximum message parts exceeded"),
        ({"text": "x" * 161, "concat": 1}, "ERR: 113, Maximum message parts exceeded"),
        (
            {"text": "0048" * 71, "unicode": 1, "concat": 1},
            "ERR: 113, Maximum message parts exceeded",
        ),
        ({"concat": 36}, "ERR: 101, Invalid or missing parameters"),
        ({"from": "TooLongSender1"}, "ERR: 106, Invalid source address"),
        ({"from": "+27123"}, "ERR: 106, Invalid source address"),
        ({"deliv_time": 10081}, "ERR: 120, Invalid delivery time"),
        ({"deliv_time": "soon"}, "ERR: 120, Invalid delivery time"),
        ({"udh": "06050"}, "ERR: 102, Invalid user data header"),
        ({"udh": "XYZW"}, "ERR: 102, Invalid user data header"),
        ({"msg_type": "SMS_PIGEON"}, "ERR: 112, Invalid message type"),
        ({"climsgid": "x" * 33}, "ERR: 101, Invalid or missing parameters"),
        ({"unicode": 2}, "ERR: 101, Invalid or missing parameters"),
    ],
)
def test_invalid_request_is_refused_with_its_code(
    simulator: Simulator, fields: dict[str, Any], expected: str
) -> None:
    assert send(simulator, ["2799900001"], **fields) == [expected]
    assert simulator.accepted == []


def test_text_of_three_full_parts_fits_the_default_concat(simulator: Simulator) -> None:
    assert ID_RE.fullmatch(send(simulator, ["2799900001"], text="x" * 459)[0])
    assert simulator.accepted[0].parts == 3


def test_escaped_characters_count_twice(simulator: Simulator) -> None:
    send(simulator, ["2799900001"], text="{" * 80)
    assert simulator.accepted[0].parts == 1
    send(simulator, ["2799900001"], text="{" * 81)
    assert simulator.accepted[1].parts == 2


def test_request_concat_raises_the_part_limit(simulator: Simulator) -> None:
    assert ID_RE.fullmatch(send(simulator, ["2799900001"], text="x" * 460, concat=4)[0])


def test_data_without_text_is_not_empty(simulator: Simulator) -> None:
    assert ID_RE.fullmatch(send(simulator, ["2799900001"], text="", data="00ff10")[0])


def test_allowed_senders_refuse_others_with_err_123(
    make_simulator: Callable[..., Simulator],
) -> None:
    sim = make_simulator(allowed_senders=frozenset({"Shop"}))
    assert ID_RE.fullmatch(send(sim, ["2799900001"], **{"from": "Shop"})[0])
    assert send(sim, ["2799900001"], **{"from": "Other"}) == ["ERR: 123, Invalid Sender ID"]


def test_more_than_300_destinations_is_err_101(simulator: Simulator) -> None:
    to = [f"2799{i:07d}" for i in range(301)]
    assert set(send(simulator, to)) == {
        f"ERR: 101, Invalid or missing parameters To: {n}" for n in to
    }
    assert len(send(simulator, to[:300])) == 300


def test_no_destination_is_err_101(simulator: Simulator) -> None:
    assert send(simulator, []) == ["ERR: 101, Invalid or missing parameters"]


@pytest.mark.parametrize(
    "bad", ["0799900001", "+2799900001", "279990", "2799900001234567", "27999abc01", "٢٧٩٩٩٠٠٠٠١"]
)
def test_malformed_destination_is_err_105_alone(simulator: Simulator, bad: str) -> None:
    returns = send(simulator, ["2799900001", bad, "2799900003"])
    assert ID_RE.match(returns[0]) and returns[0].endswith("To: 2799900001")
    assert returns[1] == f"ERR: 105, Invalid destination address To: {bad}"
    assert ID_RE.match(returns[2]) and returns[2].endswith("To: 2799900003")
    assert [m.to for m in simulator.accepted] == ["2799900001", "2799900003"]


def test_single_malformed_destination_has_no_to_suffix(simulator: Simulator) -> None:
    assert send(simulator, ["<27>&"]) == ["ERR: 105, Invalid destination address"]


def test_configured_number_errors_and_unroutable_prefixes(
    make_simulator: Callable[..., Simulator],
) -> None:
    sim = make_simulator(
        number_errors={"2799900099": "121", "4470": "122"}, unroutable_prefixes=("1800",)
    )
    returns = send(sim, ["2799900099", "447000000001", "18005550100", "2799900001"])
    assert returns[:3] == [
        "ERR: 121, Destination mobile number blocked To: 2799900099",
        "ERR: 122, Destination mobile opted out To: 447000000001",
        "ERR: 114, Cannot route message To: 18005550100",
    ]
    assert ID_RE.match(returns[3])
    assert send(sim, ["2799900099"]) == ["ERR: 121, Destination mobile number blocked"]


# -- credit --------------------------------------------------------------------------------------


def test_credit_running_out_mid_list_is_err_301_for_the_rest(
    make_simulator: Callable[..., Simulator],
) -> None:
    sim = make_simulator(credits=2)
    returns = send(sim, ["2799900001", "2799900002", "2799900003", "2799900004"])
    assert all(ID_RE.match(r) for r in returns[:2])
    assert returns[2:] == [
        "ERR: 301, No credit left To: 2799900003",
        "ERR: 301, No credit left To: 2799900004",
    ]
    assert sim.credits == 0
    assert send(sim, ["2799900001"]) == ["ERR: 301, No credit left"]


def test_charge_is_parts_times_prefix_rate(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(credits=100, rates={"44": 2.5, "4479": 3.0})
    send(sim, ["447900000001", "447000000001", "2799900001"], text="x" * 200)
    assert [m.charge for m in sim.accepted] == [6.0, 5.0, 2.0]
    assert call(sim, "getbalance", CREDENTIALS) == ["Credit: 87.0"]


def test_set_credits_and_credits_label(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(balance_label="Credits")
    sim.set_credits(123.4)
    assert call(sim, "getbalance", CREDENTIALS) == ["Credits: 123.4"]


def test_routecoverage_answers_charge_or_unsupported(
    make_simulator: Callable[..., Simulator],
) -> None:
    sim = make_simulator(rates={"44": 0.33}, unroutable_prefixes=("1800",))
    (ok,) = call(sim, "routecoverage", {**CREDENTIALS, "msisdn": "447900000001"})
    assert ok == (
        "OK: This prefix is currently supported. Messages sent to this prefix will be routed. "
        "Charge: 0.33"
    )
    (err,) = call(sim, "routecoverage", {**CREDENTIALS, "msisdn": "18005550100"})
    assert err.startswith("ERR: This prefix is not currently supported.")


# -- throughput limit ----------------------------------------------------------------------------


def test_max_mps_refuses_the_whole_request_with_err_130(
    make_simulator: Callable[..., Simulator],
) -> None:
    sim = make_simulator(max_mps=0.01, throttle_window=300)  # 3 messages per 5 minutes
    assert all(ID_RE.match(r) for r in send(sim, ["2799900001", "2799900002", "2799900003"]))
    (refused,) = send(sim, ["2799900004"])
    match = re.fullmatch(r"ERR: 130, Maximum MT limit exceeded until (\d+)", refused)
    assert match and int(match[1]) > time.time()
    assert len(sim.accepted) == 3


# -- faults --------------------------------------------------------------------------------------


def _post(sim: Simulator, to: Sequence[str] = ("2799900001",), **kw: Any) -> httpx.Response:
    return HTTP.post(sim.url, content=envelope("sendmsg", {**CREDENTIALS, "text": "Hi"}, to), **kw)


def test_http_503_fault_with_retry_after(simulator: Simulator) -> None:
    simulator.inject("http_503", times=2, retry_after=7)
    for _ in range(2):
        response = _post(simulator)
        assert response.status_code == 503 and response.headers["Retry-After"] == "7"
    assert _post(simulator).status_code == 200
    assert len(simulator.accepted) == 1


def test_http_500_fault_is_not_a_soap_answer(simulator: Simulator) -> None:
    simulator.inject("http_500")
    response = _post(simulator)
    assert response.status_code == 500 and "Envelope" not in response.text
    assert simulator.accepted == []


def test_soap_fault_is_a_server_fault(simulator: Simulator) -> None:
    simulator.inject("soap_fault")
    assert fault_of(_post(simulator))[0] == "SOAP-ENV:Server"
    assert simulator.accepted == []


def test_drop_before_closes_without_accepting(simulator: Simulator) -> None:
    simulator.inject("drop_before")
    with pytest.raises(httpx.RemoteProtocolError):
        _post(simulator)
    assert simulator.accepted == [] and simulator.requests == 1


def test_drop_after_accepts_and_records_then_closes(simulator: Simulator, tmp_path: Path) -> None:
    simulator.inject("drop_after")
    with pytest.raises(httpx.RemoteProtocolError):
        _post(simulator, ["2799900001", "2799900002"])
    assert [m.to for m in simulator.accepted] == ["2799900001", "2799900002"]
    assert [r["to"] for r in records(tmp_path / "record.jsonl")] == ["2799900001", "2799900002"]


def test_err_901_fault_accepts_nothing(simulator: Simulator) -> None:
    simulator.inject("err_901")
    assert returns_of(_post(simulator)) == ["ERR: 901, Internal error - please retry"]
    assert simulator.accepted == []


def test_slow_fault_accepts_then_answers_late(simulator: Simulator) -> None:
    simulator.inject("slow", seconds=2)
    with pytest.raises(httpx.ReadTimeout):
        _post(simulator, timeout=0.3)
    assert len(simulator.accepted) == 1
    assert ID_RE.match(returns_of(_post(simulator))[0])  # the server still serves others


def test_latency_delays_every_answer(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(latency_ms=1000)
    with pytest.raises(httpx.ReadTimeout):
        call(sim, "getbalance", CREDENTIALS, timeout=0.2)


def test_expire_sessions_fault(simulator: Simulator) -> None:
    session = call(simulator, "auth", CREDENTIALS)[0][4:]
    simulator.inject("expire_sessions")
    fields = {"session_id": session, "text": "Hi"}
    assert call(simulator, "sendmsg", fields, ["2799900001"]) == ["ERR: 003, Session ID expired"]


def test_throttle_fault_refuses_until_its_end(simulator: Simulator) -> None:
    simulator.inject("throttle", seconds=60)
    for _ in range(2):
        (refused,) = returns_of(_post(simulator))
        assert refused.startswith("ERR: 130, Maximum MT limit exceeded until ")
        assert int(refused.rsplit(" ", 1)[1]) >= time.time() + 59
    assert simulator.accepted == []


def test_random_faults_follow_the_seed(make_simulator: Callable[..., Simulator]) -> None:
    def outcome(response: httpx.Response) -> str:
        if response.status_code == 503:
            return "503"
        return "901" if returns_of(response)[0].startswith("ERR: 901") else "ID"

    runs = []
    for _ in range(2):
        sim = make_simulator(fault_rates={"http_503": 0.3, "err_901": 0.2}, seed=42, record=None)
        runs.append([outcome(_post(sim)) for _ in range(40)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {"503", "901", "ID"}


def test_every_fault_kind_is_injectable(simulator: Simulator) -> None:
    for kind in sorted(FAULT_KINDS):
        simulator.inject(kind, seconds=0.01)
    with pytest.raises(ValueError):
        simulator.inject("meteor")


# -- record file ---------------------------------------------------------------------------------


def test_record_has_one_line_per_accepted_message_before_the_answer(
    simulator: Simulator, tmp_path: Path
) -> None:
    returns = send(
        simulator, ["2799900001", "0bad", "2799900002"], climsgid="c-1", **{"from": "Shop"}
    )
    lines = records(tmp_path / "record.jsonl")  # read right after the answer: already flushed
    assert [line["to"] for line in lines] == ["2799900001", "2799900002"]
    assert [line["api_message_id"] for line in lines] == [returns[0][4:36], returns[2][4:36]]
    first = lines[0]
    assert first["text"] == "Hello" and first["client_message_id"] == "c-1"
    assert first["from"] == "Shop" and first["parts"] == 1 and first["unicode"] is False
    assert abs(first["time"] - time.time()) < 60


# -- querymsg, delmsg, getmsgcharge --------------------------------------------------------------


def test_querymsg_by_api_and_client_id(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(delivery_delays=(3600, 7200))
    returns = send(sim, ["2799900001", "2799900002"], climsgid="shared")
    first, second = returns[0][4:36], returns[1][4:36]
    assert call(sim, "querymsg", {**CREDENTIALS, "apimsgid": second}) == [
        f"ID: {second} Status: 008"
    ]
    assert call(sim, "querymsg", {**CREDENTIALS, "climsgid": "shared"}) == [
        f"ID: {first} Status: 008"
    ]


def test_querymsg_unknown_ids(simulator: Simulator) -> None:
    assert call(simulator, "querymsg", {**CREDENTIALS, "apimsgid": "f" * 32}) == [
        "ERR: 103, Unknown API message ID"
    ]
    assert call(simulator, "querymsg", {**CREDENTIALS, "climsgid": "nope"}) == [
        "ERR: 104, Unknown client message ID"
    ]
    assert call(simulator, "querymsg", CREDENTIALS) == ["ERR: 109, Missing message ID"]


def test_delivery_status_progresses_to_004_or_007(make_simulator: Callable[..., Simulator]) -> None:
    sim = make_simulator(delivery_delays=(0.0, 0.0), undeliverable_prefixes=("2799900002",))
    returns = send(sim, ["2799900001", "2799900002"])
    ids = [r[4:36] for r in returns]
    assert call(sim, "querymsg", {**CREDENTIALS, "apimsgid": ids[0]}) == [
        f"ID: {ids[0]} Status: 004"
    ]
    assert call(sim, "querymsg", {**CREDENTIALS, "apimsgid": ids[1]}) == [
        f"ID: {ids[1]} Status: 007"
    ]
    assert sim.status_of(ids[1]) == "007"


def test_delmsg_stops_only_a_queued_message(simulator: Simulator) -> None:
    (later,) = send(simulator, ["2799900001"], deliv_time=60)
    msg = later[4:]
    assert call(simulator, "querymsg", {**CREDENTIALS, "apimsgid": msg}) == [
        f"ID: {msg} Status: 011"
    ]
    assert call(simulator, "delmsg", {**CREDENTIALS, "apimsgid": msg}) == [f"ID: {msg} Status: 006"]
    assert call(simulator, "querymsg", {**CREDENTIALS, "apimsgid": msg}) == [
        f"ID: {msg} Status: 006"
    ]
    (now,) = send(simulator, ["2799900001"])
    assert call(simulator, "delmsg", {**CREDENTIALS, "apimsgid": now[4:]}) == [
        f"ID: {now[4:]} Status: 008"
    ]


def test_getmsgcharge(simulator: Simulator) -> None:
    (sent,) = send(simulator, ["2799900001"], text="x" * 200)
    (answer,) = call(simulator, "getmsgcharge", {**CREDENTIALS, "apimsgid": sent[4:]})
    assert answer == f"ID: {sent[4:]} Charge: 2.0 Status: 008"


# -- delivery callbacks --------------------------------------------------------------------------


class _Receiver:
    """A tiny HTTP server collecting callback posts; fails the first ``fail_first`` posts."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[dict[str, str]] = []
        self.fail_first = fail_first
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                form = {
                    k: v[0]
                    for k, v in parse_qs(
                        self.rfile.read(length).decode(), keep_blank_values=True
                    ).items()
                }
                receiver.attempts += 1
                status = 500 if receiver.attempts <= receiver.fail_first else 200
                if status == 200:
                    receiver.posts.append(form)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.close()


def test_callbacks_post_003_then_004_for_level_3(
    make_simulator: Callable[..., Simulator], receiver: _Receiver
) -> None:
    sim = make_simulator(callback_url=receiver.url, delivery_delays=(0.05, 0.1))
    returns = send(
        sim, ["2799900001", "2799900002"], msg_callback=3, climsgid="c7", **{"from": "Shop"}
    )
    wait_for(lambda: len(receiver.posts) == 4)
    ids = {r[4:36] for r in returns}
    assert {(p["apiMsgId"], p["status"]) for p in receiver.posts} == {
        (i, s) for i in ids for s in ("003", "004")
    }
    post = receiver.posts[0]
    assert set(post) == {
        "api_id",
        "apiMsgId",
        "cliMsgId",
        "to",
        "timestamp",
        "from",
        "status",
        "charge",
    }
    assert (post["api_id"], post["cliMsgId"], post["from"], post["charge"]) == (
        "123456",
        "c7",
        "Shop",
        "1",
    )


def test_error_level_callback_only_reports_failures(
    make_simulator: Callable[..., Simulator], receiver: _Receiver
) -> None:
    sim = make_simulator(
        callback_url=receiver.url,
        delivery_delays=(0.01, 0.02),
        undeliverable_prefixes=("2799900002",),
    )
    send(sim, ["2799900001", "2799900002"], msg_callback=4)
    wait_for(lambda: len(receiver.posts) == 1)
    time.sleep(0.1)
    assert [(p["to"], p["status"]) for p in receiver.posts] == [("2799900002", "007")]


def test_callbacks_accept_the_reference_callback_element(
    make_simulator: Callable[..., Simulator], receiver: _Receiver
) -> None:
    sim = make_simulator(callback_url=receiver.url, delivery_delays=(0.01, 0.02))
    HTTP.post(sim.url, content=REFERENCE_ENVELOPES["callback_and_sender"].encode())
    wait_for(lambda: len(receiver.posts) == 2)
    assert sorted(p["status"] for p in receiver.posts) == ["003", "004"]


def test_failed_callback_post_is_retried(make_simulator: Callable[..., Simulator]) -> None:
    flaky = _Receiver(fail_first=2)
    try:
        sim = make_simulator(
            callback_url=flaky.url,
            delivery_delays=(0.0, 0.01),
            callback_retry_delays=(0.01, 0.01, 0.01),
        )
        send(sim, ["2799900001"], msg_callback=2)
        wait_for(lambda: sim.callbacks_posted == 1)
        assert [p["status"] for p in flaky.posts] == ["004"] and flaky.attempts == 3
    finally:
        flaky.close()


def test_no_callbacks_without_msg_callback(
    make_simulator: Callable[..., Simulator], receiver: _Receiver
) -> None:
    sim = make_simulator(callback_url=receiver.url, delivery_delays=(0.0, 0.0))
    send(sim, ["2799900001"])
    send(sim, ["2799900001"], msg_callback=1)
    wait_for(lambda: len(receiver.posts) == 1)
    time.sleep(0.1)
    assert [p["status"] for p in receiver.posts] == ["003"]


# -- command line --------------------------------------------------------------------------------


def test_module_command_serves_until_sigterm(tmp_path: Path) -> None:
    record = tmp_path / "cli.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batch_sender.simulator",
            "--port",
            "0",
            "--api-id",
            "42",
            "--user",
            "u",
            "--password",
            "p",
            "--record",
            str(record),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        body = envelope(
            "sendmsg", {"api_id": 42, "user": "u", "password": "p", "text": "Hi"}, ["2799900001"]
        )
        assert ID_RE.fullmatch(returns_of(HTTP.post(url, content=body))[0])
        assert len(records(record)) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_context_manager_stops_listening(tmp_path: Path) -> None:
    with Simulator(SimulatorConfig(port=0, record=tmp_path / "r.jsonl")) as sim:
        port = sim.port
        assert sim.credentials.user  # from CLICKATELL_USER or the documentation's default
        assert call(sim, "ping", {}) == ["ERR: 005, Missing session ID"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
