"""A contract suite for controllers, for plugin authors' own tests (and pixsrc's).

    from pixsrc.testing import check_controller, context_for
    from my_plugin import SOURCE_TYPE

    def test_contract(tmp_path):
        check_controller(lambda: SOURCE_TYPE.factory(context_for(SOURCE_TYPE, {"folder": str(tmp_path)})))

``check_controller`` builds two controllers (three with ``mutate``) and checks that:

* ``list_assets()`` yields ``pixsrc.types.Asset`` objects with unique ids; the same assets (id,
  path, version, size, checksum) come back twice; a ``same_as`` names another asset of the listing;
* paths are relative POSIX paths without ``..``, ``.``, empty components, NUL or backslashes;
* ``transfer(asset)`` returns a ``pixsrc.types.Transfer`` with an ``http(s)`` URL or a
  ``local_path`` to a regular file; header values free of CR, LF and NUL; credentials in
  ``auth``, not in ``headers``; an ``on_error`` that classifies failures without raising;
* the transfer, performed the way the engine does it (libcurl through pycurl, ``auth`` headers,
  redirects followed), answers ``size`` bytes with the published checksum (and a ``same_as``
  asset the bytes of the asset it names);
* a ``resumable`` transfer asked for ``Range: bytes=n-`` (with ``If-Range`` on its ``validator``)
  answers 206 with the tail and a matching ``Content-Range``, or 200 with everything (416 at the
  end); a stale ``If-Range`` gets the whole file, never a 206;
* an asset with ``version=""`` (unknown at listing time) is answered with an ``ETag`` or a
  ``Last-Modified``, the validators the engine versions it by;
* after ``mutate()`` (optional: it changes the source's content), assets whose bytes changed
  have a new version and the others keep theirs; for ``version=""`` assets, a conditional GET with
  the first answer's validators (``If-None-Match``, else ``If-Modified-Since``) answers 304 exactly
  when the bytes did not change. ``Last-Modified`` counts whole seconds: a ``mutate`` that only has
  that validator must move the file's mtime by a second or more.

It raises ``ContractError`` (an ``AssertionError``) listing every problem found. ``fetch_transfer``
and ``read_asset`` are there for a plugin's own tests.
"""

from __future__ import annotations

import io
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pixsrc.types import Asset, Controller, SourceContext, SourceType, Transfer, TransferError, new_hasher

__all__ = ["ContractError", "ContractReport", "Fetched", "check_controller", "context_for", "fetch_transfer",
           "read_asset"]

MAX_PROBLEMS = 20
STALE_VALIDATOR = '"pixsrc-contract-stale-validator"'
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP field name (RFC 9110 section 5.6.2)
_CREDENTIAL_HEADERS = {"authorization", "cookie", "proxy-authorization"}
_CLASSIFIED = (401, 403, 404, 409, 410, 416, 429, 500, 503)


class ContractError(AssertionError):
    """The controller broke the contract; ``problems`` lists how."""

    def __init__(self, problems: list[str]) -> None:
        shown = problems[:MAX_PROBLEMS]
        more = f"\n  ... and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
        super().__init__("controller contract violated:\n  " + "\n  ".join(shown) + more)
        self.problems = problems


@dataclass(frozen=True)
class ContractReport:
    assets: int
    bytes_read: int
    range_checks: int
    mutated: int  # assets whose content mutate() changed (0 without mutate)
    conditional_checks: int = 0  # version="" assets re-checked with a conditional GET after mutate()


def context_for(stype: SourceType, config: dict[str, Any], *, source_id: str = "contract",
                secret: str | None = None, jobs: int = 4) -> SourceContext:
    """A SourceContext for ``stype`` with ``config`` validated the way pixsrc validates it."""
    model = stype.validate(config, f"sources.{source_id}.config")
    return SourceContext(source_id, source_id, model, jobs=jobs, get_secret=lambda: secret)


# -- performing a transfer ----------------------------------------------------------------------

