"""The data plane (pixsrc.transfer, libcurl multi) against real servers on 127.0.0.1 that misbehave
on purpose: one regression test per defect the hand-made client had (issue 7)."""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from support.raw_http import DROP, Answer, ForwardProxy, RawServer, informational, redirect, response
from support.tls import CA, make_ca

from pixsrc.api import RetryPolicy, ca_paths
from pixsrc.errors import AuthRequired
from pixsrc.transfer import Job, Result, TransferLoop
from pixsrc.types import Transfer, TransferError

FAST = RetryPolicy(retries=3, base=0.001, cap=0.01)


def run(work: list[Job], **options: Any) -> list[Result]:
    options.setdefault("policy", FAST)
    loop = TransferLoop(**options)
    try:
        return list(loop.run(work))
    finally:
        loop.close()


def one(tmp_path: Path, transfer: Transfer, **job: Any) -> tuple[Result, Path]:
    part = tmp_path / "asset.part"
    (result,) = run([Job("k", transfer, part, **job)])
    return result, part


class Bearer:
    """A real TransferAuth: hands out t1, then t2 once told the server refused t1."""

    def __init__(self, refuse_after: int = 1) -> None:
        self.token = "t1"
        self.refreshes = 0
        self.refuse_after = refuse_after

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def unauthorized(self, sent: Mapping[str, str]) -> None:
        self.refreshes += 1
        if self.refreshes > self.refuse_after:
            raise AuthRequired("refresh refused")
        self.token = f"t{self.refreshes + 1}"


@pytest.fixture
def private_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CA]:
    ca = make_ca(tmp_path / "ca")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    clear = getattr(ca_paths, "cache_clear", None)
    if clear:
        clear()
    yield ca
    if clear:
        clear()


# -- credentials and redirects ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["bearer", "api-key header"])
def test_https_to_http_redirect_on_the_same_host_drops_the_credential(tmp_path: Path, private_ca: CA,
                                                                      how: str) -> None:
    tls = private_ca.server_context("127.0.0.1")
    with RawServer([], tls=tls, plain_too=True) as server:
        server.script = [redirect(server.plain_url + "/plain.jpg"), response(200, b"plain bytes")]
        if how == "bearer":
            transfer = Transfer(server.url + "/secure.jpg", auth=Bearer())
        else:
            transfer = Transfer(server.url + "/secure.jpg", headers={"Authorization": "Bearer KEY"})
        result, part = one(tmp_path, transfer)
    assert result.kind == "done" and part.read_bytes() == b"plain bytes"
    first, second = server.requests
    assert first.tls and first.header("authorization") is not None
    assert not second.tls and second.header("authorization") is None


def test_a_401_refreshes_once_and_sends_again(tmp_path: Path) -> None:
    auth = Bearer()
    with RawServer([response(401, b"expired"), response(200, b"content")]) as server:
        result, part = one(tmp_path, Transfer(server.url + "/a.jpg", auth=auth))
    assert result.kind == "done" and part.read_bytes() == b"content"
    assert auth.refreshes == 1
    assert [r.header("authorization") for r in server.requests] == ["Bearer t1", "Bearer t2"]


def test_a_second_401_after_the_refresh_ends_the_source(tmp_path: Path) -> None:
    auth = Bearer(refuse_after=5)
    with RawServer([response(401), response(401)]) as server, pytest.raises(AuthRequired):
        one(tmp_path, Transfer(server.url + "/a.jpg", auth=auth))
    assert auth.refreshes == 1 and len(server.requests) == 2


# -- framing ---------------------------------------------------------------------------------------


def test_100_and_103_before_the_final_answer_are_skipped_and_the_connection_stays_in_sync(tmp_path: Path) -> None:
    first = (informational(100) + informational(103, [("Link", "</x.css>; rel=preload")])
             + response(200, b"final one", [("ETag", '"one"')]))
    with RawServer([first, response(200, b"second", [("ETag", '"two"')])]) as server:
        jobs = [Job(i, Transfer(f"{server.url}/{i}.jpg"), tmp_path / f"{i}.part") for i in (1, 2)]
        results = {r.key: r for r in run(jobs, jobs=1)}
    assert (tmp_path / "1.part").read_bytes() == b"final one" and results[1].etag == '"one"'
    assert (tmp_path / "2.part").read_bytes() == b"second" and results[2].etag == '"two"'
    assert server.connections == 1


