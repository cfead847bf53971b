"""Every secret the process reads is masked in its output: the gallery API key, the PKCE verifier.

The end-to-end tests run `pixsrc` as a fresh subprocess (nothing registered with the redactor
beforehand, as for a user) against real servers on 127.0.0.1 that echo the secret back in the
kind of answer pixsrc quotes in its messages.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from support.cli import pixsrc_exe, run, run_subprocess
from support.raw_http import RawServer, Seen, json_response

from pixsrc import redact, tokens


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the gallery API key ------------------------------------------------------------------------


def test_gallery_api_key_echoed_by_the_server_never_shows_even_with_debug(tmp_path: Path) -> None:
    # a key with none of the shapes the patterns know: only its registration can mask it
    key = "plain-gallery-key-7f3a9c"

    def answer(seen: Seen) -> bytes:
        echoed = (seen.header("authorization") or "").removeprefix("Bearer ")
        # a broken index that quotes the caller's key in an asset link (as a signed path would)
        return json_response({"assets": [{"path": "a.jpg", "url": f"ftp://cdn.example/{echoed}/a.jpg"}]})

    with RawServer(answer) as server:
        added = run_subprocess("add", "remote-gallery", "--id", "gal", "--name", "gal",
                               "--set", f"url={server.url}/gallery/", "--no-input")
        assert added.returncode == 0, added.stderr
        env = {"PIXSRC_AUTH_GAL": key}
        for args in (["--debug", "fetch", "gal", "--dest", str(tmp_path / "d")],
                     ["fetch", "gal", "--dest", str(tmp_path / "d"), "--json"]):
            result = run_subprocess(*args, env=env)
            assert result.returncode == 4, result.stderr
            assert server.requests and server.requests[0].header("authorization") == f"Bearer {key}"
            assert key not in result.stderr + result.stdout
            assert "asset #0" in result.stderr  # the message itself is still there, only the key is masked


def test_a_stored_credential_is_registered_the_moment_it_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for store, value in (("env", "env-only-secret-91b2"), ("file", "file-only-secret-5d4e"),
                         ("keyring", "keyring-only-secret-c3a0")):
        source = f"read-{store}"
        if store == "env":
            monkeypatch.setenv(tokens.env_var(source), value)
        else:
            tokens.put(source, value, store)  # type: ignore[arg-type]
            redact._known.discard(value)  # as in a later process, which only reads it
        credential = tokens.get(source)
        assert credential is not None and credential.value == value
        assert value not in redact.redact(f"the server said: bad credential {value}")


# -- the PKCE verifier --------------------------------------------------------------------------


def test_pkce_verifier_echoed_by_the_token_endpoint_never_shows(config_file: Path) -> None:
    def answer(seen: Seen) -> bytes:
        verifier = parse_qs(seen.body.decode()).get("code_verifier", ["?"])[0]
        # not "code_verifier=...": a shape no pattern knows, as a provider's prose would put it
        return json_response({"error": "invalid_grant",
                              "error_description": f"PKCE check failed for verifier {verifier}"}, status=400)

    with RawServer(answer) as server:
        port = _free_port()
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text("\n".join([
            "version = 1", "", "[providers.dropbox]", 'client_id = "test-client"',
            f'authorize_url = "{server.url}/authorize"', f'token_url = "{server.url}/token"',
            f"redirect_port = {port}", ""]))
        assert run("add", "dropbox", "--id", "dbx", "--name", "Dropbox", "--no-input").exit_code == 0
        process = subprocess.Popen([*pixsrc_exe(), "auth", "login", "dbx", "--no-browser", "--timeout", "30"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env=dict(os.environ))
        try:
            assert process.stdin is not None and process.stderr is not None
            seen_lines = []
            for line in process.stderr:  # the sign-in URL comes first; then pixsrc waits for us
                seen_lines.append(line)
                if "state=" in line:
                    break
            words = [word for word in "".join(seen_lines).split() if "state=" in word]
            assert words, "".join(seen_lines) + process.stderr.read()
            authorize = words[0]
            state = parse_qs(urlsplit(authorize).query)["state"][0]
            process.stdin.write(f"http://127.0.0.1:{port}/callback?code=pasted-code-1234&state={state}\n")
            process.stdin.flush()
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        err = "".join(seen_lines) + err
    assert process.returncode == 3, err
    (exchange,) = [r for r in server.requests if r.path == "/token"]
    verifier = parse_qs(exchange.body.decode())["code_verifier"][0]
    assert len(verifier) >= 43
    assert "PKCE check failed for verifier" in err  # the provider's reason is still shown...
    assert verifier not in err + out  # ...without the verifier


# -- masking values, not names ------------------------------------------------------------------


def test_an_unknown_field_named_like_a_credential_is_reported_readably() -> None:
    result = run("add", "remote-gallery", "--set", "url=https://example.com/g/", "--set", "api_key=whatever",
                 "--no-input")
    assert result.exit_code == 2
    assert "--set api_key: remote-gallery has no field 'api_key'" in result.stderr, result.stderr



def test_text_output_on_stdout_is_masked_like_messages(capsys: pytest.CaptureFixture[str]) -> None:
    """auth check's and auth status's lines and every table (doctor's too) mask a registered secret:
    their details can quote a server's answer (auth check --online)."""
    from pixsrc.cli.common import print_table, print_text

    secret = "plain-echoed-secret-4d2e"
    redact.register(secret)
    print_text(f"gal: rejected: the server said {secret!r}")
    print_table(["SOURCE", "DETAIL"], [["gal", f"quoted {secret}"]])
    print_table(["SOURCE", "DETAIL"], [["gal", "Authorization: Bearer abc.def.ghi-shaped"]], patterns=True)
    out = capsys.readouterr().out
    assert secret not in out and out.count(redact.MASK) == 3
    assert "abc.def.ghi-shaped" not in out
