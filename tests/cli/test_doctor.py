"""`pixsrc doctor` against real things: TLS servers with a private CA, a closed port, a server whose
clock is off, a destination that cannot be a folder, a broken config, a hanging keyring, the file
keyring (keyrings.alt), and a lock another holder has."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import certifi
import pytest
from support import keyring_hang
from support.cli import run
from support.raw_http import ForwardProxy, RawServer, Seen, response
from support.tls import CA, make_ca

from pixsrc import oauth, tokens
from pixsrc.locks import FileLock

SECRET = "rt-doctor-5f4e3d2c1b0a-SECRET"
OFF_DATE = "Mon, 01 Jan 1990 00:00:00 GMT"
TESTS = Path(__file__).resolve().parents[1]


def write_config(config_file: Path, text: str) -> None:
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text("version = 1\n" + text)


def gallery(url: str, dest: Path, source_id: str = "gallery") -> str:
    return (f'[sources.{source_id}]\nname = "{source_id}"\ntype = "remote-gallery"\ndest = "{dest}"\n'
            f'[sources.{source_id}.config]\nurl = "{url}"\n')


def local(path: Path, dest: Path, source_id: str = "inbox") -> str:
    return (f'[sources.{source_id}]\nname = "{source_id}"\ntype = "local-fs"\ndest = "{dest}"\n'
            f'[sources.{source_id}.config]\npath = "{path}"\n')


def dropbox(base: str, dest: Path, source_id: str = "drop") -> str:
    """A Dropbox source whose every provider URL is overridden to ``base``: no real host is touched."""
    return (f'[sources.{source_id}]\nname = "{source_id}"\ntype = "dropbox"\ndest = "{dest}"\n'
            f'[sources.{source_id}.config]\n'
            f'[providers.dropbox]\nclient_id = "doctor-test-client"\n'
            f'token_url = "{base}/oauth2/token"\napi_base_url = "{base}"\ncontent_base_url = "{base}"\n')


def doctor(*args: str) -> tuple[int, dict[str, Any], str]:
    result = run("doctor", *args, "--json")
    report = json.loads(result.stdout)
    assert report["exit_code"] == result.exit_code
    return result.exit_code, report, result.stderr


def lines(report: dict[str, Any], check: str, source: str | None = None) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if c["check"] == check and (source is None or c["source"] == source)]


def one(report: dict[str, Any], check: str, source: str | None = None) -> dict[str, Any]:
    found = lines(report, check, source)
    assert len(found) == 1, report["checks"]
    return found[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dated(date: str):  # noqa: ANN201 - a RawServer script
    def answer(seen: Seen) -> bytes:
        return response(200, b"", headers=[("Date", date)])
    return answer


def now_date() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return make_ca(tmp_path / "ca")


# -- paths, config, plugins ------------------------------------------------------------------------


def test_healthy_local_source_exits_0_and_says_which_variables_decided_the_paths(
        config_file: Path, tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    write_config(config_file, local(tmp_path / "pics", tmp_path / "out" / "inbox"))
    code, report, stderr = doctor()
    assert code == 0, report
    assert report["schema"] == 1 and report["exit_code"] == 0
    assert all(set(c) == {"check", "source", "status", "detail", "fix"} for c in report["checks"])
    path = one(report, "config-path")
    assert path["status"] == "ok" and str(config_file) in path["detail"] and "$PIXSRC_CONFIG" in path["detail"]
    state = one(report, "state-path")
    assert state["status"] == "ok" and "$PIXSRC_STATE_DIR" in state["detail"]
    assert one(report, "config")["detail"].endswith("parses: 1 source")
    assert one(report, "source", "inbox")["status"] == "ok"
    assert one(report, "credential", "inbox")["detail"] == "needs none"
    dest = one(report, "destination", "inbox")
    assert dest["status"] == "ok" and "writable" in dest["detail"] and " free" in dest["detail"]
    assert f"created in {tmp_path}" in dest["detail"]
    assert not (tmp_path / "out").exists()  # a doctor only looks
    assert not lines(report, "keyring")  # nothing needs a credential: the keyring is not asked
    assert not lines(report, "network") and not lines(report, "clock")
    assert "0 failures" in stderr

    elsewhere = tmp_path / "other.toml"
    elsewhere.write_text(config_file.read_text())
    _, report, _ = doctor("--config", str(elsewhere))
    assert one(report, "config-path")["detail"] == f"{elsewhere} (from --config)"


def test_without_pixsrc_variables_the_xdg_ones_decide(config_file: Path, monkeypatch: pytest.MonkeyPatch,
                                                        isolated: Path) -> None:
    monkeypatch.delenv("PIXSRC_CONFIG")
    monkeypatch.delenv("PIXSRC_STATE_DIR")
    code, report, _ = doctor()
    path = one(report, "config-path")
    assert path["status"] == "warn" and "$XDG_CONFIG_HOME" in path["detail"]
    assert str(isolated / "home" / ".config" / "pixsrc" / "sources.toml") in path["detail"]
    assert "PIXSRC_CONFIG" in path["fix"]
    assert "$XDG_STATE_HOME" in one(report, "state-path")["detail"]
    assert code == 0  # warnings alone


def test_broken_config_names_file_and_line_and_exits_2(config_file: Path) -> None:
    write_config(config_file, '[sources.a]\nname = "A"\ntype = \n')
    result = run("doctor")
    assert result.exit_code == 2
    assert f"{config_file}:4:" in result.stdout and "invalid TOML" in result.stdout
    code, report, _ = doctor()
    failed = one(report, "config")
    assert code == 2 and failed["status"] == "fail" and failed["fix"]


def test_state_dir_that_cannot_be_a_folder_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("PIXSRC_STATE_DIR", str(tmp_path / "a-file" / "state"))
    code, report, _ = doctor()
    state = one(report, "state-path")
    assert code == 2 and state["status"] == "fail" and "is a file, not a folder" in state["detail"]


def test_a_damaged_state_database_fails_and_is_left_as_it_is(config_file: Path, state_path: Path,
                                                              tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(b"\x89PNG one")
    assert run("add", "local-fs", "--id", "inbox", "--set", f"path={tmp_path / 'pics'}", "--no-input").exit_code == 0
    state_path.mkdir(parents=True)
    (state_path / "state.db").write_bytes(b"garbage" * 50)
    code, report, _ = doctor()
    state = one(report, "state-path")
    assert (code, state["status"]) == (2, "fail")
    assert "state.db is not a usable pixsrc state database (file is not a database)" in state["detail"]
    assert "mv '" in state["fix"] and (state_path / "state.db").read_bytes() == b"garbage" * 50
    (state_path / "state.db").unlink()
    assert run("fetch", "inbox", "--dest", str(state_path.parent / "out")).exit_code == 0
    code, report, _ = doctor()
    assert "passes SQLite's quick check" in one(report, "state-path")["detail"]


def test_unknown_source_and_disabled_sources(config_file: Path, tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    write_config(config_file, local(tmp_path / "pics", tmp_path / "out").replace(
        'type = "local-fs"', 'type = "local-fs"\nenabled = false'))
    code, report, _ = doctor("nope")
    assert code == 2 and "no source named 'nope'" in one(report, "source", "nope")["detail"]
    code, report, _ = doctor()
    assert code == 0 and "disabled" in one(report, "source", "inbox")["detail"]
    assert not lines(report, "destination")
    code, report, _ = doctor("inbox")  # named: checked anyway
    assert code == 0 and one(report, "destination", "inbox")["status"] == "ok"


def test_plugin_problems_are_warnings(config_file: Path) -> None:
    from pixsrc import registry

    _, problems = registry.load_all()
    code, report, _ = doctor()
    if not problems:
        assert one(report, "plugins")["status"] == "ok"
        return
    found = lines(report, "plugins")
    assert code == 0 and {c["status"] for c in found} == {"warn"}
    assert all("pip uninstall" in c["fix"] for c in found)


# -- network: one HEAD per host through the API client (trust store, proxy); the clock from its Date


def test_tls_handshake_ok_with_the_trusted_ca_and_fail_with_another(
        ca: CA, config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with RawServer(dated(now_date()), tls=ca.server_context("127.0.0.1")) as server:
        write_config(config_file, gallery(f"{server.url}/gallery/", tmp_path / "out"))
        monkeypatch.setenv("SSL_CERT_FILE", str(ca.path))
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        code, report, _ = doctor()
        net = one(report, "network", "gallery")
        assert net["status"] == "ok" and "answers over TLS, trusted by pixsrc's trust store" in net["detail"], net
        assert f"127.0.0.1:{server.port}" in net["detail"]
        clock = one(report, "clock", "gallery")
        assert clock["status"] == "ok", clock
        assert [s.method for s in server.requests] == ["HEAD"]  # one request serves both checks
        assert code == 0, report

        monkeypatch.setenv("SSL_CERT_FILE", certifi.where())  # the private CA is a stranger now
        code, report, _ = doctor()
    net = one(report, "network", "gallery")
    assert net["status"] == "fail" and "TLS certificate not trusted" in net["detail"]
    assert "SSL_CERT_FILE" in net["fix"]
    assert code == 4
    assert not lines(report, "clock")  # no host passed: nobody to ask the time


def test_closed_port_fails_with_exit_4(config_file: Path, tmp_path: Path) -> None:
    port = closed_port()
    write_config(config_file, gallery(f"http://127.0.0.1:{port}/", tmp_path / "out"))
    started = time.monotonic()
    code, report, _ = doctor()
    net = one(report, "network", "gallery")
    assert code == 4 and net["status"] == "fail"
    assert f"127.0.0.1:{port}: ConnectError" in net["detail"] and "Connection refused" in net["detail"]
    assert net["fix"] == "is the server up, and is the port in the URL right?"
    assert time.monotonic() - started < 5


def test_clock_far_off_a_providers_date_warns(config_file: Path, tmp_path: Path) -> None:
    with RawServer(dated(OFF_DATE)) as server:
        write_config(config_file, gallery(f"{server.url}/", tmp_path / "out"))
        code, report, _ = doctor()
    clock = one(report, "clock", "gallery")
    assert clock["status"] == "warn" and "ahead of" in clock["detail"] and OFF_DATE in clock["detail"]
    assert "NTP" in clock["fix"]
    assert one(report, "network", "gallery")["status"] == "ok"
    assert code == 0  # a warning


def test_provider_hosts_come_from_the_providers_table(config_file: Path, tmp_path: Path) -> None:
    """Dropbox with every URL in [providers.dropbox] pointed at a local server: the checks go there,
    never to dropboxapi.com; with SOURCE, the other source is left out."""
    (tmp_path / "pics").mkdir()
    with RawServer(dated(now_date())) as server:
        write_config(config_file, dropbox(server.url, tmp_path / "drop")
                     + local(tmp_path / "pics", tmp_path / "inbox"))
        code, report, _ = doctor("drop")
    net = lines(report, "network", "drop")
    assert len(net) == 1 and f"127.0.0.1:{server.port}" in net[0]["detail"]  # three URLs, one origin
    assert all("dropboxapi.com" not in c["detail"] for c in report["checks"])
    assert not [c for c in report["checks"] if c["source"] == "inbox"]
    assert not lines(report, "plugins")
    assert one(report, "oauth-client", "drop")["detail"] == "client id from [providers.dropbox] client_id"
    credential = one(report, "credential", "drop")
    assert credential["status"] == "fail" and credential["fix"] == "run: pixsrc auth login drop"
    assert code == 3


def test_through_a_proxy_the_host_is_checked_with_one_request_via_it(
        config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where pixsrc would use a proxy, a direct connection proves nothing: the proxy resolves
    gallery.test (to 127.0.0.1), which this machine's DNS cannot."""
    with RawServer(dated(now_date())) as server, ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        write_config(config_file, gallery(f"http://gallery.test:{server.port}/", tmp_path / "out"))
        code, report, _ = doctor()
    net = one(report, "network", "gallery")
    assert net["status"] == "ok" and f"through the proxy {proxy.url}" in net["detail"], net
    assert one(report, "clock", "gallery")["status"] == "ok"
    assert [s.target for s in proxy.seen] == [f"http://gallery.test:{server.port}/"]  # one for both checks
    assert code == 0