def test_http_1_0_answers_are_not_kept_alive(tmp_path: Path) -> None:
    answer = Answer(response(200, b"old server", version="HTTP/1.0"), close=True)
    with RawServer([answer, answer]) as server:
        jobs = [Job(i, Transfer(f"{server.url}/{i}"), tmp_path / f"{i}.part") for i in (1, 2)]
        results = run(jobs, jobs=1)
    assert all(r.kind == "done" for r in results)
    assert [r.connection for r in server.requests] == [0, 1]


@pytest.mark.parametrize("lengths", [("5", "7"), ("-5",)], ids=["conflicting", "negative"])
def test_bad_content_length_fails_cleanly_without_waiting(tmp_path: Path, lengths: tuple[str, ...]) -> None:
    bad = Answer(response(200, b"12345", [("Content-Length", n) for n in lengths], length=False), close=True)
    with RawServer([bad] * 4) as server:
        result, part = one(tmp_path, Transfer(server.url + "/a.jpg"))
    assert result.kind == "failed" and result.error
    assert not part.exists() or part.read_bytes() != b"12345"


def test_duplicate_equal_content_length_is_accepted(tmp_path: Path) -> None:
    answer = response(200, b"12345", [("Content-Length", "5"), ("Content-Length", "5")], length=False)
    with RawServer([answer]) as server:
        result, part = one(tmp_path, Transfer(server.url + "/a.jpg"))
    assert result.kind == "done" and part.read_bytes() == b"12345"


def test_a_gzip_encoded_body_is_never_saved_compressed(tmp_path: Path) -> None:
    body = b"\xff\xd8 an image " * 100
    answer = response(200, gzip.compress(body), [("Content-Encoding", "gzip")])
    with RawServer([answer]) as server:
        result, part = one(tmp_path, Transfer(server.url + "/a.jpg"), expected_size=len(body), checksum="sha256")
    assert result.kind == "done" and part.read_bytes() == body
    assert result.checksum == hashlib.sha256(body).hexdigest()  # of the decoded bytes


@pytest.mark.parametrize("checksum", [None, "sha256", "md5"])
def test_a_dropped_connection_is_retried_and_the_download_resumed(tmp_path: Path, checksum: str | None) -> None:
    """The kept bytes are re-hashed for a checksum; without one they are not read, only appended to."""
    body = b"0123456789"
    cut = Answer(response(200, body, [("ETag", '"v"')])[:-4], close=True)  # 4 bytes short, then gone
    resumed = response(206, body[6:], [("Content-Range", "bytes 6-9/10"), ("ETag", '"v"')])
    with RawServer([cut, resumed]) as server:
        result, part = one(tmp_path, Transfer(server.url + "/a.jpg", validator='"v"'), expected_size=10,
                           checksum=checksum)
    assert result.kind == "done" and part.read_bytes() == body
    assert result.checksum == (hashlib.new(checksum, body).hexdigest() if checksum else None)
    assert server.requests[1].header("range") == "bytes=6-" and server.requests[1].header("if-range") == '"v"'


def test_a_206_with_the_wrong_content_range_restarts_from_zero(tmp_path: Path) -> None:
    body = b"hello world"
    part = tmp_path / "asset.part"
    part.write_bytes(b"hello")
    wrong = response(206, body, [("Content-Range", "bytes 0-10/11")])
    with RawServer([wrong, response(200, body)]) as server:
        (result,) = run([Job("k", Transfer(server.url + "/a.jpg"), part, expected_size=len(body))])
    assert result.kind == "done" and part.read_bytes() == body
    assert server.requests[0].header("range") == "bytes=5-"
    assert server.requests[1].header("range") is None


def test_a_416_to_a_resume_starts_over(tmp_path: Path) -> None:
    part = tmp_path / "asset.part"
    part.write_bytes(b"stale")
    with RawServer([response(416), response(200, b"fresh bytes")]) as server:
        (result,) = run([Job("k", Transfer(server.url + "/a.jpg"), part)])
    assert result.kind == "done" and part.read_bytes() == b"fresh bytes"


