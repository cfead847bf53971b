"""The small HTTP client: pipelined HEADs and their fallback, against real servers on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pixsrc.http import HttpClient


@contextmanager
def server(protocol: str) -> Iterator[tuple[str, list[str]]]:
    """HEAD /f<n> answers 200 with an ETag; records each new connection's first request."""
    connections: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = protocol
        disable_nagle_algorithm = True

        def setup(self) -> None:
            super().setup()
            connections.append(self.client_address[1])

        def do_HEAD(self) -> None:  # noqa: N802
            self.send_response(200 if self.path.startswith("/f") else 404)
            self.send_header("ETag", f'"{self.path}"')
            self.send_header("Content-Length", "123")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", connections
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("protocol", ["HTTP/1.1", "HTTP/1.0"])
def test_head_many_answers_every_url_in_order(protocol: str) -> None:
    with server(protocol) as (base, connections):
        client = HttpClient()
        urls = [f"{base}/f{n}" for n in range(70)] + [f"{base}/missing"]
        answers = client.head_many(urls)
        client.close()
    assert [a.headers.get("ETag") for a in answers[:70]] == [f'"/f{n}"' for n in range(70)]
    assert all(a.status == 200 for a in answers[:70]) and answers[70].status == 404
    if protocol == "HTTP/1.1":  # pipelined: a few keep-alive connections, not one per request
        assert len(connections) <= 3
    else:  # the server closes after each answer: the rest are asked one by one
        assert len(connections) >= 71


# -- proxies (HTTP_PROXY / HTTPS_PROXY / NO_PROXY) ---------------------------------------------------

@contextmanager
def proxy(resolve: dict[str, int]) -> Iterator[tuple[str, list[str]]]:
    """A forward proxy: CONNECT tunnels and absolute-form http requests, to 127.0.0.1 ports in ``resolve``."""
    import select
    import socket
    import socketserver

    seen: list[str] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            line = self.rfile.readline().decode()
            headers = []
            while (h := self.rfile.readline()) not in (b"\r\n", b""):
                headers.append(h.decode())
            method, target, _ = line.split(" ", 2)
            seen.append(f"{method} {target}")
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                upstream = socket.create_connection(("127.0.0.1", resolve[f"{host}:{port}"]))
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self.wfile.flush()
                sockets = [self.connection, upstream]
                while True:
                    ready, _, _ = select.select(sockets, [], [], 5)
                    if not ready:
                        break
                    for sock in ready:
                        data = sock.recv(65536)
                        if not data:
                            return
                        (upstream if sock is self.connection else self.connection).sendall(data)
            else:  # absolute-form: "GET http://host:port/path HTTP/1.1"
                parts = target.split("/", 3)
                upstream = socket.create_connection(("127.0.0.1", resolve[parts[2]]))
                upstream.sendall(f"{method} /{parts[3]} HTTP/1.0\r\n".encode() + "".join(headers).encode() + b"\r\n")
                while data := upstream.recv(65536):
                    self.wfile.write(data)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_proxy_choice_honours_no_proxy_and_never_proxies_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    from pixsrc.http import proxy_for

    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.corp")
    assert proxy_for("https", "www.googleapis.com") == "http://proxy.corp:3128"
    assert proxy_for("https", "files.internal.corp") is None
    assert proxy_for("https", "127.0.0.1") is None and proxy_for("https", "localhost") is None
    assert proxy_for("http", "example.com") is None  # only HTTPS_PROXY is set


def test_plain_http_through_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    with server("HTTP/1.1") as (base, _):
        port = int(base.rsplit(":", 1)[1])
        with proxy({f"gallery.test:{port}": port}) as (proxy_url, seen):
            monkeypatch.setenv("HTTP_PROXY", proxy_url)
            monkeypatch.delenv("NO_PROXY", raising=False)
            client = HttpClient()
            url = f"http://gallery.test:{port}/f1"
            response = client.request("HEAD", url)
            client.close()
    assert response.status == 200 and response.headers.get("ETag") == '"/f1"'
    assert seen == [f"HEAD {url}"]


def test_https_through_a_connect_tunnel_checks_the_real_host(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import shutil
    import ssl
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=secure.test", "-addext", "subjectAltName=DNS:secure.test", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            body = b"over tls"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    try:
        with proxy({f"secure.test:{port}": port}) as (proxy_url, seen):
            monkeypatch.setenv("HTTPS_PROXY", proxy_url)
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test certificate only
            client = HttpClient()
            assert client.get(f"https://secure.test:{port}/x").read_all() == b"over tls"
            client.close()
            assert seen == [f"CONNECT secure.test:{port}"]
    finally:
        httpd.shutdown()
        httpd.server_close()
