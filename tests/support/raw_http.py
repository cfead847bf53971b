"""Scripted, misbehaving HTTP servers on 127.0.0.1 (real sockets) and a recording forward proxy.

:class:`RawServer` reads each request with h11 (the parser httpx itself uses, in the server role)
and answers with raw bytes from a script, so it can answer what no well-behaved server would::

    script = [
        Answer(informational(100) + informational(103, [("Link", "</a.css>; rel=preload")])
               + response(200, b"final")),
        DROP,                                          # read the request, close without a byte
        HANG,                                          # read the request, never answer
        Answer(response(200, b"old", version="HTTP/1.0"), close=True),
        response(200, b"x", headers=[("Content-Length", "1"), ("Content-Length", "2")], length=False),
    ]
    with RawServer(script) as server:
        httpx.get(server.url + "/path")
        server.requests[0].header("authorization"), server.requests[0].connection, server.connections

The script is a sequence (one answer per request, in arrival order over all connections) or a
function of the request. An answer is raw bytes (sent, connection kept open) or an
:class:`Answer`. Requests are recorded before they are answered, so once a client has its
answer (or its error) the record is there: no sleeps needed.

With ``tls=`` (a server ``ssl.SSLContext``, see ``tests/support/tls.py``) the server speaks TLS;
with ``tls=`` and ``plain_too=True`` it speaks TLS *and* plain HTTP on the same port (it peeks at
the first byte), so ``https://127.0.0.1:P/`` can redirect to ``http://127.0.0.1:P/``: the same
host and port, only the scheme differs.

:class:`ForwardProxy` is a forward proxy for ``HTTP_PROXY``/``HTTPS_PROXY``: ``CONNECT`` tunnels
and absolute-form requests (``GET http://host:port/path``). Every target host resolves to
127.0.0.1 (at the target's port), so tests can use names like ``gallery.test`` or an IDNA host
that nothing else could resolve. It records what went through it in ``seen``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import selectors
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11

# -- answers ------------------------------------------------------------------------------------

REASONS = {100: "Continue", 103: "Early Hints", 200: "OK", 204: "No Content", 206: "Partial Content",
           301: "Moved Permanently", 302: "Found", 304: "Not Modified", 307: "Temporary Redirect",
           400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
           416: "Range Not Satisfiable", 429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}

Headers = Iterable[tuple[str, str]]


@dataclass(frozen=True)
class Answer:
    """What to do with one request: send ``data`` as is, then keep the connection (the default),
    close it (``close``), or hold it open without another byte until the server stops (``hang``)."""

    data: bytes = b""
    close: bool = False
    hang: bool = False


DROP = Answer(close=True)
"""Read the request, then close the connection without answering."""
HANG = Answer(hang=True)
"""Read the request, never answer (the client's timeout has to end it)."""


def response(status: int = 200, body: bytes | str = b"", headers: Headers = (), *, reason: str | None = None,
             version: str = "HTTP/1.1", length: bool = True, eol: bytes = b"\r\n") -> bytes:
    """A raw answer. ``length`` adds ``Content-Length`` (turn it off to frame the body yourself, or not
    at all); ``eol`` is the line ending of the head (``b"\\n"`` for a bare-LF server)."""
    data = body.encode() if isinstance(body, str) else body
    lines = [f"{version} {status} {reason if reason is not None else REASONS.get(status, 'Whatever')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if length:
        lines.append(f"Content-Length: {len(data)}")
    return eol.join(line.encode("latin-1") for line in lines) + eol + eol + data


def informational(status: int, headers: Headers = ()) -> bytes:
    """A 1xx interim answer (100 Continue, 103 Early Hints), sent before the final one."""
    return response(status, headers=headers, length=False)


def json_response(document: Any, status: int = 200, headers: Headers = (), *, gzipped: bool = False) -> bytes:
    body = json.dumps(document).encode()
    extra = [("Content-Type", "application/json"), *headers]
    if gzipped:
        body = gzip.compress(body)
        extra.append(("Content-Encoding", "gzip"))
    return response(status, body, extra)


def redirect(location: str, status: int = 302) -> bytes:
    return response(status, headers=[("Location", location)])


# -- what the server saw ------------------------------------------------------------------------

@dataclass(frozen=True)
class Seen:
    """One request as it arrived. Header names are lower case, in the order sent."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    connection: int  # which accepted connection (0, 1, ...) carried it
    tls: bool = False

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(values) if values else None

    @property
    def path(self) -> str:
        return urlsplit(self.target).path


# -- the machinery both servers share -----------------------------------------------------------

class _Listener:
    """Accepts connections on 127.0.0.1 and serves each in a daemon thread; ``close`` wakes them all."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.connections = 0  # TCP connections accepted
        self.errors: list[str] = []  # what went wrong on the server side (a bad request, a failed handshake)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name=type(self).__name__)

    def start(self) -> None:
        self._thread.start()

    def __enter__(self) -> _Listener:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopped.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        return
                    conn, _ = self._sock.accept()
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    with self._lock:
                        index = self.connections
                        self.connections += 1
                        self._open.add(conn)
                    threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        try:
            self.handle(conn, index)
        except (OSError, h11.ProtocolError) as exc:
            if not self._stopped.is_set():
                self.errors.append(f"connection {index}: {type(exc).__name__}: {exc}")
        finally:
            self._forget(conn)

    def _forget(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.discard(conn)
        conn.close()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def handle(self, conn: socket.socket, index: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stopped.set()
        self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(5)
        with self._lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recv()
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()


@dataclass
class _Incoming:
    head: h11.Request
    body: bytes
    rest: bytes  # bytes after the request (a pipelined request, a tunnel's first bytes)
    parser: h11.Connection  # in the state to send this request's answer (the proxy uses it)


def _read_request(sock: socket.socket, buffered: bytes) -> _Incoming | None:
    """One request, parsed by h11; None when the client closed before sending one."""
    parser = h11.Connection(h11.SERVER)
    if buffered:  # (h11 takes b"" for the end of the stream)
        parser.receive_data(buffered)
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            parser.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:  # PAUSED: after a CONNECT
            assert head is not None
            return _Incoming(head, bytes(body), parser.trailing_data[0], parser)
        elif isinstance(event, h11.ConnectionClosed):
            return None


def _headers(head: h11.Request | h11.Response) -> tuple[tuple[str, str], ...]:
    return tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in head.headers)


# -- the scripted server ------------------------------------------------------------------------

Script = Sequence[Answer | bytes] | Callable[[Seen], Answer | bytes]


class RawServer(_Listener):
    """See the module docstring. ``url`` is ``http(s)://127.0.0.1:<port>``; ``plain_url`` the plain one."""

    def __init__(self, script: Script, *, tls: ssl.SSLContext | None = None, plain_too: bool = False) -> None:
        super().__init__()
        self.script = script
        self.tls = tls
        self.plain_too = plain_too
        self.requests: list[Seen] = []
        self._next = 0

    def __enter__(self) -> RawServer:
        self.start()
        return self

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def plain_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answer(self, seen: Seen) -> Answer:
        with self._lock:
            self.requests.append(seen)
            if callable(self.script):
                answer = self.script(seen)
            elif self._next < len(self.script):
                answer = self.script[self._next]
                self._next += 1
            else:
                self.errors.append(f"no scripted answer for request {len(self.requests)}: {seen.method} {seen.target}")
                answer = Answer(response(500, b"the script has no more answers"), close=True)
        return answer if isinstance(answer, Answer) else Answer(answer)

    def handle(self, conn: socket.socket, index: int) -> None:
        sock: socket.socket = conn
        secure = False
        if self.tls is not None and (not self.plain_too or conn.recv(1, socket.MSG_PEEK) == b"\x16"):
            try:
                sock = self.tls.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:  # the client refused the certificate, say
                self.errors.append(f"connection {index}: TLS handshake failed: {exc}")
                return
            secure = True
            self._track(sock)
        try:
            buffered = b""
            while True:
                request = _read_request(sock, buffered)
                if request is None:
                    return
                head, buffered = request.head, request.rest
                seen = Seen(head.method.decode(), head.target.decode("latin-1"), _headers(head), request.body, index,
                            secure)
                answer = self._answer(seen)
                if answer.data:
                    sock.sendall(answer.data)
                if answer.hang:
                    self._stopped.wait()
                    return
                if answer.close:
                    return
        finally:
            if sock is not conn:
                self._forget(sock)


# -- the forward proxy --------------------------------------------------------------------------

@dataclass(frozen=True)
class ProxySeen:
    method: str
    target: str  # "host:port" for CONNECT, the absolute URL otherwise
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(values) if values else None


HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate", "te",
              "trailer", "transfer-encoding", "upgrade"}


class ForwardProxy(_Listener):
    """A forward proxy on 127.0.0.1 (see the module docstring); ``url`` goes in HTTP(S)_PROXY."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[ProxySeen] = []

    def __enter__(self) -> ForwardProxy:
        self.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def handle(self, conn: socket.socket, index: int) -> None:
        request = _read_request(conn, b"")
        if request is None:
            return
        method, target = request.head.method.decode(), request.head.target.decode("latin-1")
        self.seen.append(ProxySeen(method, target, _headers(request.head)))
        if method == "CONNECT":
            self._tunnel(conn, target, request.rest)
        else:
            self._forward(conn, request)

    def _upstream(self, port: int | None) -> socket.socket:
        upstream = socket.create_connection(("127.0.0.1", port or 80))
        self._track(upstream)
        return upstream

    def _tunnel(self, conn: socket.socket, target: str, rest: bytes) -> None:
        try:
            upstream = self._upstream(int(target.rpartition(":")[2]))
        except (OSError, ValueError):
            conn.sendall(response(502, b"cannot reach " + target.encode()))
            return
        try:
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            if rest:
                upstream.sendall(rest)
            with selectors.DefaultSelector() as selector:
                selector.register(conn, selectors.EVENT_READ, upstream)
                selector.register(upstream, selectors.EVENT_READ, conn)
                while True:
                    for key, _ in selector.select():
                        source: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = source.recv(65536)
                        if not data:
                            return
                        key.data.sendall(data)
        finally:
            self._forget(upstream)

    def _forward(self, conn: socket.socket, request: _Incoming) -> None:
        """Absolute form: the request goes upstream in origin form, its answer back with
        ``Connection: close`` (one request per proxy connection keeps this proxy small)."""
        head = request.head
        url = urlsplit(head.target.decode("latin-1"))
        try:
            upstream = self._upstream(url.port)
        except OSError:
            conn.sendall(response(502, b"cannot reach the upstream", headers=[("Connection", "close")]))
            return
        try:
            client = h11.Connection(h11.CLIENT)
            headers = [(k, v) for k, v in head.headers if k.decode().lower() not in HOP_BY_HOP]
            target = (url.path or "/") + (f"?{url.query}" if url.query else "")
            upstream.sendall(client.send(h11.Request(method=head.method, target=target,
                                                     headers=[*headers, (b"Connection", b"close")])) or b"")
            if request.body:
                upstream.sendall(client.send(h11.Data(data=request.body)) or b"")
            upstream.sendall(client.send(h11.EndOfMessage()) or b"")
            out = request.parser  # h11 frames the answer for the client again
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(upstream.recv(65536))
                elif isinstance(event, h11.InformationalResponse | h11.Response):
                    kept = [(k, v) for k, v in event.headers if k.decode().lower() not in HOP_BY_HOP]
                    answer = type(event)(status_code=event.status_code, reason=event.reason,
                                         headers=[*kept, (b"Connection", b"close")])
                    conn.sendall(out.send(answer) or b"")
                elif isinstance(event, h11.Data):
                    conn.sendall(out.send(event) or b"")
                else:  # EndOfMessage, or the upstream closed early
                    conn.sendall(out.send(h11.EndOfMessage()) or b"")
                    return
        finally:
            self._forget(upstream)