def test_a_body_larger_than_listed_fails_at_once(tmp_path: Path) -> None:
    with RawServer([response(200, b"x" * 5000)]) as server:
        result, _ = one(tmp_path, Transfer(server.url + "/a.jpg"), expected_size=100)
    assert result.kind == "failed" and "more than the 100 bytes" in (result.error or "")
    assert len(server.requests) == 1


# -- what goes out -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a\r\nInjected: yes", "a\nb", "a\0b"])
def test_line_breaks_and_nul_in_a_header_are_refused_not_sent(tmp_path: Path, value: str) -> None:
    with RawServer([]) as server:
        result, _ = one(tmp_path, Transfer(server.url + "/a.jpg", headers={"X-Thing": value}))
    assert result.kind == "failed" and "line break or NUL" in (result.error or "")
    assert server.requests == [] and server.connections == 0


def test_a_server_etag_with_a_bare_lf_is_never_echoed_with_its_tail(tmp_path: Path) -> None:
    head = b'HTTP/1.1 200 OK\r\nETag: "a"\nX-Evil: 1\r\nContent-Length: 2\r\n\r\nok'
    with RawServer([head]) as server:
        result, _ = one(tmp_path, Transfer(server.url + "/a.jpg"))
    assert result.kind == "done" and result.etag == '"a"'


def test_urls_are_percent_encoded(tmp_path: Path) -> None:
    with RawServer([response(200, b"x")]) as server:
        result, _ = one(tmp_path, Transfer(server.url + "/a b/café/日本.jpg?q=x y"))
    assert result.kind == "done"
    assert server.requests[0].target == "/a%20b/caf%C3%A9/%E6%97%A5%E6%9C%AC.jpg?q=x%20y"


def test_an_idna_host_goes_out_in_punycode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with RawServer([response(200, b"x")]) as server, ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        result, _ = one(tmp_path, Transfer(f"http://bücher.test:{server.port}/a.jpg"))
    assert result.kind == "done", result.error
    assert proxy.seen[0].target == f"http://xn--bcher-kva.test:{server.port}/a.jpg"
    assert server.requests[0].header("host") == f"xn--bcher-kva.test:{server.port}"


def test_a_post_transfer_sends_no_form_content_type(tmp_path: Path) -> None:
    with RawServer([response(200, b"x")]) as server:
        result, _ = one(tmp_path, Transfer(server.url + "/2/files/download", method="POST",
                                           headers={"Dropbox-API-Arg": '{"path":"/a.jpg"}'}))
    assert result.kind == "done"
    request = server.requests[0]
    assert request.method == "POST" and request.header("content-type") is None and request.body == b""


def _local_name() -> str:
    """This machine's host name, when it resolves to a loopback address (from /etc/hosts)."""
    import ipaddress
    import socket

    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)}
    except OSError:
        addresses = set()
    if not addresses or not all(ipaddress.ip_address(a).is_loopback for a in addresses):
        pytest.skip("the host name does not resolve to loopback here")
    return name


@pytest.mark.parametrize("bypass", [True, False])
def test_proxies_come_from_the_environment_as_the_api_plane_chooses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    bypass: bool) -> None:
    """The loop asks api.ProxySettings (its CIDR entries are unit-tested in test_api): a host goes
    through the proxy unless NO_PROXY names it; loopback addresses never do."""
    name = _local_name()
    with RawServer(lambda seen: response(200, b"x")) as server, ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        if bypass:
            monkeypatch.setenv("NO_PROXY", f"other.test,{name}")
        loopback, _ = one(tmp_path, Transfer(server.url + "/direct.jpg"))
        named, _ = one(tmp_path, Transfer(f"http://{name}:{server.port}/named.jpg"))
    assert loopback.kind == "done" and named.kind == "done"
    assert [s.target for s in proxy.seen] == ([] if bypass else [f"http://{name}:{server.port}/named.jpg"])


# -- TLS ----------------------------------------------------------------------------------------------


