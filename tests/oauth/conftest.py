"""Fixtures of the OAuth tests (see tests/support/oidc.py)."""

from support.oidc import oidc_server  # noqa: F401  (fixture)
