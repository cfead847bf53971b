"""The API plane (pixsrc.api, httpx) against real, misbehaving servers on 127.0.0.1.

One regression test per API-plane defect of the old hand-made client (issue 7), plus the retry
policy, the auth flow and proxy routing. The servers are tests/support/raw_http.py (scripted raw
answers, a recording forward proxy) and tests/support/tls.py (a private CA made per test).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import certifi
import pytest
from support.raw_http import (
    DROP,
    HANG,
    Answer,
    ForwardProxy,
    RawServer,
    Seen,
    informational,
    json_response,
    redirect,
    response,
)
from support.tls import CA, make_ca

from pixsrc import oauth
from pixsrc.api import (
    DEFAULT_POLICY,
    Api,
    ApiError,
    Cancelled,
    ProxySettings,
    RetryPolicy,
    ca_paths,
    is_loopback,
)
from pixsrc.errors import AuthRequired
from pixsrc.types import OAuthProvider

FAST = RetryPolicy(retries=10, base=0.001, cap=0.005, deadline=30)


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return make_ca(tmp_path / "ca")


@pytest.fixture
def trust(ca: CA, monkeypatch: pytest.MonkeyPatch) -> CA:
    """Trust the test CA (only it, and certifi's public roots)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return ca


@pytest.fixture
def distrust(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trust only certifi's public roots: the test CA is a stranger."""
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


class Credential:
    """A TransferAuth: a bearer token and an API-key header; ``unauthorized`` rotates the token."""

    def __init__(self) -> None:
        self.token = "old-token"
        self.refused: list[str | None] = []

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "X-Api-Key": "key-123"}

    def unauthorized(self, sent_headers: Mapping[str, str], /) -> None:
        self.refused.append(sent_headers.get("Authorization"))  # looked up as callers write it
        self.token = "new-token"


def provider(token_url: str) -> oauth.ProviderSettings:
    demo = OAuthProvider(name="demo", display_name="Demo", authorize_url="http://127.0.0.1:9/authorize",
                         token_url=token_url, api_base_url="http://127.0.0.1:9/api")
    return oauth.settings_for(demo, {"demo": {"client_id": "demo-client"}})


TOKENS = json_response({"access_token": "at-2", "refresh_token": "rt-2", "expires_in": 3600})
REFRESH = {"grant_type": "refresh_token", "refresh_token": "rt-1"}


# -- credentials and redirects ------------------------------------------------------------------

@pytest.mark.parametrize("target", ["scheme", "host"])
@pytest.mark.parametrize("via", ["TransferAuth", "caller header"])
def test_redirect_to_another_origin_drops_credentials(trust: CA, target: str, via: str) -> None:
    """https://127.0.0.1:P/ -> http://127.0.0.1:P/ (only the scheme differs: one port serves both) or
    -> https://localhost:P/ (only the host differs): neither the bearer nor the API key follows."""
    def answer(seen: Seen) -> bytes:
        if seen.path == "/start":
            location = server.plain_url if target == "scheme" else f"https://localhost:{server.port}"
            return redirect(f"{location}/landing")
        return response(200, b"landed")

    server = RawServer(answer, tls=trust.server_context("127.0.0.1", "localhost"), plain_too=True)
    with server, Api(auth=Credential() if via == "TransferAuth" else None, policy=FAST) as api:
        headers = {} if via == "TransferAuth" else {"Authorization": "Bearer gallery-key"}
        got = api.get(f"{server.url}/start", headers=headers)
    assert got.status_code == 200 and got.text == "landed"
    first, second = server.requests
    assert first.tls and first.header("authorization") is not None  # the credential went to its origin
    assert second.path == "/landing" and second.tls == (target == "host")
    assert second.header("authorization") is None
    assert second.header("x-api-key") is None


def test_redirect_within_the_origin_keeps_the_credential() -> None:
    with RawServer([redirect("/there"), response(200, b"ok")]) as server, Api(auth=Credential()) as api:
        assert api.get(f"{server.url}/here").text == "ok"
    assert [seen.header("authorization") for seen in server.requests] == ["Bearer old-token"] * 2
    assert server.requests[1].header("x-api-key") == "key-123"


# -- 1xx interim answers ------------------------------------------------------------------------

def test_interim_answers_are_skipped_and_the_connection_stays_in_step() -> None:
    script: list[Answer | bytes] = [
        Answer(informational(100) + informational(103, [("Link", "</style.css>; rel=preload")])
               + json_response({"n": 1})),
        Answer(informational(103, [("Link", "</a.js>; rel=preload")]) + json_response({"n": 2})),
        json_response({"n": 3}),
    ]
    with RawServer(script) as server, Api(policy=FAST) as api:
        first = api.post(f"{server.url}/one", content=b"x=1")
        second = api.get(f"{server.url}/two")
        third = api.get(f"{server.url}/three")
    assert (first.status_code, first.json()) == (200, {"n": 1})
    assert (second.status_code, second.json()) == (200, {"n": 2})
    assert third.json() == {"n": 3}
    assert [seen.connection for seen in server.requests] == [0, 0, 0]  # one kept-alive connection, in step


# -- never replay what may have reached the server ----------------------------------------------

@pytest.mark.parametrize("warm", [False, True], ids=["new connection", "kept-alive connection"])
def test_token_post_processed_then_dropped_is_sent_once(warm: bool) -> None:
    """The server reads the POST and drops the connection: had it processed a refresh, a resend would
    reuse a rotated refresh token. The second scripted answer would make a replay succeed."""
    script: list[Answer | bytes] = [json_response({}), DROP, TOKENS] if warm else [DROP, TOKENS]
    with RawServer(script) as server:
        settings = provider(f"{server.url}/token")
        with Api(policy=FAST) as api:
            if warm:
                api.get(f"{server.url}/warm-up")
            with pytest.raises(AuthRequired) as caught:
                oauth.token_request(settings, dict(REFRESH), api=api)
    posts = [seen for seen in server.requests if seen.method == "POST"]
    assert len(posts) == 1 and "refresh_token=rt-1" in posts[0].body.decode()
    message = caught.value.message
    assert message.startswith("cannot reach the Demo token endpoint: POST ")
    assert "\n" not in message and "rt-1" not in message
    assert "disconnected" in message.lower()
    assert caught.value.hint and "not resent" in caught.value.hint


def test_token_post_without_api_injection_is_sent_once() -> None:
    """The default client token_request builds for itself follows the same rule."""
    with RawServer([DROP, TOKENS]) as server, pytest.raises(AuthRequired):
        oauth.token_request(provider(f"{server.url}/token"), dict(REFRESH))
    assert len(server.requests) == 1


def test_a_dropped_get_is_retried() -> None:
    with RawServer([DROP, response(200, b"again")]) as server, Api(policy=FAST) as api:
        assert api.get(f"{server.url}/x").text == "again"
    assert len(server.requests) == 2


def test_timed_out_token_post_is_sent_once() -> None:
    with RawServer([HANG, TOKENS]) as server, Api(policy=FAST, timeout=0.3) as api, \
            pytest.raises(AuthRequired) as caught:
        oauth.token_request(provider(f"{server.url}/token"), dict(REFRESH), api=api)
    assert len(server.requests) == 1
    assert "ReadTimeout" in caught.value.message


@pytest.mark.parametrize("idempotent", [None, True])
def test_504_to_a_post_is_sent_once_unless_idempotent(idempotent: bool | None) -> None:
    with RawServer([response(504), response(200, b"second")]) as server, Api(policy=FAST) as api:
        got = api.post(f"{server.url}/rpc", content=b"{}", idempotent=idempotent)
    if idempotent:  # Dropbox's read-only RPC routes
        assert (got.status_code, len(server.requests)) == (200, 2)
    else:
        assert (got.status_code, len(server.requests)) == (504, 1)


def test_503_with_retry_after_is_retried_after_the_hinted_wait() -> None:
    """Retry-After: 0 beats a policy whose own backoff would wait 15-30 s."""
    slow = RetryPolicy(retries=3, base=30, cap=30)
    script = [response(503, headers=[("Retry-After", "0")]), response(200, b"ok")]
    started = time.monotonic()
    with RawServer(script) as server, Api(policy=slow) as api:
        got = api.get(f"{server.url}/x")
    assert (got.status_code, got.text, len(server.requests)) == (200, "ok", 2)
    assert time.monotonic() - started < 10


def test_a_retry_after_beyond_the_limit_fails_instead_of_waiting() -> None:
    script = [response(429, headers=[("Retry-After", "86400")])]
    with RawServer(script) as server, Api(policy=FAST) as api, pytest.raises(ApiError) as caught:
        api.get(f"{server.url}/x")
    assert "retry after 86400 s" in str(caught.value) and caught.value.retryable


@pytest.mark.parametrize(("method", "idempotent"), [("GET", None), ("POST", True), ("POST", False)])
def test_a_burst_of_ten_429s_ends_nothing(method: str, idempotent: bool | None) -> None:
    """429 means the request was refused, not acted on: retried whatever the method."""
    script = [response(429, b"slow down")] * 10 + [response(200, b"finally")]
    with RawServer(script) as server, Api(policy=FAST) as api:
        got = api.request(method, f"{server.url}/x", idempotent=idempotent)
    assert (got.status_code, got.text, len(server.requests)) == (200, "finally", 11)


def test_a_burst_of_ten_429s_ends_no_token_request() -> None:
    with RawServer([response(429)] * 10 + [TOKENS]) as server, Api(policy=FAST) as api:
        answer = oauth.token_request(provider(f"{server.url}/token"), dict(REFRESH), api=api)
    assert answer["access_token"] == "at-2" and len(server.requests) == 11


def test_the_default_policy_outlasts_a_burst_of_ten() -> None:
    waits = [min(DEFAULT_POLICY.cap, DEFAULT_POLICY.base * 2**attempt) for attempt in range(10)]
    assert DEFAULT_POLICY.retries >= 10 and sum(waits) < DEFAULT_POLICY.deadline


def test_retry_when_names_transient_answers() -> None:
    """Google's 403 rateLimitExceeded: transient although its status says forbidden."""
    limited = json_response({"error": {"errors": [{"reason": "rateLimitExceeded"}]}}, 403)
    script = [limited, limited, json_response({"ok": True}), json_response({"error": "no"}, 403)]
    with RawServer(script) as server, Api(policy=FAST, retry_when=lambda r: b"rateLimit" in r.content) as api:
        assert api.get(f"{server.url}/files").json() == {"ok": True}
        assert api.get(f"{server.url}/files").status_code == 403  # a plain 403 goes back to the caller
    assert len(server.requests) == 4


def test_cancel_ends_a_backoff_wait() -> None:
    cancel = threading.Event()
    slow = RetryPolicy(retries=3, base=60, cap=60)
    with RawServer([response(503)] * 4) as server, \
            Api(policy=slow, cancel=cancel, on_wait=lambda seconds, reason: cancel.set()) as api:
        started = time.monotonic()
        with pytest.raises(Cancelled):
            api.get(f"{server.url}/x")
    assert len(server.requests) == 1 and time.monotonic() - started < 10


# -- request splitting, encoding ----------------------------------------------------------------

@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\x00b"], ids=["CRLF", "LF", "CR", "NUL"])
@pytest.mark.parametrize("where", ["request", "client", "credential"])
def test_control_characters_in_a_header_value_are_refused(value: str, where: str) -> None:
    class Bad:
        def headers(self) -> dict[str, str]:
            return {"Authorization": f"Bearer {value}"}

        def unauthorized(self, sent_headers: Mapping[str, str], /) -> None:
            raise AssertionError("never sent, never refused")

    with RawServer([response(200)] * 12) as server, \
            Api(policy=FAST, headers={"X-Client": value} if where == "client" else None,
                auth=Bad() if where == "credential" else None) as api, pytest.raises(ApiError) as caught:
        api.get(f"{server.url}/x", headers={"X-Value": value} if where == "request" else None)
    assert "CR, LF or NUL" in str(caught.value) and "Injected" not in str(caught.value)
    assert server.requests == [] and server.connections == 0  # refused before connecting, not retried


def test_a_non_ascii_header_value_is_a_clean_error() -> None:
    with RawServer([response(200)]) as server, Api(policy=FAST) as api, pytest.raises(ApiError) as caught:
        api.get(f"{server.url}/x", headers={"X-Name": "café"})
    assert "not ASCII" in str(caught.value) and server.requests == []


def test_spaces_and_unicode_path_segments_are_percent_encoded() -> None:
    with RawServer([response(200, b"ok")]) as server, Api(policy=FAST) as api:
        assert api.get(f"{server.url}/my photos/café/日本.jpg", params={"q": "a b"}).text == "ok"
    assert server.requests[0].target == "/my%20photos/caf%C3%A9/%E6%97%A5%E6%9C%AC.jpg?q=a+b"


def test_an_idna_host_goes_out_in_punycode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the forward proxy (nothing could resolve the name): the request line and Host say
    xn--, never latin-1 or UTF-8 bytes."""
    with RawServer([response(200, b"one"), response(200, b"two")]) as server, ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        with Api(policy=FAST) as api:
            assert api.get(f"http://café.test:{server.port}/a").text == "one"
            assert api.get(f"http://日本.test:{server.port}/b").text == "two"
    assert [seen.target for seen in proxy.seen] == [f"http://xn--caf-dma.test:{server.port}/a",
                                                    f"http://xn--wgv71a.test:{server.port}/b"]
    assert [seen.header("host") for seen in server.requests] == [f"xn--caf-dma.test:{server.port}",
                                                                 f"xn--wgv71a.test:{server.port}"]


@pytest.mark.parametrize("host", ["☃.test", "xn--zz.test", "a..b"])
def test_an_invalid_host_name_is_a_clean_error(host: str) -> None:
    """Never an IDNAError or UnicodeError from deep inside httpx or the resolver; no name is looked up
    (each fails while the URL is encoded)."""
    with Api(policy=FAST) as api, pytest.raises(ApiError) as caught:
        api.get(f"http://{host}:1/x")
    assert "host name" in str(caught.value) or "invalid URL" in str(caught.value)


# -- framing and encodings ----------------------------------------------------------------------

def test_gzip_encoded_json_is_decoded() -> None:
    with RawServer([json_response({"assets": ["a.jpg"]}, gzipped=True)]) as server, Api(policy=FAST) as api:
        assert api.get(f"{server.url}/index.json").json() == {"assets": ["a.jpg"]}
    assert "gzip" in (server.requests[0].header("accept-encoding") or "")


def test_duplicate_equal_content_length_is_read_once() -> None:
    """Equal duplicates are one value (RFC 9112 section 6.3): the body is read, not waited on."""
    script = [response(200, b"12345", [("Content-Length", "5"), ("Content-Length", "5")], length=False),
              response(200, b"next")]
    with RawServer(script) as server, Api(policy=FAST, timeout=5) as api:
        assert api.get(f"{server.url}/a").text == "12345"
        assert api.get(f"{server.url}/b").text == "next"
    assert [seen.connection for seen in server.requests] == [0, 0]


@pytest.mark.parametrize("lengths", [("5", "6"), ("5, 6",), ("-5",), ("five",)],
                         ids=["conflicting", "conflicting list", "negative", "not a number"])
def test_bad_content_length_is_a_clean_error(lengths: tuple[str, ...]) -> None:
    def answer(seen: Seen) -> bytes:
        return response(200, b"123456", [("Content-Length", value) for value in lengths], length=False)

    policy = RetryPolicy(retries=1, base=0.001, cap=0.001)
    with RawServer(answer) as server, Api(policy=policy, timeout=5) as api, pytest.raises(ApiError) as caught:
        api.get(f"{server.url}/x")
    assert "Content-Length" in str(caught.value) and "\n" not in str(caught.value)
    assert len(server.requests) == 2  # a GET: tried twice, as the policy says, then a clean error


def test_a_bare_lf_head_is_understood() -> None:
    script = [response(200, b"lf", [("ETag", '"v1"')], eol=b"\n"), response(200, b"next")]
    with RawServer(script) as server, Api(policy=FAST) as api:
        got = api.get(f"{server.url}/a")
        assert (got.text, got.headers["ETag"]) == ("lf", '"v1"')
        assert api.get(f"{server.url}/b").text == "next"


@pytest.mark.parametrize("framing", ["Content-Length", "read to close"])
def test_http10_without_keep_alive_works_twice_in_a_row(framing: str) -> None:
    """Each answer ends its connection: the second request must go on a new one. No retries, so a
    client that reused the closed connection would fail here instead of quietly trying again."""
    def answer(seen: Seen) -> Answer:
        return Answer(response(200, seen.path.encode(), version="HTTP/1.0", length=framing == "Content-Length"),
                      close=True)

    with RawServer(answer) as server, Api(policy=RetryPolicy(retries=0)) as api:
        assert api.get(f"{server.url}/one").text == "/one"
        assert api.get(f"{server.url}/two").text == "/two"
    assert [seen.connection for seen in server.requests] == [0, 1]


# -- TLS trust ----------------------------------------------------------------------------------

@pytest.mark.parametrize("names", [("127.0.0.1",), ("elsewhere.test",)], ids=["unknown CA", "wrong name"])
def test_a_certificate_failure_fails_at_once(ca: CA, distrust: None, names: tuple[str, ...],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if names != ("127.0.0.1",):  # the CA is trusted; the certificate names another host
        monkeypatch.setenv("SSL_CERT_FILE", str(ca.path))
    with RawServer([response(200)] * 12, tls=ca.server_context(*names)) as server, \
            Api(policy=FAST) as api, pytest.raises(ApiError) as caught:
        api.get(f"{server.url}/x")
    assert "certificate not trusted" in str(caught.value) and not caught.value.retryable
    assert server.connections == 1 and server.requests == []


def test_a_private_ca_in_ssl_cert_file_is_trusted(trust: CA) -> None:
    assert ca_paths()[0] == str(trust.path)  # what libcurl is given too
    with RawServer([response(200, b"private")], tls=trust.server_context("127.0.0.1")) as server, \
            Api(policy=FAST) as api:
        assert api.get(f"{server.url}/x").text == "private"


def test_the_trust_store_follows_ssl_cert_file_within_a_process(ca: CA, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """ca_paths() is not cached: a second CA set later is the one trusted."""
    other = make_ca(tmp_path / "other", "other CA")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with RawServer([response(200)] * 4, tls=other.server_context("127.0.0.1")) as server:
        with Api(policy=FAST) as api, pytest.raises(ApiError):
            api.get(f"{server.url}/x")
        monkeypatch.setenv("SSL_CERT_FILE", str(other.path))
        with Api(policy=FAST) as api:
            assert api.get(f"{server.url}/x").status_code == 200


# -- proxies ------------------------------------------------------------------------------------

@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    with ForwardProxy() as running:
        yield running


def test_https_goes_through_a_connect_tunnel_and_checks_the_real_host(trust: CA, proxy: ForwardProxy,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    with RawServer([response(200, b"over tls")], tls=trust.server_context("secure.test")) as server, \
            Api(policy=FAST, auth=Credential()) as api:
        assert api.get(f"https://secure.test:{server.port}/x").text == "over tls"
    assert [(seen.method, seen.target) for seen in proxy.seen] == [("CONNECT", f"secure.test:{server.port}")]
    assert proxy.seen[0].header("authorization") is None  # the credential is inside the tunnel only
    assert server.requests[0].header("authorization") == "Bearer old-token"


def test_plain_http_goes_through_the_proxy_in_absolute_form(proxy: ForwardProxy,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://user:s3cret@"))
    with RawServer([response(200, b"proxied")]) as server, Api(policy=FAST) as api:
        assert api.get(f"http://gallery.test:{server.port}/f1?page=2").text == "proxied"
    assert [(seen.method, seen.target) for seen in proxy.seen] == [("GET", f"http://gallery.test:{server.port}/f1?page=2")]
    assert (proxy.seen[0].header("proxy-authorization") or "").startswith("Basic ")


@pytest.mark.parametrize("no_proxy", [None, "127.0.0.0/8", "example.org, 127.0.0.0/8"])
def test_loopback_never_goes_through_a_proxy(proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch,
                                            no_proxy: str | None) -> None:
    """httpx alone would send 127.0.0.1 to the proxy, NO_PROXY=127.0.0.0/8 or not."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    if no_proxy:
        monkeypatch.setenv("NO_PROXY", no_proxy)
    with RawServer([response(200, b"direct")] * 2) as server, Api(policy=FAST) as api:
        assert api.get(f"{server.url}/x").text == "direct"
        assert api.get(f"http://localhost:{server.port}/x").text == "direct"
    assert proxy.seen == []


def test_a_cidr_no_proxy_entry_that_does_not_match_still_proxies(proxy: ForwardProxy,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_PROXY=10.0.0.0/8: 11.0.0.1 still goes through the proxy (which resolves every host to
    127.0.0.1, so nothing leaves this machine). The matching side is below, without traffic."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "10.0.0.0/8,.internal.test")
    with RawServer([response(200, b"proxied")] * 2) as server, Api(policy=FAST) as api:
        assert api.get(f"http://11.0.0.1:{server.port}/x").text == "proxied"
        assert api.get(f"http://internal.test.example:{server.port}/y").text == "proxied"
    assert [seen.target for seen in proxy.seen] == [f"http://11.0.0.1:{server.port}/x",
                                                    f"http://internal.test.example:{server.port}/y"]


def test_proxy_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.corp, .svc.test, *.wild.test, 10.0.0.0/8 fd00::/8,[2001:db8::1]:8443,"
                                   "192.168.1.7")
    settings = ProxySettings.from_environment()
    go = "http://proxy.corp:3128"
    assert settings.proxy_for("https", "www.googleapis.com") == go
    assert settings.proxy_for("http", "www.googleapis.com") is None  # only HTTPS_PROXY is set
    for host in ("internal.corp", "files.internal.corp", "a.svc.test", "svc.test", "x.wild.test", "10.1.2.3",
                 "fd00::5", "[fd00::5]", "2001:db8::1", "192.168.1.7", "127.0.0.1", "127.8.9.1", "localhost",
                 "api.localhost", "::1", "::ffff:127.0.0.1"):
        assert settings.proxy_for("https", host) is None, host
    for host in ("notinternal.corp", "11.0.0.1", "192.168.1.8", "fe80::1", "2001:db8::2", "corp"):
        assert settings.proxy_for("https", host) == go, host
    monkeypatch.setenv("NO_PROXY", "*")
    assert ProxySettings.from_environment().proxy_for("https", "www.googleapis.com") is None
    assert is_loopback("LOCALHOST.") and not is_loopback("localhost.example")


def test_a_post_the_proxy_never_tunnelled_is_tried_again(proxy: ForwardProxy,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy refuses the CONNECT (502: nothing listens there): the POST never left this side,
    so even a token POST may be tried again, as the policy says; then a clean error."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    with Api(policy=RetryPolicy(retries=2, base=0.001, cap=0.001)) as api, pytest.raises(ApiError) as caught:
        api.post(f"https://secure.test:{port}/token", content=b"grant_type=refresh_token")
    assert [seen.method for seen in proxy.seen] == ["CONNECT"] * 3
    assert "ProxyError" in str(caught.value)


def test_an_unusable_proxy_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "gopher://user:pw@127.0.0.1:1")
    with Api(policy=FAST) as api, pytest.raises(ApiError) as caught:
        api.get("http://gallery.test:1/x")
    assert "proxy" in str(caught.value) and "pw" not in str(caught.value)


# -- the auth flow ------------------------------------------------------------------------------

def test_a_401_refreshes_once_and_resends_once() -> None:
    credential = Credential()
    with RawServer([response(401), response(200, b"ok")]) as server, Api(auth=credential, policy=FAST) as api:
        got = api.get(f"{server.url}/me")
    assert (got.status_code, got.text) == (200, "ok")
    assert credential.refused == ["Bearer old-token"]
    assert [seen.header("authorization") for seen in server.requests] == ["Bearer old-token", "Bearer new-token"]


def test_a_second_401_goes_back_to_the_caller() -> None:
    credential = Credential()
    with RawServer([response(401), response(401), response(200)]) as server, \
            Api(auth=credential, policy=FAST) as api:
        assert api.get(f"{server.url}/me").status_code == 401
    assert len(credential.refused) == 1 and len(server.requests) == 2


def test_a_401_from_another_origin_refreshes_nothing() -> None:
    """The credential was not sent there (dropped on the redirect): refreshing it would not help."""
    credential = Credential()
    with RawServer([response(401)]) as cdn, RawServer([redirect(f"{cdn.url}/blob")]) as server, \
            Api(auth=credential, policy=FAST) as api:
        assert api.get(f"{server.url}/file").status_code == 401
    assert credential.refused == [] and cdn.requests[0].header("authorization") is None


def test_the_oauth_session_refreshes_after_a_401(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real session: its refresh goes to the token endpoint once, the API call is resent with the
    new token, and the rotated refresh token is stored."""
    from pixsrc import tokens

    def answer(seen: Seen) -> bytes:
        if seen.path == "/token":
            return TOKENS
        return response(200, b"me") if seen.header("authorization") == "Bearer at-2" else response(401)

    with RawServer(answer) as server:
        settings = provider(f"{server.url}/token")
        stored = oauth.TokenSet(provider="demo", access_token="at-1", refresh_token="rt-1",
                                expires_at=time.time() + 3600, scope=None, obtained_at=time.time())
        tokens.put("demo-source", stored.to_json(), "file")
        session = oauth.OAuthSession("demo-source", settings)
        with Api(auth=session, policy=FAST) as api:
            assert api.get(f"{server.url}/api/me").text == "me"
    assert [seen.path for seen in server.requests] == ["/api/me", "/token", "/api/me"]
    assert "refresh_token=rt-1" in server.requests[1].body.decode()
    assert session.token_set.refresh_token == "rt-2"
    saved = tokens.get("demo-source")
    assert saved is not None and oauth.TokenSet.parse(saved.value).refresh_token == "rt-2"


def test_revoke_reports_an_unreachable_provider() -> None:
    with RawServer([DROP] * 4) as server:
        demo = OAuthProvider(name="demo", display_name="Demo", authorize_url="http://127.0.0.1:9/a",
                             token_url="http://127.0.0.1:9/t", api_base_url="http://127.0.0.1:9/api",
                             revoke_url=f"{server.url}/revoke")
        settings = oauth.settings_for(demo, {"demo": {"client_id": "c"}})
        tokens = oauth.TokenSet(provider="demo", access_token="at-1", refresh_token="rt-1", expires_at=None,
                                scope=None)
        with Api(policy=RetryPolicy(retries=2, base=0.001, cap=0.001)) as api:
            outcome = oauth.revoke(settings, tokens, api=api)
    assert "deleted locally only" in outcome and "rt-1" not in outcome
    assert len(server.requests) == 3  # RFC 7009 revocation may be repeated: the policy's tries
    assert "token=rt-1" in server.requests[0].body.decode()


def test_an_answer_larger_than_the_cap_is_a_clean_error_not_a_memory_blow_up() -> None:
    with RawServer([response(200, b"x" * 5000), response(200, b"y" * 900)]) as server:
        with Api(max_body=1000) as api, pytest.raises(ApiError, match="larger than"):
            api.get(server.url + "/huge.json")
        with Api(max_body=1000) as api:
            assert api.get(server.url + "/small.json").content == b"y" * 900
