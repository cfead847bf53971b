"""local-fs: a folder on this machine (or a mounted share)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pixsrc.errors import SourceUnavailable
from pixsrc.paths import selected
from pixsrc.sources import image_or_video, media_type
from pixsrc.types import Asset, SourceConfig, SourceContext, SourceType, Transfer, field


class LocalFsConfig(SourceConfig):
    path: str = field(label="Folder", placeholder="~/Pictures/inbox", kind="path")
    recursive: bool = field(True, label="Include sub-folders")
    include: list[str] = field([], label="Only files matching (globs, comma-separated)", placeholder="*.jpg,*.png")
    exclude: list[str] = field([], label="Skip files matching (globs, comma-separated)", placeholder="*.tmp")
    follow_symlinks: bool = field(False, label="Follow symbolic links")
    all_files: bool = field(False, label="All files, not only images and videos")


class LocalFsController:
    def __init__(self, config: LocalFsConfig) -> None:
        self.config = config
        self.root = Path(config.path).expanduser()

    def list_assets(self) -> Iterator[Asset]:
        if not self.root.is_dir():
            raise SourceUnavailable(f"folder {self.root} does not exist or is not a folder")
        seen_dirs: set[tuple[int, int]] = set()
        yield from self._walk(self.root, "", seen_dirs)

    def _walk(self, folder: Path, prefix: str, seen: set[tuple[int, int]]) -> Iterator[Asset]:
        st = folder.stat()
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop
            return
        seen.add((st.st_dev, st.st_ino))
        follow = self.config.follow_symlinks
        include, exclude = self.config.include, self.config.exclude
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            if not prefix:
                raise SourceUnavailable(f"cannot read {folder}: {exc.strerror}") from None
            return
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            try:
                if entry.is_symlink() and not follow:
                    continue
                if entry.is_dir(follow_symlinks=follow):
                    if self.config.recursive:
                        yield from self._walk(Path(entry.path), rel + "/", seen)
                    continue
                info = entry.stat(follow_symlinks=follow)
            except OSError:
                continue  # vanished, or a dangling link
            if not stat.S_ISREG(info.st_mode) or entry.name.endswith(".part"):
                continue
            kind = image_or_video(entry.name)
            if kind is None:
                if not self.config.all_files:
                    continue
                kind = media_type(entry.name)
            if (include or exclude) and not selected(rel, include, exclude):
                continue
            yield Asset(
                id=rel,
                path=rel,
                version=f"{info.st_mtime_ns}:{info.st_size}",
                size=info.st_size,
                modified=datetime.fromtimestamp(info.st_mtime_ns / 1e9, UTC),
                media_type=kind,
            )

    def transfer(self, asset: Asset) -> Transfer:
        """A local copy step: the engine copies and hashes it like any download."""
        return Transfer(local_path=os.path.join(self.root, asset.path), resumable=False)

    def close(self) -> None:
        pass


def _factory(context: SourceContext) -> LocalFsController:
    return LocalFsController(context.config)


SOURCE_TYPE = SourceType(
    id="local-fs",
    name="Local folder",
    category="local",
    description="Images and videos in a folder on this machine or a mounted share.",
    config_model=LocalFsConfig,
    factory=_factory,
)