def test_a_private_ca_from_ssl_cert_file_is_trusted(tmp_path: Path, private_ca: CA) -> None:
    with RawServer([response(200, b"secure")], tls=private_ca.server_context("127.0.0.1")) as server:
        result, part = one(tmp_path, Transfer(server.url + "/a.jpg"))
    assert result.kind == "done" and part.read_bytes() == b"secure"


def test_an_untrusted_certificate_fails_at_once(tmp_path: Path, private_ca: CA) -> None:
    stranger = make_ca(tmp_path / "other", "another CA")
    with RawServer([], tls=stranger.server_context("127.0.0.1")) as server:
        result, _ = one(tmp_path, Transfer(server.url + "/a.jpg"))
    assert result.kind == "failed" and "certificate" in (result.error or "").lower()
    assert server.connections == 1 and server.requests == []


# -- retries, conditional requests, cancellation ---------------------------------------------------------


def test_429_with_retry_after_and_503_are_retried(tmp_path: Path) -> None:
    script = [response(429, headers=[("Retry-After", "0")]), response(503), response(200, b"at last")]
    with RawServer(script) as server:
        result, part = one(tmp_path, Transfer(server.url + "/a.jpg"))
    assert result.kind == "done" and part.read_bytes() == b"at last" and len(server.requests) == 3


def test_retries_end_with_a_failure_naming_the_status(tmp_path: Path) -> None:
    with RawServer([response(503)] * 10) as server:
        result, _ = one(tmp_path, Transfer(server.url + "/a.jpg"))
    assert result.kind == "failed" and "HTTP 503" in (result.error or "")
    assert len(server.requests) == FAST.retries + 1


def test_a_controller_classifies_its_own_errors(tmp_path: Path) -> None:
    def on_error(status: int, headers: Mapping[str, str], body: bytes) -> TransferError | None:
        if status == 403 and b"rateLimitExceeded" in body:
            return TransferError("rate limited", retry=True, retry_after=0)
        return TransferError(f"provider says {body.decode()}")

    script = [response(403, b"rateLimitExceeded"), response(404, b"no such file")]
    with RawServer(script) as server:
        result, _ = one(tmp_path, Transfer(server.url + "/a.jpg", on_error=on_error))
    assert result.kind == "failed" and result.error == "provider says no such file" and len(server.requests) == 2


def test_a_conditional_get_answered_304_leaves_everything_alone(tmp_path: Path) -> None:
    with RawServer([response(304, length=False)]) as server:
        result, part = one(tmp_path, Transfer(server.url + "/a.jpg"), conditional={"If-None-Match": '"v1"'})
    assert result.kind == "not-modified" and not part.exists()
    assert server.requests[0].header("if-none-match") == '"v1"'


def test_cancel_stops_the_loop_and_keeps_the_part_for_resume(tmp_path: Path) -> None:
    cancel = threading.Event()
    body = b"x" * (4 << 20)
    with RawServer([response(200, body)]) as server:
        loop = TransferLoop(policy=FAST, cancel=cancel, on_bytes=lambda n: cancel.set())
        part = tmp_path / "big.part"
        with pytest.raises(KeyboardInterrupt):
            list(loop.run([Job("k", Transfer(server.url + "/big.jpg"), part)]))
        loop.close()
    assert part.exists() and 0 < part.stat().st_size < len(body)


def test_dropped_connections_give_up_after_the_policy_retries(tmp_path: Path) -> None:
    with RawServer([DROP] * 10) as server:
        result, _ = one(tmp_path, Transfer(server.url + "/a.jpg"))
    assert result.kind == "failed" and len(server.requests) == FAST.retries + 1


def test_the_request_rate_cap_spaces_starts_and_lets_every_job_through(tmp_path: Path) -> None:
    import time

    from pixsrc.api import RateLimit

    with RawServer(lambda seen: response(200, b"x")) as server:
        jobs = [Job(i, Transfer(f"{server.url}/{i}.jpg"), tmp_path / f"{i}.part") for i in range(6)]
        started = time.monotonic()
        results = run(jobs, limit=RateLimit(concurrency=2, per_second=20))
        elapsed = time.monotonic() - started
    assert sorted(r.key for r in results if r.kind == "done") == list(range(6))
    # six starts at 20 per second take at least 5 intervals; a job must never re-book its own slot
    # (that bug made seven jobs take 40 s), so this ends well within a few seconds
    assert 0.25 <= elapsed < 5


