"""Shared fixtures. Every test runs with its own config file, state dir and keyring file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/support helpers importable


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every user path of pixsrc (and of the keyring) into tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PIXSRC_CONFIG", str(tmp_path / "config" / "sources.toml"))
    monkeypatch.setenv("PIXSRC_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    # a real keyring backend: keyrings.alt's file backend, stored under XDG_DATA_HOME
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    monkeypatch.setenv("PIXSRC_KEYRING_TIMEOUT", "5")
    for name in list(os.environ):
        if name.startswith("PIXSRC_AUTH_") or name == "PIXSRC_TOKEN_STORE":
            monkeypatch.delenv(name)
    monkeypatch.delenv("NO_COLOR", raising=False)
    # backoff waits start at 1 ms: retries are tested by counting requests, not by waiting
    monkeypatch.setenv("PIXSRC_RETRY_BASE", "0.001")
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):  # tests choose their own
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    import keyring.core

    keyring.core._keyring_backend = None  # re-read PYTHON_KEYRING_BACKEND for this test
    return tmp_path


@pytest.fixture
def config_file(isolated: Path) -> Path:
    return isolated / "config" / "sources.toml"


@pytest.fixture
def state_path(isolated: Path) -> Path:
    return isolated / "state"