@dataclass(frozen=True)
class Fetched:
    """The final answer to a transfer: status, headers (lower-case names) and the decoded body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    url: str = ""


def _perform(transfer: Transfer, extra: Mapping[str, str], auth_headers: Mapping[str, str],
             timeout: float) -> Fetched:
    import pycurl

    from pixsrc.api import USER_AGENT, ca_paths

    body = io.BytesIO()
    headers: dict[str, str] = {}

    def on_header(line: bytes) -> None:
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text.startswith("HTTP/"):  # a new answer (a redirect, a 100 Continue): its headers only
            headers.clear()
            return
        name, sep, value = text.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()

    curl = pycurl.Curl()
    try:
        curl.setopt(pycurl.URL, transfer.url)
        curl.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        curl.setopt(pycurl.REDIR_PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        curl.setopt(pycurl.FOLLOWLOCATION, True)  # credentials are dropped on a change of origin
        curl.setopt(pycurl.MAXREDIRS, 5)
        curl.setopt(pycurl.NOSIGNAL, True)
        curl.setopt(pycurl.ACCEPT_ENCODING, "")  # the engine stores decoded bytes
        curl.setopt(pycurl.USERAGENT, USER_AGENT)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, int(min(timeout, 15.0) * 1000))
        curl.setopt(pycurl.TIMEOUT_MS, int(timeout * 1000))
        cafile, capath = ca_paths()  # libcurl ignores SSL_CERT_FILE: always say where the CAs are
        if cafile:
            curl.setopt(pycurl.CAINFO, cafile)
        if capath:
            curl.setopt(pycurl.CAPATH, capath)
        sent = {**transfer.headers, **extra, **auth_headers}
        lines = [f"{name}: {value}" for name, value in sent.items()]
        if transfer.method == "POST":
            curl.setopt(pycurl.POST, 1)
            curl.setopt(pycurl.POSTFIELDSIZE, len(transfer.body or b""))  # a body may hold NUL bytes
            curl.setopt(pycurl.COPYPOSTFIELDS, transfer.body or b"")
            if not any(name.lower() == "content-type" for name in sent):
                lines.append("Content-Type:")  # libcurl would add a form type no transfer asked for
        curl.setopt(pycurl.HTTPHEADER, lines)
        curl.setopt(pycurl.WRITEFUNCTION, body.write)
        curl.setopt(pycurl.HEADERFUNCTION, on_header)
        curl.perform()
        return Fetched(int(curl.getinfo(pycurl.RESPONSE_CODE)), headers, body.getvalue(),
                       str(curl.getinfo(pycurl.EFFECTIVE_URL)))
    finally:
        curl.close()


def fetch_transfer(transfer: Transfer, *, headers: Mapping[str, str] | None = None,
                   timeout: float = 30.0) -> Fetched:
    """Perform an http(s) ``transfer`` once, as the engine would: its method, body and headers plus
    ``headers``; ``auth`` headers added, and after a 401 one ``unauthorized()`` and one resend.
    Raises ``pycurl.error`` when no answer came (a refused connection, a timeout)."""
    if transfer.local_path is not None:
        raise ValueError("a local_path transfer is read from disk, not fetched (see read_asset)")
    extra = dict(headers or {})
    auth = transfer.auth
    auth_headers = auth.headers() if auth is not None else {}
    answer = _perform(transfer, extra, auth_headers, timeout)
    if answer.status == 401 and auth is not None:
        auth.unauthorized(auth_headers)
        auth_headers = auth.headers()
        answer = _perform(transfer, extra, auth_headers, timeout)
    return answer


def _content_range_start(value: str | None) -> int | None:
    match = re.fullmatch(r"bytes (\d+)-\d+/(?:\d+|\*)", (value or "").strip())
    return int(match[1]) if match else None


def read_asset(controller: Controller, asset: Asset, offset: int = 0) -> tuple[int, bytes]:
    """Fetch ``asset`` from ``offset`` through ``controller.transfer(asset)``; returns (where the
    answer starts, bytes): ``offset`` for a 206 (or a local file), 0 when the server sent it all.
    Raises ``AssertionError`` for any other answer."""
    transfer = controller.transfer(asset)
    if transfer.local_path is not None:
        with open(transfer.local_path, "rb") as handle:
            handle.seek(offset)
            return offset, handle.read()
    extra = {}
    if offset:
        extra["Range"] = f"bytes={offset}-"
        if transfer.validator:
            extra["If-Range"] = transfer.validator
    answer = fetch_transfer(transfer, headers=extra)
    if answer.status == 200:
        return 0, answer.body
    if answer.status == 206 and offset:
        start = _content_range_start(answer.headers.get("content-range"))
        if start is not None:
            return start, answer.body
    raise AssertionError(f"{asset.id!r}: HTTP {answer.status} for {transfer.method} {transfer.url} "
                         f"(from byte {offset})")


# -- the checks -----------------------------------------------------------------------------------

def _path_problem(path: object) -> str | None:
    if not isinstance(path, str) or not path:
        return "is not a non-empty string"
    if "\\" in path:
        return "contains a backslash (paths are POSIX)"
    if path.startswith("/"):
        return "is absolute"
    if "\x00" in path:
        return "contains NUL"
    parts = path.split("/")
    if ".." in parts:
        return "contains '..'"
    if any(part in ("", ".") for part in parts):
        return "has an empty or '.' component"
    return None


def _listing(controller: Controller, label: str, problems: list[str]) -> dict[str, Asset]:
    assets: dict[str, Asset] = {}
    for asset in controller.list_assets():
        if not isinstance(asset, Asset):
            problems.append(f"{label}: list_assets() yielded {type(asset).__name__}, not pixsrc.types.Asset")
            continue
        if not isinstance(asset.id, str) or not asset.id:
            problems.append(f"{label}: an asset has an empty or non-string id: {asset!r}")
        elif asset.id in assets:
            problems.append(f"{label}: id {asset.id!r} is listed twice")
        if not isinstance(asset.version, str):
            problems.append(f"{label}: {asset.id!r}: version must be a string ('' when unknown)")
        if asset.size is not None and (not isinstance(asset.size, int) or isinstance(asset.size, bool)
                                       or asset.size < 0):
            problems.append(f"{label}: {asset.id!r}: size {asset.size!r} is not a non-negative int")
        if (why := _path_problem(asset.path)) is not None:
            problems.append(f"{label}: {asset.id!r}: path {asset.path!r} {why}")
        assets.setdefault(asset.id, asset)
    for asset in assets.values():
        if asset.same_as is not None and (asset.same_as == asset.id or asset.same_as not in assets):
            problems.append(f"{label}: {asset.id!r}: same_as {asset.same_as!r} is not another asset of the listing")
    return assets


def _identity(asset: Asset) -> tuple[object, ...]:
    return (asset.path, asset.version, asset.size, asset.checksum)


def _transfer_problems(asset: Asset, transfer: object) -> list[str]:
    from pixsrc.sources import origin

    where = f"{asset.id!r}: transfer()"
    if not isinstance(transfer, Transfer):
        return [f"{where} returned {type(transfer).__name__}, not pixsrc.types.Transfer"]
    problems = []
    if transfer.local_path is not None:
        try:
            mode = os.stat(transfer.local_path).st_mode
        except OSError as exc:
            return [f"{where}: local_path {transfer.local_path!r} cannot be read: {exc.strerror}"]
        if not stat.S_ISREG(mode):
            problems.append(f"{where}: local_path {transfer.local_path!r} is not a regular file")
        return problems
    if origin(transfer.url) is None:
        return [f"{where}: url {transfer.url[:80]!r} is not an http(s) URL (nor is local_path set)"]
    if transfer.method not in ("GET", "POST"):
        problems.append(f"{where}: method {transfer.method!r} is not GET or POST")
    if transfer.body is not None and transfer.method != "POST":
        problems.append(f"{where}: a body is only sent with POST")
    for name, value in transfer.headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            problems.append(f"{where}: header name {name!r} is not an HTTP token")
        elif not isinstance(value, str) or any(c in value for c in "\r\n\x00"):
            problems.append(f"{where}: header {name} has CR, LF or NUL in its value (or is not a string)")
        elif name.lower() in _CREDENTIAL_HEADERS:
            problems.append(f"{where}: header {name} carries a credential: put it in Transfer.auth, which the "
                            "engine sends to the URL's own origin only")
        elif name.lower() in ("range", "if-range"):
            problems.append(f"{where}: header {name} is the engine's to send (resumable / validator)")
    if transfer.validator is not None and (not transfer.validator or any(c in transfer.validator
                                                                           for c in "\r\n\x00")):
        problems.append(f"{where}: validator {transfer.validator!r} is empty or has CR, LF or NUL")
    if transfer.on_error is not None:
        for status in _CLASSIFIED:
            try:
                verdict = transfer.on_error(status, {"content-type": "text/plain"}, b"contract check")
            except Exception as exc:  # noqa: BLE001 - the contract reports it, whatever it is
                problems.append(f"{where}: on_error({status}, ...) raised {type(exc).__name__}: {exc}")
                break
            if verdict is not None and not isinstance(verdict, TransferError):
                problems.append(f"{where}: on_error({status}, ...) returned {type(verdict).__name__}, "
                                "not TransferError or None")
                break
    return problems


def _check_content(asset: Asset, data: bytes, problems: list[str]) -> None:
    if asset.size is not None and len(data) != asset.size:
        problems.append(f"{asset.id!r}: read {len(data)} bytes, the asset says size={asset.size}")
    if asset.checksum is not None:
        try:
            hasher = new_hasher(asset.checksum.algorithm)  # hashlib names and types.HASHERS keys
            hasher.update(data)
            actual = hasher.hexdigest()
        except ValueError:
            problems.append(f"{asset.id!r}: unknown checksum algorithm {asset.checksum.algorithm!r}")
            return
        if actual != asset.checksum.value.lower():
            problems.append(f"{asset.id!r}: {asset.checksum.algorithm} of the bytes is {actual}, "
                            f"the asset says {asset.checksum.value}")


@dataclass
class _Got:
    """One asset's transfer and what it answered."""

    transfer: Transfer
    data: bytes
    validators: dict[str, str]  # etag / last-modified of the answer (http transfers)


