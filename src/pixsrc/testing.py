"""A contract suite for controllers, for plugin authors' own tests (and pixsrc's).

    from pixsrc.testing import check_controller, context_for
    from my_plugin import SOURCE_TYPE

    def test_contract(tmp_path):
        check_controller(lambda: SOURCE_TYPE.factory(context_for(SOURCE_TYPE, {"folder": str(tmp_path)})))

``check_controller`` builds two controllers and checks that:

* ids are unique, and the same assets (id, path, version, size, checksum) come back twice;
* paths are relative POSIX paths without ``..``, ``.``, empty components or backslashes;
* ``open(asset, 0)`` read until ``b""`` gives ``size`` bytes and the published checksum;
* ``open(asset, n)`` answers ``.offset == n`` with the tail, or ``.offset == 0`` with everything;
* after ``mutate()`` (optional: it changes the source's content), assets whose bytes changed
  have a new version and the others keep theirs.

It raises ``ContractError`` (an ``AssertionError``) listing every problem found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pixsrc.types import Asset, Controller, SourceContext, SourceType, new_hasher

__all__ = ["ContractError", "ContractReport", "check_controller", "context_for", "read_asset"]

READ_SIZE = 64 * 1024
MAX_PROBLEMS = 20


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


def context_for(stype: SourceType, config: dict[str, Any], *, source_id: str = "contract",
                secret: str | None = None, jobs: int = 4) -> SourceContext:
    """A SourceContext for ``stype`` with ``config`` validated the way pixsrc validates it."""
    model = stype.validate(config, f"sources.{source_id}.config")
    return SourceContext(source_id, source_id, model, jobs=jobs, get_secret=lambda: secret)


def read_asset(controller: Controller, asset: Asset, offset: int = 0) -> tuple[int, bytes]:
    """Open ``asset`` at ``offset`` and read until ``b""``; returns (stream.offset, bytes)."""
    stream = controller.open(asset, offset)
    try:
        chunks = []
        while chunk := stream.read(READ_SIZE):
            chunks.append(chunk)
        return stream.offset, b"".join(chunks)
    finally:
        stream.close()


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
        if not isinstance(asset.version, str) or not asset.version:
            problems.append(f"{label}: {asset.id!r}: version must be a non-empty string")
        if asset.size is not None and (not isinstance(asset.size, int) or asset.size < 0):
            problems.append(f"{label}: {asset.id!r}: size {asset.size!r} is not a non-negative int")
        if (why := _path_problem(asset.path)) is not None:
            problems.append(f"{label}: {asset.id!r}: path {asset.path!r} {why}")
        assets.setdefault(asset.id, asset)
    return assets


def _identity(asset: Asset) -> tuple[object, ...]:
    return (asset.path, asset.version, asset.size, asset.checksum)


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


def _offsets(size: int) -> list[int]:
    return sorted({1, size // 2, size}) if size >= 2 else [size] if size else []


def _contents(make_controller: Callable[[], Controller], label: str,
              problems: list[str]) -> tuple[dict[str, Asset], dict[str, bytes]]:
    controller = make_controller()
    try:
        assets = _listing(controller, label, problems)
        contents: dict[str, bytes] = {}
        for asset_id, asset in assets.items():
            start, data = read_asset(controller, asset, 0)
            if start != 0:
                problems.append(f"{label}: {asset_id!r}: open(asset, 0) answered offset {start}")
            contents[asset_id] = data
        return assets, contents
    finally:
        controller.close()


def check_controller(make_controller: Callable[[], Controller], *, mutate: Callable[[], None] | None = None,
                     range_checks: int = 5, min_assets: int = 1) -> ContractReport:
    """Run the contract against controllers built by ``make_controller`` (called 2-3 times).

    ``range_checks`` bounds how many assets get the ``open(asset, offset)`` checks; ``mutate``
    changes the source's content in place (rewrite a file, edit the fixture) between listings.
    """
    problems: list[str] = []
    first, contents = _contents(make_controller, "listing 1", problems)
    if len(first) < min_assets:
        problems.append(f"listing 1: {len(first)} assets, the test expected at least {min_assets}")
    for asset_id, asset in first.items():
        _check_content(asset, contents[asset_id], problems)

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
        for asset_id, asset in list(second.items())[:range_checks]:
            whole = contents.get(asset_id)
            if whole is None:
                continue
            checked += 1
            for offset in _offsets(len(whole)):
                start, data = read_asset(controller, asset, offset)
                if start not in (0, offset):
                    problems.append(f"{asset_id!r}: open(asset, {offset}) answered offset {start} (must be "
                                    f"{offset}, or 0 when ranges are not supported)")
                elif data != whole[start:]:
                    problems.append(f"{asset_id!r}: open(asset, {offset}) with offset {start} gave "
                                    f"{len(data)} bytes that are not the last {len(whole) - start} bytes "
                                    "of the asset")
    finally:
        controller.close()

    mutated = 0
    if mutate is not None and not problems:
        mutate()
        after, new_contents = _contents(make_controller, "after mutate", problems)
        common = sorted(set(first) & set(after))
        for asset_id in common:
            changed = new_contents[asset_id] != contents[asset_id]
            mutated += changed
            same_version = after[asset_id].version == first[asset_id].version
            if changed and same_version:
                problems.append(f"{asset_id!r}: content changed but the version stayed "
                                f"{first[asset_id].version!r}")
            elif not changed and not same_version:
                problems.append(f"{asset_id!r}: content is the same but the version changed "
                                f"{first[asset_id].version!r} -> {after[asset_id].version!r}")
            _check_content(after[asset_id], new_contents[asset_id], problems)
        if not mutated and set(after) == set(first):
            problems.append("mutate() changed nothing the controller lists; the version check proved nothing")

    if problems:
        raise ContractError(problems)
    return ContractReport(assets=len(first), bytes_read=sum(len(c) for c in contents.values()),
                          range_checks=checked, mutated=mutated)