def test_downloads_outside_the_providers_limits_are_not_held_back(tmp_path: Path) -> None:
    import time

    from pixsrc.api import RateLimit

    with RawServer(lambda seen: response(200, b"x")) as server:
        jobs = [Job(i, Transfer(f"{server.url}/{i}.jpg", rate_limited=False), tmp_path / f"{i}.part")
                for i in range(4)]
        started = time.monotonic()
        results = run(jobs, limit=RateLimit(per_second=1))
        elapsed = time.monotonic() - started
    assert all(r.kind == "done" for r in results) and len(results) == 4
    assert elapsed < 2.5  # one start per second would take at least 3 s


def test_on_start_is_told_only_when_a_job_really_starts(tmp_path: Path) -> None:
    """The progress display's "fetching ..." list: with 2 at a time, never a third job announced while
    two run (the loop holds the next job back before it can start), and each job once, retries too."""
    in_flight: set[int] = set()
    most: list[int] = []
    announced: list[int] = []

    def started(job: Job) -> None:
        announced.append(job.key)
        in_flight.add(job.key)
        most.append(len(in_flight))

    answers = [response(503, b"", [("Retry-After", "0")]), *[response(200, b"body") for _ in range(6)]]
    with RawServer(answers) as server:
        loop = TransferLoop(jobs=2, policy=FAST, on_start=started)
        jobs = [Job(i, Transfer(f"{server.url}/{i}.jpg"), tmp_path / f"{i}.part") for i in range(6)]
        try:
            for result in loop.run(jobs):
                assert result.kind == "done", result.error
                in_flight.discard(result.key)
        finally:
            loop.close()
    assert sorted(announced) == list(range(6))  # the one answered 503 first was announced once
    assert max(most) == 2


# -- local copies (local-fs, same-content copies) ----------------------------------------------------


