"""Planning: the listing and the manifest in, one action per asset out. Nothing is written here.

Decisions per listed asset (``entry`` = the manifest row, ``file`` = what is on disk now):
    no entry, no file                 -> Fetch "downloaded"
    no entry, file present            -> Adopt: the source's checksum, else a download compared with
                                         the file, makes it pixsrc's if identical; else a conflict
    entry, file missing               -> Fetch "downloaded" (a restore)
    entry, file changed by the user   -> conflict; replaced only with --force
    entry, other version              -> Fetch "updated"
    entry, version unknown ("")       -> Fetch "updated" as a conditional GET: 304 means unchanged
    entry learned, listing now dated  -> the same conditional GET, once: it records the listing's
                                         version (a manifest from before listings were dated, or a
                                         file that was too new to trust its listed date)
    entry, same version, other path   -> Rename the local file (a remote rename)
    entry, same version, intact       -> "unchanged"
Manifest entries the listing no longer has become Gone (reported, or pruned with ``--prune``).
``--dry-run`` is this module alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pixsrc.state import Entry
from pixsrc.tree import intact, lstat
from pixsrc.types import LISTED, Asset


@dataclass(frozen=True, slots=True)
class Fetch:
    asset: Asset
    path: str
    action: Literal["downloaded", "updated"]
    replaces: Entry | None = None
    """The previous file at another path, removed once this one is in place."""
    check: Entry | None = None
    """Version unknown: ask the server whether ``check``'s version is still current (304)."""
    adopt: bool = False
    """A file pixsrc has no record of is at ``path``: download to the ``.part`` only to compare;
    identical bytes make it pixsrc's (untouched), different ones a conflict."""


@dataclass(frozen=True, slots=True)
class Rename:
    asset: Asset
    entry: Entry
    path: str


@dataclass(frozen=True, slots=True)
class Adopt:
    asset: Asset
    path: str


@dataclass(slots=True)
class Settled:
    asset: Asset
    path: str
    action: Literal["unchanged", "conflict"]
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Gone:
    asset_id: str
    entry: Entry


Action = Fetch | Rename | Adopt | Settled


def decide(asset: Asset, path: str, entry: Entry | None, dest: str, force: bool,
           plain_parents: Callable[[Path], bool]) -> Action:
    st = lstat(os.path.join(dest, path))  # str paths: pathlib costs more than the lstat itself
    if entry is None:
        if st is None or force:
            return Fetch(asset, path, "downloaded")
        return Adopt(asset, path)
    if entry.path != path:
        old = Path(dest, entry.path)
        if (asset.version and entry.version == asset.version and st is None and plain_parents(old)
                and intact(lstat(old), entry)):
            return Rename(asset, entry, path)
        return Fetch(asset, path, "updated", replaces=entry)
    if st is None:
        return Fetch(asset, path, "downloaded")
    ours = intact(st, entry)
    if not ours and not force:
        return Settled(asset, path, "conflict", "changed locally since pixsrc wrote it; use --force to replace it")
    if not ours:
        return Fetch(asset, path, "updated")
    if not asset.version or (asset.version.startswith(LISTED) and not entry.version.startswith(LISTED)):
        return Fetch(asset, path, "updated", check=entry)
    if entry.version != asset.version:
        return Fetch(asset, path, "updated")
    return Settled(asset, path, "unchanged")


def conditional_headers(entry: Entry) -> dict[str, str]:
    """The validators a learned version carries, as the headers of a conditional GET. A version read
    from a listing carries none, but the file's mtime is the answer's Last-Modified (the engine set
    it so): asking with it keeps a listing that stopped dating the file from re-downloading it."""
    kind, _, value = entry.version.partition(":")
    if kind == "etag" and value:
        return {"If-None-Match": value}
    if kind == "lm" and value:
        return {"If-Modified-Since": value}
    if entry.version.startswith(LISTED):
        from email.utils import formatdate

        return {"If-Modified-Since": formatdate(entry.mtime_ns / 1e9, usegmt=True)}
    return {}


def learned_version(etag: str | None, last_modified: str | None) -> str:
    """A version for an asset the listing could not version: the answer's validators; "" for none
    (the caller then versions it by its content)."""
    if etag:
        return f"etag:{etag}"
    if last_modified:
        return f"lm:{last_modified}"
    return ""
