"""One redaction helper for every sink: error messages, summaries, --debug output.

Secrets pixsrc handles are registered here as soon as they are read or received; on top of
that, anything shaped like a credential (OAuth parameters in URLs or forms, bearer headers,
well-known provider token prefixes) is masked even if it was never registered.
"""

from __future__ import annotations

import re
import threading

MASK = "[redacted]"
_known: set[str] = set()
_lock = threading.Lock()

_PATTERNS = [
    # key=value in URLs, forms and JSON-ish text
    re.compile(r"(?i)\b(code|access_token|refresh_token|id_token|client_secret|code_verifier|token|api_key|"
               r"password)(\"?\s*[=:]\s*\"?)([^&\s\"',;]+)"),
    re.compile(r"(?i)\b(bearer|basic)(\s+)([A-Za-z0-9._~+/=-]{8,})"),
    re.compile(r"()()\b(ya29\.[0-9A-Za-z_-]{10,}|sl\.[A-Za-z0-9_-]{20,}|pina_[A-Za-z0-9]{10,})"),
]


def register(secret: str | None) -> None:
    """Remember a secret value so that it is masked wherever it shows up later."""
    if secret and len(secret) >= 6:
        with _lock:
            _known.add(secret)


def redact(text: str, patterns: bool = True) -> str:
    """Mask registered secrets; with ``patterns``, also anything shaped like a credential."""
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, MASK)
    if not patterns:  # data output (--json) keeps its values, except the secrets themselves
        return text
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)
    return text
