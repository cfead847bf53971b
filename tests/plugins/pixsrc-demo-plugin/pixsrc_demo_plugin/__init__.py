"""demo-pattern: a pixsrc source type that generates tiny PNG images in memory.

Image ``k`` (1..count) is a ``k`` x 4 pixel RGB PNG filled with ``color``, named
``<prefix>-<k:03d>.png``; its id is ``pattern-<k>`` and its version is the sha256 of its bytes,
which the asset also publishes as its checksum. Nothing touches the network: ``transfer()`` writes
the image into the controller's own temporary folder (removed by ``close()``) and hands the engine
a ``local_path`` transfer, the way a type whose content is made on this machine does.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from typing import Literal

from pydantic import field_validator

from pixsrc.errors import AssetError
from pixsrc.types import Asset, Checksum, SourceConfig, SourceContext, SourceType, Transfer, field

__all__ = ["SOURCE_TYPE", "HIJACK_LOCAL_FS", "DemoPatternConfig", "render_png"]

HEIGHT = 4
RGB = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


class DemoPatternConfig(SourceConfig):
    prefix: str = field(label="File name prefix", placeholder="pattern")
    count: int = field(3, label="Number of images")
    color: Literal["red", "green", "blue"] = field("red", label="Colour")

    @field_validator("count")
    @classmethod
    def _count_range(cls, value: int) -> int:
        if not 0 <= value <= 1000:
            raise ValueError("must be between 0 and 1000")
        return value

    @field_validator("prefix")
    @classmethod
    def _plain_prefix(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value:
            raise ValueError("must be a non-empty name without slashes")
        return value


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def render_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour 8-bit RGB PNG (filter 0 on every row, zlib level 9)."""
    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(row * height, 9)) + _chunk(b"IEND", b""))


class DemoPatternController:
    def __init__(self, config: DemoPatternConfig) -> None:
        self.config = config
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    def list_assets(self) -> Iterator[Asset]:
        rgb = RGB[self.config.color]
        for k in range(1, self.config.count + 1):
            data = render_png(k, HEIGHT, rgb)
            digest = hashlib.sha256(data).hexdigest()
            yield Asset(id=f"pattern-{k}", path=f"{self.config.prefix}-{k:03d}.png",
                        version=f"sha256:{digest}", size=len(data), media_type="image/png",
                        checksum=Checksum("sha256", digest), ref=data)

    def transfer(self, asset: Asset) -> Transfer:
        data = asset.ref
        if not isinstance(data, bytes):
            raise AssetError(f"{asset.path}: not an asset of this source")
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="pixsrc-demo-")
        # named by content: two transfers of one image share a file, another colour gets its own
        path = os.path.join(self._folder.name, hashlib.sha256(data).hexdigest() + ".png")
        if not os.path.exists(path):
            with open(path, "wb") as handle:
                handle.write(data)
        return Transfer(local_path=path)

    def close(self) -> None:
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


def _factory(context: SourceContext) -> DemoPatternController:
    return DemoPatternController(context.config)


SOURCE_TYPE = SourceType(
    id="demo-pattern",
    name="Demo pattern",
    category="web",
    description="Generated solid-colour PNGs (a test plugin).",
    config_model=DemoPatternConfig,
    factory=_factory,
)

# Registered under the entry-point name "local-fs": pixsrc must refuse to let it replace the built-in.
HIJACK_LOCAL_FS = SourceType(
    id="local-fs",
    name="Hijacked local folder",
    category="local",
    description="A plugin trying to replace the built-in local-fs (must be ignored).",
    config_model=DemoPatternConfig,
    factory=_factory,
)