# -- destinations --------------------------------------------------------------------------------


def test_destination_under_a_file_fails_with_exit_4(config_file: Path, tmp_path: Path) -> None:
    # tests run as root, whom chmod 0500 does not stop: a folder inside a file cannot be made by anyone
    (tmp_path / "pics").mkdir()
    (tmp_path / "a-file").write_text("x")
    write_config(config_file, local(tmp_path / "pics", tmp_path / "a-file" / "inbox"))
    code, report, _ = doctor()
    dest = one(report, "destination", "inbox")
    assert code == 4 and dest["status"] == "fail"
    assert f"{tmp_path / 'a-file'} is a file, not a folder" in dest["detail"]
    assert "pixsrc edit inbox --dest" in dest["fix"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes through any mode bits")
def test_read_only_destination_fails(config_file: Path, tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    (tmp_path / "ro").mkdir(mode=0o500)
    write_config(config_file, local(tmp_path / "pics", tmp_path / "ro"))
    code, report, _ = doctor()
    dest = one(report, "destination", "inbox")
    assert code == 4 and dest["status"] == "fail" and "cannot write in" in dest["detail"]


# -- the keyring and credentials -------------------------------------------------------------------


def test_hanging_keyring_fails_within_3_s(config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "support.keyring_hang.HangingKeyring")
    monkeypatch.setenv("KEYRING_HANG_CALLS", str(tmp_path / "calls.txt"))
    monkeypatch.setenv("PIXSRC_KEYRING_TIMEOUT", "10")  # the doctor's own limit, 3 s, is shorter
    import keyring.core

    keyring.core._keyring_backend = None
    port = closed_port()
    write_config(config_file, dropbox(f"http://127.0.0.1:{port}", tmp_path / "drop"))
    started = time.monotonic()
    try:
        code, report, _ = doctor()
    finally:
        keyring_hang.release_stuck_calls()  # else later tests in this process find the keyring still stuck
    elapsed = time.monotonic() - started
    ring = one(report, "keyring")
    assert ring["status"] == "fail" and "support.keyring_hang.HangingKeyring" in ring["detail"]
    assert "did not answer within 3 s" in ring["detail"] and "--store file" in ring["fix"]
    credential = one(report, "credential", "drop")
    assert credential["status"] == "fail" and "PIXSRC_AUTH_DROP" in credential["fix"]
    assert code == 3  # credentials (3) outrank the closed port (4)
    assert 2.5 < elapsed < 5.5  # one 3 s wait: the credential lookup after it failed at once
    assert (tmp_path / "calls.txt").read_text().splitlines() == ["get pixsrc doctor:probe"]


def test_a_public_gallery_without_a_stored_key_does_not_ask_the_keyring(
        config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its key is optional and none was stored: fetch never asks the keyring, so neither does doctor
    (no keyring warning on a server that has none)."""
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "support.keyring_hang.HangingKeyring")
    monkeypatch.setenv("KEYRING_HANG_CALLS", str(tmp_path / "calls.txt"))
    with RawServer(dated(now_date())) as server:
        write_config(config_file, gallery(f"{server.url}/gallery/", tmp_path / "out"))
        code, report, _ = doctor()
    assert not lines(report, "keyring"), report
    assert one(report, "credential", "gallery")["status"] == "ok"
    assert not (tmp_path / "calls.txt").exists()
    assert code == 0


def test_with_the_file_store_chosen_doctor_does_not_ask_the_keyring(
        config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PIXSRC_TOKEN_STORE=file: no command asks the keyring, so a hanging one is not checked either."""
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "support.keyring_hang.HangingKeyring")
    monkeypatch.setenv("KEYRING_HANG_CALLS", str(tmp_path / "calls.txt"))
    monkeypatch.setenv("PIXSRC_TOKEN_STORE", "file")
    write_config(config_file, dropbox(f"http://127.0.0.1:{closed_port()}", tmp_path / "drop"))
    _, report, _ = doctor()
    assert not lines(report, "keyring"), report
    assert one(report, "credential", "drop")["status"] == "fail"  # none in the file: sign in
    assert not (tmp_path / "calls.txt").exists()


def test_file_keyring_credential_ok_then_missing(config_file: Path, tmp_path: Path) -> None:
    with RawServer(dated(now_date())) as server:
        write_config(config_file, dropbox(server.url, tmp_path / "drop"))
        now = time.time()
        stored = oauth.TokenSet("dropbox", "sl.doctor-access-token-0123456789abcdef", SECRET, now + 3600,
                                "files.metadata.read files.content.read", obtained_at=now,
                                refresh_obtained_at=now)
        tokens.put("drop", stored.to_json(), "keyring")
        result = run("doctor", "--json")
        code, report = result.exit_code, json.loads(result.stdout)
        assert SECRET not in result.stdout + result.stderr
        assert "sl.doctor-access-token" not in result.stdout + result.stderr
        ring = one(report, "keyring")
        assert ring["status"] == "ok" and "keyrings.alt.file.PlaintextKeyring" in ring["detail"]
        credential = one(report, "credential", "drop")
        assert credential["status"] == "ok", credential
        assert "keyring keyrings.alt.file.PlaintextKeyring" in credential["detail"]
        assert "access token expires" in credential["detail"]
        assert code == 0, report

        tokens.delete("drop")
        text = run("doctor")
    assert text.exit_code == 3
    assert "credential" in text.stdout and "fix: run: pixsrc auth login drop" in text.stdout


def test_credential_from_the_environment_is_ok_but_cron_needs_it(
        config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with RawServer(dated(now_date())) as server:
        write_config(config_file, dropbox(server.url, tmp_path / "drop"))
        monkeypatch.setenv("PIXSRC_AUTH_DROP", oauth.TokenSet("dropbox", None, SECRET, None, None).to_json())
        monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
        import keyring.core

        keyring.core._keyring_backend = None
        result = run("doctor", "--json")
    report = json.loads(result.stdout)
    credential = one(report, "credential", "drop")
    assert credential["status"] == "ok" and "env PIXSRC_AUTH_DROP" in credential["detail"]
    assert "cron" in credential["detail"]
    ring = one(report, "keyring")  # broken, but nothing depends on it: a warning
    assert ring["status"] == "warn" and "keyring.backends.fail.Keyring" in ring["detail"]
    assert result.exit_code == 0, report
    assert SECRET not in result.stdout + result.stderr


# -- locks ---------------------------------------------------------------------------------------


def test_locks_a_leftover_file_is_free_a_held_one_is_named(config_file: Path, tmp_path: Path,
                                                            state_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    write_config(config_file, local(tmp_path / "pics", tmp_path / "out"))
    locks = state_path / "locks"
    locks.mkdir(parents=True)
    (locks / "inbox.lock").write_text("")  # as a crashed fetch leaves it: nobody holds it
    code, report, _ = doctor()
    assert code == 0 and "none held (1 lock file" in one(report, "locks")["detail"]
    assert (locks / "inbox.lock").exists()

    with FileLock(locks / "inbox.lock"):  # another open file: flock tells it apart, as another process
        code, report, _ = doctor("inbox")
    held = one(report, "locks", "inbox")
    assert held["status"] == "ok" and "held: a fetch is running now" in held["detail"]


def test_text_output_is_one_line_per_check_with_the_fix_on_it(config_file: Path, tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    (tmp_path / "a-file").write_text("x")
    write_config(config_file, local(tmp_path / "pics", tmp_path / "a-file" / "inbox"))
    result = run("doctor")
    assert result.exit_code == 4
    rows = result.stdout.splitlines()
    assert rows[0].split() == ["STATUS", "CHECK", "SOURCE", "DETAIL"]
    _, report, _ = doctor()
    assert len(rows) == 1 + len(report["checks"])
    assert all(row.split()[0] in ("ok", "warn", "fail") for row in rows[1:])
    failed = [row for row in rows if row.startswith("fail")]
    assert len(failed) == 1 and failed[0].split()[1:3] == ["destination", "inbox"]
    assert "is a file, not a folder; fix: choose a folder" in failed[0]
    assert "1 failure" in result.stderr
