"""The gateway client against the simulator over loopback HTTP: results, sessions, failures.

Every test talks real HTTP to a real server, except a few precise edge cases the simulator has
no knob for (an HTTP-date ``Retry-After``, a gzip bomb, ERR 001 on a session), which use
``httpx.MockTransport`` and say so.
"""

from __future__ import annotations

import gzip
import logging
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from batch_sender import errors
from batch_sender.gateway import Credentials, GatewayClient, Message, Receipt, wire

A, B, C = "27990000001", "27990000002", "27990000003"
HELLO = Message(text="Hello from batch-sender")
PASSWORD = "Sw0rdfish-S3cret"  # distinctive, so a leak is easy to spot
WRONG_PASSWORD = "Wr0ng-Pa55-S3cret"

MakeClient = Callable[..., GatewayClient]


class RecordingTransport(httpx.HTTPTransport):
    """A real HTTP transport that also notes each request's operation and headers."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
        return super().handle_request(request)

    @property
    def operations(self) -> list[str]:
        return [r.headers["SOAPAction"].strip('"').rpartition("/")[2] for r in self.requests]


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    clients: list[GatewayClient] = []

    def make(sim: Any = None, *, url: str | None = None, password: str | None = None,
             **kwargs: Any) -> GatewayClient:  # fmt: skip
        api_id, user, sim_password = sim.credentials if sim is not None else ("1", "u", "p")
        client = GatewayClient(
            url=url or sim.url,
            credentials=Credentials(api_id, user, password or sim_password),
            **kwargs,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# -- sendmsg ----------------------------------------------------------------------------------


def test_sendmsg_to_two_numbers_returns_one_receipt_per_number(
    simulator: Any, make_client: MakeClient
) -> None:
    receipts = make_client(simulator).sendmsg([A, B], HELLO, climsgid="req-1")
    assert [r.to for r in receipts] == [A, B]
    assert all(r.ok and len(r.api_message_id or "") == 32 for r in receipts)
    accepted = {m.api_message_id: m for m in simulator.accepted}
    for receipt in receipts:
        message = accepted[receipt.api_message_id]
        assert (message.to, message.text, message.client_message_id) == (
            receipt.to, HELLO.text, "req-1",
        )  # fmt: skip


def test_single_number_answer_without_to_gets_its_number_filled_in(
    simulator: Any, make_client: MakeClient
) -> None:
    (receipt,) = make_client(simulator).sendmsg([A], HELLO)
    assert receipt.to == A and receipt.ok
    assert [m.api_message_id for m in simulator.accepted] == [receipt.api_message_id]


def test_per_destination_error_mid_list_is_a_receipt_not_an_exception(
    make_simulator: Callable[..., Any], make_client: MakeClient
) -> None:
    sim = make_simulator(number_errors={B: "105"})
    receipts = make_client(sim).sendmsg([A, B, C], HELLO)
    assert [(r.to, r.ok, r.error_code) for r in receipts] == [
        (A, True, None), (B, False, "105"), (C, True, None),
    ]  # fmt: skip
    assert receipts[1].error_description == "Invalid destination address"
    assert {m.to for m in sim.accepted} == {A, C}


def test_single_number_destination_error_is_a_receipt(
    make_simulator: Callable[..., Any], make_client: MakeClient
) -> None:
    sim = make_simulator(number_errors={A: "121"})
    (receipt,) = make_client(sim).sendmsg([A], HELLO)
    assert (receipt.to, receipt.ok, receipt.error_code) == (A, False, "121")
    assert receipt.error_description


def test_running_out_of_credit_mid_list_returns_301_for_the_rest(
    simulator: Any, make_client: MakeClient
) -> None:
    client = make_client(simulator)
    client.auth()
    simulator.set_credits(1.0)
    receipts = client.sendmsg([A, B], HELLO)
    assert [(r.to, r.error_code) for r in receipts] == [(A, None), (B, "301")]


@pytest.mark.parametrize("per_destination", [True, False])
def test_request_level_error_raises_its_class_whether_repeated_per_number_or_not(
    make_simulator: Callable[..., Any], make_client: MakeClient, per_destination: bool
) -> None:
    sim = make_simulator(request_errors_per_destination=per_destination)
    with pytest.raises(errors.RequestRejected) as caught:
        make_client(sim).sendmsg([A, B], Message(text=""))
    assert caught.value.code == "107"
    assert sim.accepted == []


def test_no_credit_at_all_stops_the_run(simulator: Any, make_client: MakeClient) -> None:
    client = make_client(simulator)
    client.auth()
    simulator.set_credits(0.0)
    with pytest.raises(errors.RunStopped) as caught:
        client.sendmsg([A, B], HELLO)
    assert caught.value.code == "301"


def test_throttled_gateway_raises_throttled_with_the_resume_time(
    simulator: Any, make_client: MakeClient
) -> None:
    simulator.inject("throttle", seconds=60)
    with pytest.raises(errors.Throttled) as caught:
        make_client(simulator).sendmsg([A, B], HELLO)
    assert caught.value.until > time.time() + 30


def test_message_fields_and_options_reach_the_gateway(
    simulator: Any, make_client: MakeClient
) -> None:
    hi = "00480069"  # "Hi" in UCS-2 hex
    message = Message(
        text=hi, unicode=True, sender="ACME", msg_type="SMS_FLASH", callback=3,
        options=(("validity", "60"), ("deliv_ack", "1")),
    )  # fmt: skip
    make_client(simulator).sendmsg([A], message, climsgid="opts-1")
    (accepted,) = simulator.accepted
    assert (accepted.text, accepted.unicode, accepted.sender, accepted.msg_type) == (
        hi, True, "ACME", "SMS_FLASH",
    )  # fmt: skip
    assert (accepted.msg_callback, accepted.client_message_id) == (3, "opts-1")


def test_binary_message_with_udh_is_sent_as_given(simulator: Any, make_client: MakeClient) -> None:
    payload = "040601AE02056A0045C60C037368008503656B732E636F6D0008010374657374000101"
    make_client(simulator).sendmsg([A], Message(text=payload, udh="0605040B8423F0"))
    (accepted,) = simulator.accepted
    assert (accepted.udh, accepted.text) == ("0605040B8423F0", payload)


@pytest.mark.parametrize(
    ("to", "message", "complaint"),
    [
        ([A], Message(text="x", options=(("callback", "3"),)), "unknown sendmsg option"),
        ([A], Message(text="x", options=(("validity", "1"), ("validity", "2"))), "given twice"),
        ([A], Message(text=None), "needs text or data"),
        ([f"2799{i:07d}" for i in range(301)], HELLO, "at most 300"),
        ([], HELLO, "at least one"),
    ],
)
def test_bad_requests_are_input_errors_and_send_nothing(
    simulator: Any,
    make_client: MakeClient,
    to: list[str],
    message: Message,
    complaint: str,
) -> None:
    transport = RecordingTransport()
    with pytest.raises(errors.InputError, match=complaint):
        make_client(simulator, transport=transport).sendmsg(to, message)
    assert "sendmsg" not in transport.operations


def test_requests_carry_soap_headers(simulator: Any, make_client: MakeClient) -> None:
    transport = RecordingTransport()
    make_client(simulator, transport=transport).sendmsg([A], HELLO)
    request = transport.requests[-1]
    assert request.headers["Content-Type"] == "text/xml; charset=UTF-8"
    assert request.headers["SOAPAction"] == f'"{wire.soap_action("sendmsg")}"'


# -- other operations -------------------------------------------------------------------------


def test_querymsg_finds_a_message_by_api_or_client_id(
    simulator: Any, make_client: MakeClient
) -> None:
    client = make_client(simulator)
    (receipt,) = client.sendmsg([A], HELLO, climsgid="find-me")
    by_api = client.querymsg(apimsgid=receipt.api_message_id)
    by_cli = client.querymsg(climsgid="find-me")
    assert by_api == by_cli
    assert by_api.api_message_id == receipt.api_message_id and len(by_api.status) == 3


def test_querymsg_for_a_never_accepted_client_id_is_rejected_with_104(
    simulator: Any, make_client: MakeClient
) -> None:
    with pytest.raises(errors.RequestRejected) as caught:
        make_client(simulator).querymsg(climsgid="never-sent")
    assert caught.value.code == "104"


def test_querymsg_needs_an_id(simulator: Any, make_client: MakeClient) -> None:
    with pytest.raises(errors.InputError):
        make_client(simulator).querymsg()


def test_balance_ping_and_coverage(
    make_simulator: Callable[..., Any], make_client: MakeClient
) -> None:
    sim = make_simulator(credits=42.5, default_rate=0.8)
    client = make_client(sim)
    assert client.getbalance() == 42.5
    client.ping()
    assert client.routecoverage(A) == 0.8


@pytest.mark.parametrize("label", ["Credit", "Credits"])
def test_balance_reads_either_label(
    make_simulator: Callable[..., Any], make_client: MakeClient, label: str
) -> None:
    sim = make_simulator(credits=12.5, balance_label=label)
    assert make_client(sim).getbalance() == 12.5


# -- sessions ---------------------------------------------------------------------------------


def test_authenticates_once_then_sends_the_session_not_the_password(
    simulator: Any, make_client: MakeClient
) -> None:
    transport = RecordingTransport()
    client = make_client(simulator, transport=transport)
    client.sendmsg([A], HELLO)
    client.sendmsg([B], HELLO)
    client.getbalance()
    assert transport.operations == ["auth", "sendmsg", "sendmsg", "getbalance"]
    password = simulator.credentials.password.encode()
    assert [password in r.content for r in transport.requests] == [True, False, False, False]


def test_expired_session_is_renewed_once_and_the_call_repeated(
    simulator: Any, make_client: MakeClient
) -> None:
    transport = RecordingTransport()
    client = make_client(simulator, transport=transport)
    client.auth()
    simulator.inject("expire_sessions")
    (receipt,) = client.sendmsg([A], HELLO)
    assert receipt.ok
    assert transport.operations == ["auth", "sendmsg", "auth", "sendmsg"]
    assert [m.to for m in simulator.accepted] == [A]


def test_session_expiring_again_after_renewal_is_raised(
    simulator: Any, make_client: MakeClient
) -> None:
    transport = RecordingTransport()
    client = make_client(simulator, transport=transport)
    client.auth()
    simulator.inject("expire_sessions", times=2)
    with pytest.raises(errors.SessionExpired):
        client.sendmsg([A], HELLO)
    assert transport.operations.count("auth") == 2


def test_wrong_credentials_stop_the_run_without_sending(
    simulator: Any, make_client: MakeClient
) -> None:
    transport = RecordingTransport()
    client = make_client(simulator, password=WRONG_PASSWORD, transport=transport)
    with pytest.raises(errors.RunStopped) as caught:
        client.sendmsg([A], HELLO)
    assert caught.value.code == "001"
    assert transport.operations == ["auth"]


def soap(operation: str, line: str) -> httpx.Response:
    """A 200 SOAP answer with one ``<return>`` (for the MockTransport edge cases)."""
    body = (
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{wire.ENVELOPE_NS}" xmlns:ns1="{wire.NS}">'
        f"<SOAP-ENV:Body><ns1:{operation}Response><return>{line}</return>"
        f"</ns1:{operation}Response></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )
    return httpx.Response(200, content=body.encode())


def mock_client(handler: Callable[[str, bytes], httpx.Response]) -> GatewayClient:
    """A client over MockTransport; ``handler(operation, body)`` answers each request."""

    def handle(request: httpx.Request) -> httpx.Response:
        operation = request.headers["SOAPAction"].strip('"').rpartition("/")[2]
        return handler(operation, request.content)

    return GatewayClient(
        url="http://gateway.test/soap/document_literal/webservice",
        credentials=Credentials("123456", "MyUserName", PASSWORD),
        transport=httpx.MockTransport(handle),
    )


def test_err_001_on_a_session_request_renews_the_session_once() -> None:
    # MockTransport: the simulator answers 003 for dead sessions, never 001.
    sessions = iter(["a" * 32, "b" * 32])
    calls: list[str] = []

    def handler(operation: str, body: bytes) -> httpx.Response:
        calls.append(operation)
        if operation == "auth":
            return soap("auth", f"OK: {next(sessions)}")
        if b"a" * 32 in body:
            return soap("sendmsg", "ERR: 001, Authentication failed")
        return soap("sendmsg", "ID: 0123456789abcdef0123456789abcdef")

    with mock_client(handler) as client:
        assert client.sendmsg([A], HELLO)[0].ok
    assert calls == ["auth", "sendmsg", "auth", "sendmsg"]


# -- transport failures -----------------------------------------------------------------------


def test_connection_refused_is_a_transport_error(make_client: MakeClient) -> None:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        client = make_client(url=f"http://127.0.0.1:{port}/soap/document_literal/webservice")
        with pytest.raises(errors.TransportError) as caught:
            client.sendmsg([A], HELLO)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_read_timeout_after_send_raises_outcome_unknown(
    simulator: Any, make_client: MakeClient
) -> None:
    client = make_client(simulator, timeout=httpx.Timeout(5.0, read=0.2))
    client.auth()
    simulator.inject("slow", seconds=1.0)
    with pytest.raises(errors.OutcomeUnknown) as caught:
        client.sendmsg([A], HELLO)
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert not isinstance(caught.value, errors.RetryableError)
    assert [m.to for m in simulator.accepted] == [A]  # it was accepted: resending would duplicate


@pytest.mark.parametrize(("kind", "accepted"), [("drop_before", []), ("drop_after", [A])])
def test_dropped_connection_after_send_raises_outcome_unknown(
    simulator: Any, make_client: MakeClient, kind: str, accepted: list[str]
) -> None:
    client = make_client(simulator)
    client.auth()
    simulator.inject(kind)
    with pytest.raises(errors.OutcomeUnknown):
        client.sendmsg([A], HELLO)
    assert [m.to for m in simulator.accepted] == accepted  # the client cannot tell which


def test_waiting_too_long_for_a_pooled_connection_is_a_transport_error(
    simulator: Any, make_client: MakeClient
) -> None:
    client = make_client(simulator, max_connections=1, timeout=httpx.Timeout(5.0, pool=0.1))
    client.auth()
    simulator.inject("slow", seconds=1.0)
    first = threading.Thread(target=client.sendmsg, args=([A], HELLO))
    first.start()
    while simulator.requests < 1:  # the only connection is now busy
        time.sleep(0.01)
    with pytest.raises(errors.TransportError) as caught:
        client.sendmsg([B], HELLO)
    first.join()
    assert isinstance(caught.value.__cause__, httpx.PoolTimeout)
    assert (simulator.requests, [m.to for m in simulator.accepted]) == (1, [A])


@pytest.mark.parametrize(
    ("kind", "options", "exception", "status", "retry_after"),
    [
        ("http_503", {"retry_after": 7}, errors.ServerBusy, 503, 7.0),
        ("http_500", {}, errors.ServerBusy, 500, None),
        ("soap_fault", {}, errors.SoapFault, None, None),
        ("err_901", {}, errors.InternalGatewayError, None, None),
    ],
)
def test_server_side_failures_are_retryable_and_accept_nothing(
    simulator: Any,
    make_client: MakeClient,
    kind: str,
    options: dict[str, Any],
    exception: type[errors.RetryableError],
    status: int | None,
    retry_after: float | None,
) -> None:
    simulator.inject(kind, **options)
    with pytest.raises(exception) as caught:
        make_client(simulator).sendmsg([A, B], HELLO)
    assert isinstance(caught.value, errors.RetryableError)
    assert getattr(caught.value, "status", None) == status
    assert caught.value.retry_after == retry_after
    assert simulator.accepted == []


def test_wrong_path_is_a_protocol_error(simulator: Any, make_client: MakeClient) -> None:
    client = make_client(simulator, url=simulator.url.replace("webservice", "nowhere"))
    with pytest.raises(errors.ProtocolError, match="HTTP 404"):
        client.sendmsg([A], HELLO)


def test_retry_after_as_an_http_date_becomes_seconds() -> None:
    # MockTransport: the simulator only sends delta-seconds.
    when = datetime.now(UTC) + timedelta(seconds=120)

    def handler(operation: str, body: bytes) -> httpx.Response:
        if operation == "auth":
            return soap("auth", "OK: " + "s" * 32)
        return httpx.Response(429, headers={"Retry-After": format_datetime(when, usegmt=True)})

    with mock_client(handler) as client, pytest.raises(errors.ServerBusy) as caught:
        client.sendmsg([A], HELLO)
    assert caught.value.status == 429
    assert caught.value.retry_after is not None and 100 < caught.value.retry_after <= 120


@pytest.mark.parametrize("header", ["soon", "-5", ""])
def test_unreadable_retry_after_is_ignored(header: str) -> None:
    def handler(operation: str, body: bytes) -> httpx.Response:
        if operation == "auth":
            return soap("auth", "OK: " + "s" * 32)
        return httpx.Response(503, headers={"Retry-After": header})

    with mock_client(handler) as client, pytest.raises(errors.ServerBusy) as caught:
        client.sendmsg([A], HELLO)
    assert caught.value.retry_after is None


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip-bomb"])
def test_oversized_answer_is_refused(compressed: bool) -> None:
    # MockTransport: no real gateway sends 16 MiB, compressed or not.
    huge = b"<return>" + b"0" * wire.MAX_BODY_BYTES + b"</return>"
    content = gzip.compress(huge, compresslevel=1) if compressed else huge
    headers = {"Content-Encoding": "gzip"} if compressed else {}

    def handler(operation: str, body: bytes) -> httpx.Response:
        if operation == "auth":
            return soap("auth", "OK: " + "s" * 32)
        return httpx.Response(200, content=content, headers=headers)

    with (
        mock_client(handler) as client,
        pytest.raises(errors.ProtocolError, match="answer .*refused"),
    ):
        client.sendmsg([A], HELLO)


# -- secrets ----------------------------------------------------------------------------------


def _everything_said(exc: BaseException, client: GatewayClient, logs: str) -> str:
    return "\n".join(
        [str(exc), repr(exc), "".join(traceback.format_exception(exc)), repr(client), logs]
    )


def test_password_never_appears_in_errors_reprs_or_logs(
    make_simulator: Callable[..., Any], make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included
    sim = make_simulator(password=PASSWORD)
    said: list[str] = []
    wrong = make_client(sim, password=WRONG_PASSWORD)
    with pytest.raises(errors.RunStopped) as stopped:
        wrong.sendmsg([A], HELLO)
    said.append(_everything_said(stopped.value, wrong, caplog.text))
    right = make_client(sim, timeout=httpx.Timeout(5.0, read=0.2))
    right.sendmsg([A], HELLO)
    for kind, options in [("http_503", {}), ("soap_fault", {}), ("drop_after", {}),
                          ("slow", {"seconds": 0.5})]:  # fmt: skip
        sim.inject(kind, **options)
        with pytest.raises(errors.GatewayError) as caught:
            right.sendmsg([A], HELLO)
        said.append(_everything_said(caught.value, right, caplog.text))
    credentials = Credentials("123456", "MyUserName", PASSWORD)
    said += [repr(credentials), str(credentials)]
    text = "\n".join(said)
    assert PASSWORD not in text and WRONG_PASSWORD not in text
    assert "MyUserName" in repr(credentials)  # the rest stays visible for diagnosis


def test_a_server_echoing_the_password_has_it_blanked_out() -> None:
    # MockTransport: an answer that quotes the request back, password first.
    def handler(operation: str, body: bytes) -> httpx.Response:
        return httpx.Response(200, content=b"password=" + PASSWORD.encode() + b"&" + body)

    with mock_client(handler) as client, pytest.raises(errors.ProtocolError) as caught:
        client.auth()
    assert PASSWORD not in str(caught.value) and "***" in str(caught.value)


# -- sharing ----------------------------------------------------------------------------------


def test_worker_threads_share_one_client_and_one_session(
    simulator: Any, make_client: MakeClient
) -> None:
    transport = RecordingTransport()
    client = make_client(simulator, transport=transport)
    numbers = [f"2799{i:07d}" for i in range(400)]
    chunks = [numbers[i : i + 10] for i in range(0, len(numbers), 10)]
    results: list[list[Receipt]] = []

    def work(mine: list[list[str]]) -> None:
        for chunk in mine:
            results.append(client.sendmsg(chunk, HELLO))

    threads = [threading.Thread(target=work, args=(chunks[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.to or "" for rs in results for r in rs) == numbers
    assert all(r.ok for rs in results for r in rs)
    assert simulator.accepted_count == 400
    assert transport.operations.count("auth") == 1
