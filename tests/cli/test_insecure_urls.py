"""URLs that would put a credential on the wire in the clear, or in the config file, are refused.

* A provider endpoint (authorize, token, revoke, API) over plain ``http://`` to a host that is not
  this machine: tokens, codes and client secrets would cross the network unencrypted. Loopback
  stays allowed (local fakes, a proxy on the same machine); ``allow_insecure = true`` in the
  provider's table is the explicit way to accept it anyway.
* A password (or any userinfo) in a source URL: it would sit in the config file in the clear and be
  sent to every host; the source's credential (the keyring) is where it belongs.

Everything is refused before any connection is made, so the hosts here never need to exist.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import run

from pixsrc import oauth
from pixsrc.errors import ConfigError
from pixsrc.sources.dropbox import PROVIDER as DROPBOX


def _dropbox_config(config_file: Path, **table: object) -> None:
    lines = ["version = 1", "", "[providers.dropbox]", 'client_id = "test-client"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text("\n".join(lines) + "\n")
    assert run("add", "dropbox", "--id", "dbx", "--name", "Dropbox", "--no-input").exit_code == 0


# -- provider endpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["authorize_url", "token_url", "revoke_url", "api_base_url", "content_base_url"])
def test_plain_http_provider_endpoint_off_this_machine_is_refused(config_file: Path, tmp_path: Path,
                                                                   key: str) -> None:
    _dropbox_config(config_file, **{key: "http://auth.example.test/oauth2/x"})
    # neither command contacts anything before the check (the source is not signed in, and the
    # login's browser step is only printed): a refusal is the check's, never a failed connection
    for args in (["auth", "login", "dbx", "--no-browser", "--port", "0", "--timeout", "1"],
                 ["fetch", "dbx", "--dest", str(tmp_path / "d")]):
        result = run(*args, input="")
        assert result.exit_code == 2, (args, result.stderr)
        assert f"providers.dropbox.{key}" in result.stderr
        assert "https://" in result.stderr and "allow_insecure = true" in result.stderr
        assert "internal error" not in result.stderr


def test_a_built_in_provider_fact_over_plain_http_is_refused_too() -> None:
    import dataclasses

    provider = dataclasses.replace(DROPBOX, token_url="http://api.example.test/oauth2/token")
    with pytest.raises(ConfigError) as refused:
        oauth.settings_for(provider, {})
    assert "token_url" in refused.value.message
    assert oauth.settings_for(provider, {"dropbox": {"allow_insecure": True}}).token_url.startswith("http://")


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/token", "http://localhost:9/token", "http://[::1]:9/token",
                                 "http://127.8.9.10:9/token", "https://auth.example.test/token"])
def test_https_and_loopback_endpoints_are_accepted(url: str) -> None:
    settings = oauth.settings_for(DROPBOX, {"dropbox": {"token_url": url}})
    assert settings.token_url == url


def test_allow_insecure_is_the_explicit_way_out(config_file: Path) -> None:
    _dropbox_config(config_file, token_url="http://auth.example.test/token", allow_insecure=True)
    # past the check: the login waits for an answer that never comes (stdin is empty), then gives up
    result = run("auth", "login", "dbx", "--no-browser", "--port", "0", "--timeout", "1", input="")
    assert result.exit_code == 3, result.stderr
    assert "no sign-in within 1 s" in result.stderr


def test_allow_insecure_must_be_a_boolean(config_file: Path, tmp_path: Path) -> None:
    _dropbox_config(config_file, allow_insecure="yes")
    result = run("fetch", "dbx", "--dest", str(tmp_path / "d"))
    assert result.exit_code == 2, result.stderr
    assert "providers.dropbox.allow_insecure: must be true or false" in result.stderr


# -- userinfo in a source URL ----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://alice:hunter2-pw@gallery.example/g/", "https://hunter2-pw@gallery.example/g/",
                                 "http://alice:hunter2-pw@127.0.0.1:9/g/"])
def test_a_password_in_a_gallery_url_is_refused_at_add(url: str, config_file: Path) -> None:
    result = run("add", "remote-gallery", "--id", "gal", "--set", f"url={url}", "--no-input")
    assert result.exit_code == 2, result.stderr
    assert "sources.gal.config.url" in result.stderr
    assert "pixsrc auth login gal" in result.stderr or "API key" in result.stderr
    assert "hunter2-pw" not in result.stderr + result.stdout
    assert not config_file.exists() or "hunter2-pw" not in config_file.read_text()


def test_a_password_in_a_gallery_url_is_refused_at_edit(config_file: Path) -> None:
    assert run("add", "remote-gallery", "--id", "gal", "--set", "url=https://gallery.example/g/",
               "--no-input").exit_code == 0
    before = config_file.read_text()
    result = run("edit", "gal", "--set", "url=https://alice:hunter2-pw@gallery.example/g/")
    assert result.exit_code == 2, result.stderr
    assert "API key" in result.stderr and "hunter2-pw" not in result.stderr + result.stdout
    assert config_file.read_text() == before


def test_a_hand_edited_url_with_a_password_is_a_config_error(config_file: Path, tmp_path: Path) -> None:
    # 127.0.0.1:9 (discard): nothing listens, so even the code before the check sent nothing anywhere else
    assert run("add", "remote-gallery", "--id", "gal", "--set", "url=http://127.0.0.1:9/g/",
               "--no-input").exit_code == 0
    config_file.write_text(config_file.read_text().replace("http://127.0.0.1:9/g/",
                                                           "http://alice:hunter2-pw@127.0.0.1:9/g/"))
    result = run("fetch", "gal", "--dest", str(tmp_path / "d"))
    assert result.exit_code == 2, result.stderr
    assert "sources.gal.config.url" in result.stderr and "hunter2-pw" not in result.stderr + result.stdout
