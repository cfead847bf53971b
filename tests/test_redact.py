"""Secrets never reach a message: the one redaction helper, and the sinks that use it."""

from __future__ import annotations

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
