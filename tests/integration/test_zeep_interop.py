"""A stock SOAP client (zeep), built from the simulator's own ``?wsdl``, talks to the simulator:
proof that the WSDL, the endpoint address and the response shapes agree with each other."""

from __future__ import annotations

import re
from typing import Any

import pytest
import zeep

from batch_sender.simulator import Simulator

CREDENTIALS = {"api_id": 123456, "user": "MyUserName", "password": "MyPassword"}


@pytest.fixture
def service(simulator: Simulator) -> Any:
    """zeep's proxy for the service, at the address the WSDL names (no override)."""
    return zeep.Client(simulator.wsdl_url).service  # type: ignore[no-untyped-call]


def test_zeep_sendmsg_to_two_numbers(simulator: Simulator, service: Any) -> None:
    returns = service.sendmsg(
        **CREDENTIALS, text="Hello from zeep", to=["2799900001", "2799900002"]
    )
    assert len(returns) == 2
    assert re.fullmatch(r"ID: [0-9a-f]{32} To: 2799900001", returns[0])
    assert re.fullmatch(r"ID: [0-9a-f]{32} To: 2799900002", returns[1])
    assert [m.text for m in simulator.accepted] == ["Hello from zeep"] * 2


def test_zeep_auth_then_sendmsg_with_the_session(service: Any) -> None:
    ok = service.auth(**CREDENTIALS)
    assert re.fullmatch(r"OK: [0-9a-f]{32}", ok)
    (sent,) = service.sendmsg(session_id=ok[4:], text="Hi", to=["2799900001"], climsgid="z1")
    assert re.fullmatch(r"ID: [0-9a-f]{32}", sent)


def test_zeep_getbalance(simulator: Simulator, service: Any) -> None:
    simulator.set_credits(42.5)
    assert service.getbalance(**CREDENTIALS) == "Credit: 42.5"


def test_zeep_querymsg_by_api_and_client_id(service: Any) -> None:
    (sent,) = service.sendmsg(**CREDENTIALS, text="Hi", to=["2799900001"], climsgid="order-9")
    msg_id = sent[4:]
    assert re.fullmatch(
        rf"ID: {msg_id} Status: 00[348]", service.querymsg(**CREDENTIALS, apimsgid=msg_id)
    )
    assert service.querymsg(**CREDENTIALS, climsgid="order-9").startswith(f"ID: {msg_id} Status: ")
    assert service.querymsg(**CREDENTIALS, apimsgid="0" * 32) == "ERR: 103, Unknown API message ID"