@pytest.mark.parametrize("checksum", [None, "md5"])
def test_a_local_copy_moves_every_byte_in_chunks_and_counts_them(tmp_path: Path, checksum: str | None,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a checksum the kernel copies (sendfile, on Linux); to feed a hash, Python reads and
    writes. Either way progress is told per chunk and every byte arrives."""
    import os
    import sys

    import pixsrc.transfer

    kernel_calls: list[int] = []
    real_sendfile = os.sendfile

    def sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        kernel_calls.append(count)
        return real_sendfile(out_fd, in_fd, offset, count)

    monkeypatch.setattr(pixsrc.transfer.os, "sendfile", sendfile, raising=False)
    data = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and a bit: more than one chunk
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    counted: list[int] = []
    loop = TransferLoop(on_bytes=counted.append)
    try:
        (result,) = list(loop.run([Job("k", Transfer(local_path=str(source)), tmp_path / "b.part",
                                       checksum=checksum)]))
    finally:
        loop.close()
    assert result.kind == "done" and result.size == len(data) and (tmp_path / "b.part").read_bytes() == data
    assert result.checksum == (hashlib.md5(data).hexdigest() if checksum else None)
    assert sum(counted) == len(data) and len(counted) >= 3
    assert bool(kernel_calls) == (checksum is None and sys.platform.startswith("linux"))


def test_a_source_the_kernel_cannot_copy_from_is_read_and_written_instead(tmp_path: Path) -> None:
    """sendfile() refuses a pipe as its source (EINVAL): the copy falls back to read/write, whole."""
    import os

    read_end, write_end = os.pipe()
    payload = b"through a pipe " * 1000
    writer = threading.Thread(target=lambda: (os.write(write_end, payload), os.close(write_end)))
    writer.start()
    loop = TransferLoop()
    out = os.open(tmp_path / "out.part", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert loop._pump(read_end, out, None) == len(payload)
    finally:
        writer.join()
        os.close(out)
        os.close(read_end)
        loop.close()
    assert (tmp_path / "out.part").read_bytes() == payload


# -- .part files made ahead on the helper thread ---------------------------------------------------


def test_fresh_parts_are_created_on_the_helper_thread_and_written_through(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Creating a file is kernel work the one loop thread must not wait on: each fresh download's
    part is made on the helper ('pixsrc-create') while earlier jobs run, and the body lands in it."""
    import pixsrc.transfer

    made: list[tuple[str, str]] = []
    real_create = pixsrc.transfer._create

    def create(path: Path) -> int | None:
        made.append((threading.current_thread().name, path.name))
        return real_create(path)

    monkeypatch.setattr(pixsrc.transfer, "_create", create)
    with RawServer(lambda seen: response(200, f"body of {seen.path}".encode())) as server:
        work = [Job(n, Transfer(f"{server.url}/{n}.jpg"), tmp_path / f"{n}.part") for n in range(20)]
        results = run(work, jobs=4)
    assert sorted(r.key for r in results if r.kind == "done") == list(range(20))
    assert sorted(name for _, name in made) == sorted(f"{n}.part" for n in range(20))
    assert {thread for thread, _ in made} == {"pixsrc-create_0"}
    assert all((tmp_path / f"{n}.part").read_bytes() == f"body of /{n}.jpg".encode() for n in range(20))


def test_an_earlier_runs_part_is_resumed_not_recreated(tmp_path: Path) -> None:
    part = tmp_path / "asset.part"
    part.write_bytes(b"01234")
    resumed = response(206, b"56789", [("Content-Range", "bytes 5-9/10"), ("ETag", '"v"')])
    with RawServer([resumed]) as server:
        (result,) = run([Job("k", Transfer(server.url + "/a.jpg", validator='"v"'), part, expected_size=10)])
    assert result.kind == "done" and part.read_bytes() == b"0123456789"


@pytest.mark.parametrize("answer", [response(404, b"no such file"), response(304, length=False), DROP])
def test_a_part_made_for_a_job_that_never_wrote_is_removed(tmp_path: Path, answer: Any) -> None:
    """An error answer (or none) writes nothing: the empty part made ahead must not be left behind."""
    folder = tmp_path / "dest"
    folder.mkdir()
    with RawServer([answer] * 10) as server:
        result, part = one(folder, Transfer(server.url + "/a.jpg"))
    assert result.kind == "failed" and list(folder.iterdir()) == []


def test_an_empty_body_gives_an_empty_file(tmp_path: Path) -> None:
    with RawServer([response(200, b"")]) as server:
        result, part = one(tmp_path, Transfer(server.url + "/a.jpg"))
    assert result.kind == "done" and result.size == 0 and part.read_bytes() == b""


def test_cancel_removes_the_parts_made_for_jobs_that_never_started(tmp_path: Path) -> None:
    cancel = threading.Event()
    body = b"x" * (4 << 20)
    with RawServer(lambda seen: response(200, body)) as server:
        loop = TransferLoop(jobs=1, policy=FAST, cancel=cancel, on_bytes=lambda n: cancel.set())
        folder = tmp_path / "dest"
        folder.mkdir()
        work = [Job(n, Transfer(f"{server.url}/{n}.jpg"), folder / f"{n}.part") for n in range(5)]
        with pytest.raises(KeyboardInterrupt):
            list(loop.run(work))
        loop.close()
    assert [p.name for p in folder.iterdir()] == ["0.part"]  # only the one in flight stays, to resume
    assert 0 < (folder / "0.part").stat().st_size < len(body)


@pytest.mark.parametrize("body", [b"some bytes", b""])
def test_a_part_that_cannot_be_created_fails_that_asset_with_the_reason(tmp_path: Path, body: bytes) -> None:
    """A folder that vanished (or a full disk) under a download: the job fails naming the OS error;
    the loop, and the jobs after it, go on."""
    gone = tmp_path / "gone" / "a.part"  # its folder does not exist: creating it fails (ENOENT)
    fine = tmp_path / "b.part"
    with RawServer(lambda seen: response(200, body)) as server:
        results = {r.key: r for r in run([Job("gone", Transfer(server.url + "/a.jpg"), gone),
                                           Job("fine", Transfer(server.url + "/b.jpg"), fine)])}
    assert results["gone"].kind == "failed" and "No such file or directory" in (results["gone"].error or "")
    assert results["fine"].kind == "done" and fine.read_bytes() == body
