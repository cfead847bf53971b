"""One redaction helper for every sink: error messages, summaries, --debug output.

Every secret pixsrc handles is registered here the moment it is read or received (a stored
credential, a client secret, the PKCE verifier, tokens from a token endpoint); its plain,
URL-encoded and JSON-escaped forms are then masked wherever they show up. On top of that,
*values* shaped like a credential are masked even if they were never registered: ``name=value``
in URLs and forms, ``"name": "value"`` in JSON or Python reprs, ``name = "value"`` as in TOML,
``Bearer``/``Basic`` header values, a password in a URL's userinfo, and well-known provider token
prefixes. Names alone are never masked: "--set api_key: remote-gallery has no field 'api_key'"
stays readable.
"""

from __future__ import annotations

import json
import re
import threading
from urllib.parse import quote, quote_plus

MASK = "[redacted]"
_known: set[str] = set()
_lock = threading.Lock()

_NAMES = r"(?:code|access_token|refresh_token|id_token|client_secret|code_verifier|token|api_key|password)"
_PATTERNS = [
    # name=value in URLs and forms, and name = "value" (TOML); never a name inside a longer word
    # (status_code=401) and never "name: prose"
    re.compile(rf"(?i)((?<![\w-]){_NAMES}=)([^&\s\"',;]+)"),
    re.compile(rf"(?i)((?<![\w-]){_NAMES}\s*=\s*([\"']))([^\"'\s]+)(?=\2)"),
    # "name": "value" in JSON and 'name': 'value' in Python reprs (tracebacks): the name quoted
    re.compile(rf"(?i)(([\"']){_NAMES}\2\s*:\s*([\"']))([^\"'\s]+)(?=\3)"),
    # header values: Bearer/Basic followed by something token-shaped (a digit or a token symbol),
    # so that "basic authentication" in prose stays
    re.compile(r"((?<![\w-])(?:[Bb]earer|BEARER|[Bb]asic|BASIC)\s+)(?=[A-Za-z0-9._~+/=-]*[0-9_.~+/=-])([A-Za-z0-9._~+/=-]{8,})"),
    # the password of user:password@host in a URL
    re.compile(r"(://[^/\s:@]*:)([^@\s/]+)(?=@)"),
    # provider token prefixes: Google access tokens, Dropbox short-lived tokens, Pinterest tokens
    re.compile(r"()\b(ya29\.[0-9A-Za-z_-]{10,}|sl\.[A-Za-z0-9_-]{20,}|pina_[A-Za-z0-9]{10,})"),
]


def _forms(secret: str) -> set[str]:
    """How a secret may appear in text: as is, percent-encoded (a query or form body a server
    echoes), and JSON-escaped (a body quoted in a message)."""
    return {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret, ensure_ascii=True)[1:-1],
            json.dumps(secret, ensure_ascii=False)[1:-1]}


def register(secret: str | None) -> None:
    """Remember a secret value so that it is masked wherever it shows up later.

    Values shorter than 6 characters are not remembered: masking them would garble ordinary
    words, and no credential pixsrc handles is that short.
    """
    if not secret:
        return
    forms = {form for form in _forms(secret) | _forms(secret.strip()) if len(form) >= 6}
    with _lock:
        _known.update(forms)


def redact(text: str, patterns: bool = True) -> str:
    """Mask registered secrets; with ``patterns``, also any value shaped like a credential."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)  # longest first: a secret containing another
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    if not patterns:  # data output (--json) keeps its values, except the secrets themselves
        return text
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m[1] + MASK, text)
    return text
