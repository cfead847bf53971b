"""Secrets never reach a message: the one redaction helper, and the sinks that use it."""

from __future__ import annotations

import json

import pytest
from support.cli import run

from pixsrc import redact


def test_registered_secrets_and_credential_shapes_are_masked() -> None:
    redact.register("s3cr3t-client-value")
    text = ("GET /callback?code=4/0Abc-def&state=xyz failed; Authorization: Bearer abc.def-ghi_jkl; "
            "client_secret=zzz9; token leaked s3cr3t-client-value; ya29.a0AfH6SMBabcdefghij; "
            '{"refresh_token": "1//0g-refresh"}; sl.BCDEFGHIJKLMNOPQRSTUVWXYZ012345; pina_ABCDEFGHIJKLMNOP')
    masked = redact.redact(text)
    for secret in ("4/0Abc-def", "abc.def-ghi_jkl", "zzz9", "s3cr3t-client-value", "ya29.a0AfH6SMBabcdefghij",
                   "1//0g-refresh", "sl.BCDEFGHIJKLMNOPQRSTUVWXYZ012345", "pina_ABCDEFGHIJKLMNOP"):
        assert secret not in masked
    assert "state=xyz" in masked  # what is not a secret stays readable


def test_json_output_masks_only_known_secrets() -> None:
    redact.register("a-known-token-value")
    assert redact.redact('{"url": "https://x/?code=keep", "t": "a-known-token-value"}', patterns=False) == (
        '{"url": "https://x/?code=keep", "t": "[redacted]"}')


def test_internal_error_traceback_with_debug_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    import pixsrc.cli.sources as sources

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("token exchange failed: refresh_token=1//secret-refresh access_token=ya29.zzzzzzzzzzzz")

    monkeypatch.setattr(sources, "print_table", boom)
    assert run("add", "local-fs", "--set", "path=/tmp", "--no-input").exit_code == 0
    for args in (["list"], ["--debug", "list"]):
        result = run(*args)
        assert result.exit_code == 1
        assert "RuntimeError" in result.stderr
        assert "1//secret-refresh" not in result.stderr and "ya29.zzzzzzzzzzzz" not in result.stderr
    assert "Traceback" in run("--debug", "list").stderr


@pytest.mark.parametrize("text", [
    "--set api_key: remote-gallery has no field 'api_key'",
    "GET https://api.example.com/oauth2/token: connection refused",
    "the token: it expired; password: see the README",
    "use basic authentication or a Bearer credential",
    "exit code 3, status_code=401, error_code=invalid",
])
def test_names_in_prose_are_not_masked(text: str) -> None:
    assert redact.redact(text) == text


@pytest.mark.parametrize(("text", "secret"), [
    ("POST /token code=4/0Abc-def&code_verifier=vvvvvvvvvv", "vvvvvvvvvv"),
    ('{"access_token": "acc-123456", "scope": "x"}', "acc-123456"),
    ("{'refresh_token': '1//0g-refresh', 'scope': 'x'}", "1//0g-refresh"),
    ('api_key = "toml-quoted-key"', "toml-quoted-key"),
    ("Authorization: Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    ("fetching https://alice:hunter2-pw@gallery.example/ failed", "hunter2-pw"),
])
def test_credential_values_are_masked(text: str, secret: str) -> None:
    masked = redact.redact(text)
    assert secret not in masked and redact.MASK in masked


def test_registered_secret_is_masked_in_its_encoded_forms() -> None:
    secret = "k+ey/with=odd&chars"
    redact.register(secret)
    from urllib.parse import quote, quote_plus

    for shown in (secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]):
        assert shown not in redact.redact(f"echo: {shown} end", patterns=False)
    assert redact.redact("echo: end", patterns=False) == "echo: end"


def test_a_bearer_key_never_shows_itself_and_a_401_names_the_fix() -> None:
    import pytest

    from pixsrc import AuthRequired, BearerKey

    key = BearerKey("s3cret-token-value", "src: the feed refused the key", "run: pixsrc auth login src")
    assert "s3cret" not in repr(key) and "s3cret" not in str(key)
    assert key.headers() == {"Authorization": "Bearer s3cret-token-value"}
    with pytest.raises(AuthRequired) as refused:
        key.unauthorized({})
    assert refused.value.message == "src: the feed refused the key"
    assert refused.value.hint == "run: pixsrc auth login src"
