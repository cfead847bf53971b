#!/usr/bin/env python3
"""A stand-in browser for fake providers: `BROWSER=<this file>` makes pixsrc's login "open" the
authorize URL here. It follows the fake's redirects to pixsrc's loopback callback (real HTTP),
and writes the final status and page text to $FAKE_BROWSER_LOG when set.

The real-browser test (headless Chromium against oidc-provider) lives in tests/oauth/.
"""

import json
import os
import sys
import urllib.error
import urllib.request

url = sys.argv[1]
try:
    with urllib.request.urlopen(url, timeout=30) as response:
        status, text, final = response.status, response.read().decode("utf-8", "replace"), response.url
except urllib.error.HTTPError as exc:
    status, text, final = exc.code, exc.read().decode("utf-8", "replace"), exc.url
if log := os.environ.get("FAKE_BROWSER_LOG"):
    with open(log, "w", encoding="utf-8") as handle:
        json.dump({"status": status, "text": text, "url": final}, handle)
