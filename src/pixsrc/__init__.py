"""pixsrc: list and download the images and media in your configured asset sources.

The names below form the plugin-author API. They are imported lazily so that
``pixsrc --help`` does not pay for pydantic.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "Asset": "pixsrc.types",
    "AuthSpec": "pixsrc.types",
    "BearerKey": "pixsrc.types",
    "Checksum": "pixsrc.types",
    "Controller": "pixsrc.types",
    "Transfer": "pixsrc.types",
    "TransferAuth": "pixsrc.types",
    "TransferError": "pixsrc.types",
    "SourceContext": "pixsrc.types",
    "SourceType": "pixsrc.types",
    "SourceConfig": "pixsrc.types",
    "field": "pixsrc.types",
    "PixsrcError": "pixsrc.errors",
    "SourceUnavailable": "pixsrc.errors",
    "AssetError": "pixsrc.errors",
    "AuthRequired": "pixsrc.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'pixsrc' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
