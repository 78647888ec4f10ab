"""The fast reading of a gateway answer agrees with the hardened lxml reading, or steps aside.

``wire.fast_returns`` reads the answer as the gateway writes it without building a tree; for
anything else it says None and ``wire.parse_response`` hands the body to lxml, which alone
decides what a body it cannot read means (malformed → ProtocolError → ``unknown``). So on every
body: the fast answer, when there is one, is lxml's answer; and ``parse_response`` answers (or
raises) exactly what the lxml reading alone does.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch_sender import errors
from batch_sender.gateway import wire
from batch_sender.simulator.soap import fault_body, response_body

ID = "918c16a73f75530da44c4f17abed80a1"
ID2 = "8019f2f6e76afc7e421618a4b92e8ec2"
DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
OPEN = (
    '<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:ns1="http://api.clickatell.com/soap/document_literal/webservice">'
)


def envelope(inner: str, *, operation: str = "sendmsg", sep: str = "") -> bytes:
    """An answer with ``inner`` inside ``<ns1:{operation}Response>``, ``sep`` between tags."""
    return (
        f"{DECLARATION}{sep}{OPEN}{sep}<SOAP-ENV:Body>{sep}<ns1:{operation}Response>"
        f"{sep}{inner}{sep}</ns1:{operation}Response>{sep}</SOAP-ENV:Body>{sep}"
        "</SOAP-ENV:Envelope>"
    ).encode()


ONE = envelope(f"<return>ID: {ID}</return>")
TWO = [f"ID: {ID} To: 2799900001", f"ID: {ID2} To: 2799900002"]
E105 = "ERR: 105, Invalid Destination Address To: 2799900003"

#: answers the fast reading must take (and read as lxml does)
FAST = {
    "simulator, one ID": response_body("sendmsg", [f"ID: {ID}"]),
    "simulator, two with To": response_body("sendmsg", TWO),
    "simulator, per-number error": response_body("sendmsg", [E105]),
    "simulator, request-level error": response_body("sendmsg", ["ERR: 001, Authentication failed"]),
    "the documentation's example, spaces between tags": envelope(
        f"<return>ID: {ID} To: 2799900001</return> <return>ID: {ID2} To: 2799900002</return>",
        sep=" ",
    ),
    "CR LF between tags": envelope(f"<return>ID: {ID}</return>", sep="\r\n"),
    "tabs and a trailing newline": envelope(f"<return>ID: {ID}</return>", sep="\t") + b"\n",
    "an empty return": envelope("<return></return>"),
    "non-ASCII text": envelope("<return>ERR: 105, Zoë 李雷 ✓ To: 2799900001</return>"),
    "a lone > and quotes": envelope("<return>ERR: 999, a > b \"c\" 'd'</return>"),
    "auth": response_body("auth", ["OK: 0123456789abcdef0123456789abcdef"]),
}  # fmt: skip

#: answers the fast reading must leave to lxml (each is read differently, or refused, by XML)
SLOW = {
    "escaped ampersand": envelope("<return>ERR: 105, fish &amp; chips</return>"),
    "character reference": envelope("<return>ID: &#57;18c</return>"),
    "CDATA": envelope(f"<return><![CDATA[ID: {ID}]]></return>"),
    "CR inside a return": envelope(f"<return>ID: {ID}\r\nTo: 2799900001</return>"),
    "a comment": envelope(f"<return>ID: {ID}</return><!-- hi -->"),
    "a comment inside a return": envelope(f"<return>ID: <!-- x -->{ID}</return>"),
    "a processing instruction": envelope(f"<return>ID: {ID}</return><?pi x?>"),
    "a SOAP Fault": fault_body("SOAP-ENV:Server", "boom"),
    "a DOCTYPE": ONE.replace(b"?>", b"?><!DOCTYPE x>", 1),
    "an entity": envelope("<return>&xxe;</return>"),
    "no declaration": ONE[len(DECLARATION):],
    "single-quoted declaration": ONE.replace(b'"1.0" encoding="UTF-8"', b"'1.0' encoding='UTF-8'"),
    "a byte order mark": b"\xef\xbb\xbf" + ONE,
    "form feed between tags": envelope(f"<return>ID: {ID}</return>", sep="\f"),
    "a control character": envelope(f"<return>ID: {ID}\x01</return>"),
    "invalid UTF-8": ONE.replace(b"ID: ", b"ID: \xff"),
    "U+FFFF": envelope(f"<return>ID: {ID}\uffff</return>"),
    "]]> in a text": envelope(f"<return>ID: {ID} ]]></return>"),
    "garbage after the envelope": ONE + b"<x/>",
    "text after the envelope": ONE + b"tail",
    "two envelopes": ONE * 2,
    "another element in the response": envelope(f"<return>ID: {ID}</return><extra/>"),
    "a prefixed return": envelope(f"<ns1:return>ID: {ID}</ns1:return>"),
    "a return with an attribute": envelope(f'<return a="1">ID: {ID}</return>'),
    "a nested element": envelope(f"<return>ID: <b>{ID}</b></return>"),
    "a self-closed return": envelope("<return/>"),
    "no return": envelope(""),
    "the wrong operation": response_body("auth", ["OK: abc"]),
    "the wrong envelope namespace": ONE.replace(b"soap/envelope/", b"soap/envelope2/"),
    "the wrong operation namespace": ONE.replace(b"document_literal/webservice", b"x"),
    "a default namespace": ONE.replace(b"<SOAP-ENV:Envelope ", b'<SOAP-ENV:Envelope xmlns="u" '),
    "truncated": ONE[:-5],
    "an unclosed return": envelope(f"<return>ID: {ID}"),
    "empty": b"",
    "HTML": b"<html><body>502 Bad Gateway</body></html>",
}  # fmt: skip


def lxml_reading(body: bytes, operation: str) -> Any:
    """What the hardened lxml parser alone makes of ``body``: the returns, or the error."""
    try:
        return wire._parse_response_xml(body, operation)
    except errors.GatewayError as exc:
        return (type(exc), str(exc))


def public_reading(body: bytes, operation: str) -> Any:
    try:
        return wire.parse_response(body, operation)
    except errors.GatewayError as exc:
        return (type(exc), str(exc))


def check_agrees(body: bytes, operation: str = "sendmsg") -> list[str] | None:
    """The property: a fast answer is lxml's answer; the public reading is lxml's reading."""
    fast = wire.fast_returns(body, operation)
    slow = lxml_reading(body, operation)
    if fast is not None:
        assert fast == slow, body
    assert public_reading(body, operation) == slow, body
    return fast


@pytest.mark.parametrize("name", FAST)
def test_the_gateways_own_answers_are_read_fast_and_as_lxml_reads_them(name: str) -> None:
    body = FAST[name]
    operation = "auth" if b"authResponse" in body else "sendmsg"
    assert check_agrees(body, operation) is not None


@pytest.mark.parametrize("name", SLOW)
def test_anything_else_is_left_to_lxml(name: str) -> None:
    assert check_agrees(SLOW[name]) is None


def test_the_fast_reading_takes_the_usual_answer_without_lxml(monkeypatch: Any) -> None:
    calls: list[bytes] = []
    real = wire.parse_xml

    def counted(body: bytes) -> Any:
        calls.append(body)
        return real(body)

    monkeypatch.setattr(wire, "parse_xml", counted)
    assert wire.parse_response(FAST["simulator, one ID"], "sendmsg") == [f"ID: {ID}"]
    assert calls == []
    # the fallback engages for a body the fast reading does not take, and lxml decides
    assert wire.parse_response(SLOW["escaped ampersand"], "sendmsg") == ["ERR: 105, fish & chips"]
    with pytest.raises(errors.ProtocolError, match="malformed XML"):
        wire.parse_response(SLOW["truncated"], "sendmsg")
    with pytest.raises(errors.SoapFault):
        wire.parse_response(SLOW["a SOAP Fault"], "sendmsg")
    assert len(calls) == 3


def test_an_oversized_body_is_left_to_lxml_which_refuses_it(monkeypatch: Any) -> None:
    body = FAST["simulator, one ID"]
    monkeypatch.setattr(wire, "MAX_BODY_BYTES", len(body) - 1)
    assert wire.fast_returns(body, "sendmsg") is None
    with pytest.raises(errors.ProtocolError, match="refused"):
        wire.parse_response(body, "sendmsg")


def test_every_truncation_of_a_good_answer_agrees() -> None:
    body = FAST["the documentation's example, spaces between tags"]
    for end in range(len(body)):
        assert check_agrees(body[:end]) is None


def test_random_corruptions_of_good_answers_agree() -> None:
    """Bytes replaced, inserted or dropped at random, with XML's special bytes favoured."""
    rng = random.Random(19)
    special = list(b"<>&;\r\n\t\f \"'!?[]-/:=\x00\x01\xff\xef") + list(b"IDERToK0123")
    bodies = list(FAST.values())
    taken = 0
    for _ in range(4000):
        body = bytearray(rng.choice(bodies))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(body))
            kind = rng.random()
            byte = rng.choice(special) if rng.random() < 0.8 else rng.randrange(256)
            if kind < 0.4:
                body[at] = byte
            elif kind < 0.7:
                body.insert(at, byte)
            else:
                del body[at]
        operation = "auth" if b"authResponse" in body else "sendmsg"
        taken += check_agrees(bytes(body), operation) is not None
    assert taken > 100  # corruptions inside a return's text stay on the fast path


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=4), st.sampled_from(["", " ", "\n"]))
def test_any_return_texts_agree(texts: list[str], sep: str) -> None:
    """Whatever the texts (written raw: some are not even XML), the readings agree."""
    inner = sep.join(f"<return>{t}</return>" for t in texts)
    body = envelope(inner, sep=sep).decode("utf-8", "surrogatepass").encode("utf-8", "replace")
    check_agrees(body)
