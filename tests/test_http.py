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