def _fetch_all(controller: Controller, assets: dict[str, Asset], label: str,
               problems: list[str]) -> dict[str, _Got]:
    got: dict[str, _Got] = {}
    for asset_id, asset in assets.items():
        try:
            transfer = controller.transfer(asset)
        except Exception as exc:  # noqa: BLE001 - AssetError included: every listed asset must be fetchable
            problems.append(f"{label}: {asset_id!r}: transfer() raised {type(exc).__name__}: {exc}")
            continue
        shape = _transfer_problems(asset, transfer)
        if shape:
            problems.extend(f"{label}: {p}" for p in shape)
            continue
        if transfer.local_path is not None:
            with open(transfer.local_path, "rb") as handle:
                got[asset_id] = _Got(transfer, handle.read(), {})
            continue
        try:
            answer = fetch_transfer(transfer)
        except Exception as exc:  # noqa: BLE001 - pycurl.error, AuthRequired from auth, ...
            problems.append(f"{label}: {asset_id!r}: {transfer.method} {transfer.url} failed: {exc}")
            continue
        if answer.status != 200:
            problems.append(f"{label}: {asset_id!r}: {transfer.method} {transfer.url} answered HTTP "
                            f"{answer.status}, not 200")
            continue
        validators = {k: answer.headers[k] for k in ("etag", "last-modified") if answer.headers.get(k)}
        if asset.version == "" and not validators:
            problems.append(f"{label}: {asset_id!r}: version is '' (unknown) but the answer has neither ETag "
                            "nor Last-Modified: the engine could never tell a change")
        got[asset_id] = _Got(transfer, answer.body, validators)
    for asset_id, asset in assets.items():
        if asset_id in got:
            _check_content(asset, got[asset_id].data, problems)
        if asset.same_as in got and asset_id in got and got[asset.same_as].data != got[asset_id].data:
            problems.append(f"{label}: {asset_id!r}: same_as {asset.same_as!r}, but the bytes differ "
                            "(the engine would copy the wrong file)")
    return got


