"""The safe destination tree: folders below dest, symlink guards, ``.part`` files, install by rename.

Nothing is written through a symlink the user (or an attacker's asset name) put below the
destination; every download lands in a hidden ``.part`` file next to its final name and is
renamed into place only once complete and verified, so a final name never holds half a file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from pixsrc.errors import AssetError, UsageError
from pixsrc.state import Entry


def lstat(path: Path | str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def part_prefix(asset_id: str) -> str:
    return ".pixsrc-" + hashlib.sha1(asset_id.encode()).hexdigest()[:12]


def part_name(asset_id: str, version: str) -> str:
    """Hidden, per asset and version: a resumed download never mixes two versions' bytes."""
    return f"{part_prefix(asset_id)}-{hashlib.sha1(version.encode()).hexdigest()[:8]}.part"


def intact(st: os.stat_result | None, entry: Entry) -> bool:
    """The file is still the one pixsrc wrote (same size and mtime as recorded)."""
    return (st is not None and stat.S_ISREG(st.st_mode) and st.st_size == entry.size
            and st.st_mtime_ns == entry.mtime_ns)


class SafeTree:
    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self._safe: set[str] = set()  # folders checked to be real folders (str: no Path work per file)
        self._parts: dict[Path, set[str]] = {}
        self._made = False

    def make_dest(self) -> None:
        if self._made:
            return
        try:
            self.dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot use {self.dest} as the destination: {exc.strerror}",
                             hint="pass another --dest, or fix the source's dest") from None
        self._made = True

    def plain_parents(self, target: Path) -> bool:
        """True if every folder between dest and ``target`` is a real folder (no symlink)."""
        current = self.dest
        for part in target.parent.relative_to(self.dest).parts:
            current = current / part
            if str(current) in self._safe:
                continue
            st = lstat(current)
            if st is None:
                return True  # nothing below a missing folder can be reached through a link
            if not stat.S_ISDIR(st.st_mode):
                return False
        return True

    def safe_parent(self, target: Path) -> None:
        """Create the folders below dest, refusing to go through a symlink or a non-folder."""
        if os.path.dirname(target) in self._safe:  # thousands of files share a few folders: no Path work
            return
        parent = target.parent
        self.make_dest()
        current = self.dest
        for part in parent.relative_to(self.dest).parts:
            current = current / part
            if str(current) in self._safe:
                continue
            st = lstat(current)
            if st is None:
                try:
                    current.mkdir()
                except FileExistsError:
                    st = lstat(current)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                raise AssetError(f"refusing to write through {current}: not a plain folder (symlink?)")
            self._safe.add(str(current))
        self._safe.add(str(parent))  # dest itself, for files directly in it

    def part_for(self, target: Path, asset_id: str, version: str, drop_others: bool) -> Path:
        """The ``.part`` file for this asset version, its folder made safe; with ``drop_others``
        the parts of other versions of the asset (never resumable) are removed."""
        self.safe_parent(target)
        folder = target.parent
        name = part_name(asset_id, version)
        if drop_others:
            prefix = part_prefix(asset_id)
            present = self._parts_in(folder)
            for stale in [n for n in present if n.startswith(prefix) and n != name]:
                (folder / stale).unlink(missing_ok=True)
                present.discard(stale)
        return folder / name

    def _parts_in(self, folder: Path) -> set[str]:
        """The ``.part`` files a folder held when first asked: one scandir per folder, not a glob per file."""
        names = self._parts.get(folder)
        if names is None:
            try:
                with os.scandir(folder) as entries:
                    names = {e.name for e in entries if e.name.startswith(".pixsrc-") and e.name.endswith(".part")}
            except OSError:
                names = set()
            self._parts[folder] = names
        return names

    def install(self, part: Path, target: Path, rel: str) -> None:
        try:
            os.replace(part, target)  # never onto a folder (EISDIR; Windows: access denied)
        except OSError:
            st = lstat(target)
            if st is None or not stat.S_ISDIR(st.st_mode):
                raise
            part.unlink(missing_ok=True)
            raise AssetError(f"a folder is in the way at {rel}") from None

    def remove(self, target: Path) -> None:
        target.unlink()
        self.remove_empty_parents(target.parent)

    def remove_empty_parents(self, folder: Path) -> None:
        while folder != self.dest and self.dest in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            self._safe.discard(str(folder))
            folder = folder.parent
