"""A public gallery (optional API key) must fetch on a machine without any keyring (cron on a server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cli import run, run_subprocess
from support.gallery_server import GalleryServer

NO_KEYRING = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}


@pytest.mark.parametrize("stored_before", [False, True])
def test_public_gallery_fetches_without_a_keyring(tmp_path: Path, state_path: Path, stored_before: bool) -> None:
    if stored_before:  # a key was stored in a keyring that has gone since: warn, go on without it
        state_path.mkdir(parents=True, exist_ok=True)
        (state_path / "credentials-index.json").write_text('["public"]')
    with GalleryServer(tmp_path / "gallery") as gallery:
        gallery.write("a.png", b"\x89PNG public")
        added = run("add", "remote-gallery", "--name", "Public", "--set", f"url={gallery.url}", "--no-input")
        assert added.exit_code == 0, added.stderr
        result = run_subprocess("fetch", "public", "--dest", str(tmp_path / "out"), env=NO_KEYRING)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "a.png").read_bytes() == b"\x89PNG public"
    if stored_before:
        assert "no usable OS keyring" in result.stderr and "going on without a credential" in result.stderr
    else:  # never stored: the keyring is not even asked
        assert "keyring" not in result.stderr