def _offsets(size: int) -> list[int]:
    return sorted({1, size // 2, size}) if size >= 2 else [size] if size else []


def _check_ranges(asset_id: str, got: _Got, problems: list[str]) -> None:
    transfer, whole = got.transfer, got.data
    for offset in _offsets(len(whole)):
        extra = {"Range": f"bytes={offset}-"}
        if transfer.validator:
            extra["If-Range"] = transfer.validator
        asked = f"Range: bytes={offset}-"
        try:
            answer = fetch_transfer(transfer, headers=extra)
        except Exception as exc:  # noqa: BLE001 - pycurl.error and the like: reported, not raised
            problems.append(f"{asset_id!r}: {asked} failed: {exc}")
            return
        if answer.status == 200:
            if answer.body != whole:
                problems.append(f"{asset_id!r}: {asked} answered 200 with other bytes than the whole asset")
        elif answer.status == 206:
            start = _content_range_start(answer.headers.get("content-range"))
            if start != offset:
                problems.append(f"{asset_id!r}: {asked} answered 206 with Content-Range "
                                f"{answer.headers.get('content-range')!r}")
            elif answer.body != whole[offset:]:
                problems.append(f"{asset_id!r}: {asked} answered {len(answer.body)} bytes that are not the "
                                f"last {len(whole) - offset} bytes of the asset")
        elif not (answer.status == 416 and offset == len(whole)):
            problems.append(f"{asset_id!r}: {asked} answered HTTP {answer.status}")
    if transfer.validator and transfer.validator.startswith(('"', 'W/"')) and len(whole) >= 2:
        try:
            answer = fetch_transfer(transfer, headers={"Range": "bytes=1-", "If-Range": STALE_VALIDATOR})
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{asset_id!r}: a Range request with a stale If-Range failed: {exc}")
            return
        if answer.status == 206:
            problems.append(f"{asset_id!r}: the server answered 206 to a stale If-Range: a resumed download "
                            "of a changed file would glue two versions together (drop the validator or "
                            "resumable)")


def _conditional(got: _Got) -> Fetched | None:
    """A conditional GET with the first answer's validators, or None when it had none."""
    if "etag" in got.validators:
        extra = {"If-None-Match": got.validators["etag"]}
    elif "last-modified" in got.validators:
        extra = {"If-Modified-Since": got.validators["last-modified"]}
    else:
        return None
    return fetch_transfer(got.transfer, headers=extra)


def check_controller(make_controller: Callable[[], Controller], *, mutate: Callable[[], None] | None = None,
                     range_checks: int = 5, min_assets: int = 1) -> ContractReport:
    """Run the contract against controllers built by ``make_controller`` (called 2-3 times).

    ``range_checks`` bounds how many assets get the ``Range`` checks (resumable http transfers);
    ``mutate`` changes the source's content in place (rewrite a file, edit the fixture) between
    listings.
    """
    problems: list[str] = []
    controller = make_controller()
    try:
        first = _listing(controller, "listing 1", problems)
        got = _fetch_all(controller, first, "listing 1", problems)
    finally:
        controller.close()
    if len(first) < min_assets:
        problems.append(f"listing 1: {len(first)} assets, the test expected at least {min_assets}")

    controller = make_controller()
    checked = 0
    try:
        second = _listing(controller, "listing 2", problems)
        if set(second) != set(first):
            gone, new = sorted(set(first) - set(second)), sorted(set(second) - set(first))
            problems.append(f"ids are not stable: only in listing 1: {gone[:5]}, "
                            f"only in listing 2: {new[:5]}")
        for asset_id in sorted(set(first) & set(second)):
            if _identity(first[asset_id]) != _identity(second[asset_id]):
                problems.append(f"{asset_id!r} changed between two listings of unchanged content: "
                                f"{_identity(first[asset_id])} -> {_identity(second[asset_id])}")
        for asset_id, asset in second.items():
            if checked >= range_checks:
                break
            if asset_id not in got:
                continue
            try:
                transfer = controller.transfer(asset)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"listing 2: {asset_id!r}: transfer() raised {type(exc).__name__}: {exc}")
                continue
            if transfer.local_path is not None or not transfer.resumable or _transfer_problems(asset, transfer):
                continue
            checked += 1
            _check_ranges(asset_id, _Got(transfer, got[asset_id].data, got[asset_id].validators), problems)
    finally:
        controller.close()

    mutated = conditional_checks = 0
    if mutate is not None and not problems:
        mutate()
        controller = make_controller()
        try:
            after = _listing(controller, "after mutate", problems)
            got_after = _fetch_all(controller, after, "after mutate", problems)
            for asset_id in sorted(set(first) & set(after)):
                if asset_id not in got or asset_id not in got_after:
                    continue
                changed = got_after[asset_id].data != got[asset_id].data
                mutated += changed
                before, now = first[asset_id].version, after[asset_id].version
                if before or now:
                    if changed and before == now:
                        problems.append(f"{asset_id!r}: content changed but the version stayed {before!r}")
                    elif not changed and before != now:
                        problems.append(f"{asset_id!r}: content is the same but the version changed "
                                        f"{before!r} -> {now!r}")
                    continue
                # unknown versions: the engine re-checks with the validators of the answer it stored
                refreshed = _Got(got_after[asset_id].transfer, got[asset_id].data, got[asset_id].validators)
                try:
                    answer = _conditional(refreshed)
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"{asset_id!r}: the conditional GET failed: {exc}")
                    continue
                if answer is None:
                    continue  # reported by _fetch_all
                conditional_checks += 1
                if changed and answer.status == 304:
                    problems.append(f"{asset_id!r}: content changed but the conditional GET "
                                    f"({', '.join(got[asset_id].validators)}) answered 304: the engine "
                                    "would keep the old file")
                elif not changed and answer.status != 304:
                    problems.append(f"{asset_id!r}: content is the same but the conditional GET answered HTTP "
                                    f"{answer.status}, not 304: every fetch would download it again")
        finally:
            controller.close()
        if not mutated and set(after) == set(first):
            problems.append("mutate() changed nothing the controller lists; the version check proved nothing")

    if problems:
        raise ContractError(problems)
    return ContractReport(assets=len(first), bytes_read=sum(len(g.data) for g in got.values()),
                          range_checks=checked, mutated=mutated, conditional_checks=conditional_checks)
