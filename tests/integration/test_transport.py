"""The keep-alive transport over http.client: one connection per thread, reused while it is fresh
and open, and failures raised as the httpx errors that decide retry (not sent) or unknown (may
have left). Real sockets on loopback throughout; the simulator covers the SOAP side elsewhere
(every client, fault and run test goes through this transport)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from batch_sender.gateway import client as client_module
from batch_sender.gateway.transport import KeepAliveTransport

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


class RawServer:
    """A loopback HTTP server that answers ``answers_per_connection`` requests per connection
    (then closes it), or reads one request and closes without answering (``answer=None``)."""

    def __init__(
        self,
        answers_per_connection: int = 1000,
        answer: bytes | None = OK,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._tls = tls
        self.connections = 0
        self.requests = 0
        self._per_connection = answers_per_connection
        self._answer = answer
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/soap"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        if self._tls is not None:
            try:
                conn = self._tls.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):  # the client refused our certificate
                conn.close()
                return
        with conn:
            buffer = b""
            for _ in range(self._per_connection):
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                buffer = buffer[length:]
                self.requests += 1
                if self._answer is None:
                    return  # read the request, then hang up without a word
                conn.sendall(self._answer)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def server() -> Iterator[RawServer]:
    s = RawServer()
    yield s
    s.close()


def client(expiry: float = 4.0, **timeouts: float) -> httpx.Client:
    transport = KeepAliveTransport(keepalive_expiry=expiry, max_body=1 << 20, max_requests=8)
    return httpx.Client(transport=transport, timeout=httpx.Timeout(5.0, **timeouts))


def test_one_thread_reuses_one_connection(server: RawServer) -> None:
    with client() as http:
        answers = [http.post(server.url, content=b"x" * n).text for n in (1, 10, 100)]
    assert answers == ["ok"] * 3
    assert (server.connections, server.requests) == (1, 3)


def test_each_thread_has_a_connection_of_its_own(server: RawServer) -> None:
    with client() as http:

        def three() -> None:
            for _ in range(3):
                assert http.post(server.url, content=b"x").text == "ok"

        threads = [threading.Thread(target=three) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert (server.connections, server.requests) == (4, 12)


def test_a_connection_the_server_closed_while_idle_is_replaced_before_sending() -> None:
    server = RawServer(answers_per_connection=1)  # answers once, then hangs up
    try:
        with client() as http:
            first = http.post(server.url, content=b"a")
            time.sleep(0.2)  # the server's close reaches us while the connection is idle
            second = http.post(server.url, content=b"b")
        assert (first.text, second.text) == ("ok", "ok")
        assert (server.connections, server.requests) == (2, 2)
    finally:
        server.close()


def test_an_idle_connection_past_its_expiry_is_not_reused(server: RawServer) -> None:
    with client(expiry=0.1) as http:
        http.post(server.url, content=b"a")
        time.sleep(0.3)
        http.post(server.url, content=b"b")
    assert (server.connections, server.requests) == (2, 2)


def test_nobody_listening_is_a_connect_error_nothing_left() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with client() as http, pytest.raises(httpx.ConnectError):
        http.post(f"http://127.0.0.1:{port}/soap", content=b"x")


def test_a_hang_up_after_the_request_is_a_protocol_error_the_request_may_have_left() -> None:
    server = RawServer(answer=None)
    try:
        with client() as http, pytest.raises(httpx.RemoteProtocolError):
            http.post(server.url, content=b"x")
        assert server.requests == 1
    finally:
        server.close()


def test_no_answer_in_time_is_a_read_timeout() -> None:
    server = RawServer(answer=b"")  # reads the request and stays silent
    try:
        with client(read=0.3) as http, pytest.raises(httpx.ReadTimeout):
            http.post(server.url, content=b"x")
    finally:
        server.close()


def test_a_closed_transport_opens_no_connection(server: RawServer) -> None:
    http = client()
    http.post(server.url, content=b"x")
    http.close()
    with pytest.raises(RuntimeError):  # httpx refuses a closed client before the transport
        http.post(server.url, content=b"x")
    transport = KeepAliveTransport(keepalive_expiry=4.0, max_body=1024, max_requests=1)
    transport.close()
    with pytest.raises(httpx.ConnectError):
        transport.handle_request(httpx.Request("POST", server.url, content=b"x"))
    assert server.connections == 1


def test_a_proxy_in_the_environment_leaves_http_to_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(client_module._default_transport(8), KeepAliveTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert client_module._default_transport(8) is None


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (made with the openssl command)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed (apt-get install openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def tls_server(certificate: tuple[Path, Path]) -> RawServer:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return RawServer(tls=context)


def test_https_verifies_the_servers_certificate(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS is verified against the usual trust store: a certificate nobody signed is a connect
    error (nothing was sent), and the same server is fine once its certificate is trusted."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    server = tls_server(certificate)
    try:
        with client() as http, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY"):
            http.post(server.url, content=b"x")
        assert server.requests == 0

        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # what httpx honours too
        with client() as http:
            answers = [http.post(server.url, content=b"x").text for _ in range(3)]
        assert answers == ["ok"] * 3
        assert server.requests == 3
        assert server.connections == 2  # the refused handshake, then one kept alive
    finally:
        server.close()
