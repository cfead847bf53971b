#!/bin/sh
# A $BROWSER command for Python's webbrowser module: BROWSER=/abs/path/tests/oauth/browser.sh
# (a bare path, no "%s": webbrowser runs "$BROWSER <url>" and WAITS for it to exit.)
#
# Options come from the environment, since webbrowser passes nothing but the URL:
#   PIXSRC_BROWSER_RESULT=FILE    write browser.mjs's JSON result there (default: stderr, so the
#                                 output of the program under test stays clean)
#   PIXSRC_BROWSER_SCREENSHOT=FILE.png   save a screenshot of the final page
#   PIXSRC_BROWSER_DENY=1         cancel the login instead (-> error=access_denied)
#   PIXSRC_BROWSER_BACKGROUND=1   return at once and log in in the background, like a real
#                                 browser; wait for PIXSRC_BROWSER_RESULT to appear instead.
#   PIXSRC_BROWSER_TIMEOUT=MS     per-step timeout (default 30000)
set -eu
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 <authorize-url>" >&2; exit 64; }
url=$1
set -- "$url"
[ -n "${PIXSRC_BROWSER_SCREENSHOT:-}" ] && set -- "$@" --screenshot "$PIXSRC_BROWSER_SCREENSHOT"
[ "${PIXSRC_BROWSER_DENY:-}" = 1 ] && set -- "$@" --deny
[ -n "${PIXSRC_BROWSER_TIMEOUT:-}" ] && set -- "$@" --timeout "$PIXSRC_BROWSER_TIMEOUT"
if [ -n "${PIXSRC_BROWSER_RESULT:-}" ]; then
  # write to a temp name and rename, so a reader never sees a half-written file
  set -- "$@" --out "$PIXSRC_BROWSER_RESULT.part"
  finish() { mv -f "$PIXSRC_BROWSER_RESULT.part" "$PIXSRC_BROWSER_RESULT"; }
else
  finish() { :; }
fi
if [ "${PIXSRC_BROWSER_BACKGROUND:-}" = 1 ]; then
  # detach: no stdin, output away from the caller's terminal/pipes
  ( rc=0; node "$here/browser.mjs" "$@" </dev/null >&2 || rc=$?; finish; exit $rc ) </dev/null >/dev/null 2>&1 &
  exit 0
fi
rc=0
node "$here/browser.mjs" "$@" </dev/null 1>&2 || rc=$?
finish
exit $rc
